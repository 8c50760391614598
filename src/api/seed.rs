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
use crate::intake::{Body, Envelope, RecipientSpec};

/// The seed request, whichever encoding it came in.
#[derive(Debug, Default, PartialEq, Eq)]
struct SeedRequest {
    template_id: Option<String>,
    mobiles: Vec<String>,
    content: Option<String>,
}

fn split_mobiles(value: &str, into: &mut Vec<String>) {
    into.extend(
        value
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(String::from),
    );
}

fn parse_form(bytes: &[u8]) -> SeedRequest {
    let mut request = SeedRequest::default();
    for (key, value) in form_urlencoded::parse(bytes) {
        match key.as_ref() {
            "template_id" => request.template_id = Some(value.into_owned()),
            "content" => request.content = Some(value.into_owned()),
            k if k == "mobiles" || (k.starts_with("mobiles[") && k.ends_with(']')) => {
                split_mobiles(&value, &mut request.mobiles)
            }
            _ => {}
        }
    }
    request
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_json_request(bytes: &[u8]) -> Result<SeedRequest, Error> {
    let value: Value = parse_json(bytes)?;
    let Value::Object(map) = value else {
        return Err(Error::Malformed {
            message: "expected a JSON object".into(),
            field: None,
        });
    };
    let bad = |field: &str, message: &str| Error::Invalid {
        field: field.into(),
        message: message.into(),
    };
    let mut request = SeedRequest::default();
    if let Some(v) = map.get("template_id").filter(|v| !v.is_null()) {
        request.template_id =
            Some(scalar(v).ok_or_else(|| bad("template_id", "must be a string or a number"))?);
    }
    if let Some(v) = map.get("content").filter(|v| !v.is_null()) {
        request.content = Some(
            v.as_str()
                .ok_or_else(|| bad("content", "must be a string"))?
                .to_string(),
        );
    }
    match map.get("mobiles") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => split_mobiles(s, &mut request.mobiles),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let m = scalar(item)
                    .ok_or_else(|| bad(&format!("mobiles[{i}]"), "must be a string or a number"))?;
                request.mobiles.push(m);
            }
        }
        Some(_) => {
            return Err(bad(
                "mobiles",
                "must be an array or a comma-separated string",
            ));
        }
    }
    Ok(request)
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
        parse_form(&bytes)
    };
    if request.mobiles.is_empty() {
        return Err(Error::Invalid {
            field: "mobiles".into(),
            message: "must list at least one mobile".into(),
        }
        .into());
    }
    // A stored template of that id wins (with the request's `content` as the
    // variable `content`); otherwise `content` is the text, as the seed sent it.
    let stored = match request.template_id.as_deref() {
        Some(id) => state
            .intake
            .stored_template(Channel::Sms, id)
            .await
            .map_err(Error::from)?,
        None => None,
    };
    let mut vars = serde_json::Map::new();
    let body = match (stored, request.content) {
        (Some(template), content) => {
            if let Some(content) = content {
                vars.insert("content".into(), content.into());
            }
            Body::Template(template)
        }
        (None, Some(content)) => Body::Literal(content),
        (None, None) => {
            return Err(Error::Invalid {
                field: "content".into(),
                message: "is required unless template_id names a stored template".into(),
            }
            .into());
        }
    };
    let recipients = request
        .mobiles
        .into_iter()
        .map(|to| RecipientSpec {
            to,
            vars: vars.clone(),
            reference: None,
        })
        .collect();
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
        "template_id": request.template_id,
        "rejected": rejected,
    });
    Ok(accepted_response(submitted, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jquery_form_arrays_and_comma_lists_are_both_read() {
        let r = parse_form(
            b"template_id=7&mobiles%5B%5D=13800000001&mobiles%5B%5D=13800000002&content=Hi%20there",
        );
        assert_eq!(r.template_id.as_deref(), Some("7"));
        assert_eq!(r.mobiles, ["13800000001", "13800000002"]);
        assert_eq!(r.content.as_deref(), Some("Hi there"));
        let r = parse_form(b"mobiles=1380000001,%201380000002&content=x");
        assert_eq!(r.mobiles, ["1380000001", "1380000002"]);
    }

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
