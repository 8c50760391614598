//! A batch stored in chunks, invisible until committed.

use std::sync::Arc;

use tokio::sync::Notify;

use super::{Accepted, NewMessage, Result, StagingEngine};

/// The answer to [`Queue::begin`].
pub enum Begun {
    /// Nothing to store: the batch's idempotency key was used before.
    Answered(Accepted),
    /// Add the messages, then commit.
    Staging(Staging),
}

/// A batch being stored in chunks. Dropping it without [`Staging::commit`] leaves
/// nothing visible; what was written is removed by [`Staging::discard`], or by the
/// engine's sweep of abandoned staging.
pub struct Staging {
    pub(super) engine: Box<dyn StagingEngine>,
    pub(super) accepted: Arc<Notify>,
}

impl Staging {
    /// Writes `messages` (in index order, after those added before) durably, but
    /// invisibly.
    pub async fn add(&mut self, messages: Vec<NewMessage>) -> Result<()> {
        self.engine.add(messages).await
    }

    /// Makes the batch visible and claimable, all at once, with its `report` and
    /// `span` (one more than its highest message index).
    pub async fn commit(self, report: serde_json::Value, span: u32) -> Result<Accepted> {
        let accepted = self.engine.commit(report, span).await?;
        self.accepted.notify_waiters();
        Ok(accepted)
    }

    pub async fn discard(self) {
        self.engine.discard().await;
    }
}
