//! The durable queue and ledger of batches and messages.
//!
//! - [`Queue`] is the cheap-to-clone handle the API and the workers share.
//! - [`Engine`] is the small crate-private trait each storage engine implements:
//!   accept a whole batch atomically, claim under a lease, settle in bulk, read the
//!   ledger, control a batch, apply delivery receipts.
//! - [`Records`] is the other one: the stored templates, the suppression list and
//!   the fingerprints of recent sends.
//! - `sqlite` is the embedded engine (the default: a directory on local disk);
//!   `postgres` and `redis` keep the store on a server shared by many processes.
//!
//! Delivery is at-least-once: a claimed message carries a lease; if its worker dies,
//! the lease expires and the message is claimed again with the same message id.

mod postgres;
mod redis;
mod sqlite;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::domain::{
    BatchControl, BatchId, Channel, Counts, DeliveryReport, MessageState, ProviderTemplate,
};
use crate::ratelimit::Limits;

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
    /// The stored template the batch was rendered from, if any: providers that only
    /// send their own pre-approved templates look up their code in it.
    pub template_id: Option<String>,
    /// The template the messages were rendered from, for an engine that
    /// [renders at claim](Engine::renders_at_claim): it stores this with the batch
    /// and each message's variables rather than its body. `None` for other engines
    /// and for batches with a literal body.
    pub template: Option<BatchTemplate>,
    pub messages: Vec<NewMessage>,
}

/// A template's sources, as a batch was rendered from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
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
    /// SMS segments of the body (1 for e-mail): what a per-segment rate limit counts.
    pub segments: u32,
    /// The recipient's variables as a JSON object: kept for providers that render
    /// a stored template on their side, and for engines that render at claim;
    /// `None` otherwise.
    pub vars: Option<String>,
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
    pub segments: u32,
    /// The batch's stored template, and the recipient's variables (JSON) for it.
    pub template_id: Option<String>,
    pub vars: Option<String>,
    /// Delivery attempts made before this claim.
    pub attempts: u32,
    /// When an earlier attempt's outcome became unknown (ms since the epoch; the
    /// first such attempt's), until an outcome settles it: the worker asks the
    /// provider about that attempt before making this one.
    pub unknown_since_ms: Option<i64>,
}

/// The answer to a rate-limited claim.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Leased now (possibly none: nothing was due); the provider's bucket paid for them.
    Messages(Vec<Claimed>),
    /// The provider's bucket is short: nothing claimed, ask again after this long.
    Wait(Duration),
}

/// What became of one claimed message.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent {
        provider_message_id: Option<String>,
    },
    /// The provider says an earlier attempt, whose outcome was unknown, reached it:
    /// sent, with the id it gave that attempt. No attempt is counted (asking is none).
    Confirmed {
        provider_message_id: Option<String>,
    },
    /// The request may have reached the provider but no answer came back: the
    /// message is `unknown` until `at_ms`, then due again; this attempt counts.
    Unknown {
        at_ms: i64,
        error: String,
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

/// One claimed message's outcome, for [`Queue::settle`].
#[derive(Debug, Clone)]
pub struct Settlement {
    pub lease: Lease,
    pub outcome: Outcome,
    /// The provider that made the attempt, when it is not the message's own (the
    /// message failed over to it). A sent message records it as its provider, so
    /// the ledger names the provider that sent it; other outcomes leave the
    /// message with its own provider, whose queue it waits in.
    pub sent_by: Option<String>,
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

/// What applying one delivery report did (see [`Queue::apply_receipts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptEffect {
    /// The message moved to `delivered` or `undelivered`; its recipient and channel.
    Applied { to: String, channel: Channel },
    /// The message had this outcome already, or a final one (`delivered` stays).
    Unchanged,
    /// No message has the provider's id yet (its send is not recorded, or the id is
    /// unknown): kept, and applied when a send settles with that id, for at most
    /// [`EARLY_RECEIPT_TTL_MS`].
    Held,
    /// Several messages share the id (one Aliyun request) and the report names no
    /// recipient that tells them apart: not applied.
    Ambiguous,
}

/// How long a delivery report that matches no message yet is kept (a day).
pub const EARLY_RECEIPT_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// The most early delivery reports a store keeps; beyond it the oldest go first.
pub const EARLY_RECEIPTS_MAX: i64 = 100_000;

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
    /// The code of the delivery receipt that set `delivered` / `undelivered`.
    pub receipt_code: Option<String>,
    /// When that receipt says it happened, or when it came (ms since the epoch).
    pub receipt_at_ms: Option<i64>,
}

/// Which page of a batch's messages to read: indices after `after`, in index order.
#[derive(Debug, Clone, Copy)]
pub struct MessageQuery {
    pub state: Option<MessageState>,
    pub after: Option<u32>,
    pub limit: u32,
}

/// A message template kept in the store, to be rendered into batches at intake.
/// Accepted batches hold their own rendered copies: changing or deleting a
/// template never touches them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Chosen by the user; the API layer validates it.
    pub id: String,
    pub channel: Channel,
    pub subject: Option<String>,
    pub body: String,
    /// Per provider name: the provider's own pre-approved template code and sign name.
    pub providers: BTreeMap<String, ProviderTemplate>,
    /// 1 when created, one more on every replace. Set by the store.
    pub version: u32,
    /// Set by the store (ms since the epoch).
    pub created_at_ms: i64,
    /// Set by the store (ms since the epoch); equals `created_at_ms` until replaced.
    pub updated_at_ms: i64,
}

/// A recipient that must not be messaged on a channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suppression {
    pub channel: Channel,
    /// The address as stored and compared: exact bytes, no normalisation here.
    pub address: String,
    pub reason: String,
    /// When the address was first suppressed (ms since the epoch); set by the store.
    pub created_at_ms: i64,
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
    engine: Box<dyn StagingEngine>,
    accepted: Arc<Notify>,
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

/// What every engine keeps beside the queue: the stored templates, the suppression
/// list and the fingerprints of recent sends. A trait of its own so that the queue
/// seam stays small and a test can wrap an engine's queue alone. Every change is one
/// transaction.
#[async_trait]
pub(crate) trait Records: Send + Sync + 'static {
    /// Stores `template` as version 1, created and updated now (its own version and
    /// times are ignored); `Ok(None)` when the id is taken.
    async fn create_template(&self, template: Template) -> Result<Option<Template>>;
    /// Replaces the channel, subject, body and providers of the template with
    /// `template.id`, one version up and updated now; `Ok(None)` when there is none.
    async fn replace_template(&self, template: Template) -> Result<Option<Template>>;
    async fn template(&self, id: &str) -> Result<Option<Template>>;
    /// Up to `limit` templates with ids after `after`, in id (byte) order.
    async fn templates(&self, after: Option<String>, limit: u32) -> Result<Vec<Template>>;
    async fn delete_template(&self, id: &str) -> Result<bool>;
    /// Adds `entries` (no two with the same channel and address), or takes their
    /// reasons for ones already there, which keep their creation time; returns how
    /// many were new.
    async fn suppress(&self, entries: Vec<Suppression>) -> Result<usize>;
    /// Removes those of `addresses` that are suppressed on `channel`; returns how many.
    async fn unsuppress(&self, channel: Channel, addresses: Vec<String>) -> Result<usize>;
    /// Which of `addresses` are suppressed on `channel`. Runs on every submitted
    /// batch: one round trip per large chunk of addresses, never one per address
    /// (chunks may be read at different moments).
    async fn suppressed(&self, channel: Channel, addresses: &[&str]) -> Result<HashSet<String>>;
    /// Up to `limit` suppressions, on `channel` or on any, after `after`, in
    /// (channel, address) byte order.
    async fn suppressions(
        &self,
        channel: Option<Channel>,
        after: Option<(Channel, String)>,
        limit: u32,
    ) -> Result<Vec<Suppression>>;
    /// Records each of `fingerprints` (no two alike) as sent on `channel` at `at_ms`;
    /// one already there keeps the later of its time and `at_ms`.
    async fn remember_sends(
        &self,
        channel: Channel,
        fingerprints: Vec<String>,
        at_ms: i64,
    ) -> Result<()>;
    /// Which of `fingerprints` were remembered on `channel` at or after `since_ms`.
    /// Runs on every submitted batch: one indexed probe when the channel has none
    /// that recent, else one round trip per large chunk (chunks may be read at
    /// different moments).
    async fn recently_sent(
        &self,
        channel: Channel,
        fingerprints: Vec<String>,
        since_ms: i64,
    ) -> Result<HashSet<String>>;
    /// Deletes up to `limit` of `channel`'s fingerprints remembered before
    /// `before_ms`, in one statement; returns how many.
    async fn forget_sends(&self, channel: Channel, before_ms: i64, limit: u32) -> Result<u64>;
    /// Marks `marker` as stored under its idempotency key but maybe not yet
    /// acknowledged to its broker, at `at_ms`; one already there is left alone.
    /// Deletes a bounded number of markers marked before `stale_before_ms`.
    async fn mark_unacked(&self, marker: &Unacked, at_ms: i64, stale_before_ms: i64) -> Result<()>;
    /// The keys of up to `limit` markers of `source` and `hash` marked at or after
    /// `since_ms`, oldest first.
    async fn unacked(
        &self,
        source: &str,
        hash: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<String>>;
    /// Deletes `marker`, if it is there.
    async fn unmark_unacked(&self, marker: &Unacked) -> Result<()>;
}

/// A message an ingest source stored as a batch, perhaps without its broker having
/// taken the acknowledgement: found again when the broker delivers it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unacked {
    /// The ingest source, `ingest:{name}`.
    pub source: String,
    /// The hex SHA-256 of the message's body.
    pub hash: String,
    /// The idempotency key its batch is stored under.
    pub key: String,
}

/// How long an unacknowledged-message marker is kept: a redelivery comes when
/// Herald is back, well within a day.
const UNACKED_FOR_MS: i64 = 24 * 60 * 60 * 1000;

/// Fingerprints deleted per statement by [`Queue::forget_sends_before`], so that no
/// transaction grows large and other writers get the store between statements.
const FORGET_CHUNK: u32 = 10_000;

/// Statements per [`Queue::forget_sends_before`] call, over all channels: a call
/// removes at most `FORGET_CHUNK * FORGET_ROUNDS` fingerprints.
const FORGET_ROUNDS: u32 = 100;

/// The handle to the store that the API and the workers share.
#[derive(Clone)]
pub struct Queue {
    engine: Arc<dyn Engine>,
    records: Arc<dyn Records>,
    /// Wakes this process's idle workers when a batch is accepted here.
    accepted: Arc<Notify>,
}

/// One engine as both of its seams.
fn seams<E: Engine + Records>(engine: Arc<E>) -> (Arc<dyn Engine>, Arc<dyn Records>) {
    (engine.clone(), engine)
}

impl Queue {
    /// Opens the store named by `url`: a directory path or `sqlite://path` for the
    /// embedded engine.
    pub async fn open(url: &str) -> Result<Queue> {
        let (engine, records) = match url.split_once("://") {
            None => seams(Arc::new(sqlite::Sqlite::open(url.as_ref()).await?)),
            Some(("sqlite", path)) => seams(Arc::new(sqlite::Sqlite::open(path.as_ref()).await?)),
            Some(("postgres" | "postgresql", _)) => seams(postgres::open(url).await?),
            Some(("redis" | "rediss", _)) => seams(redis::open(url).await?),
            Some((scheme, _)) => {
                return Err(Error::Unsupported(format!(
                    "unknown store `{scheme}://`: use a directory path or `sqlite://DIR` for the embedded store"
                )));
            }
        };
        Ok(Queue {
            engine,
            records,
            accepted: Arc::new(Notify::new()),
        })
    }

    /// A handle over any engine; lets tests wrap a real engine to observe or slow it.
    /// It keeps no records: those calls fail.
    #[cfg(test)]
    pub(crate) fn from_engine(engine: Arc<dyn Engine>) -> Queue {
        Queue {
            engine,
            records: Arc::new(tests::NoRecords),
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

    /// Starts storing a batch in chunks (see [`Engine::begin`]).
    pub async fn begin(&self, batch: NewBatch) -> Result<Begun> {
        Ok(self.begun(self.engine.begin(batch).await?))
    }

    /// Starts storing a batch whose chunks are all at hand in one transaction,
    /// writing each chunk while the next is made (see [`Engine::begin_whole`]);
    /// `None` when the engine cannot, and the batch is to be stored with
    /// [`Queue::accept`].
    pub async fn begin_whole(&self, batch: &NewBatch) -> Result<Option<Begun>> {
        Ok(self
            .engine
            .begin_whole(batch)
            .await?
            .map(|staged| self.begun(staged)))
    }

    /// See [`Engine::renders_at_claim`].
    pub fn renders_at_claim(&self) -> bool {
        self.engine.renders_at_claim()
    }

    fn begun(&self, staged: Staged) -> Begun {
        match staged {
            Staged::Answered(accepted) => Begun::Answered(accepted),
            Staged::Staging(engine) => Begun::Staging(Staging {
                engine,
                accepted: self.accepted.clone(),
            }),
        }
    }

    /// Claims up to `limit` due messages for `provider`, regardless of its rate.
    pub async fn claim(
        &self,
        provider: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>> {
        match self
            .claim_within(provider, limit, lease, &Limits::default())
            .await?
        {
            Claim::Messages(claimed) => Ok(claimed),
            // Only a rate makes an engine wait; none was given.
            Claim::Wait(_) => Ok(Vec::new()),
        }
    }

    /// Claims up to `limit` due messages for `provider` within `limits` (its own, or
    /// those of the provider they fail over to), which hold across every process on
    /// this store.
    pub async fn claim_within(
        &self,
        provider: &str,
        limit: usize,
        lease: Duration,
        limits: &Limits,
    ) -> Result<Claim> {
        if limit == 0 {
            return Ok(Claim::Messages(Vec::new()));
        }
        self.engine.claim(provider, limit, lease, limits).await
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

    /// One page of the stored batches, newest first: up to `limit` with ids below
    /// `before`. Each summary counts its batch's messages, so a page costs what
    /// `limit` calls of [`Queue::batch`] do.
    pub async fn batches(&self, before: Option<BatchId>, limit: u32) -> Result<Vec<BatchSummary>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.engine.batches(before, limit).await
    }

    pub async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>> {
        self.engine.messages(id, query).await
    }

    /// Applies delivery reports that provider `provider` (its configured name) sent,
    /// in one transaction. A report matches the messages of that provider whose
    /// `provider_message_id` is its id and, when it names a recipient, whose `to`
    /// is that recipient. A `sent` message moves to `delivered` or `undelivered`
    /// with the report's code; an `undelivered` one can still become `delivered`
    /// (a carrier's later success), while `delivered` is final: a report that
    /// arrives twice, or late, changes nothing and counts nothing twice. A report
    /// that matches no message yet is held, bounded in time and number, and
    /// applied when a send settles with its id.
    pub async fn apply_receipts(
        &self,
        provider: &str,
        reports: Vec<DeliveryReport>,
    ) -> Result<Vec<ReceiptEffect>> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        self.engine
            .apply_receipts(provider, reports, crate::domain::now_ms())
            .await
    }

    /// How many messages wait for `provider` (pending, due now or later), or `cap`
    /// when at least that many do: what a metrics scrape reads, bounded by `cap`.
    pub async fn pending(&self, provider: &str, cap: u64) -> Result<u64> {
        if cap == 0 {
            return Ok(0);
        }
        self.engine.pending(provider, cap).await
    }

    pub async fn control(&self, id: BatchId, action: Control) -> Result<Option<BatchSummary>> {
        let summary = self.engine.control(id, action).await?;
        if matches!(action, Control::Resume | Control::Retry) {
            self.accepted.notify_waiters();
        }
        Ok(summary)
    }

    /// Stores a new template as version 1; its version and times are set by the
    /// store. `Error::Conflict` when a template with its id already exists.
    pub async fn create_template(&self, template: Template) -> Result<Template> {
        let id = template.id.clone();
        self.records
            .create_template(template)
            .await?
            .ok_or_else(|| Error::Conflict(format!("a template `{id}` already exists")))
    }

    /// Replaces a template's channel, subject, body and providers, one version up;
    /// `Ok(None)` when there is no template with its id.
    pub async fn replace_template(&self, template: Template) -> Result<Option<Template>> {
        self.records.replace_template(template).await
    }

    pub async fn template(&self, id: &str) -> Result<Option<Template>> {
        self.records.template(id).await
    }

    /// One page of templates: up to `limit` with ids after `after`, in id order.
    pub async fn templates(&self, after: Option<String>, limit: u32) -> Result<Vec<Template>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.records.templates(after, limit).await
    }

    /// Deletes a template; `false` when there was none. Batches already accepted
    /// from it keep their rendered messages.
    pub async fn delete_template(&self, id: &str) -> Result<bool> {
        self.records.delete_template(id).await
    }

    /// Adds `entries` to the suppression list in one transaction. An address already
    /// suppressed on the channel keeps its creation time and takes the new reason
    /// (the last one, if it appears more than once). Returns how many were new.
    pub async fn suppress(&self, entries: Vec<Suppression>) -> Result<usize> {
        let entries = last_of_each(entries);
        if entries.is_empty() {
            return Ok(0);
        }
        self.records.suppress(entries).await
    }

    /// Removes `addresses` from `channel`'s suppression list; returns how many were on it.
    pub async fn unsuppress(&self, channel: Channel, addresses: Vec<String>) -> Result<usize> {
        if addresses.is_empty() {
            return Ok(0);
        }
        self.records.unsuppress(channel, addresses).await
    }

    /// Which of `addresses` are suppressed on `channel` (exact match).
    pub async fn suppressed<A: AsRef<str> + Sync>(
        &self,
        channel: Channel,
        addresses: &[A],
    ) -> Result<HashSet<String>> {
        if addresses.is_empty() {
            return Ok(HashSet::new());
        }
        let addresses: Vec<&str> = addresses.iter().map(AsRef::as_ref).collect();
        self.records.suppressed(channel, &addresses).await
    }

    /// One page of the suppression list, on `channel` or on every channel: up to
    /// `limit` entries after `after`, in (channel, address) order.
    pub async fn suppressions(
        &self,
        channel: Option<Channel>,
        after: Option<(Channel, String)>,
        limit: u32,
    ) -> Result<Vec<Suppression>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.records.suppressions(channel, after, limit).await
    }

    /// Remembers that each of `fingerprints` was accepted for sending on `channel` at
    /// `at_ms` (ms since the epoch), so that [`Queue::recently_sent`] finds it until
    /// it is forgotten. A fingerprint is an opaque ASCII string of at most 64 bytes
    /// naming a (recipient, content) pair; the store compares them as bytes. One
    /// already remembered keeps the later of its time and `at_ms`. One transaction.
    pub async fn remember_sends(
        &self,
        channel: Channel,
        mut fingerprints: Vec<String>,
        at_ms: i64,
    ) -> Result<()> {
        // Deduplicated, as an upsert may not touch a row twice; sorted, so that
        // concurrent calls lock rows in the same order and never deadlock.
        fingerprints.sort_unstable();
        fingerprints.dedup();
        if fingerprints.is_empty() {
            return Ok(());
        }
        self.records
            .remember_sends(channel, fingerprints, at_ms)
            .await
    }

    /// Which of `fingerprints` were remembered on `channel` at or after `since_ms`
    /// (ms since the epoch): the recipients of a batch that already got the same
    /// content within a window. Cheap when the channel has none that recent.
    pub async fn recently_sent(
        &self,
        channel: Channel,
        fingerprints: Vec<String>,
        since_ms: i64,
    ) -> Result<HashSet<String>> {
        if fingerprints.is_empty() {
            return Ok(HashSet::new());
        }
        self.records
            .recently_sent(channel, fingerprints, since_ms)
            .await
    }

    /// Marks a message an ingest source is about to store (or has stored) under
    /// `marker.key` as not yet acknowledged to its broker, at `at_ms`; markers older
    /// than a day are deleted a few at a time as new ones come.
    pub async fn mark_unacked(&self, marker: &Unacked, at_ms: i64) -> Result<()> {
        self.records
            .mark_unacked(marker, at_ms, at_ms - UNACKED_FOR_MS)
            .await
    }

    /// The keys of up to `limit` markers of `source` with body hash `hash` left
    /// within the last day as of `now_ms`, oldest first.
    pub async fn unacked(
        &self,
        source: &str,
        hash: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<String>> {
        self.records
            .unacked(source, hash, now_ms - UNACKED_FOR_MS, limit)
            .await
    }

    /// Deletes `marker` once its broker has taken the acknowledgement.
    pub async fn unmark_unacked(&self, marker: &Unacked) -> Result<()> {
        self.records.unmark_unacked(marker).await
    }

    /// Forgets the fingerprints remembered before `before_ms` (ms since the epoch),
    /// on every channel; returns how many went. The work is bounded: at most
    /// 1,000,000 go per call, 10,000 per statement, so a call that returns that many
    /// may have left some for the next one.
    pub async fn forget_sends_before(&self, before_ms: i64) -> Result<u64> {
        let mut forgotten = 0;
        let mut rounds = 0;
        for channel in Channel::ALL {
            while rounds < FORGET_ROUNDS {
                rounds += 1;
                let n = self
                    .records
                    .forget_sends(channel, before_ms, FORGET_CHUNK)
                    .await?;
                forgotten += n;
                if n < u64::from(FORGET_CHUNK) {
                    break;
                }
            }
        }
        Ok(forgotten)
    }

    /// Resolves when work may have arrived in this process (a batch accepted or resumed).
    pub fn work_arrived(&self) -> &Notify {
        &self.accepted
    }
}

/// Which of the messages that share a delivery report's provider id the report is
/// about, by position among `tos` (their recipients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReceiptTarget {
    /// None of them (or there are none yet): the report is held.
    None,
    One(usize),
    Ambiguous,
}

/// Picks the message a report names: the one whose recipient is the report's, when
/// it names one; else the only one.
pub(crate) fn receipt_target<'a>(
    tos: impl IntoIterator<Item = &'a str>,
    report_to: Option<&str>,
) -> ReceiptTarget {
    let mut found = ReceiptTarget::None;
    for (i, to) in tos.into_iter().enumerate() {
        if report_to.is_some_and(|want| want != to) {
            continue;
        }
        found = match found {
            ReceiptTarget::None => ReceiptTarget::One(i),
            _ => return ReceiptTarget::Ambiguous,
        };
    }
    found
}

/// The state a message in `current` moves to on a report, if it moves: `sent` to
/// either outcome, `undelivered` to `delivered`; `delivered` is final.
pub(crate) fn receipt_state(current: MessageState, delivered: bool) -> Option<MessageState> {
    match (current, delivered) {
        (MessageState::Sent | MessageState::Undelivered, true) => Some(MessageState::Delivered),
        (MessageState::Sent, false) => Some(MessageState::Undelivered),
        _ => None,
    }
}

/// A batch id read back from the store, where every engine keeps its hyphenated form.
fn parse_batch_id(s: &str) -> Result<BatchId> {
    BatchId::parse(s).ok_or_else(|| Error::Corrupt(format!("bad batch id `{s}`")))
}

/// A template's providers as every engine stores them: one JSON object.
fn providers_json(providers: &BTreeMap<String, ProviderTemplate>) -> String {
    serde_json::to_string(providers).expect("string keys and string values serialize")
}

fn parse_providers(json: &str) -> Result<BTreeMap<String, ProviderTemplate>> {
    serde_json::from_str(json)
        .map_err(|e| Error::Corrupt(format!("a stored template's providers are not valid: {e}")))
}

/// The channels a page of suppressions reads, in page order, each with the address
/// to read after (`None`: from the channel's first address). Pages go by the
/// channel's name, then the address, both in byte order, on every engine.
fn suppression_ranges(
    channel: Option<Channel>,
    after: Option<(Channel, String)>,
) -> Vec<(Channel, Option<String>)> {
    let mut channels = Channel::ALL.to_vec();
    channels.sort_by_key(|c| c.as_str());
    channels
        .into_iter()
        .filter(|c| channel.is_none_or(|only| only == *c))
        .filter_map(|c| match &after {
            None => Some((c, None)),
            Some((at, address)) => match c.as_str().cmp(at.as_str()) {
                std::cmp::Ordering::Less => None,
                std::cmp::Ordering::Equal => Some((c, Some(address.clone()))),
                std::cmp::Ordering::Greater => Some((c, None)),
            },
        })
        .collect()
}

/// One entry per channel and address, in first-seen order, with the last reason:
/// what upserting them one after another would leave.
fn last_of_each(entries: Vec<Suppression>) -> Vec<Suppression> {
    let mut at: HashMap<(Channel, String), usize> = HashMap::with_capacity(entries.len());
    let mut unique: Vec<Suppression> = Vec::with_capacity(entries.len());
    for entry in entries {
        match at.entry((entry.channel, entry.address.clone())) {
            Entry::Occupied(seen) => unique[*seen.get()].reason = entry.reason,
            Entry::Vacant(slot) => {
                slot.insert(unique.len());
                unique.push(entry);
            }
        }
    }
    unique
}

#[cfg(test)]
mod tests;
