//! The seam every storage engine implements.

use std::time::Duration;

use async_trait::async_trait;

use super::{
    Accepted, BatchSummary, Claim, Control, MessageQuery, MessageRecord, NewBatch, NewMessage,
    ReceiptEffect, Result, Settlement,
};
use crate::domain::{BatchId, DeliveryReport};
use crate::ratelimit::Limits;

/// The storage engine seam. Every method is one transaction.
#[async_trait]
pub(crate) trait Engine: Send + Sync + 'static {
    async fn accept(&self, batch: NewBatch) -> Result<Accepted>;
    /// Starts storing `batch` (its messages, if any, are ignored) in chunks, for a
    /// batch too big to hold in memory: nothing of it can be claimed or seen until
    /// [`Staging::commit`]. Answers at once when its idempotency key was used.
    async fn begin(&self, batch: NewBatch) -> Result<Staged>;
    /// Starts storing `batch` in chunks that are all at hand (made as fast as the
    /// machine goes, never waiting on a client), in one transaction: the engine may
    /// hold its writer for the whole batch and write each chunk while the next is
    /// being made. `None`: the engine has no such mode, and the caller stores the
    /// batch whole with [`Engine::accept`].
    async fn begin_whole(&self, _batch: &NewBatch) -> Result<Option<Staged>> {
        Ok(None)
    }
    /// Whether the engine stores a template batch's [`NewBatch::template`] and its
    /// messages' variables, and renders each message's body when it is claimed,
    /// rather than storing every body: about half the bytes a message.
    fn renders_at_claim(&self) -> bool {
        false
    }
    /// Claims up to `limit` due messages for `provider`, best priority first, under
    /// a lease of `lease`; messages whose lease has expired are due again. Within
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
    async fn settle(&self, settlements: Vec<Settlement>) -> Result<()>;
    async fn batch(&self, id: BatchId) -> Result<Option<BatchSummary>>;
    /// Up to `limit` batches with ids below `before` (all when `None`), newest
    /// first: batch ids are UUIDv7, so id order is creation order. Batches being
    /// staged are not listed. One summary per batch, each read as [`Engine::batch`].
    async fn batches(&self, before: Option<BatchId>, limit: u32) -> Result<Vec<BatchSummary>>;
    async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>>;
    /// How many messages for `provider` are pending (due now or later), counting no
    /// further than `cap`: the work is bounded by `cap`, whatever the queue holds.
    async fn pending(&self, provider: &str, cap: u64) -> Result<u64>;
    /// `Ok(None)` when there is no such batch; `Error::Conflict` when the batch's
    /// state does not allow the action.
    async fn control(&self, id: BatchId, action: Control) -> Result<Option<BatchSummary>>;
    /// Applies delivery reports of provider `provider` (its configured name), in
    /// order, as [`Queue::apply_receipts`] describes; one effect per report.
    async fn apply_receipts(
        &self,
        provider: &str,
        reports: Vec<DeliveryReport>,
        now_ms: i64,
    ) -> Result<Vec<ReceiptEffect>>;
}

/// An engine's answer to [`Engine::begin`].
pub(crate) enum Staged {
    Answered(Accepted),
    Staging(Box<dyn StagingEngine>),
}

#[async_trait]
pub(crate) trait StagingEngine: Send {
    async fn add(&mut self, messages: Vec<NewMessage>) -> Result<()>;
    async fn commit(self: Box<Self>, report: serde_json::Value, span: u32) -> Result<Accepted>;
    async fn discard(self: Box<Self>);
}
