//! Finding messages across batches: `GET /v1/messages?to=&ref=&state=&since=&until=`
//! pages through every message to an address or with a ref, newest first, as JSON
//! or (`format=csv`) as a streamed CSV export. Addresses are normalised as batch
//! recipients are, so `138 0013 8000` finds what was sent to `+8613800138000`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::batch::MessageView;
use super::csv_out::{self, Source};
use super::error::Error;
use super::request::{DEFAULT_PAGE, MAX_PAGE, page_limit, query_params};
use super::state::AppState;
use crate::domain::{Channel, MessageState};
use crate::queue::{ERASED_PREFIX, Found, SearchQuery};

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct SearchParams {
    /// The recipient: a phone number or an e-mail address, normalised as batch
    /// recipients are; or the `erased:…` value an erasure replaced one by.
    to: Option<String>,
    /// The messages' `ref`. Give `to`, `ref` or both.
    #[serde(rename = "ref")]
    reference: Option<String>,
    /// Only the messages in this state.
    #[schemars(with = "Option<MessageState>")]
    state: Option<String>,
    /// Only messages created at or after this time (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    since: Option<String>,
    /// Only messages created before this time (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    until: Option<String>,
    /// A page's `next_before`.
    before: Option<i64>,
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    limit: Option<u32>,
    /// `csv` for every message found as a CSV file (`limit` and `before` then
    /// only say where it starts: it goes on to the last).
    #[schemars(with = "Option<Format>")]
    format: Option<String>,
}

/// What a listing can answer as besides JSON.
#[derive(Debug, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // Described in the OpenAPI document; read as text.
pub(super) enum Format {
    Json,
    Csv,
}

/// A message found by a search, with its batch.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "FoundMessage")]
pub struct FoundView {
    #[schemars(extend("format" = "uuid"))]
    pub batch_id: String,
    #[serde(flatten)]
    pub message: MessageView,
}

/// A page of messages found, newest first; pass `next_before` as `before` for
/// the next page (`null` on the last).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct FoundPage {
    pub messages: Vec<FoundView>,
    pub next_before: Option<i64>,
}

impl From<Found> for FoundView {
    fn from(f: Found) -> Self {
        FoundView {
            batch_id: f.batch_id.to_string(),
            message: f.message.into(),
        }
    }
}

/// `GET /v1/messages`.
pub(super) async fn search(
    State(state): State<AppState>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Response, Error> {
    let params = query_params(params)?;
    let csv = wants_csv(params.format.as_deref())?;
    let to = params
        .to
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .map(|raw| recipient(&state, raw, "to"))
        .transpose()?;
    let reference = params.reference.filter(|r| !r.is_empty());
    if to.is_none() && reference.is_none() {
        return Err(Error::Invalid {
            field: "to".into(),
            message: "give `to` (an address), `ref`, or both".into(),
        });
    }
    let query = SearchQuery {
        to,
        reference,
        state: message_state(params.state.as_deref())?,
        since_ms: time(params.since.as_deref(), "since")?,
        until_ms: time(params.until.as_deref(), "until")?,
        before: params.before,
        limit: page_limit(params.limit)?,
    };
    if csv {
        return Ok(csv_out::respond(
            state,
            Source::Search(query),
            "messages.csv",
        ));
    }
    let limit = query.limit;
    let found = state.queue.search(query).await?;
    let next_before = (found.len() == limit as usize)
        .then(|| found.last().map(|f| f.position))
        .flatten();
    Ok(Json(FoundPage {
        messages: found.into_iter().map(FoundView::from).collect(),
        next_before,
    })
    .into_response())
}

/// Whether `format` asks for CSV; 422 naming `format` for an unknown one.
pub(super) fn wants_csv(format: Option<&str>) -> Result<bool, Error> {
    match format {
        None | Some("" | "json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(Error::Invalid {
            field: "format".into(),
            message: format!("`{other}` is not a format: use json or csv"),
        }),
    }
}

/// A `state` filter; 422 naming `state` for an unknown one.
pub(super) fn message_state(state: Option<&str>) -> Result<Option<MessageState>, Error> {
    match state {
        None | Some("") => Ok(None),
        Some(s) => MessageState::parse(s).map(Some).ok_or_else(|| Error::Invalid {
            field: "state".into(),
            message: format!(
                "`{s}` is not a state: use pending, sending, sent, delivered, undelivered, unknown, failed, expired, cancelled or paused"
            ),
        }),
    }
}

/// An RFC 3339 time as ms since the epoch; 422 naming `field` otherwise.
fn time(raw: Option<&str>, field: &str) -> Result<Option<i64>, Error> {
    raw.filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<jiff::Timestamp>()
                .map(|t| t.as_millisecond())
                .map_err(|e| Error::Invalid {
                    field: field.into(),
                    message: format!(
                        "`{t}` is not an RFC 3339 time (e.g. 2026-01-31T08:00:00Z): {e}"
                    ),
                })
        })
        .transpose()
}

/// A recipient as the store keeps it: an e-mail address (without a display name)
/// when `raw` has an `@`, else an E.164 phone number; an `erased:…` value as it
/// is. 422 naming `field` when it is neither.
pub(super) fn recipient(state: &AppState, raw: &str, field: &str) -> Result<String, Error> {
    let raw = raw.trim();
    if raw.starts_with(ERASED_PREFIX) {
        return Ok(raw.to_owned());
    }
    let channel = if raw.contains('@') {
        Channel::Email
    } else {
        Channel::Sms
    };
    state
        .intake
        .normalize(channel, raw)
        .map(|r| r.key)
        .map_err(|e| Error::Invalid {
            field: field.into(),
            message: e.0,
        })
}
