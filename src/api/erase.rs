//! Forgetting a person: `DELETE /v1/recipients/{address}` cancels the messages
//! still queued to the address, then replaces it by a salted hash in every
//! message, reply and stored webhook event; the suppression list keeps it. The
//! answer says what was erased; erasing again answers zeros.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::audit::audited;
use super::error::Error;
use super::messages::recipient;
use super::state::AppState;
use crate::audit::{Actor, AuditAction};
use crate::queue::ERASED_PREFIX;

/// How long an erasure waits for sends in flight to the address to settle (a
/// send's lease bounds how long one can take) before answering 409.
const WAIT_FOR_SENDS: Duration = Duration::from_secs(30);

/// What `DELETE /v1/recipients/{address}` erased.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Erasure")]
pub struct ErasureView {
    /// The address as normalised (E.164, or the bare e-mail address).
    pub address: String,
    /// What it was replaced by: a search with this `to` finds the erased messages.
    pub erased_as: String,
    /// Messages whose recipient was replaced (the cancelled ones included).
    pub messages: u64,
    /// Replies from the address, now from `erased_as`.
    pub replies: u64,
    /// Stored webhook events (replies' payloads) that named the address.
    pub events: u64,
    /// Messages still queued to it, now `cancelled`.
    pub cancelled: u64,
}

/// `DELETE /v1/recipients/{address}`. The audit trail names the person by the
/// value they are erased as, never by the address it forgets.
pub(super) async fn erase(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> Result<Json<ErasureView>, Error> {
    let (target, result) = match address_to_erase(&state, &raw) {
        Ok(address) => match state.queue.erased_as(&address).await {
            Ok(erased_as) => (erased_as.clone(), forget(&state, address, erased_as).await),
            Err(e) => (String::new(), Err(e.into())),
        },
        Err(e) => (String::new(), Err(e)),
    };
    audited(&state, &actor, AuditAction::Erase, &target, result).await
}

/// The address `raw` names, normalised; an erased value is refused.
fn address_to_erase(state: &AppState, raw: &str) -> Result<String, Error> {
    if raw.trim().starts_with(ERASED_PREFIX) {
        return Err(Error::Invalid {
            field: "address".into(),
            message: "is an erased value already: there is nothing more to erase".into(),
        });
    }
    recipient(state, raw, "address")
}

/// Erases `address`, which becomes `erased_as`.
async fn forget(
    state: &AppState,
    address: String,
    erased_as: String,
) -> Result<Json<ErasureView>, Error> {
    let erased = state.queue.erase(&address, WAIT_FOR_SENDS).await?;
    tracing::info!(
        messages = erased.messages,
        replies = erased.replies,
        cancelled = erased.cancelled,
        "erased a recipient"
    );
    Ok(Json(ErasureView {
        address,
        erased_as,
        messages: erased.messages,
        replies: erased.replies,
        events: erased.events,
        cancelled: erased.cancelled,
    }))
}
