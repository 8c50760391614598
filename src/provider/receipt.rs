//! Delivery receipts: what a provider's receipt request reads into
//! ([`Receipts`]), why one is refused ([`ReceiptError`]), and the parsers of Aliyun's
//! and Tencent Cloud's pushes. The route `POST /v1/receipts/{name}` hands each
//! request to its provider's [`super::Provider::read_receipts`] and answers Aliyun
//! with [`ALIYUN_ANSWER`] and Tencent with [`TENCENT_ANSWER`].

use serde::Deserialize;

use super::call::china_time_ms;

/// What Aliyun expects back from a receipt push (HTTP 200). Aliyun only checks that
/// `code` is a number; without it, or on another status, it pushes again after 1, 5
/// and 10 minutes.
pub const ALIYUN_ANSWER: &str = r#"{"code":0,"msg":"接收成功"}"#;

/// What Tencent Cloud expects back from a status callback: `result` 0 is success.
pub const TENCENT_ANSWER: &str = r#"{"result":0,"errmsg":"OK"}"#;

pub use crate::domain::DeliveryReport;

/// A delivery-receipt request as it reached Herald.
pub struct ReceiptRequest<'a> {
    /// Where the provider's signature is, for those that sign.
    pub headers: &'a reqwest::header::HeaderMap,
    /// The raw body: signatures cover it byte for byte.
    pub body: &'a [u8],
}

/// What a receipt request says, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipts {
    /// The final reports it carries (none, for an intermediate status).
    pub reports: Vec<DeliveryReport>,
    /// What the provider expects back once they are applied.
    pub answer: ReceiptAnswer,
}

/// The answer a provider expects to a receipt request it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptAnswer {
    /// 200 with this JSON body: Aliyun's and Tencent's acknowledgements.
    Json(&'static str),
    /// 204, no body: Twilio reads only the status.
    Empty,
    /// 200 with this XML body: Twilio's empty TwiML, for an incoming message.
    Xml(&'static str),
    /// 200 with what was done to each report, in counts: for the webhook's receivers.
    Tally,
}

/// Why a receipt request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The provider sends no receipts, or is not configured to have them checked.
    #[error("{0}")]
    NotTaken(String),
    /// The request does not prove it comes from the provider (a missing or wrong
    /// signature).
    #[error("{0}")]
    Unauthorized(String),
    /// The body is not the provider's receipt format; `field` says where.
    #[error("{message}")]
    Malformed {
        field: Option<String>,
        message: String,
    },
}

impl ReceiptError {
    /// A malformed body, the field at fault taken from a parser's error
    /// (`at `path`` in it, when it names one).
    pub fn malformed(message: String) -> ReceiptError {
        let field = message
            .split_once("(at `")
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(path, _)| path.to_string())
            .filter(|path| !path.is_empty());
        ReceiptError::Malformed { field, message }
    }
}

/// Reads a JSON push of Aliyun or Tencent (neither signs it).
pub(super) fn read_pushed(
    request: &ReceiptRequest<'_>,
    parse: fn(&[u8]) -> Result<Vec<DeliveryReport>, String>,
    answer: &'static str,
) -> Result<Receipts, ReceiptError> {
    Ok(Receipts {
        reports: parse(request.body).map_err(ReceiptError::malformed)?,
        answer: ReceiptAnswer::Json(answer),
    })
}

/// Reads a JSON push of replies from Aliyun or Tencent (neither signs it, as
/// neither signs its receipts).
pub(super) fn read_pushed_replies(
    request: &ReceiptRequest<'_>,
    parse: fn(&[u8]) -> Result<Vec<super::InboundReply>, String>,
    answer: &'static str,
) -> Result<super::Inbound, ReceiptError> {
    Ok(super::Inbound {
        replies: parse(request.body).map_err(ReceiptError::malformed)?,
        answer: ReceiptAnswer::Json(answer),
    })
}

/// One report of an Aliyun `SmsReport` push.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct AliyunReport {
    phone_number: Option<String>,
    report_time: Option<String>,
    success: bool,
    err_code: Option<String>,
    biz_id: String,
}

/// Reads an Aliyun `SmsReport` push: a JSON array of reports. Times are China time.
pub fn parse_aliyun(body: &[u8]) -> Result<Vec<DeliveryReport>, String> {
    let reports: Vec<AliyunReport> = parse(body)?;
    Ok(reports
        .into_iter()
        .map(|r| DeliveryReport {
            provider_message_id: r.biz_id,
            to: r.phone_number.as_deref().and_then(aliyun_number_to_e164),
            delivered: r.success,
            code: r.err_code.filter(|c| !c.is_empty()),
            at_ms: r.report_time.as_deref().and_then(china_time_ms),
        })
        .collect())
}

/// One report of a Tencent Cloud status callback.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct TencentReport {
    user_receive_time: Option<String>,
    nationcode: Option<String>,
    mobile: Option<String>,
    report_status: String,
    errmsg: Option<String>,
    sid: String,
}

/// Reads a Tencent Cloud status callback: a JSON array of reports. Times are China
/// time.
pub fn parse_tencent(body: &[u8]) -> Result<Vec<DeliveryReport>, String> {
    let reports: Vec<TencentReport> = parse(body)?;
    Ok(reports
        .into_iter()
        .map(|r| DeliveryReport {
            provider_message_id: r.sid,
            to: match (r.nationcode.as_deref(), r.mobile.as_deref()) {
                (Some(code), Some(mobile)) if all_digits(code) && all_digits(mobile) => {
                    Some(format!("+{code}{mobile}"))
                }
                _ => None,
            },
            delivered: r.report_status == "SUCCESS",
            code: r.errmsg.filter(|c| !c.is_empty()),
            at_ms: r.user_receive_time.as_deref().and_then(china_time_ms),
        })
        .collect())
}

/// Deserializes a report array; the error names the report and field at fault.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        format!("not a report array (at `{path}`): {}", e.inner())
    })
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Aliyun writes mainland numbers without the country code (`13800138000`) and
/// others with it but without `+`. An 11-digit number starting with 1 is read as a
/// mainland mobile number.
pub(super) fn aliyun_number_to_e164(number: &str) -> Option<String> {
    let number = number.trim();
    let digits = number
        .strip_prefix('+')
        .or_else(|| number.strip_prefix("00"))
        .unwrap_or(number);
    if !all_digits(digits) {
        return None;
    }
    if number.starts_with('+') || number.starts_with("00") {
        return Some(format!("+{digits}"));
    }
    if digits.len() == 11 && digits.starts_with('1') {
        return Some(format!("+86{digits}"));
    }
    Some(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliyun_documented_sample_is_read() {
        // The sample of Aliyun's SmsReport documentation (the number is masked there).
        let body = r#"[
          {
            "phone_number" : "1381111****",
            "send_time" : "2017-01-01 00:00:00",
            "report_time" : "2017-01-01 00:00:00",
            "success" : true,
            "err_code" : "DELIVERED",
            "err_msg" : "用户接收成功",
            "sms_size" : "1",
            "biz_id" : "12345",
            "out_id" : "67890"
          }
        ]"#;
        assert_eq!(
            parse_aliyun(body.as_bytes()).unwrap(),
            vec![DeliveryReport {
                provider_message_id: "12345".into(),
                to: None,
                delivered: true,
                code: Some("DELIVERED".into()),
                // 2017-01-01 00:00 in China is 2016-12-31 16:00 UTC.
                at_ms: Some(1_483_200_000_000),
            }]
        );
    }

    #[test]
    fn aliyun_numbers_become_e164() {
        let body = br#"[
          {"phone_number":"13800138000","success":false,"err_code":"MK:0001","biz_id":"1^0"},
          {"phone_number":"85261234567","success":true,"err_code":"DELIVERED","biz_id":"2^0"}
        ]"#;
        let reports = parse_aliyun(body).unwrap();
        assert_eq!(reports[0].to.as_deref(), Some("+8613800138000"));
        assert!(!reports[0].delivered);
        assert_eq!(reports[0].code.as_deref(), Some("MK:0001"));
        assert_eq!(reports[0].at_ms, None);
        assert_eq!(reports[1].to.as_deref(), Some("+85261234567"));
    }

    #[test]
    fn tencent_documented_sample_is_read() {
        // The sample of Tencent Cloud's status callback documentation.
        let body = r#"[
          {
            "user_receive_time": "2015-10-17 08:03:04",
            "nationcode": "86",
            "mobile": "13xxxxxxxxx",
            "report_status": "SUCCESS",
            "errmsg": "DELIVRD",
            "description": "用户短信送达成功",
            "sid": "xxxxxxx"
          }
        ]"#;
        assert_eq!(
            parse_tencent(body.as_bytes()).unwrap(),
            vec![DeliveryReport {
                provider_message_id: "xxxxxxx".into(),
                to: None,
                delivered: true,
                code: Some("DELIVRD".into()),
                at_ms: Some(1_445_040_184_000),
            }]
        );
    }

    #[test]
    fn tencent_failures_and_numbers_are_read() {
        let body = br#"[{"user_receive_time":"2021-05-01 12:00:00","nationcode":"86",
            "mobile":"13800138000","report_status":"FAIL","errmsg":"MK:0005",
            "description":"failed","sid":"5000:1"}]"#;
        let r = &parse_tencent(body).unwrap()[0];
        assert_eq!(r.to.as_deref(), Some("+8613800138000"));
        assert!(!r.delivered);
        assert_eq!(r.provider_message_id, "5000:1");
    }

    #[test]
    fn malformed_reports_name_the_field() {
        let e = parse_aliyun(br#"[{"biz_id":"1","success":"yes"}]"#).unwrap_err();
        assert!(e.contains("[0].success"), "{e}");
        assert!(parse_tencent(b"{}").is_err());
    }

    #[test]
    fn documented_answers_are_json() {
        let a: serde_json::Value = serde_json::from_str(ALIYUN_ANSWER).unwrap();
        assert_eq!(a["code"], 0);
        let t: serde_json::Value = serde_json::from_str(TENCENT_ANSWER).unwrap();
        assert_eq!(t["result"], 0);
    }
}
