//! The durable queue and ledger of batches and messages.
//!
//! - [`Queue`] is the cheap-to-clone handle the API and the workers share.
//! - [`Engine`] is the small crate-private trait each storage engine implements:
//!   accept a whole batch atomically, claim under a lease, settle in bulk, read the
//!   ledger, control a batch.
//! - `sqlite` is the embedded engine (the default: a directory on local disk).
//!
//! Delivery is at-least-once: a claimed message carries a lease; if its worker dies,
//! the lease expires and the message is claimed again with the same message id.

mod postgres;
mod redis;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::Notify;

use crate::domain::{BatchControl, BatchId, Channel, Counts, MessageState};

/// What went wrong in the store. Engine-specific causes are kept in the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store is corrupt or from an unknown version: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
    /// The store's URL names an engine this build does not have.
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A batch ready to be stored: every message already rendered and checked.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub id: BatchId,
    pub channel: Channel,
    /// Where the batch came from: `api`, `send-sms`, …
    pub source: String,
    /// Higher goes first.
    pub priority: i32,
    /// Not before this time (ms since the epoch).
    pub send_at_ms: i64,
    pub idempotency: Option<Idempotency>,
    /// The accept report, stored so an idempotent replay answers the same.
    pub report: serde_json::Value,
    pub messages: Vec<NewMessage>,
}

/// The sender's idempotency key and a hash of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The recipient's index in the submitted list; part of the message id.
    pub index: u32,
    pub provider: String,
    pub to: String,
    pub reference: Option<String>,
    pub subject: Option<String>,
    pub body: String,
}

/// The answer to [`Queue::accept`].
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// Stored now.
    New(BatchId),
    /// The idempotency key was seen before with the same request: nothing stored.
    Replayed {
        id: BatchId,
        report: serde_json::Value,
    },
}

/// Identifies one lease on one message; a settlement for a lease that has since
/// expired and been claimed by someone else is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub(crate) row: i64,
    pub(crate) token: i64,
}

/// A message claimed for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub lease: Lease,
    /// Stable across repeats: the idempotency key of every delivery attempt.
    pub id: String,
    pub batch_id: BatchId,
    pub channel: Channel,
    pub provider: String,
    pub to: String,
    pub reference: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    /// Delivery attempts made before this claim.
    pub attempts: u32,
}

/// What became of one claimed message.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent {
        provider_message_id: Option<String>,
    },
    /// Try again at `at_ms`; this attempt counts.
    Retry {
        at_ms: i64,
        error: String,
    },
    /// Given up; this attempt counts.
    Failed {
        error: String,
    },
    /// Not attempted (shutdown, rate limit): back to the queue, no attempt counted.
    Release {
        at_ms: i64,
    },
}

#[derive(Debug, Clone)]
pub struct Settlement {
    pub lease: Lease,
    pub outcome: Outcome,
}

/// A batch's row in the ledger.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSummary {
    pub id: BatchId,
    pub channel: Channel,
    pub source: String,
    pub control: BatchControl,
    pub priority: i32,
    pub created_at_ms: i64,
    pub send_at_ms: i64,
    pub counts: Counts,
}

/// One message's row in the ledger.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
    pub id: String,
    pub index: u32,
    pub to: String,
    pub reference: Option<String>,
    pub state: MessageState,
    pub provider: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub sent_at_ms: Option<i64>,
}

/// Which page of a batch's messages to read: indices after `after`, in index order.
#[derive(Debug, Clone, Copy)]
pub struct MessageQuery {
    pub state: Option<MessageState>,
    pub after: Option<u32>,
    pub limit: u32,
}

/// What the sender can do to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Cancel,
    /// Requeue the failed messages, and only those, with a fresh attempt budget.
    Retry,
}

/// The storage engine seam. Every method is one transaction.
#[async_trait]
pub(crate) trait Engine: Send + Sync + 'static {
    async fn accept(&self, batch: NewBatch) -> Result<Accepted>;
    /// Claims up to `limit` due messages for `provider`, best priority first, under
    /// a lease of `lease`; messages whose lease has expired are due again.
    async fn claim(&self, provider: &str, limit: usize, lease: Duration) -> Result<Vec<Claimed>>;
    async fn settle(&self, settlements: Vec<Settlement>) -> Result<()>;
    async fn batch(&self, id: BatchId) -> Result<Option<BatchSummary>>;
    async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>>;
    /// `Ok(None)` when there is no such batch; `Error::Conflict` when the batch's
    /// state does not allow the action.
    async fn control(&self, id: BatchId, action: Control) -> Result<Option<BatchSummary>>;
}

/// The handle to the store that the API and the workers share.
#[derive(Clone)]
pub struct Queue {
    engine: Arc<dyn Engine>,
    /// Wakes this process's idle workers when a batch is accepted here.
    accepted: Arc<Notify>,
}

impl Queue {
    /// Opens the store named by `url`: a directory path or `sqlite://path` for the
    /// embedded engine.
    pub async fn open(url: &str) -> Result<Queue> {
        let engine: Arc<dyn Engine> = match url.split_once("://") {
            None => Arc::new(sqlite::Sqlite::open(url.as_ref()).await?),
            Some(("sqlite", path)) => Arc::new(sqlite::Sqlite::open(path.as_ref()).await?),
            Some(("postgres" | "postgresql", _)) => postgres::open(url).await?,
            Some(("redis" | "rediss", _)) => redis::open(url).await?,
            Some((scheme, _)) => {
                return Err(Error::Unsupported(format!(
                    "unknown store `{scheme}://`: use a directory path or `sqlite://DIR` for the embedded store"
                )));
            }
        };
        Ok(Queue {
            engine,
            accepted: Arc::new(Notify::new()),
        })
    }

    /// A handle over any engine; lets tests wrap a real engine to observe or slow it.
    #[cfg(test)]
    pub(crate) fn from_engine(engine: Arc<dyn Engine>) -> Queue {
        Queue {
            engine,
            accepted: Arc::new(Notify::new()),
        }
    }

    #[cfg(test)]
    pub(crate) fn engine(&self) -> Arc<dyn Engine> {
        self.engine.clone()
    }

    /// Stores a whole batch in one transaction, or nothing. Returns once it is on disk.
    pub async fn accept(&self, batch: NewBatch) -> Result<Accepted> {
        let accepted = self.engine.accept(batch).await?;
        if matches!(accepted, Accepted::New(_)) {
            self.accepted.notify_waiters();
        }
        Ok(accepted)
    }

    pub async fn claim(
        &self,
        provider: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.engine.claim(provider, limit, lease).await
    }

    pub async fn settle(&self, settlements: Vec<Settlement>) -> Result<()> {
        if settlements.is_empty() {
            return Ok(());
        }
        self.engine.settle(settlements).await
    }

    pub async fn batch(&self, id: BatchId) -> Result<Option<BatchSummary>> {
        self.engine.batch(id).await
    }

    pub async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>> {
        self.engine.messages(id, query).await
    }

    pub async fn control(&self, id: BatchId, action: Control) -> Result<Option<BatchSummary>> {
        let summary = self.engine.control(id, action).await?;
        if matches!(action, Control::Resume | Control::Retry) {
            self.accepted.notify_waiters();
        }
        Ok(summary)
    }

    /// Resolves when work may have arrived in this process (a batch accepted or resumed).
    pub fn work_arrived(&self) -> &Notify {
        &self.accepted
    }
}

#[cfg(test)]
mod tests;
