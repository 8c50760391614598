//! The HTTP API (axum).
//!
//! - `POST /v1/batches` accepts a batch; `GET /v1/batches/{id}` and
//!   `GET /v1/batches/{id}/messages` read the ledger; `POST /v1/batches/{id}/{action}`
//!   pauses, resumes, cancels or retries; `GET /v1/batches` lists batches and
//!   `GET /v1/batches/{id}/events` streams one's progress (`events`).
//! - `/v1/templates` (`templates`) and `/v1/suppressions` (`suppressions`) keep
//!   stored templates and the addresses never to message.
//! - `POST /send-sms` keeps the seed recipe's request working (`seed`).
//! - `GET /` and `/assets/{name}` serve the web page (`crate::web`); `GET /v1` is
//!   an index of the routes.
//! - `POST /v1/receipts/{provider}` takes the providers' delivery receipts (`receipts`).
//! - `GET /metrics` (Prometheus) and `GET /openapi.json` (`openapi`, built from
//!   [`routes`] and the handlers' types) describe it.
//! - `error` holds the one error type every route answers with.

mod error;
mod events;
mod openapi;
mod receipts;
mod seed;
mod suppressions;
mod templates;
mod upload;

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use self::error::Error;
pub use self::events::Progress;
use crate::auth::Tokens;
use crate::config::Config;
use crate::domain::{BatchId, Counts, MessageState, batch_state, format_ms};
use crate::intake::{Arrival, BatchRequest, Intake, Submitted};
use crate::metrics::Metrics;
use crate::provider::Registry;
use crate::queue::{BatchSummary, Control, MessageQuery, MessageRecord, Queue};

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Messages per page when the caller does not say, and at most.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// Batches per page when the caller does not say, and at most: each one listed
/// counts its messages.
const DEFAULT_BATCH_PAGE: u32 = 20;
const MAX_BATCH_PAGE: u32 = 100;

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub intake: Intake,
    pub queue: Queue,
    /// The largest JSON body read whole into memory; a bigger one is spooled to
    /// a temporary file.
    pub max_body_bytes: usize,
    /// The largest upload of any kind.
    pub max_upload_bytes: u64,
    /// The API tokens accepted; none asked for when empty.
    pub tokens: Tokens,
    /// What `/metrics` shows; shared with the workers.
    pub metrics: Metrics,
    /// Cancelled when the server shuts down: long-lived responses (event streams)
    /// end then, so that they do not hold the shutdown up.
    pub stop: CancellationToken,
}

impl AppState {
    /// The state of an API over `queue`, sending through `registry`, as `config`
    /// says, counting in `metrics`, until `stop`.
    pub fn new(
        queue: Queue,
        registry: Registry,
        config: &Config,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> AppState {
        AppState {
            intake: Intake::new(
                queue.clone(),
                registry,
                config.limits.max_recipients,
                config.recipients.rules(),
                config.recipients.recent_window(),
                metrics.clone(),
            ),
            metrics,
            queue,
            max_body_bytes: config.limits.max_body_bytes,
            max_upload_bytes: config.limits.max_upload_bytes,
            tokens: Tokens::new(&config.auth.tokens),
            stop,
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone: the route shows nothing of the store.
    Public,
    /// With API tokens configured, only a caller presenting one.
    Token,
}

/// Every route: its path, who may call it and its handlers. [`router`] serves
/// exactly these, the OpenAPI document lists exactly these paths with the
/// security of their access, and tests hold the token check to them.
pub(crate) fn routes() -> Vec<(&'static str, Access, MethodRouter<AppState>)> {
    use Access::{Public, Token};
    vec![
        ("/", Public, get(crate::web::page)),
        ("/assets/{name}", Public, get(crate::web::asset)),
        ("/v1", Public, get(index)),
        (
            "/healthz",
            Public,
            get(|| async { Json(Health { status: "ok" }) }),
        ),
        ("/v1/batches", Token, post(create_batch).get(list_batches)),
        ("/v1/batches/{id}", Token, get(get_batch)),
        ("/v1/batches/{id}/messages", Token, get(list_messages)),
        ("/v1/batches/{id}/events", Token, get(events::batch_events)),
        ("/v1/batches/{id}/{action}", Token, post(control_batch)),
        (
            "/v1/templates",
            Token,
            post(templates::create).get(templates::list),
        ),
        (
            "/v1/templates/{id}",
            Token,
            get(templates::get)
                .put(templates::replace)
                .delete(templates::delete),
        ),
        (
            "/v1/suppressions",
            Token,
            post(suppressions::add)
                .get(suppressions::list)
                .delete(suppressions::remove),
        ),
        ("/send-sms", Token, post(seed::send_sms)),
        // Providers cannot present a bearer token: each request is checked by the
        // provider's own signature where it has one (see the README).
        ("/v1/receipts/{provider}", Public, post(receipts::receive)),
        ("/metrics", Token, get(metrics)),
        ("/openapi.json", Public, get(openapi::document)),
    ]
}

/// The whole API. `max_body_bytes` bounds every request body. With API tokens
/// configured, every route of [`Access::Token`] needs one.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let check = axum::middleware::from_fn_with_state(state.tokens.clone(), require_token);
    let mut router = Router::new();
    for (path, access, handlers) in routes() {
        router = router.route(
            path,
            match access {
                Access::Public => handlers,
                Access::Token => handlers.route_layer(check.clone()),
            },
        );
    }
    router
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Lets the request through when it carries one of `tokens` as
/// `Authorization: Bearer <token>`, or when there are none; else `401`.
async fn require_token(
    State(tokens): State<Tokens>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if tokens.accept(token) => next.run(request).await,
        Some(_) => Error::Unauthorized("the API token is not one this server accepts".into())
            .into_response(),
        None => Error::Unauthorized(
            "this server needs an API token: send `Authorization: Bearer <token>`".into(),
        )
        .into_response(),
    }
}

/// `GET /metrics`: Prometheus's text format.
async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(&state.queue).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /healthz`'s answer: the server is up.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// `GET /v1`'s answer: what this server is and where its main routes are. (Its
/// fields are in the order the answer has always been written in.)
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Index {
    /// `herald`.
    name: &'static str,
    /// `METHOD path` to what it does.
    routes: BTreeMap<&'static str, &'static str>,
    version: &'static str,
}

/// What this server is and where its routes are, for a script exploring the API
/// (`/` is the web page).
async fn index() -> Json<Index> {
    Json(Index {
        name: "herald",
        version: env!("CARGO_PKG_VERSION"),
        routes: BTreeMap::from([
            (
                "POST /v1/batches",
                "accept a batch: {channel, template: {body, subject?}, recipients: [{to, vars?, ref?}]}",
            ),
            (
                "GET /v1/batches?limit=&before=",
                "the batches, newest first",
            ),
            ("GET /v1/batches/{id}", "state and counts"),
            (
                "GET /v1/batches/{id}/events",
                "progress as server-sent events, until the batch is finished",
            ),
            (
                "GET /v1/batches/{id}/messages?state=&after=&limit=",
                "the per-recipient ledger",
            ),
            (
                "POST /v1/batches/{id}/pause|resume|cancel|retry",
                "control a batch",
            ),
            (
                "POST /v1/templates, GET /v1/templates?after=&limit=",
                "store a template, list them",
            ),
            (
                "GET|PUT|DELETE /v1/templates/{id}",
                "read, replace or delete a template",
            ),
            (
                "POST|GET|DELETE /v1/suppressions",
                "add, list or remove recipients who must not be messaged",
            ),
            (
                "POST /send-sms",
                "the classic request: template_id, mobiles[], content",
            ),
            (
                "POST /v1/receipts/{provider}",
                "delivery receipts from a configured provider",
            ),
            ("GET /healthz", "liveness"),
            ("GET /", "the web page"),
            ("GET /metrics", "Prometheus metrics"),
            ("GET /openapi.json", "every route, in OpenAPI 3.1"),
        ]),
    })
}

/// A listing's `limit`: `DEFAULT_PAGE` when absent, at most `MAX_PAGE`.
pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, Error> {
    limit_within(limit, DEFAULT_PAGE, MAX_PAGE)
}

/// `limit`, or `default` when absent; an error naming the field unless 1 to `max`.
fn limit_within(limit: Option<u32>, default: u32, max: u32) -> Result<u32, Error> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(Error::Invalid {
            field: "limit".into(),
            message: format!("must be between 1 and {max}, not {limit}"),
        })
    }
}

/// A query string parsed into `T`; a bad one is a `400` naming the problem.
pub(crate) fn query_params<T>(params: Result<Query<T>, QueryRejection>) -> Result<T, Error> {
    params
        .map(|Query(params)| params)
        .map_err(|e| Error::Malformed {
            message: e.body_text(),
            field: None,
        })
}

/// Reads the body, turning a too-large or broken body into a JSON error.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Error> {
    body.map_err(|rejection| {
        let message = rejection.body_text();
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::TooLarge {
                field: None,
                message,
            }
        } else {
            Error::Malformed {
                message,
                field: None,
            }
        }
    })
}

/// The media type of the request's content type, in lower case, without parameters.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get("content-type")?.to_str().ok()?;
    let media = content_type.split(';').next()?.trim();
    Some(media.to_ascii_lowercase())
}

/// The `charset` parameter of the content type, if any.
pub(crate) fn charset(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get("content-type")?.to_str().ok()?;
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// Parses JSON, naming the path of the first field that does not fit.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // The fast parse first; only a failed one is parsed again to find the path.
    if let Ok(parsed) = serde_json::from_slice(bytes) {
        return Ok(parsed);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = (path != "." && path != "?").then_some(path);
        Error::Malformed {
            message: inner.to_string(),
            field,
        }
    })?;
    de.end().map_err(|e| Error::Malformed {
        message: e.to_string(),
        field: None,
    })?;
    Ok(parsed)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| Error::Invalid {
        field: "Idempotency-Key".into(),
        message: "must be visible ASCII".into(),
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
pub(crate) fn accepted_response(submitted: Submitted, body: impl Serialize) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if submitted.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// `POST /v1/batches?dry_run=true` checks and reports without storing.
#[derive(Debug, Deserialize, JsonSchema)]
struct SubmitParams {
    /// Check and report only; store nothing (`200`).
    #[serde(default)]
    dry_run: bool,
}

async fn create_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: axum::extract::RawQuery,
    body: axum::body::Body,
) -> Result<Response, Error> {
    let query = query.0.unwrap_or_default();
    let key = idempotency_key(&headers)?;
    let digest = headers
        .get("content-digest")
        .map(|v| upload::content_digest(v.to_str().unwrap_or("")))
        .transpose()?;
    let mut body = Some(body);
    let mut take_body = || body.take().expect("the body is read once");
    let (request, identity, dry_run, chunks, arrival) = match media_type(&headers).as_deref() {
        Some("application/x-ndjson" | "application/jsonl") => {
            let dry_run = submit_params(&query)?.dry_run;
            let mut lines = upload::Lines::new(take_body(), digest.clone(), state.max_upload_bytes);
            let (request, options) = upload::ndjson_options(&mut lines).await?;
            let chunks: upload::Chunks = Box::pin(upload::ndjson_recipients(lines));
            let identity = Bytes::from(upload_identity(&headers, &options));
            (request, identity, dry_run, chunks, Arrival::Streamed)
        }
        Some("text/csv") => {
            let options: upload::CsvOptions =
                serde_urlencoded::from_str(&query).map_err(|e| Error::Invalid {
                    field: "query".into(),
                    message: format!(
                        "{e}: a CSV upload takes the batch's options in the query string \
                         (channel, template or template_id, subject, provider, priority, send_at, \
                         reject_recent_duplicates, dry_run)"
                    ),
                })?;
            let charset = charset(&headers).map(|c| upload::charset(&c)).transpose()?;
            let dry_run = options.dry_run;
            let chunks: upload::Chunks = Box::pin(
                upload::csv_recipients(
                    upload::Lines::new(take_body(), digest.clone(), state.max_upload_bytes),
                    charset,
                )
                .await?,
            );
            let identity = Bytes::from(upload_identity(&headers, query.as_bytes()));
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
                    return Ok(answer(submitted, dry_run));
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
    Ok(answer(submitted, dry_run))
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

/// A batch as the API shows it.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Batch")]
pub struct BatchView {
    #[schemars(extend("format" = "uuid"))]
    pub id: String,
    #[schemars(with = "crate::domain::Channel")]
    pub channel: String,
    /// Where the batch came from: `api`, `send-sms`, or `ingest:<name>` for an
    /// ingest source.
    pub source: String,
    /// `queued`, `sending`, `paused`, `cancelling`, `cancelled` or `done`.
    pub state: String,
    pub priority: i32,
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    #[schemars(extend("format" = "date-time"))]
    pub send_at: String,
    pub counts: Counts,
}

impl From<BatchSummary> for BatchView {
    fn from(b: BatchSummary) -> Self {
        BatchView {
            id: b.id.to_string(),
            channel: b.channel.to_string(),
            source: b.source,
            state: batch_state(b.control, &b.counts).to_string(),
            priority: b.priority,
            created_at: format_ms(b.created_at_ms),
            send_at: format_ms(b.send_at_ms),
            counts: b.counts,
        }
    }
}

fn batch_id(raw: &str) -> Result<BatchId, Error> {
    BatchId::parse(raw).ok_or_else(|| Error::NotFound(format!("no batch has the id `{raw}`")))
}

fn not_found(id: BatchId) -> Error {
    Error::NotFound(format!("no batch has the id `{id}`"))
}

#[derive(Debug, Deserialize, JsonSchema)]
struct BatchesParams {
    /// A page's `next_before`: only batches older than it.
    before: Option<String>,
    #[schemars(range(min = 1, max = MAX_BATCH_PAGE), extend("default" = DEFAULT_BATCH_PAGE))]
    limit: Option<u32>,
}

/// A page of batches, newest first; pass `next_before` as `before` for the next
/// page (`null` on the last).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct BatchPage {
    pub batches: Vec<BatchView>,
    /// Pass as `before` for the next page; `null` on the last.
    pub next_before: Option<String>,
}

async fn list_batches(
    State(state): State<AppState>,
    params: Result<Query<BatchesParams>, QueryRejection>,
) -> Result<Json<BatchPage>, Error> {
    let params = query_params(params)?;
    let limit = limit_within(params.limit, DEFAULT_BATCH_PAGE, MAX_BATCH_PAGE)?;
    let before = match params.before.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(BatchId::parse(raw).ok_or_else(|| Error::Invalid {
            field: "before".into(),
            message: format!("`{raw}` is not a batch id: pass a page's `next_before`"),
        })?),
    };
    let summaries = state.queue.batches(before, limit).await?;
    let next_before = (summaries.len() == limit as usize)
        .then(|| summaries.last().map(|b| b.id.to_string()))
        .flatten();
    Ok(Json(BatchPage {
        batches: summaries.into_iter().map(BatchView::from).collect(),
        next_before,
    }))
}

async fn get_batch(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BatchView>, Error> {
    let id = batch_id(&id)?;
    let summary = state.queue.batch(id).await?.ok_or_else(|| not_found(id))?;
    Ok(Json(summary.into()))
}

#[derive(Debug, Deserialize, JsonSchema)]
struct MessagesParams {
    /// Only the messages in this state.
    #[schemars(with = "Option<MessageState>")]
    state: Option<String>,
    /// A page's `next_after`.
    after: Option<u32>,
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    limit: Option<u32>,
}

/// One message as the API shows it.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Message")]
pub struct MessageView {
    /// `<batch id>-<index>`: the idempotency key of every attempt.
    pub id: String,
    pub index: u32,
    pub to: String,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub state: MessageState,
    pub provider: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    #[schemars(extend("format" = "date-time"))]
    pub updated_at: String,
    #[schemars(extend("format" = "date-time"))]
    pub sent_at: Option<String>,
    /// The code of the delivery receipt that set `delivered` / `undelivered`, and
    /// when it says that happened.
    #[serde(default)]
    pub receipt_code: Option<String>,
    #[serde(default)]
    #[schemars(extend("format" = "date-time"))]
    pub receipt_at: Option<String>,
}

impl From<MessageRecord> for MessageView {
    fn from(m: MessageRecord) -> Self {
        MessageView {
            id: m.id,
            index: m.index,
            to: m.to,
            reference: m.reference,
            state: m.state,
            provider: m.provider,
            attempts: m.attempts,
            last_error: m.last_error,
            provider_message_id: m.provider_message_id,
            created_at: format_ms(m.created_at_ms),
            updated_at: format_ms(m.updated_at_ms),
            sent_at: m.sent_at_ms.map(format_ms),
            receipt_code: m.receipt_code,
            receipt_at: m.receipt_at_ms.map(format_ms),
        }
    }
}

/// A page of messages; pass `next_after` as `after` for the next page.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct MessagePage {
    pub messages: Vec<MessageView>,
    pub next_after: Option<u32>,
}

async fn list_messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<MessagesParams>, QueryRejection>,
) -> Result<Json<MessagePage>, Error> {
    let id = batch_id(&id)?;
    let params = query_params(params)?;
    let state_filter = match params.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(MessageState::parse(s).ok_or_else(|| Error::Invalid {
            field: "state".into(),
            message: format!(
                "`{s}` is not a state: use pending, sending, sent, delivered, undelivered, unknown, failed, cancelled or paused"
            ),
        })?),
    };
    let limit = page_limit(params.limit)?;
    if state.queue.batch(id).await?.is_none() {
        return Err(not_found(id));
    }
    let query = MessageQuery {
        state: state_filter,
        after: params.after,
        limit,
    };
    let records = state.queue.messages(id, query).await?;
    let next_after = (records.len() == limit as usize)
        .then(|| records.last().map(|m| m.index))
        .flatten();
    Ok(Json(MessagePage {
        messages: records.into_iter().map(MessageView::from).collect(),
        next_after,
    }))
}

/// What `POST /v1/batches/{id}/{action}` does, by `action`.
const ACTIONS: [(&str, Control); 4] = [
    ("pause", Control::Pause),
    ("resume", Control::Resume),
    ("cancel", Control::Cancel),
    ("retry", Control::Retry),
];

async fn control_batch(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<BatchView>, Error> {
    let Some(&(_, action)) = ACTIONS.iter().find(|(name, _)| *name == action) else {
        return Err(Error::NotFound(format!(
            "no action `{action}`: use pause, resume, cancel or retry"
        )));
    };
    let id = batch_id(&id)?;
    let summary = state
        .queue
        .control(id, action)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(summary.into()))
}

#[cfg(test)]
mod tests;
