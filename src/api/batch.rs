//! Reading and controlling batches: `GET /v1/batches`, `GET /v1/batches/{id}`,
//! `GET /v1/batches/{id}/messages` and `POST /v1/batches/{id}/{action}`, and the
//! views of a batch and a message they answer with.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::audit::audited;
use super::csv_out::{self, Source};
use super::error::Error;
use super::messages::{message_state, wants_csv};
use super::request::{DEFAULT_PAGE, MAX_PAGE, limit_within, page_limit, parse_json, query_params};
use super::state::AppState;
use crate::audit::{Actor, AuditAction};
use crate::domain::{BatchId, Counts, Deadline, MessageState, batch_state, format_ms, now_ms};
use crate::queue::{BatchAction, BatchSummary, MessageQuery, MessageRecord};

/// Batches per page when the caller does not say, and at most: each one listed
/// counts its messages.
const DEFAULT_BATCH_PAGE: u32 = 20;
const MAX_BATCH_PAGE: u32 = 100;

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
    /// `queued`, `sending`, `paused`, `held` (only messages held at the spend cap
    /// are left), `cancelling`, `cancelled` or `done` (every message settled:
    /// sent, failed, expired, cancelled, …).
    pub state: String,
    pub priority: i32,
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    #[schemars(extend("format" = "date-time"))]
    pub send_at: String,
    /// The deadline: a message not sent by then is `expired`. Absent when the
    /// batch has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: Option<String>,
    pub counts: Counts,
    /// What its messages have been charged, in its provider's currency: counted
    /// when the batch has a `max_cost` or its provider a `daily_budget`.
    pub spent: f64,
    /// Its spend cap, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
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
            expires_at: b.expires_at_ms.map(format_ms),
            counts: b.counts,
            spent: crate::queue::spend::from_micros(b.spent),
            max_cost: b.max_cost.map(crate::queue::spend::from_micros),
        }
    }
}

pub(super) fn batch_id(raw: &str) -> Result<BatchId, Error> {
    BatchId::parse(raw).ok_or_else(|| Error::NotFound(format!("no batch has the id `{raw}`")))
}

pub(super) fn not_found(id: BatchId) -> Error {
    Error::NotFound(format!("no batch has the id `{id}`"))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct BatchesParams {
    /// A page's `next_before`: only batches older than it.
    #[schemars(extend("format" = "uuid"))]
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

pub(super) async fn list_batches(
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

pub(super) async fn get_batch(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BatchView>, Error> {
    let id = batch_id(&id)?;
    let summary = state.queue.batch(id).await?.ok_or_else(|| not_found(id))?;
    Ok(Json(summary.into()))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct MessagesParams {
    /// Only the messages in this state.
    #[schemars(with = "Option<MessageState>")]
    state: Option<String>,
    /// A page's `next_after`.
    #[schemars(range(max = u32::MAX))]
    after: Option<u32>,
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    limit: Option<u32>,
    /// `csv` for the whole ledger (from `after`, in the state asked for) as a CSV
    /// file, streamed; `limit` does not apply.
    #[schemars(with = "Option<super::messages::Format>")]
    format: Option<String>,
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

pub(super) async fn list_messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<MessagesParams>, QueryRejection>,
) -> Result<Response, Error> {
    let id = batch_id(&id)?;
    let params = query_params(params)?;
    let state_filter = message_state(params.state.as_deref())?;
    let csv = wants_csv(params.format.as_deref())?;
    let limit = page_limit(params.limit)?;
    if csv {
        // A message found says the batch exists without counting its messages,
        // which for a big batch costs memory in proportion to its size.
        let probe = MessageQuery {
            state: state_filter,
            after: params.after,
            limit: 1,
        };
        if state.queue.messages(id, probe).await?.is_empty()
            && state.queue.batch(id).await?.is_none()
        {
            return Err(not_found(id));
        }
        let source = Source::Batch {
            id,
            state: state_filter,
            after: params.after,
        };
        return Ok(csv_out::respond(state, source, &format!("batch-{id}.csv")));
    }
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
    })
    .into_response())
}

/// What `POST /v1/batches/{id}/{action}` does, by `action`; a retry's deadline
/// is read from its body.
pub(super) const ACTIONS: [(&str, BatchAction); 4] = [
    ("pause", BatchAction::Pause),
    ("resume", BatchAction::Resume),
    ("cancel", BatchAction::Cancel),
    (
        "retry",
        BatchAction::Retry {
            expires_at_ms: None,
        },
    ),
];

/// What an action may say (an empty body says nothing). A retry: the batch's
/// fresh deadline, as a submit gives it; neither: the configured default for the
/// batch's provider or channel, if any, else the batch has no deadline after the
/// retry. A resume: a higher spend cap (`max_cost`) for a batch held at its cap.
/// The other actions read nothing of it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("not" = {"required": ["expires_at", "valid_for"]}))]
pub struct ControlRequest {
    /// RFC 3339, in the future. Give this or `valid_for`, not both.
    #[schemars(extend("format" = "date-time"))]
    expires_at: Option<String>,
    /// Seconds from now.
    #[serde(default, deserialize_with = "crate::intake::whole_number")]
    #[schemars(range(min = 1, max = crate::domain::MAX_VALID_FOR_SECS))]
    valid_for: Option<i64>,
    /// A resume's new spend cap, in the batch's provider's currency: above what
    /// the batch has spent. Its held messages go back to be sent.
    #[schemars(range(min = 0.000001))]
    max_cost: Option<f64>,
}

impl ControlRequest {
    fn of(body: &[u8]) -> Result<ControlRequest, Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            Ok(ControlRequest::default())
        } else {
            parse_json(body)
        }
    }
}

pub(super) async fn control_batch(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<BatchView>, Error> {
    let Some(&(_, action)) = ACTIONS.iter().find(|(name, _)| *name == action) else {
        return Err(Error::NotFound(format!(
            "no action `{action}`: use pause, resume, cancel or retry"
        )));
    };
    let audit_action = match action {
        BatchAction::Pause => AuditAction::Pause,
        BatchAction::Resume => AuditAction::Resume,
        BatchAction::Cancel => AuditAction::Cancel,
        BatchAction::Retry { .. } => AuditAction::Retry,
    };
    let result = control(&state, &id, action, &body).await;
    audited(&state, &actor, audit_action, &id, result).await
}

/// Applies `action` to batch `id`, as `body` asks for a retry.
async fn control(
    state: &AppState,
    id: &str,
    mut action: BatchAction,
    body: &[u8],
) -> Result<Json<BatchView>, Error> {
    let id = batch_id(id)?;
    if let BatchAction::Retry { expires_at_ms } = &mut action {
        *expires_at_ms = retry_deadline(state, id, body).await?;
    }
    let max_cost = match action {
        BatchAction::Resume => ControlRequest::of(body)?.max_cost,
        _ => None,
    };
    let summary = match max_cost {
        Some(cost) if !(cost > 0.0 && cost.is_finite()) => {
            return Err(Error::Invalid {
                field: "max_cost".into(),
                message: format!("must be a number above 0, not {cost}"),
            });
        }
        Some(cost) => state.queue.resume_with_cap(id, cost).await?,
        None => state.queue.control(id, action).await?,
    }
    .ok_or_else(|| not_found(id))?;
    Ok(Json(summary.into()))
}

/// The deadline a retry of batch `id` gives it, from the retry's `body`.
async fn retry_deadline(state: &AppState, id: BatchId, body: &[u8]) -> Result<Option<i64>, Error> {
    let request = ControlRequest::of(body)?;
    let now = now_ms();
    let asked =
        Deadline::parse(request.expires_at.as_deref(), request.valid_for, now).map_err(|e| {
            Error::Malformed {
                field: Some(e.field.into()),
                message: e.message,
            }
        })?;
    let batch = state.queue.batch(id).await?.ok_or_else(|| not_found(id))?;
    // The batch's provider is its messages': the first one's says it (unless it
    // was sent through a fallback, whose default is then the one taken).
    let first = MessageQuery {
        state: None,
        after: None,
        limit: 1,
    };
    let provider = state
        .queue
        .messages(id, first)
        .await?
        .into_iter()
        .next()
        .map(|m| m.provider)
        .unwrap_or_default();
    Ok(state
        .intake
        .deadline(batch.channel, &provider, asked, now, now))
}
