//! `POST /v1/receipts/{provider}`: delivery receipts from the providers. The
//! provider, by its configured name, checks and reads its own request (Twilio's
//! signed status callback, Aliyun's and Tencent's pushes, the webhook's signed
//! receipts); the store applies the reports; the answer is the one the provider
//! expects. A report whose `undelivered` code says the number cannot receive
//! messages suppresses the address, by [`suppress::undeliverable`] as an
//! undeliverable send does.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::Error;
use super::request::body_bytes;
use super::state::AppState;
use crate::domain::DeliveryReport;
use crate::provider::{Provider, ReceiptAnswer, ReceiptError, ReceiptRequest};
use crate::queue::ReceiptEffect;
use crate::queue::suppress::{self, Word};

/// Applies the receipts of the request that provider `name` made.
pub(super) async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = body_bytes(body)?;
    let receipts = read(&state, &name, "delivery receipts", |provider| {
        provider.read_receipts(&ReceiptRequest {
            headers: &headers,
            body: &body,
        })
    })?;
    let effects = apply(&state, &name, receipts.reports).await?;
    let tally = Tally::of(&effects);
    tracing::debug!(provider = %name, received = effects.len(), applied = tally.applied, held = tally.held, "delivery receipts");
    Ok(match receipts.answer {
        ReceiptAnswer::Tally => axum::Json(tally).into_response(),
        answer => fixed_answer(answer),
    })
}

/// Applies provider `name`'s `reports`, and suppresses the addresses whose
/// reports say they cannot receive messages.
pub(super) async fn apply(
    state: &AppState,
    name: &str,
    reports: Vec<DeliveryReport>,
) -> Result<Vec<ReceiptEffect>, Error> {
    let effects = state.queue.apply_receipts(name, reports.clone()).await?;
    // The receipts are applied: a failure to suppress is logged, not answered, as
    // the provider would only send them again, to no effect.
    let applied = reports
        .into_iter()
        .zip(effects.iter().cloned())
        .filter_map(|(report, effect)| effect.applied(name.to_string(), report))
        .map(Word::Receipt);
    suppress::undeliverable(state.queue.records(), state.intake.registry(), applied).await;
    Ok(effects)
}

/// The answer a provider expects that says nothing of what was done: its own
/// acknowledgement, or none. The webhook's tally is the caller's.
pub(super) fn fixed_answer(answer: ReceiptAnswer) -> Response {
    match answer {
        ReceiptAnswer::Json(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        ReceiptAnswer::Xml(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
            body,
        )
            .into_response(),
        ReceiptAnswer::Empty | ReceiptAnswer::Tally => StatusCode::NO_CONTENT.into_response(),
    }
}

/// What provider `name` reads from its request with `read`, or why it is refused:
/// no such provider, or one that takes no `what`, is a 404.
pub(super) fn read<T>(
    state: &AppState,
    name: &str,
    what: &str,
    read: impl FnOnce(&dyn Provider) -> Result<T, ReceiptError>,
) -> Result<T, Error> {
    let route = state
        .intake
        .registry()
        .route(name)
        .ok_or_else(|| Error::NotFound(format!("no provider is named `{name}`")))?;
    read(route.provider.as_ref()).map_err(|e| match e {
        ReceiptError::NotTaken(why) => {
            Error::NotFound(format!("provider `{name}` takes no {what}: {why}"))
        }
        ReceiptError::Unauthorized(why) => Error::Unauthorized(why),
        ReceiptError::Malformed { field, message } => Error::Malformed { message, field },
    })
}

/// What became of a request's reports, in counts.
#[derive(Debug, Default, serde::Serialize, schemars::JsonSchema)]
#[schemars(rename = "ReceiptTally")]
pub(super) struct Tally {
    received: usize,
    /// Moved a message to `delivered` or `undelivered`.
    applied: usize,
    /// The message had that outcome, or a final one, already.
    unchanged: usize,
    /// No message has the id yet: kept for a day, applied when its send is recorded.
    held: usize,
    /// Several messages share the id and the report names no recipient.
    ambiguous: usize,
}

impl Tally {
    fn of(effects: &[ReceiptEffect]) -> Tally {
        let mut tally = Tally {
            received: effects.len(),
            ..Tally::default()
        };
        for effect in effects {
            match effect {
                ReceiptEffect::Applied { .. } => tally.applied += 1,
                ReceiptEffect::Unchanged => tally.unchanged += 1,
                ReceiptEffect::Held => tally.held += 1,
                ReceiptEffect::Ambiguous => tally.ambiguous += 1,
            }
        }
        tally
    }
}
