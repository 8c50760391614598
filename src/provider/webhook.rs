//! The webhook provider: POSTs each message as JSON to a configured URL, with the
//! message id as `Idempotency-Key` and, when a secret is set, an HMAC-SHA256 of the
//! body in `X-Herald-Signature: sha256=<hex>`. Any 2xx means sent; a 4xx whose JSON
//! body is `{"error": "invalid_recipient", …}` fails the message and suppresses its
//! recipient, other answers are classified by [`classify_status`]. The receiver
//! reports delivery back with receipts signed the same way
//! ([`verify_webhook_signature`], [`parse_webhook_receipts`]).

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{
    DeliveryReport, Error, Inbound, Message, Provider, Receipt, ReceiptAnswer, ReceiptError,
    ReceiptRequest, Receipts, classify_status, exchange, http_client, inbound,
};
use crate::domain::Secret;
use crate::domain::{HttpUrl, ProviderTemplate};

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "X-Herald-Signature";

/// POSTs each message as JSON to one URL, signed when a secret is set.
pub struct WebhookProvider {
    url: reqwest::Url,
    secret: Option<Secret>,
    client: reqwest::Client,
}

#[derive(Serialize)]
struct Payload<'a> {
    id: &'a str,
    batch_id: String,
    #[serde(rename = "ref")]
    reference: Option<&'a str>,
    channel: &'a str,
    to: &'a str,
    subject: Option<&'a str>,
    body: &'a str,
    /// For receivers that render a stored template themselves: the recipient's
    /// vars and the template's code and sign name at this provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    vars: Option<&'a serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<&'a ProviderTemplate>,
}

impl WebhookProvider {
    /// `timeout` bounds each request from connect to the last byte of the answer.
    pub fn new(url: &str, secret: Option<Secret>, timeout: Duration) -> Result<Self, String> {
        let url = HttpUrl::parse(url).map_err(|e| format!("url {e}"))?;
        Ok(WebhookProvider {
            url: url.url().clone(),
            secret,
            client: http_client(timeout)?,
        })
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, the value of [`SIGNATURE_HEADER`].
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

fn mac(secret: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac
}

#[async_trait]
impl Provider for WebhookProvider {
    async fn send(&self, message: &Message) -> Result<Receipt, Error> {
        let body = serde_json::to_vec(&Payload {
            id: &message.id,
            batch_id: message.batch_id.to_string(),
            reference: message.reference.as_deref(),
            channel: message.channel.as_str(),
            to: &message.to,
            subject: message.subject.as_deref(),
            body: &message.body,
            vars: message.vars.as_deref(),
            template: message.template.as_ref(),
        })
        .expect("a payload of strings always serializes");
        let mut request = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("idempotency-key", &message.id);
        if let Some(secret) = &self.secret {
            request = request.header(
                SIGNATURE_HEADER,
                signature(secret.expose().as_bytes(), &body),
            );
        }
        let answer = exchange(request.body(body), "webhook").await?;
        let bytes = answer.body;
        if !answer.status.is_success() {
            return Err(
                match classify_status(answer.status.as_u16(), answer.retry_after, &bytes) {
                    Error::Permanent { reason } if names_the_recipient(&bytes) => {
                        Error::Undeliverable { reason }
                    }
                    error => error,
                },
            );
        }
        // Without an id of the receiver's, Herald's own names the message: the
        // receiver's delivery receipts can then use it.
        Ok(Receipt {
            provider_message_id: response_id(&bytes).or_else(|| Some(message.id.clone())),
            segment_ids: Vec::new(),
        })
    }

    /// Receipts signed like the sends: `X-Herald-Signature` over the raw body,
    /// with the provider's `secret` (required: unsigned receipts are refused).
    fn read_receipts(&self, request: &ReceiptRequest<'_>) -> Result<Receipts, ReceiptError> {
        self.check_signed(request, "receipts")?;
        Ok(Receipts {
            reports: parse_webhook_receipts(request.body).map_err(receipt_field)?,
            answer: ReceiptAnswer::Tally,
        })
    }

    /// Replies signed like the receipts, with the provider's `secret` (required).
    fn read_inbound(&self, request: &ReceiptRequest<'_>) -> Result<Inbound, ReceiptError> {
        self.check_signed(request, "replies")?;
        Ok(Inbound {
            replies: inbound::parse_webhook_replies(request.body).map_err(|message| {
                ReceiptError::Malformed {
                    field: inbound::field_of(&message),
                    message,
                }
            })?,
            answer: ReceiptAnswer::Tally,
        })
    }

    fn receipt_names_the_recipient(&self, code: &str) -> bool {
        code == INVALID_RECIPIENT
    }
}

impl WebhookProvider {
    /// Checks that a request of the receiver (its `what`) is signed with the
    /// provider's secret, which it needs to take them.
    fn check_signed(&self, request: &ReceiptRequest<'_>, what: &str) -> Result<(), ReceiptError> {
        let Some(secret) = &self.secret else {
            return Err(ReceiptError::NotTaken(format!(
                "set `secret` on this provider to take its {what}: they must be signed"
            )));
        };
        let signature = request
            .headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ReceiptError::Unauthorized(format!("no {SIGNATURE_HEADER} header")))?;
        if !verify_webhook_signature(secret.expose().as_bytes(), request.body, signature) {
            return Err(ReceiptError::Unauthorized(format!(
                "{SIGNATURE_HEADER} is not the body's HMAC-SHA256 with the provider's secret"
            )));
        }
        Ok(())
    }
}

/// A receipt parse error with the field it names: `receipts[i].field` for one of
/// an array, `field` for a lone one.
fn receipt_field(message: String) -> ReceiptError {
    let (index, rest) = match message.strip_prefix("receipt ") {
        Some(rest) => match rest.split_once(": ") {
            Some((i, rest)) => (Some(i), rest),
            None => (None, message.as_str()),
        },
        None => (None, message.as_str()),
    };
    let name = ["id", "status", "code", "at", "to"]
        .into_iter()
        .find(|name| {
            rest.contains(&format!("`{name}`")) || rest.contains(&format!("field `{name}`"))
        });
    let field = match (index, name) {
        (Some(i), Some(name)) => Some(format!("receipts[{i}].{name}")),
        (Some(i), None) => Some(format!("receipts[{i}]")),
        (None, name) => name.map(str::to_string),
    };
    ReceiptError::Malformed { field, message }
}

/// Whether a refusal's JSON body says the recipient cannot receive messages:
/// `{"error": "invalid_recipient"}`.
fn names_the_recipient(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("error").and_then(|e| e.as_str()) == Some(INVALID_RECIPIENT))
}

/// The `error` of a webhook's 4xx answer that marks the recipient undeliverable.
pub const INVALID_RECIPIENT: &str = "invalid_recipient";

/// The `id` (or `message_id`) of a JSON answer, if it has one.
fn response_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.get("id").or_else(|| value.get("message_id"))? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether `header` is [`signature`]`(secret, body)`: how a webhook receiver's
/// delivery receipts (`POST /v1/receipts/{name}`) prove they come from it. Compares
/// the MAC in constant time; a header not of the form `sha256=<hex>` is false.
pub fn verify_webhook_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(Ok(expected)) = header.trim().strip_prefix("sha256=").map(hex::decode) else {
        return false;
    };
    mac(secret, body).verify_slice(&expected).is_ok()
}

/// One delivery receipt from a webhook receiver.
#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(rename = "WebhookReceipt")]
pub(crate) struct WireReceipt {
    /// The `id` the receiver's answer to the send gave, else Herald's message id
    /// (the `id` Herald posted): whatever Herald recorded as the provider's id.
    id: String,
    status: WireStatus,
    /// The receiver's status code, a string or a number; `invalid_recipient` on an
    /// undelivered one suppresses the address.
    #[serde(default)]
    #[schemars(extend("type" = ["string", "number", "null"]))]
    code: Option<serde_json::Value>,
    /// RFC 3339, e.g. `2025-06-01T08:30:00Z`.
    #[serde(default)]
    #[schemars(extend("format" = "date-time"))]
    at: Option<String>,
    /// The recipient, when several messages share the id.
    #[serde(default)]
    to: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
enum WireStatus {
    Delivered,
    Undelivered,
}

/// Parses a webhook receiver's delivery receipts: one JSON object or an array of
/// them, each `{"id": "…", "status": "delivered" | "undelivered", "code": "…",
/// "at": "<RFC 3339>", "to": "…"}` with `code`, `at` and `to` optional. The error
/// names the receipt (by index, in an array) and the field that is wrong.
pub fn parse_webhook_receipts(body: &[u8]) -> Result<Vec<DeliveryReport>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| receipt(item).map_err(|e| format!("receipt {i}: {e}")))
            .collect(),
        item @ serde_json::Value::Object(_) => Ok(vec![receipt(item)?]),
        _ => Err("the body must be a receipt object or an array of receipts".into()),
    }
}

fn receipt(item: serde_json::Value) -> Result<DeliveryReport, String> {
    let wire: WireReceipt = serde_path_to_error::deserialize(item).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("`{path}`: {}", e.inner())
        }
    })?;
    if wire.id.trim().is_empty() {
        return Err("`id` must not be empty".into());
    }
    let code = match wire.code {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(code)) => Some(code),
        Some(serde_json::Value::Number(code)) => Some(code.to_string()),
        Some(other) => return Err(format!("`code` must be a string or a number, not {other}")),
    };
    let at_ms = match wire.at {
        None => None,
        Some(at) => Some(
            at.parse::<jiff::Timestamp>()
                .map_err(|e| format!("`at` {at:?} is not an RFC 3339 time: {e}"))?
                .as_millisecond(),
        ),
    };
    Ok(DeliveryReport {
        provider_message_id: wire.id,
        to: wire.to,
        delivered: matches!(wire.status, WireStatus::Delivered),
        code,
        at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac_sha256_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_a_refusal_naming_the_recipient_marks_it_undeliverable() {
        assert!(names_the_recipient(
            br#"{"error":"invalid_recipient","detail":"no such number"}"#
        ));
        assert!(!names_the_recipient(br#"{"error":"bad_request"}"#));
        assert!(!names_the_recipient(b"invalid_recipient"));
    }

    #[test]
    fn response_ids_come_from_id_or_message_id() {
        assert_eq!(response_id(br#"{"id":"abc"}"#).as_deref(), Some("abc"));
        assert_eq!(response_id(br#"{"message_id":42}"#).as_deref(), Some("42"));
        assert_eq!(response_id(b"ok"), None);
    }

    #[test]
    fn a_receipt_signature_verifies_only_for_its_secret_and_body() {
        let body = br#"{"id":"p-1","status":"delivered"}"#;
        let header = signature(b"s3cret", body);
        assert!(verify_webhook_signature(b"s3cret", body, &header));
        assert!(verify_webhook_signature(
            b"s3cret",
            body,
            &format!(" {header} ")
        ));
        assert!(!verify_webhook_signature(b"other", body, &header));
        assert!(!verify_webhook_signature(b"s3cret", b"{}", &header));
        assert!(!verify_webhook_signature(
            b"s3cret",
            body,
            header.trim_start_matches("sha256=")
        ));
        assert!(!verify_webhook_signature(b"s3cret", body, "sha256=zz"));
        assert!(!verify_webhook_signature(
            b"s3cret",
            body,
            &header[..header.len() - 2]
        ));
    }

    #[test]
    fn receipts_come_as_one_object_or_an_array() {
        let one = parse_webhook_receipts(
            br#"{"id":"p-1","status":"delivered","at":"2025-06-01T08:30:00Z","to":"+8613800000000"}"#,
        )
        .unwrap();
        assert_eq!(
            one,
            [DeliveryReport {
                provider_message_id: "p-1".into(),
                to: Some("+8613800000000".into()),
                delivered: true,
                code: None,
                at_ms: Some(1_748_766_600_000),
            }]
        );
        let many = parse_webhook_receipts(
            br#"[{"id":"p-1","status":"delivered"},
                 {"id":"p-2","status":"undelivered","code":"UNKNOWN_SUBSCRIBER","at":"2025-06-01T16:30:00+08:00"},
                 {"id":"p-3","status":"undelivered","code":404}]"#,
        )
        .unwrap();
        assert_eq!(many.len(), 3);
        assert!(many[0].delivered);
        assert!(!many[1].delivered);
        assert_eq!(many[1].code.as_deref(), Some("UNKNOWN_SUBSCRIBER"));
        assert_eq!(many[1].at_ms, Some(1_748_766_600_000));
        assert_eq!(many[2].code.as_deref(), Some("404"));
        assert_eq!(parse_webhook_receipts(b"[]").unwrap(), []);
    }

    #[test]
    fn a_wrong_receipt_is_named_with_its_field() {
        let err = |body: &[u8]| parse_webhook_receipts(body).unwrap_err();
        assert!(err(b"delivered").starts_with("the body is not JSON"));
        assert!(err(b"\"p-1\"").contains("object or an array"));
        let e = err(br#"[{"id":"p-1","status":"delivered"},{"id":"p-2","status":"sent"}]"#);
        assert!(
            e.starts_with("receipt 1: ") && e.contains("unknown variant `sent`"),
            "{e}"
        );
        assert!(err(br#"{"status":"delivered"}"#).contains("missing field `id`"));
        assert!(err(br#"{"id":" ","status":"delivered"}"#).contains("`id` must not be empty"));
        let e = err(br#"{"id":"p-1","status":"delivered","at":"yesterday"}"#);
        assert!(
            e.contains("`at` \"yesterday\" is not an RFC 3339 time"),
            "{e}"
        );
        let e = err(br#"{"id":"p-1","status":"undelivered","code":["x"]}"#);
        assert!(e.contains("`code` must be a string or a number"), "{e}");
    }
}
