//! The webhook provider: POSTs each message as JSON to a configured URL, with the
//! message id as `Idempotency-Key` and, when a secret is set, an HMAC-SHA256 of the
//! body in `X-Herald-Signature: sha256=<hex>`. Any 2xx means sent; a 4xx whose JSON
//! body is `{"error": "invalid_recipient", …}` fails the message and suppresses its
//! recipient, other answers are classified by [`classify_status`].

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::{Error, Message, Provider, Receipt, classify_status, http_client, parse_retry_after};
use crate::config::Secret;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "X-Herald-Signature";

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
}

impl WebhookProvider {
    /// `timeout` bounds each request from connect to the last byte of the answer.
    pub fn new(url: &str, secret: Option<Secret>, timeout: Duration) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("url `{url}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("url `{url}` must be http or https"));
        }
        Ok(WebhookProvider {
            url,
            secret,
            client: http_client(timeout)?,
        })
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, the value of [`SIGNATURE_HEADER`].
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
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
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| Error::Transient {
                reason: format!("webhook request failed: {}", describe(&e)),
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = response.bytes().await.map_err(|e| Error::Transient {
            reason: format!("webhook answer was cut off: {}", describe(&e)),
            retry_after: None,
        })?;
        if !status.is_success() {
            return Err(
                match classify_status(status.as_u16(), retry_after, &bytes) {
                    Error::Permanent { reason } if names_the_recipient(&bytes) => {
                        Error::Undeliverable { reason }
                    }
                    error => error,
                },
            );
        }
        Ok(Receipt {
            provider_message_id: response_id(&bytes),
        })
    }
}

/// What went wrong with a request, in a few words for an error's reason.
pub(super) fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        e.to_string()
    }
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
}
