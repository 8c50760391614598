//! The outbox: events for the application, recorded by every engine in the same
//! transaction as the change that causes them, and claimed afterwards to be posted.
//!
//! A batch carries its [`Subscription`]s (computed at intake: the configured
//! webhooks whose filters match it, and `callback`, its own `callback_url`). When a
//! message of a subscribed batch changes state, the engine inserts one *delivery*
//! per subscription wanting that [`EventKind`], in the change's transaction:
//!
//! | change | event |
//! |---|---|
//! | settled `Sent` / `Confirmed` | `message.sent` |
//! | settled `Failed` | `message.failed` (code: the error) |
//! | a receipt, on arrival or held and applied at settle | `message.delivered` / `message.undelivered` (code: the receipt's) |
//! | expired at claim or by the sweep | `message.expired` (code: the last error) |
//! | cancelled: by control, or requeued into a cancelled batch (a retry, a release, a lapsed lease, an unknown outcome come due) | `message.cancelled` |
//! | the change that leaves no message pending, sending, unknown or paused | `batch.finished`, once (counts read when claimed) |
//!
//! A batch without subscriptions records nothing, and costs a change at most one
//! probe of an index of the subscribed batches (SQLite, PostgreSQL) or one field
//! read with its batch (Redis).
//!
//! Event ids are deterministic, so a repeat is the same event: `{message id}.sent`,
//! `.delivered`, `.undelivered`, `.failed`, `.expired`, `.cancelled`;
//! `{batch id}.finished`; `reply.{reply id}`. A delivery is unique on (endpoint,
//! event id): recording an event again is a no-op. So each kind is told once per
//! message: a message retried (by the batch's retry) that fails again is not told
//! `failed` twice, and a batch that finishes again after a retry is not told
//! `finished` twice. (A message is never `undelivered` twice: only `sent` moves
//! there.) A delivery names its message and batch; what the ledger says of them
//! (recipient, ref, provider and its id, channel, source, a finished batch's
//! counts) is read when it is claimed or listed, so an event of a batch the
//! PostgreSQL pruner has removed keeps only its own fields.
//!
//! Deliveries are claimed under a lease (`due_at` is the lease's end, so a lapsed
//! one is due again), settled in bulk (a settlement under a lease since taken by
//! another claim changes nothing), listed newest first, replayed, counted and
//! pruned through the crate-private [`Outbox`] seam, which every engine implements
//! beside [`Engine`](super::Engine); [`Queue`](super::Queue) has a method for each.
//!
//! Recording from another module's transaction (a reply, a cancel by an opt-out):
//! - SQLite: `sqlite::record_deliveries(&tx, &endpoints, &event)` records one
//!   [`NewEvent`] to the named endpoints and to the subscriptions of its message's
//!   batch that want it; `sqlite::record_message_events(&tx, &rows, kind, code,
//!   now)` records the events of message rows the transaction just moved (and
//!   `batch.finished` of the batches that ended).
//! - PostgreSQL: the same two as methods of the engine (`record_deliveries`,
//!   `record_message_events`, in `postgres/record.rs`), on its transaction; a
//!   message's row is its id.
//! - Redis: every script built by `redis::scripts::script` has the Lua functions
//!   `record_event(b, endpoints, event_id, kind, member, code, payload)` and
//!   `count(b, from, to, member, code)` (see `redis/scripts/outbox.rs`).
//!
//! For a reply: kind [`EventKind::Reply`], event id `reply.{reply id}`, the reply
//! record as JSON in [`NewEvent::payload`] (posted as the event's `data`), the
//! linked message's row when there is one (the event then names its batch and
//! message, and goes to that batch's subscriptions wanting `reply`), and as
//! endpoints every configured webhook wanting `reply`.

use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Error, Result};

mod event;

#[cfg(test)]
pub(crate) use event::message_event_id;
pub use event::{CALLBACK, Event, EventKind, Kinds, NewEvent, Subscription};
pub(crate) use event::{finished_event_id, subscriptions_from_stored, subscriptions_to_stored};
/// Identifies one claim of one delivery: a settlement under a lease since taken by
/// another claim changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub(crate) row: i64,
    pub(crate) token: i64,
}

/// A claimed delivery, ready to post.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key: DeliveryKey,
    /// A webhook's name, or [`CALLBACK`].
    pub endpoint: String,
    /// The batch's `callback_url` when the endpoint is [`CALLBACK`].
    pub url: Option<String>,
    pub event: Event,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When it was recorded (or replayed; ms since the epoch): the retry window
    /// counts from here.
    pub first_at_ms: i64,
}

/// What became of one claimed delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Posted,
    /// Try again at `at_ms`; this attempt counts.
    Retry {
        at_ms: i64,
        error: String,
    },
    /// Given up (the retry window is over); kept as failed, with `error`.
    Failed {
        error: String,
    },
}

/// What a settlement writes: the state, when due again (a retry), the error to
/// keep, and when posted.
pub(crate) struct Settled<'a> {
    pub(crate) state: DeliveryState,
    pub(crate) due_at_ms: Option<i64>,
    pub(crate) error: Option<&'a str>,
    pub(crate) posted_at_ms: Option<i64>,
}

impl DeliveryOutcome {
    /// What settling with this outcome at `now_ms` writes.
    pub(crate) fn settled(&self, now_ms: i64) -> Settled<'_> {
        let (state, due_at_ms, error, posted_at_ms) = match self {
            DeliveryOutcome::Posted => (DeliveryState::Posted, None, None, Some(now_ms)),
            DeliveryOutcome::Retry { at_ms, error } => (
                DeliveryState::Pending,
                Some(*at_ms),
                Some(error.as_str()),
                None,
            ),
            DeliveryOutcome::Failed { error } => {
                (DeliveryState::Failed, None, Some(error.as_str()), None)
            }
        };
        Settled {
            state,
            due_at_ms,
            error,
            posted_at_ms,
        }
    }
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Posted,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Posted => "posted",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Posted,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }

    /// A stored state; an unknown one means a corrupt store.
    pub(crate) fn from_stored(s: &str) -> Result<DeliveryState> {
        DeliveryState::parse(s)
            .ok_or_else(|| Error::Corrupt(format!("unknown delivery state `{s}`")))
    }
}

/// One delivery as listed.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub endpoint: String,
    pub event: Event,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When it is due next, while pending (ms since the epoch).
    pub due_at_ms: Option<i64>,
    pub posted_at_ms: Option<i64>,
    /// Its place in the listing: pass it as `before` for the next page.
    pub seq: i64,
}

/// A delivery as an engine reads it back, with its event complete.
pub(crate) struct StoredDelivery {
    pub(crate) seq: i64,
    pub(crate) endpoint: String,
    pub(crate) state: DeliveryState,
    pub(crate) attempts: u32,
    pub(crate) first_at_ms: i64,
    pub(crate) last_error: Option<String>,
    /// When due (while pending; a leased one's lease end).
    pub(crate) due_at_ms: Option<i64>,
    pub(crate) posted_at_ms: Option<i64>,
    /// Its batch's `callback_url`, if any.
    pub(crate) callback_url: Option<String>,
    pub(crate) event: Event,
}

impl StoredDelivery {
    /// The delivery as claimed under `token`.
    pub(crate) fn claimed(self, token: i64) -> Delivery {
        Delivery {
            key: DeliveryKey {
                row: self.seq,
                token,
            },
            url: (self.endpoint == CALLBACK)
                .then_some(self.callback_url)
                .flatten(),
            endpoint: self.endpoint,
            event: self.event,
            attempts: self.attempts,
            first_at_ms: self.first_at_ms,
        }
    }

    /// The delivery as listed.
    pub(crate) fn record(self) -> DeliveryRecord {
        DeliveryRecord {
            endpoint: self.endpoint,
            event: self.event,
            state: self.state,
            attempts: self.attempts,
            last_error: self.last_error,
            due_at_ms: self
                .due_at_ms
                .filter(|_| self.state == DeliveryState::Pending),
            posted_at_ms: self.posted_at_ms,
            seq: self.seq,
        }
    }
}

/// Which deliveries of an endpoint to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// The one of this event id.
    Event(String),
    /// Every failed one.
    Failed,
}

/// The outbox seam, beside [`Engine`](super::Engine) and
/// [`RecordStore`](super::RecordStore): claiming, settling, listing and replaying
/// deliveries. Every method is one transaction.
#[async_trait]
pub(crate) trait Outbox: Send + Sync + 'static {
    /// Up to `limit` due pending deliveries (any endpoint), oldest due first,
    /// leased for `lease`; a lapsed lease makes a delivery due again.
    async fn claim_deliveries(
        &self,
        limit: u32,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Vec<Delivery>>;
    /// In one transaction; a settlement whose lease was taken by another claim
    /// changes nothing.
    async fn settle_deliveries(
        &self,
        settled: Vec<(DeliveryKey, DeliveryOutcome)>,
        now_ms: i64,
    ) -> Result<()>;
    /// Newest first, up to `limit`, seq below `before`, of `endpoint` (all when
    /// `None`), in `state` (all when `None`).
    async fn deliveries(
        &self,
        endpoint: Option<&str>,
        state: Option<DeliveryState>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>>;
    /// Makes the chosen deliveries of `endpoint` pending and due now (attempts and
    /// window start over); answers how many.
    async fn replay(&self, endpoint: &str, which: Replay, now_ms: i64) -> Result<u64>;
    /// Per endpoint: how many deliveries are pending and failed.
    async fn delivery_counts(&self) -> Result<Vec<(String, u64, u64)>>;
    /// Deletes up to `limit` posted deliveries posted before `before_ms`; answers
    /// how many.
    async fn prune_deliveries(&self, before_ms: i64, limit: u32) -> Result<u64>;
}

impl super::Queue {
    /// Claims up to `limit` due deliveries of any endpoint, oldest due first, under
    /// a lease of `lease` from `now_ms`; a delivery whose lease lapses is due again.
    pub async fn claim_deliveries(
        &self,
        limit: u32,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Vec<Delivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.outbox.claim_deliveries(limit, lease, now_ms).await
    }

    /// Records what became of claimed deliveries, in one transaction; a settlement
    /// whose lease was taken by another claim changes nothing.
    pub async fn settle_deliveries(
        &self,
        settled: Vec<(DeliveryKey, DeliveryOutcome)>,
        now_ms: i64,
    ) -> Result<()> {
        if settled.is_empty() {
            return Ok(());
        }
        self.outbox.settle_deliveries(settled, now_ms).await
    }

    /// One page of deliveries, newest first: up to `limit` with `seq` below
    /// `before`, of `endpoint` (all when `None`), in `state` (any when `None`).
    pub async fn deliveries(
        &self,
        endpoint: Option<&str>,
        state: Option<DeliveryState>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.outbox.deliveries(endpoint, state, before, limit).await
    }

    /// Makes the chosen deliveries of `endpoint` pending and due at `now_ms`, their
    /// attempts and retry window started over; answers how many.
    pub async fn replay_deliveries(
        &self,
        endpoint: &str,
        which: Replay,
        now_ms: i64,
    ) -> Result<u64> {
        self.outbox.replay(endpoint, which, now_ms).await
    }

    /// Per endpoint with any: (endpoint, pending, failed) deliveries.
    pub async fn delivery_counts(&self) -> Result<Vec<(String, u64, u64)>> {
        self.outbox.delivery_counts().await
    }

    /// Deletes up to `limit` deliveries posted before `before_ms`; answers how many.
    pub async fn prune_deliveries(&self, before_ms: i64, limit: u32) -> Result<u64> {
        if limit == 0 {
            return Ok(0);
        }
        self.outbox.prune_deliveries(before_ms, limit).await
    }
}
