//! The suppression list: recipients who must not be messaged, per channel.
//! `POST /v1/suppressions` adds (JSON, or a CSV upload), `DELETE /v1/suppressions`
//! removes, `GET /v1/suppressions?channel=` pages through them. Addresses are
//! normalized as batch recipients are, so `138 0013 8000` and `+8613800138000` are
//! the same entry; a batch rejects suppressed recipients as `suppressed`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::audit::{addresses_target, audited};
use super::error::Error;
use super::request::{
    DEFAULT_PAGE, MAX_PAGE, accept_content, body_bytes, charset, media_type, next_cursor,
    page_limit, parse_json, query_params,
};
use super::state::AppState;
use crate::audit::{Actor, AuditAction};
use crate::csv_input;
use crate::domain::{Channel, format_ms};
use crate::intake::NOT_BLANK;
use crate::queue::Suppression;

/// The reason recorded when a request gives none.
const DEFAULT_REASON: &str = "added by request";

/// Addresses to add to a channel's list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SuppressionsAdd")]
pub(super) struct AddRequest {
    channel: Channel,
    #[schemars(inner(pattern(NOT_BLANK)))]
    addresses: Vec<String>,
    /// Recorded with each address; `added by request` when absent.
    #[serde(default)]
    reason: Option<String>,
}

/// Addresses to remove from a channel's list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SuppressionsRemove")]
pub(super) struct RemoveRequest {
    channel: Channel,
    /// Each must be an address of the channel.
    #[schemars(inner(pattern(NOT_BLANK)))]
    addresses: Vec<String>,
}

/// `?channel=sms&reason=…` for a CSV upload; `?channel=&after=&limit=` for a listing.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct Params {
    /// The listing's channel; a CSV upload's. (A JSON body names its own, which
    /// is the one read.)
    #[schemars(required)]
    channel: Option<Channel>,
    /// A CSV upload's reason for lines that give none.
    reason: Option<String>,
    /// A page's `next_after`.
    after: Option<String>,
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    limit: Option<u32>,
}

/// An address that could not be added, and where it was.
#[derive(Debug, Serialize, JsonSchema)]
struct Refused {
    /// Its index in `addresses`, or its line in the CSV (from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    address: String,
    detail: String,
}

/// What a `POST /v1/suppressions` added, updated and refused.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "SuppressionsAdded")]
pub(super) struct Added {
    /// Entries new to the list.
    added: usize,
    /// Entries already there, now with the given reason.
    updated: usize,
    invalid: Vec<Refused>,
}

pub(super) async fn add(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    query: Result<Query<Params>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Added>, Error> {
    accept_content(&headers, &["text/csv"])?;
    let query = query_params(query)?;
    let bytes = body_bytes(body)?;
    // (where it was, the address as given, its reason)
    let (channel, rows): (Channel, Vec<(Place, String, String)>) =
        if media_type(&headers).as_deref() == Some("text/csv") {
            let channel = query.channel.ok_or_else(|| Error::Invalid {
                field: "channel".into(),
                message: "is required for a CSV upload: ?channel=sms or ?channel=email".into(),
            })?;
            let reason = query.reason.unwrap_or_else(|| DEFAULT_REASON.into());
            let text =
                csv_input::decode(&bytes, charset(&headers).as_deref()).map_err(|message| {
                    Error::Invalid {
                        field: "charset".into(),
                        message,
                    }
                })?;
            (channel, csv_rows(text.as_bytes(), &reason)?)
        } else {
            let request: AddRequest = parse_json(&bytes)?;
            let reason = request.reason.unwrap_or_else(|| DEFAULT_REASON.into());
            let rows = request
                .addresses
                .into_iter()
                .enumerate()
                .map(|(i, a)| (Place::Index(i), a, reason.clone()))
                .collect();
            (request.channel, rows)
        };
    let mut entries = Vec::with_capacity(rows.len());
    let mut invalid = Vec::new();
    for (place, raw, reason) in rows {
        match state.intake.normalize(channel, &raw) {
            Ok(recipient) => entries.push(Suppression {
                channel,
                address: recipient.key,
                reason,
                created_at_ms: 0,
            }),
            Err(e) => invalid.push(place.refused(raw, e.0)),
        }
    }
    let distinct = entries
        .iter()
        .map(|e| &e.address)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let target = addresses_target(&entries.iter().map(|e| &e.address).collect::<Vec<_>>());
    let stored = state.queue.records().suppress(entries).await;
    let added = audited(
        &state,
        &actor,
        AuditAction::SuppressionAdd,
        &target,
        stored.map_err(Error::from),
    )
    .await?;
    Ok(Json(Added {
        added,
        updated: distinct - added,
        invalid,
    }))
}

/// Where an address came from in the request.
enum Place {
    Index(usize),
    Line(usize),
}

impl Place {
    fn refused(self, address: String, detail: String) -> Refused {
        let (index, line) = match self {
            Place::Index(i) => (Some(i), None),
            Place::Line(l) => (None, Some(l)),
        };
        Refused {
            index,
            line,
            address,
            detail,
        }
    }
}

/// Reads `address[,reason]` lines; a first line whose first cell is `address` or
/// `to` is a header. Blank lines are skipped.
fn csv_rows(bytes: &[u8], default_reason: &str) -> Result<Vec<(Place, String, String)>, Error> {
    let mut lines = csv_input::Lines::new(bytes);
    let mut reader = csv_input::loose(bytes);
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| Error::Malformed {
            message: format!("the CSV cannot be read: {e}"),
            field: None,
        })?;
        if csv_input::is_blank(&record) {
            continue;
        }
        let line = lines.of(&record) as usize;
        let address = record.get(0).unwrap_or("");
        if rows.is_empty() && matches!(address.to_ascii_lowercase().as_str(), "address" | "to") {
            continue;
        }
        let reason = record
            .get(1)
            .filter(|r| !r.is_empty())
            .unwrap_or(default_reason);
        rows.push((Place::Line(line), address.to_owned(), reason.to_owned()));
    }
    Ok(rows)
}

/// How many addresses a `DELETE /v1/suppressions` removed.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "SuppressionsRemoved")]
pub(super) struct Removed {
    removed: usize,
}

pub(super) async fn remove(
    State(state): State<AppState>,
    actor: Actor,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Removed>, Error> {
    let request: RemoveRequest = parse_json(&body_bytes(body)?)?;
    let mut addresses = Vec::with_capacity(request.addresses.len());
    for (i, raw) in request.addresses.iter().enumerate() {
        let recipient =
            state
                .intake
                .normalize(request.channel, raw)
                .map_err(|e| Error::Invalid {
                    field: format!("addresses[{i}]"),
                    message: e.0,
                })?;
        addresses.push(recipient.key);
    }
    let target = addresses_target(&addresses);
    let removed = state
        .queue
        .records()
        .unsuppress(request.channel, addresses)
        .await
        .map_err(Error::from);
    let removed = audited(
        &state,
        &actor,
        AuditAction::SuppressionRemove,
        &target,
        removed,
    )
    .await?;
    Ok(Json(Removed { removed }))
}

/// One suppressed address.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Suppression")]
pub(super) struct SuppressionView {
    channel: Channel,
    /// Normalized as batch recipients are.
    address: String,
    reason: String,
    #[schemars(extend("format" = "date-time"))]
    created_at: String,
}

/// A page of suppressions.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "SuppressionPage")]
pub(super) struct Page {
    suppressions: Vec<SuppressionView>,
    /// Pass as `after` (with the same `channel`) for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Page>, Error> {
    let query = query_params(query)?;
    let channel = query.channel.ok_or_else(|| Error::Invalid {
        field: "channel".into(),
        message: "is required: ?channel=sms or ?channel=email".into(),
    })?;
    let limit = page_limit(query.limit)?;
    let after = query.after.map(|a| (channel, a));
    let page = state
        .queue
        .records()
        .suppressions(Some(channel), after, limit)
        .await?;
    let next_after = next_cursor(&page, limit, |s| s.address.clone());
    Ok(Json(Page {
        suppressions: page
            .into_iter()
            .map(|s| SuppressionView {
                channel: s.channel,
                address: s.address,
                reason: s.reason,
                created_at: format_ms(s.created_at_ms),
            })
            .collect(),
        next_after,
    }))
}
