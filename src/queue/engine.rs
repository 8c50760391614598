//! The seam every storage engine implements.

use std::time::Duration;

use async_trait::async_trait;

use super::{
    Accepted, AppliedReceipt, Arrival, BatchAction, BatchSummary, Begun, Claim, Lease,
    MessageQuery, MessageRecord, NewBatch, ReceiptEffect, Result, Settlement,
};
use crate::domain::{BatchId, DeliveryReport};
use crate::ratelimit::Limits;

/// The storage engine seam. Every method is one transaction. A batch with a
/// [template](NewBatch::template) is stored with its template and each message's
/// variables, not its body: each claimed message comes back with
/// [`Claimed::template`] set and an empty body, which the handle renders.
#[async_trait]
pub(crate) trait Engine: Send + Sync + 'static {
    async fn accept(&self, batch: NewBatch) -> Result<Accepted>;
    /// Starts storing `batch` (its messages, if any, are ignored) in chunks that
    /// come as `arrival` says: nothing of it can be claimed or seen until the
    /// commit. Answers at once when its idempotency key was used. An engine that
    /// cannot hold one transaction open while at-hand chunks are made answers
    /// [`Staging::gather`], and the batch is accepted whole at the commit.
    async fn begin(&self, batch: NewBatch, arrival: Arrival) -> Result<Begun>;
    /// Claims up to `limit` due messages for `provider`, best priority first, under
    /// a lease of `lease`; messages whose lease has expired are due again, and come
    /// back with [`Claimed::unknown_since_ms`] set (their request may have reached
    /// the provider) to when they were claimed, unless it was set before. Within
    /// `limits` (see [`crate::ratelimit`]), in the same transaction: the token
    /// bucket of the limits' owner (`provider` itself unless [`Limits::owner`] names
    /// another) bounds the claim and pays for it, and a message whose recipient is at
    /// one of the owner's caps is deferred to when the cap allows it.
    async fn claim(
        &self,
        provider: &str,
        limit: usize,
        lease: Duration,
        limits: &Limits,
    ) -> Result<Claim>;
    /// Extends each of `leases` that is still held to `lease` from now, in one
    /// call. A lease that was lost (its message was settled, or claimed again after
    /// the lease lapsed) is left as it is: a renewal never takes a message back.
    /// Answers how many were extended.
    async fn renew(&self, leases: Vec<Lease>, lease: Duration) -> Result<usize>;
    /// Settles leased messages; answers the held delivery reports it applied to
    /// the messages now sent (see [`Engine::apply_receipts`]), in order.
    async fn settle(&self, settlements: Vec<Settlement>) -> Result<Vec<AppliedReceipt>>;
    /// The sending window batch `id` was stored with (as
    /// [`BatchWindow::to_stored`](crate::window::BatchWindow::to_stored) wrote it),
    /// if it has one and exists.
    async fn window(&self, id: BatchId) -> Result<Option<String>>;
    async fn batch(&self, id: BatchId) -> Result<Option<BatchSummary>>;
    /// Up to `limit` batches with ids below `before` (all when `None`), newest
    /// first: batch ids are UUIDv7, so id order is creation order. Batches being
    /// staged are not listed. One summary per batch, each read as [`Engine::batch`].
    async fn batches(&self, before: Option<BatchId>, limit: u32) -> Result<Vec<BatchSummary>>;
    async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>>;
    /// How many messages for `provider` are pending (due now or later), counting no
    /// further than `cap`: the work is bounded by `cap`, whatever the queue holds.
    async fn pending(&self, provider: &str, cap: u64) -> Result<u64>;
    /// When a claim for `provider` could next take a message: the earliest of its
    /// pending messages' due times, its leases' ends and its unknown outcomes' next
    /// checks; `None` when it has none of them. A read through indexes, whatever
    /// the queue holds: it writes nothing, so an idle claimer may ask it often.
    async fn next_due(&self, provider: &str) -> Result<Option<i64>>;
    /// Expires up to `limit` unsent messages (pending, paused, or of unknown
    /// outcome) whose batch's deadline is at or before `now_ms`, keeping their last
    /// error; answers how many. Claims expire their own provider's pending ones
    /// first, in the claim's transaction: this sweep ends the rest (a paused batch,
    /// a provider nothing claims for).
    async fn expire(&self, now_ms: i64, limit: u64) -> Result<u64>;
    /// `Ok(None)` when there is no such batch; `Error::Conflict` when the batch's
    /// state does not allow the action.
    async fn control(&self, id: BatchId, action: BatchAction) -> Result<Option<BatchSummary>>;
    /// Applies delivery reports of provider `provider` (its configured name), in
    /// order, as [`Queue::apply_receipts`] describes; one effect per report.
    async fn apply_receipts(
        &self,
        provider: &str,
        reports: Vec<DeliveryReport>,
        now_ms: i64,
    ) -> Result<Vec<ReceiptEffect>>;
}
