//! Inbound messages (replies): what an inbound request reads into ([`Inbound`],
//! [`InboundReply`]), the id a reply is stored under ([`reply_id`]), and the parsers
//! of Aliyun's uplink push, Tencent Cloud's reply callback and the webhook
//! provider's replies. The route `POST /v1/inbound/{name}` hands each request to
//! its provider's [`crate::provider::Provider::read_inbound`], which checks it as the
//! provider's receipts are checked ([`super::ReceiptError`]).

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ReceiptAnswer;
use super::call::china_time_ms;
use super::receipt::aliyun_number_to_e164;

/// What an inbound request carries, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub replies: Vec<InboundReply>,
    /// What the provider expects back once they are recorded.
    pub answer: ReceiptAnswer,
}

/// One message a person sent to one of the provider's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundReply {
    /// What makes the reply one of its own at this provider: the provider's id for
    /// it, or, when it gives none (Tencent Cloud), a hash of its fields. A request
    /// posted twice carries the same key, and the reply is stored once.
    pub key: String,
    /// The sender, E.164.
    pub from: String,
    /// The number (or extension code) it was sent to, when the provider says.
    pub to: Option<String>,
    pub body: String,
    /// When the provider says it was sent (ms since the epoch), when it does.
    pub at_ms: Option<i64>,
}

/// The id a reply of provider `provider` (its configured name) with `key` is
/// stored under: `r` and 32 hex digits of a SHA-256 of both, the same whenever the
/// reply is posted again.
pub fn reply_id(provider: &str, key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(provider.as_bytes());
    hash.update([0]);
    hash.update(key.as_bytes());
    format!("r{}", &hex::encode(hash.finalize())[..32])
}

/// One uplink message of Aliyun's `SmsUp` HTTP batch push.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct AliyunUplink {
    phone_number: String,
    content: String,
    send_time: Option<String>,
    dest_code: Option<String>,
    /// A number in older documentation, a string in newer.
    #[schemars(extend("type" = ["string", "integer"]))]
    sequence_id: serde_json::Value,
}

/// Reads Aliyun's `SmsUp` push: a JSON array of `{phone_number, content,
/// send_time, sign_name, dest_code, sequence_id}`, times in China time. The key is
/// `sequence_id`.
pub fn parse_aliyun_uplink(body: &[u8]) -> Result<Vec<InboundReply>, String> {
    let uplinks: Vec<AliyunUplink> = parse_array(body)?;
    uplinks
        .into_iter()
        .enumerate()
        .map(|(i, u)| {
            let key = match u.sequence_id {
                serde_json::Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => {
                    return Err(format!(
                        "not an uplink array (at `[{i}].sequence_id`): a number or a string"
                    ));
                }
            };
            let from = aliyun_number_to_e164(&u.phone_number).ok_or_else(|| {
                format!("not an uplink array (at `[{i}].phone_number`): not a phone number")
            })?;
            Ok(InboundReply {
                key,
                from,
                to: u.dest_code.filter(|c| !c.is_empty()),
                body: u.content,
                at_ms: u.send_time.as_deref().and_then(china_time_ms),
            })
        })
        .collect()
}

/// Tencent Cloud's reply callback: one object (an array of them is read too).
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct TencentReply {
    #[serde(default)]
    extend: Option<String>,
    mobile: String,
    nationcode: String,
    #[serde(default)]
    sign: Option<String>,
    text: String,
    time: i64,
}

/// Reads Tencent Cloud's reply callback `{extend, mobile, nationcode, sign, text,
/// time}` (`time` in Unix seconds). Tencent gives a reply no id: its key is a hash
/// of all its fields, so a callback posted again is the same reply, and two equal
/// texts from one number in the same second are one.
pub fn parse_tencent_reply(body: &[u8]) -> Result<Vec<InboundReply>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        item @ serde_json::Value::Object(_) => vec![item],
        _ => return Err("the body must be a reply object".into()),
    };
    items
        .into_iter()
        .map(|item| {
            let r: TencentReply = serde_path_to_error::deserialize(item)
                .map_err(|e| format!("not a reply callback (at `{}`): {}", e.path(), e.inner()))?;
            let (code, mobile) = (r.nationcode.trim(), r.mobile.trim());
            if !all_digits(code) || !all_digits(mobile) {
                return Err(
                    "not a reply callback (at `mobile`): nationcode and mobile must be digits"
                        .into(),
                );
            }
            let key = hash_of(&[
                code,
                mobile,
                &r.text,
                &r.time.to_string(),
                r.sign.as_deref().unwrap_or(""),
                r.extend.as_deref().unwrap_or(""),
            ]);
            Ok(InboundReply {
                key,
                from: format!("+{code}{mobile}"),
                to: r.extend.filter(|e| !e.is_empty()),
                body: r.text,
                at_ms: r.time.checked_mul(1000),
            })
        })
        .collect()
}

/// One reply a webhook receiver passes on.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "WebhookReply")]
pub(crate) struct WireReply {
    /// The receiver's id for the reply: a reply posted again with the same id is
    /// stored once.
    id: String,
    /// The sender, E.164 (`+8613800138000`).
    from: String,
    /// The number it was sent to, if the receiver says.
    #[serde(default)]
    to: Option<String>,
    /// The text.
    body: String,
    /// When it was sent, RFC 3339.
    #[serde(default)]
    #[schemars(extend("format" = "date-time"))]
    at: Option<String>,
}

/// Reads a webhook receiver's replies: one object `{"id", "from", "to", "body",
/// "at"}` (`to` and `at` optional) or an array of them. The error names the reply
/// (by index) and the field.
pub fn parse_webhook_replies(body: &[u8]) -> Result<Vec<InboundReply>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let (items, single) = match value {
        serde_json::Value::Array(items) => (items, false),
        item @ serde_json::Value::Object(_) => (vec![item], true),
        _ => return Err("the body must be a reply object or an array of replies".into()),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |field: &str| {
                if single {
                    format!("`{field}`")
                } else {
                    format!("`replies[{i}].{field}`")
                }
            };
            let wire: WireReply = serde_path_to_error::deserialize(item)
                .map_err(|e| format!("{}: {}", at(&e.path().to_string()), e.inner()))?;
            if wire.id.trim().is_empty() {
                return Err(format!("{}: must not be empty", at("id")));
            }
            let digits = wire.from.strip_prefix('+').unwrap_or("");
            if !all_digits(digits) {
                return Err(format!(
                    "{}: `{}` is not an E.164 number (+ and digits)",
                    at("from"),
                    wire.from
                ));
            }
            let at_ms = match wire.at {
                None => None,
                Some(text) => Some(
                    text.parse::<jiff::Timestamp>()
                        .map_err(|e| {
                            format!("{}: {text:?} is not an RFC 3339 time: {e}", at("at"))
                        })?
                        .as_millisecond(),
                ),
            };
            Ok(InboundReply {
                key: wire.id,
                from: wire.from,
                to: wire.to,
                body: wire.body,
                at_ms,
            })
        })
        .collect()
}

/// The field a parse error above names: what its message has between backticks.
pub(super) fn field_of(message: &str) -> Option<String> {
    message
        .split_once('`')
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(field, _)| field.to_string())
        .filter(|field| !field.is_empty())
}

fn parse_array<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de)
        .map_err(|e| format!("not an uplink array (at `{}`): {}", e.path(), e.inner()))
}

fn hash_of(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliyun_documented_uplink_sample_is_read() {
        // The sample of Aliyun's SmsUp documentation, with a whole number.
        let body = r#"[
          {
            "phone_number" : "13811112222",
            "send_time" : "2017-09-01 00:00:00",
            "content" : "内容",
            "sign_name" : "签名",
            "dest_code" : "1234",
            "sequence_id" : 1234567890
          }
        ]"#;
        assert_eq!(
            parse_aliyun_uplink(body.as_bytes()).unwrap(),
            vec![InboundReply {
                key: "1234567890".into(),
                from: "+8613811112222".into(),
                to: Some("1234".into()),
                body: "内容".into(),
                // 2017-09-01 00:00 in China is 2017-08-31 16:00 UTC.
                at_ms: Some(1_504_195_200_000),
            }]
        );
    }

    #[test]
    fn aliyun_sequence_ids_may_be_strings() {
        let body =
            br#"[{"phone_number":"13800138000","content":"TD","send_time":"2017-09-01 00:00:00",
            "dest_code":"1234","sequence_id":"99"}]"#;
        assert_eq!(parse_aliyun_uplink(body).unwrap()[0].key, "99");
        let e = parse_aliyun_uplink(br#"[{"phone_number":"1","content":"x"}]"#).unwrap_err();
        assert!(e.contains("sequence_id"), "{e}");
    }

    #[test]
    fn tencent_documented_reply_sample_is_read() {
        let body = r#"{"extend": "", "mobile": "13800138000", "nationcode": "86",
            "sign": "腾讯云", "text": "退订", "time": 1457336869}"#;
        let replies = parse_tencent_reply(body.as_bytes()).unwrap();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].from, "+8613800138000");
        assert_eq!(replies[0].body, "退订");
        assert_eq!(replies[0].to, None);
        assert_eq!(replies[0].at_ms, Some(1_457_336_869_000));
        // The same callback again is the same reply; another second is another.
        assert_eq!(parse_tencent_reply(body.as_bytes()).unwrap(), replies);
        let later = body.replace("1457336869", "1457336870");
        assert_ne!(
            parse_tencent_reply(later.as_bytes()).unwrap()[0].key,
            replies[0].key
        );
    }

    #[test]
    fn tencent_replies_without_a_number_are_refused() {
        let e = parse_tencent_reply(br#"{"nationcode":"86","text":"x","time":1}"#).unwrap_err();
        assert!(e.contains("mobile"), "{e}");
    }

    #[test]
    fn webhook_replies_come_as_one_object_or_an_array() {
        let one = parse_webhook_replies(
            br#"{"id":"in-1","from":"+15551230000","body":"STOP","at":"2025-06-01T08:30:00Z"}"#,
        )
        .unwrap();
        assert_eq!(one[0].key, "in-1");
        assert_eq!(one[0].at_ms, Some(1_748_766_600_000));
        let e = parse_webhook_replies(
            br#"[{"id":"a","from":"+1","body":"x"},{"id":"b","from":"555","body":"y"}]"#,
        )
        .unwrap_err();
        assert!(e.starts_with("`replies[1].from`"), "{e}");
        assert_eq!(field_of(&e).as_deref(), Some("replies[1].from"));
    }

    #[test]
    fn reply_ids_are_stable_and_per_provider() {
        assert_eq!(reply_id("ali", "1"), reply_id("ali", "1"));
        assert_ne!(reply_id("ali", "1"), reply_id("tc", "1"));
        assert_eq!(reply_id("ali", "1").len(), 33);
    }
}
