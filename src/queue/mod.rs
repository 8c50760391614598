//! The durable queue and ledger of batches and messages.
//!
//! - [`Queue`] (here) is the cheap-to-clone handle the API and the workers share;
//!   [`Records`] (`records`) is the handle to what a store keeps beside the queue:
//!   stored templates, the suppression list, fingerprints of recent sends and
//!   ingest markers, over the crate-private `RecordStore` trait.
//! - `engine`: the crate-private [`Engine`] trait every storage engine implements
//!   the same way: accept a whole batch, begin one in chunks, claim under a lease,
//!   settle in bulk, read the ledger, control a batch, apply delivery receipts.
//! - `staging`: a batch stored chunk by chunk ([`Staging`]), by the engine or, for
//!   one that cannot hold a transaction open, gathered and accepted whole.
//! - `render`: bodies of template batches, rendered when claimed; every engine
//!   stores such a batch's template once and each message's variables.
//! - `outbox`: events for the application (a message sent, delivered, failed, …, a
//!   batch finished, a reply), recorded as deliveries by every engine in the
//!   transaction of the change that causes them, for each of the batch's
//!   subscriptions wanting it; claimed, settled, listed and replayed through the
//!   crate-private [`Outbox`] seam and the [`Queue`] methods over it.
//! - `window`: a claimed message whose sending window has closed meanwhile goes
//!   back to wait for the next opening.
//! - `capped`: how many recipients are at a per-recipient cap now, for the
//!   pre-flight report.
//! - `spend`: spend caps and daily budgets: each claimed message charged in the
//!   store before it is sent, when its batch or provider asks for it; the store's
//!   side of them and of per-recipient caps is the crate-private `CapStore` seam
//!   (`caps`).
//! - `batch`: the types that cross the seam; `receipt`: the rules every engine
//!   applies delivery receipts by; `suppress`: the one place that decides an
//!   address is undeliverable and suppresses it; `replies`: the replies ledger
//!   ([`Reply`]) over the crate-private `ReplyStore` trait.
//! - `search`: messages found across batches by address or ref, and `erase`: a
//!   person's address replaced by a salted hash, over the crate-private
//!   `SearchStore` and `EraseStore` traits.
//! - `sqlite` is the embedded engine (the default: a directory on local disk);
//!   `postgres` and `redis` keep the store on a server shared by many processes.
//!   Each is a folder of files named for what they own. The engine is chosen at
//!   run time from the store's [`StoreUrl`].
//!
//! Delivery is at-least-once: a claimed message carries a lease, which its worker
//! renews while the send is in progress; if the worker dies, the lease expires and
//! the message is claimed again with the same message id, marked as an unknown
//! outcome (its request may have reached the provider).

mod audit;
mod batch;
mod capped;
mod caps;
mod engine;
pub mod erase;
pub mod outbox;
mod postgres;
pub mod prune;
mod receipt;
mod records;
mod redis;
mod render;
pub mod replies;
mod search;
pub mod spend;
mod sqlite;
mod staging;
pub mod suppress;
mod window;

pub(crate) use audit::AuditStore;
pub use audit::{AuditAction, AuditEntry, AuditQuery, NewAuditEntry};
pub use batch::{
    Accepted, BatchAction, BatchSummary, BatchTemplate, Claim, Claimed, Idempotency, Lease,
    MessageQuery, MessageRecord, NewBatch, NewMessage, Outcome, Settlement,
};
pub(crate) use caps::CapStore;
pub(crate) use engine::Engine;
pub(crate) use erase::EraseStore;
pub use erase::{ERASED_PREFIX, Erased};
pub(crate) use outbox::Outbox;
pub use outbox::{
    CALLBACK, Delivery, DeliveryKey, DeliveryOutcome, DeliveryRecord, DeliveryState, Event,
    EventKind, Kinds, NewEvent, Replay, Subscription,
};
pub(crate) use prune::Prune;
pub use prune::{Cutoffs, Pace, Pruned};
pub use receipt::{AppliedReceipt, EARLY_RECEIPT_TTL_MS, EARLY_RECEIPTS_MAX, ReceiptEffect};
pub(crate) use receipt::{ReceiptTarget, receipt_state, receipt_target};
pub(crate) use records::RecordStore;
pub use records::{Records, StoredTemplate, Suppression, Unacked};
pub(crate) use records::{parse_providers, providers_json, suppression_ranges};
pub(crate) use replies::ReplyStore;
pub use replies::{AUTO_REPLY_SOURCE, Answered, NewReply, Recorded, Reply, ReplyQuery, ReplyView};
pub(crate) use search::SearchStore;
pub use search::{Found, SearchQuery};
pub(crate) use staging::Stage;
pub use staging::{Arrival, Begun, Staging};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::domain::{BatchId, DeliveryReport, StoreUrl};
// The conformance suite reads these through `use super::*`.
#[cfg(test)]
use crate::domain::{BatchControl, Channel, Counts, MessageState, ProviderTemplate};
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
    /// The store's URL is not valid, or asks for what its engine cannot do.
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The handle to the store that the API and the workers share.
#[derive(Clone)]
pub struct Queue {
    engine: Arc<dyn Engine>,
    records: Records,
    replies: Arc<dyn ReplyStore>,
    outbox: Arc<dyn Outbox>,
    searcher: Arc<dyn SearchStore>,
    eraser: Arc<dyn EraseStore>,
    /// Retention: removing what is past its age (see `prune`).
    prune: Arc<dyn Prune>,
    /// The audit trail's entries.
    audit: Arc<dyn AuditStore>,
    /// Spend caps, budgets and per-recipient caps.
    caps: Arc<dyn CapStore>,
    /// Wakes this process's idle workers when a batch is accepted here.
    accepted: Arc<Notify>,
    /// Wakes this process's idle webhook poster when a change here may have
    /// recorded events.
    changed: Arc<Notify>,
    /// Compiled templates of recently claimed batches: a batch is claimed a few
    /// messages at a time, and its template compiles once, not once a claim.
    templates: render::Compiled,
    /// The sending windows of recently claimed batches.
    windows: window::Windows,
    /// The providers this process found over their daily budget.
    pauses: spend::Pauses,
}

/// An engine as each of its seams.
type Seams = (
    Arc<dyn Engine>,
    Records,
    Arc<dyn ReplyStore>,
    Arc<dyn Outbox>,
    (Arc<dyn SearchStore>, Arc<dyn EraseStore>),
    (Arc<dyn Prune>, Arc<dyn AuditStore>, Arc<dyn CapStore>),
);

/// One engine as each of its seams.
fn seams<
    E: Engine
        + RecordStore
        + ReplyStore
        + Outbox
        + SearchStore
        + EraseStore
        + Prune
        + AuditStore
        + CapStore,
>(
    engine: Arc<E>,
) -> Seams {
    (
        engine.clone(),
        Records::new(engine.clone()),
        engine.clone(),
        engine.clone(),
        (engine.clone(), engine.clone()),
        (engine.clone(), engine.clone(), engine),
    )
}

impl Queue {
    /// Opens the store at `store`, with the engine its URL names.
    pub async fn open(store: &StoreUrl) -> Result<Queue> {
        let (engine, records, replies, outbox, (searcher, eraser), (prune, audit, caps)) =
            match store {
                StoreUrl::Sqlite(dir) => seams(Arc::new(sqlite::Sqlite::open(dir).await?)),
                StoreUrl::Postgres(url) => seams(postgres::open(url).await?),
                StoreUrl::Redis(url) => seams(redis::open(url).await?),
            };
        Ok(Queue {
            engine,
            records,
            replies,
            outbox,
            searcher,
            eraser,
            prune,
            audit,
            caps,
            accepted: Arc::new(Notify::new()),
            changed: Arc::new(Notify::new()),
            templates: render::Compiled::default(),
            windows: window::Windows::default(),
            pauses: spend::Pauses::default(),
        })
    }

    /// This handle with its engine wrapped by `wrap`: lets a test observe or slow
    /// a real engine. The records stay the real ones.
    #[cfg(test)]
    pub(crate) fn wrapped(&self, wrap: impl FnOnce(Arc<dyn Engine>) -> Arc<dyn Engine>) -> Queue {
        Queue {
            engine: wrap(self.engine.clone()),
            records: self.records.clone(),
            replies: self.replies.clone(),
            outbox: self.outbox.clone(),
            searcher: self.searcher.clone(),
            eraser: self.eraser.clone(),
            prune: self.prune.clone(),
            audit: self.audit.clone(),
            caps: self.caps.clone(),
            accepted: Arc::new(Notify::new()),
            changed: self.changed.clone(),
            templates: render::Compiled::default(),
            windows: window::Windows::default(),
            pauses: self.pauses.clone(),
        }
    }

    /// The engine itself, for a test that calls it below the handle.
    #[cfg(test)]
    pub(crate) fn engine(&self) -> Arc<dyn Engine> {
        self.engine.clone()
    }

    /// The engine's caps seam, for a test that calls it below the handle.
    #[cfg(test)]
    pub(crate) fn caps(&self) -> Arc<dyn CapStore> {
        self.caps.clone()
    }

    /// Stores a whole batch in one transaction, or nothing. Returns once it is on disk.
    pub async fn accept(&self, batch: NewBatch) -> Result<Accepted> {
        let accepted = self.engine.accept(batch).await?;
        if matches!(accepted, Accepted::New(_)) {
            self.accepted.notify_waiters();
        }
        Ok(accepted)
    }

    /// Starts storing a batch in chunks that come as `arrival` says (see
    /// [`Engine::begin`]); add them to the [`Staging`], then [commit](Queue::commit) it.
    pub async fn begin(&self, batch: NewBatch, arrival: Arrival) -> Result<Begun> {
        self.engine.begin(batch, arrival).await
    }

    /// Makes a staged batch visible and claimable, all at once, with its `report`
    /// and `span` (one more than its highest message index).
    pub async fn commit(
        &self,
        staging: Staging,
        report: serde_json::Value,
        span: u32,
    ) -> Result<Accepted> {
        let accepted = staging
            .commit(report, span, |batch| self.engine.accept(batch))
            .await?;
        self.accepted.notify_waiters();
        Ok(accepted)
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
    /// this store. A claimed SMS message whose recipient was suppressed since it was
    /// queued (an opt-out reply) is not answered: it ends `cancelled`, with the
    /// suppression's reason.
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
        let mut claim = self.engine.claim(provider, limit, lease, limits).await?;
        if let Claim::Messages(claimed) = &mut claim {
            let mut ended = self.templates.render(claimed);
            ended.extend(self.cancel_suppressed(claimed).await?);
            ended.extend(
                self.windows
                    .hold_closed(self.engine.as_ref(), claimed, jiff::Timestamp::now())
                    .await?,
            );
            ended.extend(self.charge(claimed, limits).await?);
            self.settle(ended).await?;
        }
        Ok(claim)
    }

    /// Charges the messages of `claimed` that need it (see [`spend`]) and takes
    /// out those the store did not charge; answers the releases of those over
    /// their provider's daily budget.
    async fn charge(&self, claimed: &mut Vec<Claimed>, limits: &Limits) -> Result<Vec<Settlement>> {
        let now = jiff::Timestamp::now();
        let tariff = limits.tariff.as_deref();
        let charges = spend::charges(claimed, tariff, now);
        if charges.is_empty() {
            return Ok(Vec::new());
        }
        let answers = self.caps.charge(charges.clone()).await?;
        Ok(spend::keep_charged(
            claimed,
            &charges,
            answers,
            tariff,
            &self.pauses,
            now,
        ))
    }

    /// Extends each of `leases` still held to `lease` from now, in one engine call;
    /// a lease that was lost is left to its new holder. Answers how many were
    /// extended. Workers renew the leases of their sends in progress, so a lease can
    /// be short whatever a send takes, and a dead worker's messages come back soon.
    pub async fn renew(&self, leases: Vec<Lease>, lease: Duration) -> Result<usize> {
        if leases.is_empty() {
            return Ok(0);
        }
        self.engine.renew(leases, lease).await
    }

    /// Records the outcomes of leased messages in bulk; a settlement whose lease
    /// has lapsed changes nothing. Delivery reports held for a message now sent
    /// with a provider id are applied, and answered, in order, for
    /// [`suppress::undeliverable`] to read as it reads reports applied on arrival.
    pub async fn settle(&self, settlements: Vec<Settlement>) -> Result<Vec<AppliedReceipt>> {
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        // A message put back for later gives idle claimers a new due time.
        let later = settlements.iter().any(|s| {
            matches!(
                s.outcome,
                Outcome::Retry { .. } | Outcome::Unknown { .. } | Outcome::Release { .. }
            )
        });
        let applied = self.engine.settle(settlements).await?;
        if later {
            self.accepted.notify_waiters();
        }
        self.changed.notify_one();
        Ok(applied)
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
    /// `provider_message_id`, or one of whose segment ids ([`Outcome::Sent`]), is
    /// its id and, when it names a recipient, whose `to` is that recipient. A `sent` message moves to `delivered` or `undelivered`
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
        let effects = self
            .engine
            .apply_receipts(provider, reports, crate::domain::now_ms())
            .await?;
        self.changed.notify_one();
        Ok(effects)
    }

    /// How many messages wait for `provider` (pending, due now or later), or `cap`
    /// when at least that many do: what a metrics scrape reads, bounded by `cap`.
    pub async fn pending(&self, provider: &str, cap: u64) -> Result<u64> {
        if cap == 0 {
            return Ok(0);
        }
        self.engine.pending(provider, cap).await
    }

    /// When a claim for `provider` could next take a message (ms since the epoch),
    /// or `None` when it has nothing waiting; see [`Engine::next_due`]. Only reads:
    /// idle claimers ask it instead of claiming, so waiting messages cost no writes.
    pub async fn next_due(&self, provider: &str) -> Result<Option<i64>> {
        self.engine.next_due(provider).await
    }

    pub async fn control(&self, id: BatchId, action: BatchAction) -> Result<Option<BatchSummary>> {
        let summary = self.engine.control(id, action).await?;
        if matches!(action, BatchAction::Resume | BatchAction::Retry { .. }) {
            self.accepted.notify_waiters();
        }
        self.changed.notify_one();
        Ok(summary)
    }

    /// Resumes batch `id` with its spend cap raised to `max_cost` (in its
    /// provider's currency): its held messages go back to pending, then it resumes
    /// as [`Queue::control`] does. `Ok(None)` when there is no such batch;
    /// `Error::Conflict` when the cap cannot be raised so (see [`CapStore::raise_cap`]).
    pub async fn resume_with_cap(
        &self,
        id: BatchId,
        max_cost: f64,
    ) -> Result<Option<BatchSummary>> {
        if self
            .caps
            .raise_cap(id, spend::to_micros(max_cost))
            .await?
            .is_none()
        {
            return Ok(None);
        }
        self.control(id, BatchAction::Resume).await
    }

    /// What `provider` has been charged on local day `day` (`2026-12-06`).
    pub async fn spent(&self, provider: &str, day: &str) -> Result<spend::Micros> {
        self.caps.spent(provider, day).await
    }

    /// The providers this process found over their daily budget, and until when.
    pub fn pauses(&self) -> &spend::Pauses {
        &self.pauses
    }

    /// Expires up to `limit` unsent messages whose batch's deadline has passed
    /// (see [`Engine::expire`]); answers how many.
    pub async fn expire(&self, limit: u64) -> Result<u64> {
        let expired = self.engine.expire(crate::domain::now_ms(), limit).await?;
        if expired > 0 {
            self.changed.notify_one();
        }
        Ok(expired)
    }

    /// Records `replies` in one transaction, each once, as
    /// [`ReplyStore::record_replies`] says: linked to the latest message sent to
    /// the sender through its provider, an opt-out suppressing the sender and an
    /// opt-in lifting a suppression a reply made, and its `reply` event recorded
    /// for `endpoints` (the configured webhooks that want replies) and for the
    /// answered batch's subscriptions. One answer per reply, in order.
    pub async fn record_replies(
        &self,
        replies: Vec<NewReply>,
        endpoints: Vec<String>,
    ) -> Result<Vec<Recorded>> {
        if replies.is_empty() {
            return Ok(Vec::new());
        }
        let recorded = self
            .replies
            .record_replies(replies, endpoints, crate::domain::now_ms())
            .await?;
        self.changed.notify_one();
        Ok(recorded)
    }

    /// One page of the replies ledger, oldest first.
    pub async fn replies(&self, query: ReplyQuery) -> Result<Vec<Reply>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        self.replies.replies(query).await
    }

    /// The store's templates, suppressions, fingerprints and ingest markers.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Resolves when work may have arrived in this process (a batch accepted or
    /// resumed, a message put back for later).
    pub fn work_arrived(&self) -> &Notify {
        &self.accepted
    }

    /// Resolves when a change in this process may have recorded webhook events (a
    /// settlement, receipts, a control, an expiry, replies); holds one wake-up
    /// when nothing waits. Changes in other processes are not told here: their
    /// events are found by polling.
    pub fn events_recorded(&self) -> &Notify {
        &self.changed
    }
}

/// A batch id read back from the store, where every engine keeps its hyphenated form.
fn parse_batch_id(s: &str) -> Result<BatchId> {
    BatchId::parse(s).ok_or_else(|| Error::Corrupt(format!("bad batch id `{s}`")))
}

#[cfg(test)]
pub(crate) mod tests;
