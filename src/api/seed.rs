//! `POST /send-sms`: the request of the classic "push it on a Redis list" recipe,
//! kept working so an existing page can switch to Herald unchanged. It takes
//! `template_id`, `mobiles[]` and `content`, form-encoded (as jQuery sends it) or as
//! JSON, and queues one SMS per mobile with `content` as the text.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::error::{Error, SeedError};
use super::request::{body_bytes, parse_json};
use super::state::AppState;
use super::submit::accepted_response;
use crate::domain::Channel;
use crate::ingest::job::SmsJob;
use crate::intake::{Envelope, Rejection, Report};

fn parse_json_request(bytes: &[u8]) -> Result<SmsJob, Error> {
    let value: Value = parse_json(bytes)?;
    let Value::Object(map) = value else {
        return Err(Error::Malformed {
            message: "expected a JSON object".into(),
            field: None,
        });
    };
    Ok(SmsJob::from_json(&map)?)
}

pub(super) async fn send_sms(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, SeedError> {
    let bytes = body_bytes(body)?;
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let request = if is_json {
        parse_json_request(&bytes)?
    } else {
        SmsJob::from_form(&bytes)
    };
    let template_id = request.template_id.clone();
    let callback_url = request.callback_url.clone();
    let max_cost = request.max_cost().map_err(Error::from)?;
    let window = request.window().map_err(Error::from)?;
    let (body, recipients) = request
        .submission(&state.intake, None)
        .await
        .map_err(Error::from)?;
    let envelope = Envelope {
        channel: Channel::Sms,
        provider: None,
        priority: None,
        send_at: None,
        expires_at: None,
        valid_for: None,
        source: "send-sms",
        idempotency: None,
        dry_run: false,
        reject_recent_duplicates: false,
        callback_url: callback_url.as_deref(),
        window: window.request(),
        max_cost,
    };
    let submitted = state
        .intake
        .submit(envelope, body, recipients)
        .await
        .map_err(Error::from)?;
    let report: Report = serde_json::from_value(submitted.report.clone())
        .map_err(|e| Error::Internal(format!("a stored report does not read back: {e}")))?;
    let mut message = format!("request received: {} messages queued", report.accepted);
    if !report.rejected.is_empty() {
        message.push_str(&format!(", {} mobiles rejected", report.rejected.len()));
    }
    let body = SeedAnswer {
        success: true,
        message,
        batch_id: report.batch_id,
        template_id,
        rejected: report.rejected,
    };
    Ok(accepted_response(submitted, body))
}

/// `POST /send-sms`'s answer once the messages are queued. (Its fields are in
/// the order the answer has always been written in.)
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct SeedAnswer {
    #[schemars(extend("format" = "uuid"))]
    batch_id: Option<String>,
    /// How many messages were queued and how many mobiles rejected.
    message: String,
    rejected: Vec<Rejection>,
    /// `true`; an error's body has `false`.
    success: bool,
    /// The request's `template_id`, if it had one.
    template_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_takes_numbers_and_strings_for_mobiles() {
        let r = parse_json_request(
            br#"{"template_id": 3, "mobiles": [13800000001, "13800000002"], "content": "x"}"#,
        )
        .unwrap();
        assert_eq!(r.template_id.as_deref(), Some("3"));
        assert_eq!(r.mobiles, ["13800000001", "13800000002"]);
        let err = parse_json_request(br#"{"mobiles": [true]}"#).unwrap_err();
        assert!(
            matches!(err, Error::Invalid { ref field, .. } if field == "mobiles[0]"),
            "{err:?}"
        );
    }
}
