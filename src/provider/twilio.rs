//! The Twilio provider: sends each SMS through Twilio's Messages API
//! (`POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded,
//! HTTP basic auth), classifies Twilio's error codes, and verifies and parses the
//! status callbacks Twilio POSTs to `status_callback_url`.
//!
//! Twilio's Messages API documents no idempotency key (the `I-Twilio-Idempotency-Token`
//! header is one Twilio *sends* on its webhooks), so a retry after a timeout in which
//! Twilio had in fact accepted the message can deliver it twice.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha1::Sha1;

use super::{
    DeliveryReport, Error, Inbound, InboundReply, Message, Provider, Receipt, ReceiptAnswer,
    ReceiptError, ReceiptRequest, Receipts, classify_status, exchange, http_client,
};
use crate::domain::Channel;
use crate::domain::Secret;

/// `kind = "twilio"`: Twilio's Messages API. Requests authenticate with
/// `api_key_sid`/`api_key_secret` when both are set, else with `account_sid` and
/// `auth_token`; status callbacks are signed with the auth token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// The account SID (`AC` and 32 hex digits).
    pub account_sid: String,
    /// The account's auth token: it signs status callbacks, and authenticates
    /// requests when no API key is set.
    #[serde(default)]
    pub auth_token: Option<Secret>,
    /// An API key's SID, to authenticate requests with instead of the auth token.
    #[serde(default)]
    pub api_key_sid: Option<String>,
    /// The API key's secret.
    #[serde(default)]
    pub api_key_secret: Option<Secret>,
    /// The sending number (E.164), short code or alphanumeric sender id.
    #[serde(default)]
    pub from: Option<String>,
    /// A Messaging Service that picks the sender; used with or instead of `from`.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// Default `https://api.twilio.com`; tests point it at a local server.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Where Twilio POSTs delivery status, e.g. `https://herald.example/v1/receipts/twilio`.
    #[serde(default)]
    pub status_callback_url: Option<String>,
    /// The URL given in the console as the number's "A message comes in" webhook,
    /// e.g. `https://herald.example/v1/inbound/twilio`: Twilio signs incoming
    /// messages over it, so it must be exactly as given there.
    #[serde(default)]
    pub inbound_url: Option<String>,
}

/// The header that carries Twilio's signature of a callback.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// Sends SMS through one Twilio account, one request a message (Twilio has no
/// batch send).
pub struct TwilioProvider {
    messages_url: reqwest::Url,
    username: String,
    password: Secret,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    /// Sent as configured, not normalized: Twilio signs its callbacks over this
    /// exact string, so the receipt route must verify against the same one.
    status_callback: Option<String>,
    /// What incoming messages are signed over, as configured.
    inbound_url: Option<String>,
    /// What Twilio signs its callbacks with.
    auth_token: Option<Secret>,
    client: reqwest::Client,
}

impl TwilioProvider {
    /// Checks the configuration: an alphanumeric account SID, credentials, a sender,
    /// http(s) URLs, the auth token when callbacks are asked for (it verifies
    /// them), and `channels` holding SMS alone. `timeout` bounds each request
    /// from connect to the last byte of the answer.
    pub fn new(
        config: &TwilioConfig,
        channels: &[Channel],
        timeout: Duration,
    ) -> Result<Self, String> {
        if channels != [Channel::Sms] {
            return Err("Twilio sends SMS only: set channels = [\"sms\"]".into());
        }
        let sid = config.account_sid.trim();
        if sid.is_empty() || !sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "account_sid `{sid}` must be Twilio's account SID (AC followed by 32 hex digits)"
            ));
        }
        let (username, password) = match (
            &config.api_key_sid,
            &config.api_key_secret,
            &config.auth_token,
        ) {
            (Some(key), Some(secret), _) => (key.clone(), secret.clone()),
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err("api_key_sid and api_key_secret must be set together".into());
            }
            (None, None, Some(token)) => (sid.to_string(), token.clone()),
            (None, None, None) => {
                return Err("needs auth_token (or api_key_sid and api_key_secret)".into());
            }
        };
        if config.from.is_none() && config.messaging_service_sid.is_none() {
            return Err("needs a sender: from or messaging_service_sid".into());
        }
        let mut messages_url = http_url(
            "base_url",
            config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
        )?;
        messages_url
            .path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(["2010-04-01", "Accounts", sid, "Messages.json"]);
        for (key, url) in [
            ("status_callback_url", &config.status_callback_url),
            ("inbound_url", &config.inbound_url),
        ] {
            if let Some(url) = url {
                http_url(key, url)?;
                if config.auth_token.is_none() {
                    return Err(format!(
                        "{key} needs auth_token: Twilio signs its callbacks with it"
                    ));
                }
            }
        }
        Ok(TwilioProvider {
            messages_url,
            username,
            password,
            from: config.from.clone(),
            messaging_service_sid: config.messaging_service_sid.clone(),
            status_callback: config.status_callback_url.clone(),
            inbound_url: config.inbound_url.clone(),
            auth_token: config.auth_token.clone(),
            client: http_client(timeout)?,
        })
    }

    fn form(&self, message: &Message) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("To", &message.to);
        if let Some(from) = &self.from {
            form.append_pair("From", from);
        }
        if let Some(sid) = &self.messaging_service_sid {
            form.append_pair("MessagingServiceSid", sid);
        }
        form.append_pair("Body", &message.body);
        if let Some(url) = &self.status_callback {
            form.append_pair("StatusCallback", url);
        }
        form.finish()
    }
}

fn http_url(key: &str, value: &str) -> Result<reqwest::Url, String> {
    crate::domain::HttpUrl::parse(value)
        .map(|url| url.url().clone())
        .map_err(|e| format!("{key} {e}"))
}

/// The part of Twilio's answer to a created message that Herald keeps.
#[derive(Deserialize)]
struct Created {
    sid: Option<String>,
}

/// Twilio's error answer: `{"code": 21211, "message": "…", "more_info": "…", "status": 400}`.
#[derive(Deserialize)]
struct Refusal {
    code: Option<u32>,
    message: Option<String>,
}

#[async_trait]
impl Provider for TwilioProvider {
    async fn send(&self, message: &Message) -> Result<Receipt, Error> {
        let request = self
            .client
            .post(self.messages_url.clone())
            .basic_auth(&self.username, Some(self.password.expose()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(self.form(message));
        let answer = exchange(request, "Twilio").await?;
        if !answer.status.is_success() {
            return Err(classify(
                answer.status.as_u16(),
                answer.retry_after,
                &answer.body,
            ));
        }
        // A 2xx means Twilio took the message: even without a readable sid, trying
        // again would send it twice.
        Ok(Receipt {
            provider_message_id: serde_json::from_slice::<Created>(&answer.body)
                .ok()
                .and_then(|created| created.sid),
            segment_ids: Vec::new(),
        })
    }

    /// A status callback: form parameters signed in `X-Twilio-Signature` over the
    /// configured `status_callback_url`. Intermediate statuses carry no report.
    fn read_receipts(&self, request: &ReceiptRequest<'_>) -> Result<Receipts, ReceiptError> {
        let (Some(url), Some(token)) = (&self.status_callback, &self.auth_token) else {
            return Err(ReceiptError::NotTaken(
                "set status_callback_url (and auth_token) on this provider to take Twilio's status callbacks"
                    .into(),
            ));
        };
        let params = signed_params(request, token, url, "status_callback_url")?;
        let report = parse_twilio_callback(&params).map_err(|message| {
            let field = ["MessageSid", "MessageStatus"]
                .into_iter()
                .find(|f| message.contains(f))
                .map(str::to_string);
            ReceiptError::Malformed { field, message }
        })?;
        Ok(Receipts {
            reports: report.into_iter().collect(),
            answer: ReceiptAnswer::Empty,
        })
    }

    /// An incoming message: form parameters (`From`, `To`, `Body`, `MessageSid`)
    /// signed in `X-Twilio-Signature` over the configured `inbound_url`, as status
    /// callbacks are. Answered with empty TwiML: Herald sends no reply of its own
    /// in the answer (an auto-reply goes as a message of its own).
    fn read_inbound(&self, request: &ReceiptRequest<'_>) -> Result<Inbound, ReceiptError> {
        let (Some(url), Some(token)) = (&self.inbound_url, &self.auth_token) else {
            return Err(ReceiptError::NotTaken(
                "set inbound_url (and auth_token) on this provider to take Twilio's incoming messages"
                    .into(),
            ));
        };
        let params = signed_params(request, token, url, "inbound_url")?;
        let reply = parse_twilio_incoming(&params).map_err(|message| {
            let field = ["MessageSid", "From", "Body"]
                .into_iter()
                .find(|f| message.contains(f))
                .map(str::to_string);
            ReceiptError::Malformed { field, message }
        })?;
        Ok(Inbound {
            replies: vec![reply],
            answer: ReceiptAnswer::Xml(EMPTY_TWIML),
        })
    }

    fn receipt_names_the_recipient(&self, code: &str) -> bool {
        code_names_the_recipient(code)
    }
}

/// What answers an incoming message without replying to it.
const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

/// A callback's form parameters, once its `X-Twilio-Signature` is found to be
/// Twilio's over `url` (the setting `key`, named when it is not).
fn signed_params(
    request: &ReceiptRequest<'_>,
    token: &Secret,
    url: &str,
    key: &str,
) -> Result<Vec<(String, String)>, ReceiptError> {
    let params: Vec<(String, String)> = form_urlencoded::parse(request.body).into_owned().collect();
    let signature = request
        .headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ReceiptError::Unauthorized(format!("no {SIGNATURE_HEADER} header")))?;
    if !verify_twilio_signature(token.expose(), url, &params, signature) {
        return Err(ReceiptError::Unauthorized(format!(
            "{SIGNATURE_HEADER} does not match the body and {key} `{url}`"
        )));
    }
    Ok(params)
}

/// Reads an incoming message's form parameters: `MessageSid` (the key), `From`
/// (E.164), `To` and `Body` (may be empty, for a picture alone).
pub fn parse_twilio_incoming(params: &[(String, String)]) -> Result<InboundReply, String> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let sid = get("MessageSid")
        .or_else(|| get("SmsMessageSid"))
        .map(str::trim)
        .filter(|sid| !sid.is_empty())
        .ok_or("a Twilio incoming message must have MessageSid")?;
    let from = get("From")
        .map(str::trim)
        .filter(|from| from.starts_with('+'))
        .ok_or("a Twilio incoming message must have From, an E.164 number")?;
    Ok(InboundReply {
        key: sid.to_string(),
        from: from.to_string(),
        to: get("To").map(str::trim).map(str::to_string),
        body: get("Body").unwrap_or_default().to_string(),
        // Twilio's incoming messages carry no time of their own.
        at_ms: None,
    })
}

/// What a Twilio error code says about retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Too many requests: wait and try again.
    Throttled,
    /// The recipient cannot get SMS (invalid, not mobile, opted out): suppress it.
    Recipient,
    /// The account or sender cannot send this: no retry, the recipient is fine.
    Refused,
}

/// Twilio's documented codes that Herald treats specially; other codes are
/// classified by their HTTP status.
fn class_of(code: u32) -> Option<Class> {
    match code {
        20429 => Some(Class::Throttled),
        // 21211 invalid 'To' number, 21610 recipient replied STOP, 21614 'To' is not
        // a mobile number, 21635 'To' is a landline, 30005 unknown handset, 30006
        // landline or unreachable carrier. (30003, an unreachable handset, is often
        // a phone switched off: not a reason to stop writing to the number.)
        21211 | 21610 | 21614 | 21635 | 30005 | 30006 => Some(Class::Recipient),
        // 20003 authentication, 21408 region not enabled, 21606 / 21659 'From' not a
        // usable Twilio sender, 21612 this 'To' and 'From' combination cannot be
        // routed (another sender may reach the number).
        20003 | 21408 | 21606 | 21612 | 21659 => Some(Class::Refused),
        _ => None,
    }
}

/// Whether a Twilio error code (as in a status callback's `ErrorCode`) means the
/// number itself cannot receive SMS, so that it should be suppressed.
pub fn code_names_the_recipient(code: &str) -> bool {
    code.trim()
        .parse()
        .is_ok_and(|code| class_of(code) == Some(Class::Recipient))
}

/// Classifies a non-2xx answer by Twilio's error code, else by its HTTP status.
/// Throttling, by code or by status 429, is an [`Error::throttled`].
fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Error {
    let Some(Refusal {
        code: Some(code),
        message,
    }) = serde_json::from_slice(body).ok()
    else {
        // Not Twilio's JSON (a proxy's error page, say): the status alone decides.
        return match classify_status(status, retry_after, body) {
            Error::Transient {
                reason,
                retry_after,
            } if status == 429 => Error::throttled(reason, retry_after),
            error => error,
        };
    };
    let reason = format!(
        "Twilio error {code}: {} (HTTP {status})",
        message.as_deref().unwrap_or("no message").trim()
    );
    match class_of(code) {
        Some(Class::Throttled) => Error::throttled(reason, retry_after),
        _ if status == 429 => Error::throttled(reason, retry_after),
        Some(Class::Recipient) => Error::Undeliverable { reason },
        Some(Class::Refused) => Error::Permanent { reason },
        None => match classify_status(status, retry_after, b"") {
            Error::Transient { retry_after, .. } => Error::Transient {
                reason,
                retry_after,
            },
            _ => Error::Permanent { reason },
        },
    }
}

/// Whether `header` (the [`SIGNATURE_HEADER`] value) is Twilio's signature of a
/// callback: base64 of HMAC-SHA1, keyed with the account's auth token, over
/// `full_url` followed by every form parameter's name and value, sorted by name.
/// `full_url` must be the URL exactly as Twilio called it (scheme, host, path and
/// query) — the configured `status_callback_url`, not what a proxy passed on.
/// Compares in constant time.
pub fn verify_twilio_signature(
    auth_token: &str,
    full_url: &str,
    params: &[(String, String)],
    header: &str,
) -> bool {
    let Ok(signature) = BASE64.decode(header.trim()) else {
        return false;
    };
    twilio_mac(auth_token, full_url, params)
        .verify_slice(&signature)
        .is_ok()
}

fn twilio_mac(auth_token: &str, full_url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // By name, then by value for a repeated name: Twilio's order for both.
    sorted.sort();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(full_url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Reads a Twilio status callback's form parameters. Only `delivered`,
/// `undelivered` and `failed` are final and give a report (`failed`/`undelivered`
/// with Twilio's `ErrorCode`); the intermediate statuses (`queued`, `sending`,
/// `sent`, …) give `Ok(None)`: answer them 200 and wait for the final one. An
/// error means the parameters are not a status callback at all.
pub fn parse_twilio_callback(
    params: &[(String, String)],
) -> Result<Option<DeliveryReport>, String> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    };
    let sid = get("MessageSid")
        .or_else(|| get("SmsSid"))
        .ok_or("a Twilio status callback must have MessageSid")?;
    let status = get("MessageStatus")
        .or_else(|| get("SmsStatus"))
        .ok_or("a Twilio status callback must have MessageStatus")?;
    let delivered = match status {
        "delivered" => true,
        "undelivered" | "failed" => false,
        _ => return Ok(None),
    };
    Ok(Some(DeliveryReport {
        provider_message_id: sid.to_string(),
        to: get("To").map(str::to_string),
        delivered,
        code: get("ErrorCode").map(str::to_string),
        // Twilio's status callbacks carry no time of the event.
        at_ms: None,
    }))
}

#[cfg(test)]
mod tests;
