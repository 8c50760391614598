//! A batch stored in chunks: begun, added to, then committed whole or discarded.
//!
//! Every engine stages a batch that streams from a client without holding the
//! store for it. A batch whose chunks are all at hand is either written in one
//! transaction while its next chunk is made (an engine that can hold its writer
//! that long) or gathered in memory and accepted whole at the commit: the default
//! for engines that cannot hold one transaction open.

use async_trait::async_trait;

use super::{Accepted, NewBatch, NewMessage, Result};

/// Where a batch's chunks come from, which decides how the store takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// From memory or local disk, as fast as they can be checked: the store may
    /// hold its writer for the batch.
    AtHand,
    /// From a client, at the client's pace: staged, so that a slow upload never
    /// holds the store.
    Streamed,
}

/// The answer to [`Queue::begin`](super::Queue::begin).
pub enum Begun {
    /// Nothing to store: the batch's idempotency key was used before.
    Answered(Accepted),
    /// Add the messages, then [commit](super::Queue::commit).
    Staging(Staging),
}

/// A batch being stored in chunks. Dropping it without
/// [`Queue::commit`](super::Queue::commit) leaves nothing visible; what was written
/// is removed by [`Staging::discard`], or by the engine's sweep of abandoned staging.
pub struct Staging(Held);

enum Held {
    /// Written by the engine as it comes.
    Engine(Box<dyn Stage>),
    /// Kept here, to be accepted whole at the commit.
    Gathered(Box<NewBatch>),
}

impl Staging {
    /// A staging the engine writes chunk by chunk.
    pub(crate) fn new(stage: Box<dyn Stage>) -> Staging {
        Staging(Held::Engine(stage))
    }

    /// A staging that gathers `batch`'s messages in memory, for an engine that
    /// cannot hold one transaction open while they are made.
    pub(crate) fn gather(batch: NewBatch) -> Staging {
        Staging(Held::Gathered(Box::new(batch)))
    }

    /// Writes `messages` (in index order, after those added before) durably, but
    /// invisibly; or, when gathering, keeps them.
    pub async fn add(&mut self, messages: Vec<NewMessage>) -> Result<()> {
        match &mut self.0 {
            Held::Engine(stage) => stage.add(messages).await,
            Held::Gathered(batch) => {
                batch.messages.extend(messages);
                Ok(())
            }
        }
    }

    /// Removes what was written.
    pub async fn discard(self) {
        if let Held::Engine(stage) = self.0 {
            stage.discard().await;
        }
    }

    /// Makes the batch visible and claimable, all at once, with its `report` and
    /// `span` (one more than its highest message index); a gathered batch is
    /// accepted whole by `accept`.
    pub(super) async fn commit<F>(
        self,
        report: serde_json::Value,
        span: u32,
        accept: impl FnOnce(NewBatch) -> F,
    ) -> Result<Accepted>
    where
        F: Future<Output = Result<Accepted>>,
    {
        match self.0 {
            Held::Engine(stage) => stage.commit(report, span).await,
            Held::Gathered(mut batch) => {
                batch.report = report;
                accept(*batch).await
            }
        }
    }
}

/// An engine's side of a batch it stages chunk by chunk.
#[async_trait]
pub(crate) trait Stage: Send {
    async fn add(&mut self, messages: Vec<NewMessage>) -> Result<()>;
    async fn commit(self: Box<Self>, report: serde_json::Value, span: u32) -> Result<Accepted>;
    async fn discard(self: Box<Self>);
}
