//! What every store keeps beside the queue: the stored templates, the
//! suppression list, the fingerprints of recent sends and the ingest markers.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::{Error, Result};
use crate::domain::{Channel, ProviderTemplate};

/// A message template kept in the store, to be rendered into batches at intake.
/// Accepted batches hold their own rendered copies: changing or deleting a
/// template never touches them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTemplate {
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

/// What every engine keeps beside the queue: the stored templates, the suppression
/// list and the fingerprints of recent sends. A trait of its own so that the queue
/// seam stays small and a test can wrap an engine's queue alone. Every change is one
/// transaction.
#[async_trait]
pub(crate) trait RecordStore: Send + Sync + 'static {
    /// Stores `template` as version 1, created and updated now (its own version and
    /// times are ignored); `Ok(None)` when the id is taken.
    async fn create_template(&self, template: StoredTemplate) -> Result<Option<StoredTemplate>>;
    /// Replaces the channel, subject, body and providers of the template with
    /// `template.id`, one version up and updated now; `Ok(None)` when there is none.
    async fn replace_template(&self, template: StoredTemplate) -> Result<Option<StoredTemplate>>;
    async fn template(&self, id: &str) -> Result<Option<StoredTemplate>>;
    /// Up to `limit` templates with ids after `after`, in id (byte) order.
    async fn templates(&self, after: Option<String>, limit: u32) -> Result<Vec<StoredTemplate>>;
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

/// The handle to what a store keeps beside the queue: templates, suppressions,
/// fingerprints of recent sends and ingest markers. Cheap to clone; every change
/// is one transaction.
#[derive(Clone)]
pub struct Records {
    store: Arc<dyn RecordStore>,
}

impl Records {
    pub(crate) fn new(store: Arc<dyn RecordStore>) -> Records {
        Records { store }
    }

    /// Stores a new template as version 1; its version and times are set by the
    /// store. `Error::Conflict` when a template with its id already exists.
    pub async fn create_template(&self, template: StoredTemplate) -> Result<StoredTemplate> {
        let id = template.id.clone();
        self.store
            .create_template(template)
            .await?
            .ok_or_else(|| Error::Conflict(format!("a template `{id}` already exists")))
    }

    /// Replaces a template's channel, subject, body and providers, one version up;
    /// `Ok(None)` when there is no template with its id.
    pub async fn replace_template(
        &self,
        template: StoredTemplate,
    ) -> Result<Option<StoredTemplate>> {
        self.store.replace_template(template).await
    }

    pub async fn template(&self, id: &str) -> Result<Option<StoredTemplate>> {
        self.store.template(id).await
    }

    /// One page of templates: up to `limit` with ids after `after`, in id order.
    pub async fn templates(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<StoredTemplate>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.store.templates(after, limit).await
    }

    /// Deletes a template; `false` when there was none. Batches already accepted
    /// from it keep their rendered messages.
    pub async fn delete_template(&self, id: &str) -> Result<bool> {
        self.store.delete_template(id).await
    }

    /// Adds `entries` to the suppression list in one transaction. An address already
    /// suppressed on the channel keeps its creation time and takes the new reason
    /// (the last one, if it appears more than once). Returns how many were new.
    pub async fn suppress(&self, entries: Vec<Suppression>) -> Result<usize> {
        let entries = last_of_each(entries);
        if entries.is_empty() {
            return Ok(0);
        }
        self.store.suppress(entries).await
    }

    /// Removes `addresses` from `channel`'s suppression list; returns how many were on it.
    pub async fn unsuppress(&self, channel: Channel, addresses: Vec<String>) -> Result<usize> {
        if addresses.is_empty() {
            return Ok(0);
        }
        self.store.unsuppress(channel, addresses).await
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
        self.store.suppressed(channel, &addresses).await
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
        self.store.suppressions(channel, after, limit).await
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
        self.store
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
        self.store
            .recently_sent(channel, fingerprints, since_ms)
            .await
    }

    /// Marks a message an ingest source is about to store (or has stored) under
    /// `marker.key` as not yet acknowledged to its broker, at `at_ms`; markers older
    /// than a day are deleted a few at a time as new ones come.
    pub async fn mark_unacked(&self, marker: &Unacked, at_ms: i64) -> Result<()> {
        self.store
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
        self.store
            .unacked(source, hash, now_ms - UNACKED_FOR_MS, limit)
            .await
    }

    /// Deletes `marker` once its broker has taken the acknowledgement.
    pub async fn unmark_unacked(&self, marker: &Unacked) -> Result<()> {
        self.store.unmark_unacked(marker).await
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
                    .store
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
}

/// A template's providers as every engine stores them: one JSON object.
pub(crate) fn providers_json(providers: &BTreeMap<String, ProviderTemplate>) -> String {
    serde_json::to_string(providers).expect("string keys and string values serialize")
}

pub(crate) fn parse_providers(json: &str) -> Result<BTreeMap<String, ProviderTemplate>> {
    serde_json::from_str(json)
        .map_err(|e| Error::Corrupt(format!("a stored template's providers are not valid: {e}")))
}

/// The channels a page of suppressions reads, in page order, each with the address
/// to read after (`None`: from the channel's first address). Pages go by the
/// channel's name, then the address, both in byte order, on every engine.
pub(crate) fn suppression_ranges(
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
pub(crate) fn last_of_each(entries: Vec<Suppression>) -> Vec<Suppression> {
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
