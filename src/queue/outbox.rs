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

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::domain::{BatchId, Channel, Counts};

/// What an application can be told. Serialized as the payload's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EventKind {
    #[serde(rename = "message.sent")]
    Sent,
    #[serde(rename = "message.delivered")]
    Delivered,
    #[serde(rename = "message.undelivered")]
    Undelivered,
    #[serde(rename = "message.failed")]
    Failed,
    #[serde(rename = "message.expired")]
    Expired,
    #[serde(rename = "message.cancelled")]
    Cancelled,
    #[serde(rename = "reply")]
    Reply,
    #[serde(rename = "batch.finished")]
    BatchFinished,
}

impl EventKind {
    /// Every kind, in the order of their bits in [`Kinds`].
    pub const ALL: [EventKind; 8] = [
        EventKind::Sent,
        EventKind::Delivered,
        EventKind::Undelivered,
        EventKind::Failed,
        EventKind::Expired,
        EventKind::Cancelled,
        EventKind::Reply,
        EventKind::BatchFinished,
    ];

    /// The name, as serialized, in configuration and in stores.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Sent => "message.sent",
            EventKind::Delivered => "message.delivered",
            EventKind::Undelivered => "message.undelivered",
            EventKind::Failed => "message.failed",
            EventKind::Expired => "message.expired",
            EventKind::Cancelled => "message.cancelled",
            EventKind::Reply => "reply",
            EventKind::BatchFinished => "batch.finished",
        }
    }

    /// The kind named `name` (as [`EventKind::as_str`] writes it).
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// This kind's bit in [`Kinds`].
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// What a message's event id ends with after its id (`None`: not a message's).
    pub(crate) fn message_suffix(self) -> Option<&'static str> {
        Some(match self {
            EventKind::Sent => "sent",
            EventKind::Delivered => "delivered",
            EventKind::Undelivered => "undelivered",
            EventKind::Failed => "failed",
            EventKind::Expired => "expired",
            EventKind::Cancelled => "cancelled",
            EventKind::Reply | EventKind::BatchFinished => return None,
        })
    }

    /// A stored kind; an unknown one means a corrupt store.
    pub(crate) fn from_stored(name: &str) -> Result<EventKind> {
        EventKind::parse(name).ok_or_else(|| Error::Corrupt(format!("unknown event kind `{name}`")))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of event kinds, one bit each (see [`EventKind::bit`]); stores keep the
/// number. Serialized as the list of names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Kinds(pub u16);

impl Kinds {
    /// Every kind.
    pub fn all() -> Kinds {
        Kinds(EventKind::ALL.iter().fold(0, |bits, k| bits | k.bit()))
    }

    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The kinds named in `names`; an unknown name is answered as the error.
    pub fn parse<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> std::result::Result<Kinds, String> {
        names.into_iter().try_fold(Kinds(0), |kinds, name| {
            EventKind::parse(name)
                .map(|k| Kinds(kinds.0 | k.bit()))
                .ok_or_else(|| {
                    format!(
                        "unknown event `{name}`: expected one of {}",
                        EventKind::ALL.map(EventKind::as_str).join(", ")
                    )
                })
        })
    }

    /// The kinds in the set, in [`EventKind::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

impl FromIterator<EventKind> for Kinds {
    fn from_iter<I: IntoIterator<Item = EventKind>>(iter: I) -> Kinds {
        Kinds(iter.into_iter().fold(0, |bits, k| bits | k.bit()))
    }
}

impl Serialize for Kinds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Kinds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Kinds, D::Error> {
        Ok(Vec::<EventKind>::deserialize(d)?.into_iter().collect())
    }
}

/// The endpoint name of a batch's own `callback_url`.
pub const CALLBACK: &str = "callback";

/// One endpoint a batch's events go to, and the kinds it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// A configured webhook's name, or [`CALLBACK`]: the batch's own `callback_url`.
    pub endpoint: String,
    pub kinds: Kinds,
}

/// A subscription as every engine stores it in a batch's `subscriptions` (JSON).
#[derive(Serialize, Deserialize)]
struct StoredSubscription<'a> {
    endpoint: std::borrow::Cow<'a, str>,
    kinds: u16,
}

/// What every engine stores as a batch's subscriptions: a JSON array of
/// `{"endpoint": name, "kinds": bits}`, or `None` when there are none (nothing
/// will be recorded).
pub(crate) fn subscriptions_to_stored(subscriptions: &[Subscription]) -> Option<String> {
    if subscriptions.iter().all(|s| s.kinds.0 == 0) {
        return None;
    }
    let stored: Vec<StoredSubscription<'_>> = subscriptions
        .iter()
        .filter(|s| s.kinds.0 != 0)
        .map(|s| StoredSubscription {
            endpoint: s.endpoint.as_str().into(),
            kinds: s.kinds.0,
        })
        .collect();
    Some(serde_json::to_string(&stored).expect("strings and numbers serialize"))
}

/// Subscriptions as [`subscriptions_to_stored`] wrote them.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn subscriptions_from_stored(stored: &str) -> Result<Vec<Subscription>> {
    let parsed: Vec<StoredSubscription<'_>> = serde_json::from_str(stored)
        .map_err(|e| Error::Corrupt(format!("a batch's subscriptions are not readable: {e}")))?;
    Ok(parsed
        .into_iter()
        .map(|s| Subscription {
            endpoint: s.endpoint.into_owned(),
            kinds: Kinds(s.kinds),
        })
        .collect())
}

/// The event id of a message's event of `kind` (see the module's doc).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn message_event_id(message_id: &str, kind: EventKind) -> String {
    match kind.message_suffix() {
        Some(suffix) => format!("{message_id}.{suffix}"),
        None => format!("{message_id}.{kind}"),
    }
}

/// The event id of a batch's `batch.finished`.
pub(crate) fn finished_event_id(batch: BatchId) -> String {
    format!("{batch}.finished")
}

/// One event to record from another transaction (a reply), to named endpoints.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Deterministic (see the module's doc): `reply.{reply id}` for a reply.
    pub id: String,
    pub kind: EventKind,
    /// When it happened (ms since the epoch); the retry window counts from here too.
    pub at_ms: i64,
    /// The engine's row of the message the event is about, if any: the event then
    /// names its message and batch, read from the ledger when claimed.
    pub message_row: Option<i64>,
    pub code: Option<String>,
    /// Posted as the event's `data` (JSON text): a reply's record.
    pub payload: Option<String>,
}

/// Identifies one claim of one delivery: a settlement under a lease since taken by
/// another claim changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub(crate) row: i64,
    pub(crate) token: i64,
}

/// The payload's fields, as posted.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Event {
    /// Deterministic: receivers dedupe by it.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When the change happened (ms since the epoch).
    pub at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<BatchId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// The error (failed, expired, cancelled) or the receipt's code (delivered,
    /// undelivered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `batch.finished`: the batch's counts when the event was claimed (final by then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// A reply: its record, as stored with the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_names_and_serialize_back_as_names() {
        let kinds = Kinds::parse(["message.sent", "batch.finished"]).expect("known names");
        assert!(kinds.contains(EventKind::Sent) && kinds.contains(EventKind::BatchFinished));
        assert!(!kinds.contains(EventKind::Failed));
        assert_eq!(
            serde_json::to_value(kinds).unwrap(),
            serde_json::json!(["message.sent", "batch.finished"])
        );
        let err = Kinds::parse(["message.sent", "sent"]).unwrap_err();
        assert!(err.contains("`sent`"), "{err}");
        assert_eq!(Kinds::all().iter().count(), EventKind::ALL.len());
    }

    #[test]
    fn every_kind_serializes_as_its_name() {
        for kind in EventKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn stored_subscriptions_read_back_and_none_stores_nothing() {
        let subs = vec![
            Subscription {
                endpoint: "crm".into(),
                kinds: Kinds::all(),
            },
            Subscription {
                endpoint: CALLBACK.into(),
                kinds: [EventKind::Failed].into_iter().collect(),
            },
        ];
        let stored = subscriptions_to_stored(&subs).expect("some");
        assert_eq!(subscriptions_from_stored(&stored).unwrap(), subs);
        assert_eq!(subscriptions_to_stored(&[]), None);
    }
}
