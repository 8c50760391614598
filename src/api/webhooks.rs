//! The status webhooks' deliveries: `GET /v1/webhooks` lists the endpoints with
//! their pending and failed events, `GET /v1/webhooks/{endpoint}/deliveries` pages
//! through one endpoint's deliveries newest first, and
//! `POST /v1/webhooks/{endpoint}/replay` posts one event, or every failed one, again.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::audit::audited;
use super::error::Error;
use super::request::{
    DEFAULT_PAGE, MAX_PAGE, body_bytes, next_cursor, page_limit, parse_json, query_params,
};
use super::state::AppState;
use crate::audit::{Actor, AuditAction};
use crate::domain::{format_ms, now_ms};
use crate::queue::{CALLBACK, DeliveryRecord, DeliveryState, Event, Kinds, Replay};

/// One endpoint and its events waiting or given up on.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct EndpointView {
    /// A configured webhook's name, or `callback`: batches' own `callback_url`s.
    name: String,
    /// Where its events are posted; absent for `callback` and for an endpoint no
    /// longer configured (its deliveries are kept).
    url: Option<String>,
    /// The kinds of events it is told.
    #[schemars(with = "Vec<crate::queue::EventKind>")]
    events: Kinds,
    /// Events waiting to be posted (due now or later).
    pending: u64,
    /// Events given up on after their retry window; replay them with
    /// `POST /v1/webhooks/{endpoint}/replay`.
    failed: u64,
}

/// `GET /v1/webhooks`'s answer.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct Endpoints {
    endpoints: Vec<EndpointView>,
}

/// `?state=&before=&limit=`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// Only deliveries in this state.
    state: Option<DeliveryState>,
    /// A page's `next_before`.
    before: Option<i64>,
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    limit: Option<u32>,
}

/// One event for one endpoint.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct DeliveryView {
    /// The event, as it is posted.
    event: Event,
    state: DeliveryState,
    /// Posts tried so far.
    attempts: u32,
    /// The last refused post's error, if any was.
    last_error: Option<String>,
    /// When it is posted next, while pending (RFC 3339).
    due_at: Option<String>,
    /// When the endpoint took it (RFC 3339).
    posted_at: Option<String>,
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct Page {
    deliveries: Vec<DeliveryView>,
    /// Pass as `before` for the next page; `null` on the last.
    next_before: Option<i64>,
}

/// What to post again: one event by its id, or every failed one.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "WebhookReplay", extend(
    "oneOf" = [
        {"required": ["event_id"], "properties": {"event_id": {"type": "string"}, "failed": {"const": false}}},
        {"required": ["failed"], "properties": {"event_id": {"type": "null"}, "failed": {"const": true}}},
    ],
))]
pub(super) struct ReplayRequest {
    event_id: Option<String>,
    #[serde(default)]
    failed: bool,
}

/// How many deliveries were made pending again.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "WebhookReplayed")]
pub(super) struct Replayed {
    replayed: u64,
}

pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Endpoints>, Error> {
    let counts = state.queue.delivery_counts().await?;
    let count_of = |name: &str| {
        counts
            .iter()
            .find(|(endpoint, ..)| endpoint == name)
            .map_or((0, 0), |&(_, pending, failed)| (pending, failed))
    };
    let mut endpoints: Vec<EndpointView> = state
        .webhooks
        .iter()
        .map(|w| {
            let (pending, failed) = count_of(&w.name);
            EndpointView {
                name: w.name.clone(),
                url: Some(w.url.to_string()),
                events: w.events,
                pending,
                failed,
            }
        })
        .collect();
    let callbacks = state.signs_callbacks.then_some(CALLBACK);
    let others = counts
        .iter()
        .map(|(name, ..)| name.as_str())
        .chain(callbacks)
        .filter(|name| !state.webhooks.iter().any(|w| w.name == *name));
    for name in others {
        if endpoints.iter().any(|e| e.name == name) {
            continue;
        }
        let (pending, failed) = count_of(name);
        endpoints.push(EndpointView {
            name: name.to_string(),
            url: None,
            events: if name == CALLBACK {
                Kinds::all()
            } else {
                Kinds(0)
            },
            pending,
            failed,
        });
    }
    Ok(Json(Endpoints { endpoints }))
}

/// Whether `endpoint` is one the API knows: configured, `callback`, or with
/// deliveries kept from before its configuration went.
async fn known(state: &AppState, endpoint: &str) -> Result<(), Error> {
    if endpoint == CALLBACK || state.webhooks.iter().any(|w| w.name == endpoint) {
        return Ok(());
    }
    let kept = state
        .queue
        .deliveries(Some(endpoint), None, None, 1)
        .await?;
    if kept.is_empty() {
        return Err(Error::NotFound(format!(
            "no webhook endpoint `{endpoint}`: see GET /v1/webhooks"
        )));
    }
    Ok(())
}

pub(super) async fn deliveries(
    State(state): State<AppState>,
    Path(endpoint): Path<String>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Page>, Error> {
    let query = query_params(query)?;
    let limit = page_limit(query.limit)?;
    known(&state, &endpoint).await?;
    let page = state
        .queue
        .deliveries(Some(&endpoint), query.state, query.before, limit)
        .await?;
    let next_before = next_cursor(&page, limit, |d| d.seq);
    Ok(Json(Page {
        deliveries: page.into_iter().map(view).collect(),
        next_before,
    }))
}

fn view(d: DeliveryRecord) -> DeliveryView {
    DeliveryView {
        event: d.event,
        state: d.state,
        attempts: d.attempts,
        last_error: d.last_error,
        due_at: d.due_at_ms.map(format_ms),
        posted_at: d.posted_at_ms.map(format_ms),
    }
}

pub(super) async fn replay(
    State(state): State<AppState>,
    actor: Actor,
    Path(endpoint): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Replayed>, Error> {
    let result = replay_deliveries(&state, &endpoint, body).await;
    audited(
        &state,
        &actor,
        AuditAction::WebhookReplay,
        &endpoint,
        result,
    )
    .await
}

/// Makes the deliveries to `endpoint` that `body` names due again.
async fn replay_deliveries(
    state: &AppState,
    endpoint: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Replayed>, Error> {
    let request: ReplayRequest = parse_json(&body_bytes(body)?)?;
    let which = match (request.event_id, request.failed) {
        (Some(id), false) => Replay::Event(id),
        (None, true) => Replay::Failed,
        _ => {
            return Err(Error::Invalid {
                field: "event_id".into(),
                message: "give either event_id or \"failed\": true".into(),
            });
        }
    };
    known(state, endpoint).await?;
    let one = matches!(which, Replay::Event(_));
    let replayed = state
        .queue
        .replay_deliveries(endpoint, which, now_ms())
        .await?;
    if one && replayed == 0 {
        return Err(Error::NotFound(format!(
            "no delivery of that event to `{endpoint}`"
        )));
    }
    Ok(Json(Replayed { replayed }))
}
