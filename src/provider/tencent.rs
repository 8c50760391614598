//! Tencent Cloud SMS: `SendSms` of API version 2021-01-11, which sends only templates
//! approved in the Tencent Cloud console, signed with TC3-HMAC-SHA256.
//!
//! Tencent templates take positional parameters `{1}`, `{2}`, …: they are filled
//! from the recipient's variables named `"1"`, `"2"`, … (other variables are left
//! out). `send_many` puts messages of one batch with one template, sign and
//! parameters in one request of up to 200 numbers, mainland China and other numbers
//! apart as Tencent requires, and reads the answer per number. Each request carries
//! its batch id as `SessionContext`, which Tencent hands back in its status
//! records, so that `query` (`PullSmsSendStatusByPhoneNumber`) can find an attempt
//! whose outcome was unknown.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Answer;
use super::call::{self, BALANCE_WAIT, Outcomes, THROTTLE_WAIT};
use super::{
    Error, Inbound, Lookup, Message, Provider, Receipt, ReceiptError, ReceiptRequest, Receipts,
    http_client, inbound, receipt,
};
use crate::domain::Channel;
use crate::domain::Secret;

/// The most numbers one `SendSms` request takes.
const NUMBERS_PER_REQUEST: usize = 200;
/// The most messages one `send_many` takes: one full request, so that claims,
/// sized by it, make full requests.
const BATCH_LIMIT: usize = NUMBERS_PER_REQUEST;
const VERSION: &str = "2021-01-11";
const SERVICE: &str = "sms";
const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// `kind = "tencent"` in `[[providers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TencentConfig {
    /// The API key's `SecretId` requests are signed as.
    pub secret_id: String,
    /// The API key's `SecretKey` requests are signed with.
    pub secret_key: Secret,
    /// The SMS application's `SmsSdkAppId`, e.g. `"1400006666"`.
    pub sdk_app_id: String,
    /// The sign used when the stored template gives none (required for mainland
    /// China numbers).
    #[serde(default)]
    pub sign_name: Option<String>,
    /// The region sent as `X-TC-Region`; default `ap-guangzhou`.
    #[serde(default = "default_region")]
    pub region: String,
    /// The API's base URL; tests point it at a local server.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
}

fn default_region() -> String {
    "ap-guangzhou".into()
}

fn default_endpoint() -> String {
    "https://sms.tencentcloudapi.com".into()
}

/// Sends SMS templates through one Tencent Cloud SMS application, many numbers
/// per request.
pub struct TencentProvider {
    name: String,
    config: TencentConfig,
    url: reqwest::Url,
    /// The `Host` the request carries, which the signature covers.
    host: String,
    client: reqwest::Client,
}

impl TencentProvider {
    /// `name` is the provider's configured name, quoted in errors; `timeout` bounds
    /// each request.
    pub fn new(
        name: &str,
        config: &TencentConfig,
        channels: &[Channel],
        timeout: Duration,
    ) -> Result<Self, String> {
        call::sms_only("tencent", channels)?;
        let url = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| format!("endpoint `{}` is not a URL: {e}", config.endpoint))?;
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(format!("endpoint `{}` has no host", config.endpoint)),
        };
        if config.secret_id.is_empty() || config.secret_key.expose().is_empty() {
            return Err("secret_id and secret_key must not be empty".into());
        }
        Ok(TencentProvider {
            name: name.to_string(),
            config: config.clone(),
            url,
            host,
            client: http_client(timeout)?,
        })
    }

    fn prepare<'a>(&'a self, message: &'a Message) -> Result<Prepared<'a>, Error> {
        let template_id = call::template_code(message, &self.name)?;
        call::e164_digits(&message.to)?;
        Ok(Prepared {
            key: Key {
                batch: message.batch_id.to_string(),
                mainland: message.to.starts_with("+86"),
                template_id,
                sign: call::sign_name(message, self.config.sign_name.as_deref()),
                params: template_params(message.vars.as_deref())?,
            },
            number: &message.to,
        })
    }

    /// Makes one request for the messages at `indices` and answers for each.
    async fn run(&self, key: &Key<'_>, indices: &[usize], messages: &[Message]) -> Outcomes {
        let numbers: Vec<&str> = indices.iter().map(|&i| messages[i].to.as_str()).collect();
        let request = SendSms {
            phone_number_set: &numbers,
            sms_sdk_app_id: &self.config.sdk_app_id,
            template_id: key.template_id,
            sign_name: key.sign,
            template_param_set: &key.params,
            session_context: &key.batch,
        };
        let body = serde_json::to_vec(&request).expect("a request of strings serializes");
        let answered = match self.call("SendSms", body).await {
            Ok(answer) => read_answer(&answer, jiff::Timestamp::now()),
            Err(error) => Err(error),
        };
        match answered {
            Ok(mut statuses) => indices
                .iter()
                .map(|&i| {
                    let result = match statuses.remove(messages[i].to.as_str()) {
                        Some(status) => status,
                        None => Err(Error::Transient {
                            reason: "tencent answered without a status for this number".into(),
                            retry_after: None,
                        }),
                    };
                    (i, result)
                })
                .collect(),
            Err(error) => indices.iter().map(|&i| (i, Err(error.clone()))).collect(),
        }
    }

    /// Signs and makes one request of `action` with the JSON `body`.
    async fn call(&self, action: &str, body: Vec<u8>) -> Result<Answer, Error> {
        let timestamp = jiff::Timestamp::now().as_second();
        let authorization = authorization(
            &self.config.secret_id,
            self.config.secret_key.expose(),
            SERVICE,
            timestamp,
            &[
                ("content-type", CONTENT_TYPE),
                ("host", &self.host),
                ("x-tc-action", action),
            ],
            &body,
        );
        let request = self
            .client
            .post(self.url.clone())
            .header("authorization", authorization)
            .header("content-type", CONTENT_TYPE)
            .header("x-tc-action", action)
            .header("x-tc-version", VERSION)
            .header("x-tc-timestamp", timestamp.to_string())
            .header("x-tc-region", &self.config.region)
            .body(body);
        super::exchange(request, "tencent").await
    }
}

#[async_trait]
impl Provider for TencentProvider {
    async fn send(&self, message: &Message) -> Result<Receipt, Error> {
        call::send_one(self, message).await
    }

    /// Pulls the number's status records since the unknown attempt
    /// (`PullSmsSendStatusByPhoneNumber`): one whose `SessionContext` is the
    /// message's batch means the attempt reached Tencent, with its `SerialNo`.
    /// Tencent lists a message only once its status report is back, so finding
    /// none cannot tell.
    async fn query(&self, message: &Message, since_ms: i64) -> Lookup {
        let now = jiff::Timestamp::now().as_second();
        // A minute early: the two clocks need not agree to the second.
        let begin = (since_ms / 1000 - 60).max(now - PULL_WINDOW_SECS);
        let request = PullStatus {
            begin_time: begin,
            end_time: now,
            offset: 0,
            limit: PULL_LIMIT,
            phone_number: &message.to,
            sms_sdk_app_id: &self.config.sdk_app_id,
        };
        let body = serde_json::to_vec(&request).expect("a request of strings serializes");
        let answer = match self.call("PullSmsSendStatusByPhoneNumber", body).await {
            Ok(answer) => answer,
            Err(e) => return Lookup::CannotTell(e.to_string()),
        };
        let Ok(Envelope { response }) = serde_json::from_slice::<Envelope<Pulled>>(&answer.body)
        else {
            return Lookup::CannotTell(answer.unexplained().to_string());
        };
        if let Some(refusal) = response.error {
            return Lookup::CannotTell(call::reason("tencent", &refusal.code, &refusal.message));
        }
        let batch = message.batch_id.to_string();
        match response
            .pull_sms_send_status_set
            .into_iter()
            .find(|s| s.session_context.as_deref() == Some(batch.as_str()))
        {
            Some(status) => Lookup::Sent {
                provider_message_id: Some(status.serial_no).filter(|id| !id.is_empty()),
            },
            None => Lookup::CannotTell(
                "no status record yet: Tencent lists a message once its status report is back"
                    .into(),
            ),
        }
    }

    fn batch_limit(&self) -> usize {
        BATCH_LIMIT
    }

    /// Tencent Cloud's status callback (a JSON array, unsigned).
    fn read_receipts(&self, request: &ReceiptRequest<'_>) -> Result<Receipts, ReceiptError> {
        receipt::read_pushed(request, receipt::parse_tencent, receipt::TENCENT_ANSWER)
    }

    /// Tencent Cloud's reply callback (a JSON object, unsigned, as its receipts).
    fn read_inbound(&self, request: &ReceiptRequest<'_>) -> Result<Inbound, ReceiptError> {
        receipt::read_pushed_replies(
            request,
            inbound::parse_tencent_reply,
            receipt::TENCENT_ANSWER,
        )
    }

    fn needs_template_code(&self) -> bool {
        true
    }

    async fn send_many(&self, messages: &[Message]) -> Vec<Result<Receipt, Error>> {
        let mut results: Vec<Option<Result<Receipt, Error>>> = vec![None; messages.len()];
        let mut items = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            match self.prepare(message) {
                Ok(p) => items.push((p.key, i, p.number.to_string())),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let requests = call::group(items, NUMBERS_PER_REQUEST);
        // Made first and run later: a stream mapping a closure over borrowed items
        // is not provably `Send` to `async_trait`.
        let runs = requests
            .iter()
            .map(|(key, indices)| self.run(key, indices, messages))
            .collect();
        call::settle(results, runs).await
    }
}

/// What messages must share to share a request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key<'a> {
    /// Sent as `SessionContext`: a request holds one batch's messages.
    batch: String,
    /// Tencent refuses requests that mix mainland China and other numbers.
    mainland: bool,
    template_id: &'a str,
    sign: Option<&'a str>,
    params: Vec<String>,
}

struct Prepared<'a> {
    key: Key<'a>,
    number: &'a str,
}

/// The `SendSms` request body.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendSms<'a> {
    phone_number_set: &'a [&'a str],
    sms_sdk_app_id: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sign_name: Option<&'a str>,
    template_param_set: &'a [String],
    session_context: &'a str,
}

/// Status records pulled per query (Tencent's most).
const PULL_LIMIT: u32 = 100;
/// How far back a pull reaches: Tencent keeps seven days.
const PULL_WINDOW_SECS: i64 = 7 * 24 * 3600;

/// The `PullSmsSendStatusByPhoneNumber` request body.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PullStatus<'a> {
    begin_time: i64,
    end_time: i64,
    offset: u32,
    limit: u32,
    phone_number: &'a str,
    sms_sdk_app_id: &'a str,
}

/// Tencent's answer: `{"Response": {…}}`.
#[derive(Deserialize)]
struct Envelope<T = Reply> {
    #[serde(rename = "Response")]
    response: T,
}

/// The answer to `PullSmsSendStatusByPhoneNumber`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Pulled {
    error: Option<Refusal>,
    #[serde(default)]
    pull_sms_send_status_set: Vec<PulledStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PulledStatus {
    #[serde(default)]
    serial_no: String,
    #[serde(default)]
    session_context: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Reply {
    error: Option<Refusal>,
    #[serde(default)]
    send_status_set: Vec<SendStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Refusal {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendStatus {
    serial_no: String,
    phone_number: String,
    code: String,
    #[serde(default)]
    message: String,
}

/// Reads an answer: the outcome for each number, or the error of the whole request
/// (`Response.Error`, or an answer that is not Tencent's).
fn read_answer(
    answer: &Answer,
    now: jiff::Timestamp,
) -> Result<HashMap<String, Result<Receipt, Error>>, Error> {
    let Ok(Envelope { response }) = serde_json::from_slice::<Envelope>(&answer.body) else {
        return Err(answer.unexplained());
    };
    if let Some(refusal) = response.error {
        if answer.status.is_server_error() {
            return Err(Error::Transient {
                reason: call::reason("tencent", &refusal.code, &refusal.message),
                retry_after: answer.retry_after,
            });
        }
        return Err(classify(&refusal.code, &refusal.message, now));
    }
    if !answer.status.is_success() {
        return Err(answer.unexplained());
    }
    Ok(response
        .send_status_set
        .into_iter()
        .map(|s| {
            let outcome = if s.code == "Ok" {
                Ok(Receipt {
                    provider_message_id: Some(s.serial_no).filter(|id| !id.is_empty()),
                    segment_ids: Vec::new(),
                })
            } else {
                Err(classify(&s.code, &s.message, now))
            };
            (s.phone_number, outcome)
        })
        .collect())
}

/// Classifies Tencent Cloud's error codes (SMS "Error Codes" page), for a whole
/// request (`Response.Error`) or one number (`SendStatusSet[].Code`).
fn classify(code: &str, message: &str, now: jiff::Timestamp) -> Error {
    let reason = call::reason("tencent", code, message);
    let wait = |d: Duration| Error::Transient {
        reason: reason.clone(),
        retry_after: Some(d),
    };
    let capped = |d: Duration| Error::recipient_capped(&reason, d);
    match code {
        // One number's frequency caps, set in the console's frequency policy.
        "LimitExceeded.PhoneNumberThirtySecondLimit" | "LimitExceeded.DeliveryFrequencyLimit" => {
            capped(Duration::from_secs(30))
        }
        "LimitExceeded.PhoneNumberOneHourLimit" => capped(Duration::from_secs(3600)),
        "LimitExceeded.PhoneNumberDailyLimit"
        | "LimitExceeded.PhoneNumberSameContentDailyLimit" => {
            capped(call::until_midnight_in_china(now))
        }
        // Daily quotas of the whole application.
        "LimitExceeded.AppDailyLimit"
        | "LimitExceeded.AppMainlandChinaDailyLimit"
        | "LimitExceeded.AppGlobalDailyLimit"
        | "LimitExceeded.AppCountryOrRegionDailyLimit"
        | "LimitExceeded.DailyLimit" => {
            Error::throttled(reason, Some(call::until_midnight_in_china(now)))
        }
        c if c.starts_with("RequestLimitExceeded") => Error::throttled(reason, Some(THROTTLE_WAIT)),
        // A malformed number, or one on the do-not-disturb list (the user
        // unsubscribed, or the carrier's list).
        "InvalidParameterValue.IncorrectPhoneNumber" | "FailedOperation.PhoneNumberInBlacklist" => {
            Error::Undeliverable { reason }
        }
        "FailedOperation.InsufficientBalanceInSmsPackage"
        | "UnauthorizedOperation.ServiceSuspendDueToArrears" => wait(BALANCE_WAIT),
        c if c.starts_with("InternalError") => Error::Transient {
            reason,
            retry_after: None,
        },
        // Authentication, templates, signs, and requests Herald should not have made
        // (more than 200 numbers, mainland and other numbers mixed).
        _ => Error::Permanent { reason },
    }
}

/// The template parameters of a message: its variables named `1`, `2`, … in order
/// of number; other variables are not parameters. Numbering must not skip.
fn template_params(
    vars: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<Vec<String>, Error> {
    let mut numbered: Vec<(usize, &String, &serde_json::Value)> = vars
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| {
            let n = name
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0 && !name.starts_with('0'))?;
            Some((n, name, value))
        })
        .collect();
    numbered.sort_by_key(|(n, _, _)| *n);
    let mut params = Vec::with_capacity(numbered.len());
    for (position, (n, name, value)) in numbered.into_iter().enumerate() {
        if n != position + 1 {
            return Err(Error::Permanent {
                reason: format!(
                    "Tencent templates take parameters {{1}}, {{2}}, … in order: variable \
                     `{}` is missing",
                    position + 1
                ),
            });
        }
        params.push(call::param_text(name, value)?);
    }
    Ok(params)
}

/// The canonical request of a `POST /` without a query, and the names of its signed
/// headers: `headers` are the signed headers as sent (name and value, any case and
/// order).
fn canonical_request(headers: &[(&str, &str)], payload: &[u8]) -> (String, String) {
    let mut signed: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_ascii_lowercase()))
        .collect();
    signed.sort();
    let canonical_headers: String = signed
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let signed_headers = signed
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "POST\n/\n\n{canonical_headers}\n{signed_headers}\n{}",
        hex::encode(Sha256::digest(payload))
    );
    (canonical, signed_headers)
}

/// The `Authorization` header of a TC3-HMAC-SHA256 signed `POST /` without a query.
fn authorization(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    timestamp: i64,
    headers: &[(&str, &str)],
    payload: &[u8],
) -> String {
    let (canonical_request, signed_headers) = canonical_request(headers, payload);
    // The date is UTC's, whatever the local time zone.
    let date = jiff::Timestamp::from_second(timestamp)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%d")
        .to_string();
    let scope = format!("{date}/{service}/tc3_request");
    let string_to_sign = format!(
        "TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let key = [date.as_str(), service, "tc3_request"]
        .into_iter()
        .fold(format!("TC3{secret_key}").into_bytes(), |key, part| {
            hmac_sha256(&key, part.as_bytes())
        });
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    format!(
        "TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests;
