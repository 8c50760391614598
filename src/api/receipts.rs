//! `POST /v1/receipts/{provider}`: delivery receipts from the providers. The
//! provider, by its configured name, checks and reads its own request (Twilio's
//! signed status callback, Aliyun's and Tencent's pushes, the webhook's signed
//! receipts); the store applies the reports; the answer is the one the provider
//! expects. A report whose `undelivered` code says the number cannot receive
//! messages suppresses the address, as an undeliverable send does.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::Error;
use super::request::body_bytes;
use super::state::AppState;
use crate::provider::{ReceiptAnswer, ReceiptError, ReceiptRequest};
use crate::queue::{ReceiptEffect, Suppression};
use crate::recipient;

/// Applies the receipts of the request that provider `name` made.
pub(super) async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let route = state
        .intake
        .registry()
        .route(&name)
        .ok_or_else(|| Error::NotFound(format!("no provider is named `{name}`")))?
        .clone();
    let body = body_bytes(body)?;
    let receipts = route
        .provider
        .read_receipts(&ReceiptRequest {
            headers: &headers,
            body: &body,
        })
        .map_err(|e| match e {
            ReceiptError::NotTaken(why) => Error::NotFound(format!(
                "provider `{name}` takes no delivery receipts: {why}"
            )),
            ReceiptError::Unauthorized(why) => Error::Unauthorized(why),
            ReceiptError::Malformed { field, message } => Error::Malformed { message, field },
        })?;
    let effects = state
        .queue
        .apply_receipts(&name, receipts.reports.clone())
        .await?;
    let suppressions: Vec<Suppression> = receipts
        .reports
        .iter()
        .zip(&effects)
        .filter_map(|(report, effect)| {
            let ReceiptEffect::Applied { to, channel } = effect else {
                return None;
            };
            let code = report.code.as_deref()?;
            (!report.delivered && route.provider.receipt_names_the_recipient(code)).then(|| {
                Suppression {
                    channel: *channel,
                    address: recipient::address_key(*channel, to),
                    reason: format!("{name}: undelivered ({code})"),
                    created_at_ms: 0,
                }
            })
        })
        .collect();
    if !suppressions.is_empty() {
        // The receipts are applied: failing now would only have the provider send
        // them again, to no effect. The next undeliverable send suppresses instead.
        if let Err(e) = state.queue.records().suppress(suppressions).await {
            tracing::error!(provider = %name, error = %e, "suppressing recipients a receipt called undeliverable failed");
        }
    }
    let tally = Tally::of(&effects);
    tracing::debug!(provider = %name, received = effects.len(), applied = tally.applied, held = tally.held, "delivery receipts");
    Ok(match receipts.answer {
        ReceiptAnswer::Json(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        ReceiptAnswer::Empty => StatusCode::NO_CONTENT.into_response(),
        ReceiptAnswer::Tally => axum::Json(tally).into_response(),
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
