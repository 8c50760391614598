//! `POST /v1/batches`: accepting a batch as JSON (whole or spooled), NDJSON or
//! CSV, with its idempotency key and dry run.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::audit::audited;
use super::error::Error;
use super::request::{accept_content, charset, media_type, parse_json};
use super::state::AppState;
use super::upload;
use crate::audit::{Actor, AuditAction};
use crate::intake::{BatchRequest, Submitted};
use crate::queue::Arrival;

/// The longest `Idempotency-Key` accepted.
pub(super) const MAX_IDEMPOTENCY_KEY: usize = 255;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    // `to_str` also lets tabs and spaces through, which a key copied from a log
    // or a spreadsheet cell carries by mistake.
    let key = value
        .to_str()
        .ok()
        .filter(|key| key.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| Error::Invalid {
            field: "Idempotency-Key".into(),
            message: "must be visible ASCII, without spaces or tabs".into(),
        })?;
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(Error::Invalid {
            field: "Idempotency-Key".into(),
            message: format!("must have 1 to {MAX_IDEMPOTENCY_KEY} characters"),
        });
    }
    Ok(Some(key))
}

/// `202` with the report; a replay also carries `Idempotent-Replayed: true`.
pub(super) fn accepted_response(submitted: Submitted, body: impl Serialize) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if submitted.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// `POST /v1/batches?dry_run=true` checks and reports without storing. (The
/// document describes the query by [`super::upload::CsvOptions`], which holds
/// `dry_run` and a CSV upload's other options.)
#[derive(Debug, Deserialize)]
pub(super) struct SubmitParams {
    /// Check and report only; store nothing (`200`).
    #[serde(default)]
    dry_run: bool,
}

pub(super) async fn create_batch(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    query: axum::extract::RawQuery,
    body: axum::body::Body,
) -> Result<Response, Error> {
    let result = submit(&state, &headers, query, body).await;
    // A dry run stores nothing: there is no action to record.
    if matches!(result, Ok((_, true))) {
        return result.map(|(submitted, dry_run)| answer(submitted, dry_run));
    }
    let target = match &result {
        Ok((submitted, _)) => submitted.report["batch_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        Err(_) => String::new(),
    };
    audited(&state, &actor, AuditAction::Submit, &target, result)
        .await
        .map(|(submitted, dry_run)| answer(submitted, dry_run))
}

/// Reads, checks and stores the batch of a request: what intake answered, and
/// whether it was a dry run.
async fn submit(
    state: &AppState,
    headers: &HeaderMap,
    query: axum::extract::RawQuery,
    body: axum::body::Body,
) -> Result<(Submitted, bool), Error> {
    accept_content(
        headers,
        &["application/x-ndjson", "application/jsonl", "text/csv"],
    )?;
    let query = query.0.unwrap_or_default();
    let key = idempotency_key(headers)?;
    let digest = headers
        .get("content-digest")
        .map(|v| upload::content_digest(v.to_str().unwrap_or("")))
        .transpose()?;
    let mut body = Some(body);
    let mut take_body = || body.take().expect("the body is read once");
    let (request, identity, dry_run, chunks, arrival) = match media_type(headers).as_deref() {
        Some("application/x-ndjson" | "application/jsonl") => {
            let dry_run = submit_params(&query)?.dry_run;
            let mut lines = upload::Lines::new(take_body(), digest.clone(), state.max_upload_bytes);
            let (request, options) = upload::ndjson_options(&mut lines).await?;
            let chunks: upload::Chunks = Box::pin(upload::ndjson_recipients(lines));
            let identity = Bytes::from(upload_identity(headers, &options));
            (request, identity, dry_run, chunks, Arrival::Streamed)
        }
        Some("text/csv") => {
            let options = upload::CsvOptions::from_query(&query)?;
            let charset = charset(headers).map(|c| upload::charset(&c)).transpose()?;
            let dry_run = options.dry_run;
            let chunks: upload::Chunks = Box::pin(
                upload::csv_recipients(
                    upload::Lines::new(take_body(), digest.clone(), state.max_upload_bytes),
                    charset,
                )
                .await?,
            );
            let identity = Bytes::from(upload_identity(headers, query.as_bytes()));
            (
                options.request(),
                identity,
                dry_run,
                chunks,
                Arrival::Streamed,
            )
        }
        _ => {
            let dry_run = submit_params(&query)?.dry_run;
            let length = headers
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            match upload::read_json(
                take_body(),
                length,
                state.max_body_bytes,
                state.max_upload_bytes,
            )
            .await?
            {
                upload::JsonBody::Whole(bytes) if bytes.len() > PARSE_WHOLE_UP_TO => {
                    // The recipients are parsed from now, while the options are read
                    // in their own pass: the first chunks are ready when the options
                    // are. Options that fail drop the chunks, which stops the parse.
                    let chunks = upload::json_recipients(upload::JsonSource::Memory(bytes.clone()));
                    let request = upload::json_options_in(&bytes)?;
                    (request, bytes, dry_run, chunks, Arrival::AtHand)
                }
                upload::JsonBody::Whole(bytes) => {
                    let started = std::time::Instant::now();
                    let request: BatchRequest = parse_json(&bytes)?;
                    tracing::debug!(parsed = ?started.elapsed(), bytes = bytes.len(), "batch request parsed");
                    let submitted = state
                        .intake
                        .submit_request(request, "api", key.map(|k| (k, bytes.as_ref())), dry_run)
                        .await?;
                    return Ok((submitted, dry_run));
                }
                upload::JsonBody::Spooled(spool) => {
                    let request = upload::json_options(&spool).await?;
                    let identity = Bytes::from(spool.sha256.clone());
                    let chunks = upload::json_recipients(upload::JsonSource::Spooled(spool));
                    (request, identity, dry_run, chunks, Arrival::Streamed)
                }
            }
        }
    };
    let submitted = state
        .intake
        .submit_upload(
            request,
            "api",
            key.map(|k| (k, identity.as_ref())),
            dry_run,
            chunks,
            arrival,
        )
        .await?;
    Ok((submitted, dry_run))
}

/// JSON bodies up to this size are parsed whole; bigger ones in chunks, each
/// checked while the next is parsed (their errors name the recipient the same way).
const PARSE_WHOLE_UP_TO: usize = 1 << 20;

/// `200` with the report for a dry run, else `202`.
fn answer(submitted: Submitted, dry_run: bool) -> Response {
    let report = submitted.report.clone();
    if dry_run {
        return (StatusCode::OK, Json(report)).into_response();
    }
    accepted_response(submitted, report)
}

fn submit_params(query: &str) -> Result<SubmitParams, Error> {
    serde_urlencoded::from_str(query).map_err(|e| Error::Invalid {
        field: "dry_run".into(),
        message: format!("{e}: use dry_run=true or dry_run=false"),
    })
}

/// What an upload's idempotency key is checked against: its options and its
/// declared length and digest (its recipients have not arrived when the key is
/// checked; the digest, which is checked at the end, stands for them).
fn upload_identity(headers: &HeaderMap, options: &[u8]) -> Vec<u8> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .as_bytes()
            .to_vec()
    };
    [
        options,
        b"\n",
        &header("content-length"),
        b"\n",
        &header("content-digest"),
    ]
    .concat()
}
