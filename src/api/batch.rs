//! Reading and controlling batches: `GET /v1/batches`, `GET /v1/batches/{id}`,
//! `GET /v1/batches/{id}/messages` and `POST /v1/batches/{id}/{action}`, and the
//! views of a batch and a message they answer with.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::Error;
use super::request::{DEFAULT_PAGE, MAX_PAGE, limit_within, page_limit, query_params};
use super::state::AppState;
use crate::domain::{BatchId, Counts, MessageState, batch_state, format_ms};
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

pub(super) fn batch_id(raw: &str) -> Result<BatchId, Error> {
    BatchId::parse(raw).ok_or_else(|| Error::NotFound(format!("no batch has the id `{raw}`")))
}

pub(super) fn not_found(id: BatchId) -> Error {
    Error::NotFound(format!("no batch has the id `{id}`"))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct BatchesParams {
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

pub(super) async fn list_messages(
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
pub(super) const ACTIONS: [(&str, BatchAction); 4] = [
    ("pause", BatchAction::Pause),
    ("resume", BatchAction::Resume),
    ("cancel", BatchAction::Cancel),
    ("retry", BatchAction::Retry),
];

pub(super) async fn control_batch(
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
