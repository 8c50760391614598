//! `POST /send-sms`: the request of the classic "push it on a Redis list" recipe,
//! kept working so an existing page can switch to Herald unchanged. It takes
//! `template_id`, `mobiles[]` and `content`, form-encoded (as jQuery sends it) or as
//! JSON, and queues one SMS per mobile with `content` as the text.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::error::{Error, SeedError};
use super::{AppState, accepted_response, body_bytes, parse_json};
use crate::domain::Channel;
use crate::ingest::job::SmsJob;
use crate::intake::Envelope;

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
    let (body, recipients) = request
        .submission(&state.intake, None)
        .await
        .map_err(Error::from)?;
    let envelope = Envelope {
        channel: Channel::Sms,
        provider: None,
        priority: None,
        send_at: None,
        source: "send-sms",
        idempotency: None,
        dry_run: false,
        reject_recent_duplicates: false,
    };
    let submitted = state
        .intake
        .submit(envelope, body, recipients)
        .await
        .map_err(Error::from)?;
    let report = &submitted.report;
    let accepted = report["accepted"].as_u64().unwrap_or(0);
    let rejected = report["rejected"].clone();
    let rejected_count = rejected.as_array().map_or(0, Vec::len);
    let mut message = format!("request received: {accepted} messages queued");
    if rejected_count > 0 {
        message.push_str(&format!(", {rejected_count} mobiles rejected"));
    }
    let body = json!({
        "success": true,
        "message": message,
        "batch_id": report["batch_id"],
        "template_id": template_id,
        "rejected": rejected,
    });
    Ok(accepted_response(submitted, body))
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
