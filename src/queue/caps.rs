//! The seam of the limits a claim is held to beyond its provider's rate: spend
//! caps and daily budgets (charging claimed messages, raising a batch's cap, a
//! provider's spend on a day) and per-recipient caps (the sends they count).
//! Every engine implements [`CapStore`] beside its [`Engine`](super::Engine).

use std::collections::HashMap;

use async_trait::async_trait;

use super::Result;
use super::spend::{Charge, Charged, Micros};
use crate::domain::BatchId;

/// The store's side of spend caps, budgets and per-recipient caps.
#[async_trait]
pub(crate) trait CapStore: Send + Sync + 'static {
    /// Charges each of `charges`, in order, as [`spend`](super::spend) says: a
    /// message still under its lease that carries no charge yet takes its amount,
    /// added to its batch's spend and to its provider's spend on its day, unless
    /// that would pass the batch's `max_cost` (the message and every pending one of
    /// the batch end `held`, with why) or the day's budget (nothing is charged).
    /// One answer per charge; one transaction.
    async fn charge(&self, charges: Vec<Charge>) -> Result<Vec<Charged>>;
    /// Sets batch `id`'s spend cap to `max_cost` and puts its held messages back
    /// to pending, in one transaction; `Ok(None)` when there is no such batch.
    /// `Error::Conflict` when the batch is cancelled, has no cap, or `max_cost` is
    /// not above what it has spent.
    async fn raise_cap(&self, id: BatchId, max_cost: Micros) -> Result<Option<()>>;
    /// What `provider` has been charged on local day `day`.
    async fn spent(&self, provider: &str, day: &str) -> Result<Micros>;
    /// The times (ms since the epoch) of the sends after `since_ms` that `owner`'s
    /// per-recipient caps count for each of `addresses`, for those that had any.
    /// Only reads: the pre-flight report counts the recipients at a cap with it.
    async fn recent_sends(
        &self,
        owner: &str,
        since_ms: i64,
        addresses: Vec<String>,
    ) -> Result<HashMap<String, Vec<i64>>>;
}
