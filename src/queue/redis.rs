//! The Redis engine: the queue and ledger in one Redis server (standalone or a
//! primary with replicas; not Redis Cluster). Every change of state is one Lua
//! script, so readers and other workers never see half of one. Accepting a batch
//! first writes its message hashes (by script, 1,000 per call, the calls sent together) under keys that
//! nothing refers to yet, then one script publishes it: the batch record, the
//! idempotency key and the ready-set entries. A batch whose writer died between the
//! two is recorded in `staging` and swept after ten minutes.
//!
//! Claims requeue the claiming provider's expired leases before taking due messages.
//! No command blocks, so one multiplexed connection serves everything.
//!
//! **Durability.** Redis acknowledges a write before it is on disk unless told
//! otherwise. For the no-loss promise the server needs `appendonly yes` and
//! `appendfsync always` (one fsync per write, before the reply); `everysec` can lose
//! up to about a second of accepted batches and outcomes on a crash or power loss,
//! and RDB snapshots alone lose everything since the last snapshot. The keys must not
//! be evicted: `maxmemory-policy noeviction`. A failover to an asynchronous replica
//! can lose the last writes. `open` checks the settings and logs what to change.
//!
//! **Keys** (every key starts with the URL's `?prefix=NAME`, default `herald`, then `:`):
//! - `b:{batch id}` hash: the batch (`seq`, `span`, `channel`, `source`, `control`,
//!   `priority`, `send_at`, `created_at`, `report`, `template_source`, the JSON
//!   template it was rendered from, if any, `expires_at`, its deadline in ms, if
//!   it has one, and `window`, its sending window as JSON, if it has one) and its
//!   message counts by state.
//! - `m:{seq}:{index}` hash: one message; `{seq}` is the batch's arrival number and
//!   both parts are zero-padded to 10 digits, so the member `{seq}:{index}` sorts in
//!   arrival order and the ledger pages by index (rejected recipients leave gaps).
//!   A message of a batch with a `template_source` keeps its `vars` and an empty
//!   `body`, which the handle renders at claim; batches stored before templates
//!   were kept have none, and keep their bodies.
//! - `ready:{priority}:{provider}` sorted set: the pending messages of one priority,
//!   scored by `available_at` (ms); equal scores sort by member, i.e. arrival.
//! - `prios:{provider}` sorted set: that provider's priorities with ready messages,
//!   scored by `-priority`, so claims walk them best first.
//! - `leased:{provider}` sorted set: the messages out under a lease, scored by expiry,
//!   and those whose last outcome is unknown, scored by when they are due again.
//! - `pids:{provider}` hash: the provider's message ids → message, for delivery
//!   receipts; `early:{provider}` hash and `early-at` sorted set: receipts that came
//!   before their send was recorded (see `scripts.rs`).
//! - `idem:{key}` hash: an idempotency key's batch and request hash.
//! - `spend:{provider}` hash: local day → what the provider was charged that day;
//!   a batch's hash keeps its `max_cost` and `spent`, a message's its `charge`
//!   (see `spend.rs`).
//! - `rate:{provider}` hash: a rate-limited provider's token bucket (`tokens`, `at`).
//! - `sent:{provider}:{to}` sorted set: a capped recipient's recent sends, scored by
//!   time; it expires after the provider's longest cap window.
//! - `batches` sorted set: every committed batch's id, all scored 0, so that they
//!   sort by bytes — for UUIDv7 ids, by creation — and page with `ZREVRANGEBYLEX`.
//!   `batches-indexed` says it holds the batches stored before it existed too.
//! - `deadlines` sorted set: the batches with a deadline whose unsent messages the
//!   expiry sweep has not walked yet, scored by the deadline.
//! - `seq` counter; `staging` sorted set of batches being written, scored by the
//!   time after which they count as abandoned; `version` of this layout.
//! - `template:{id}` hash: a stored template (`channel`, `subject` if it has one,
//!   `body`, `providers` as JSON, `version`, `created_at`, `updated_at`).
//! - `templates` sorted set: every template id, all scored 0 so that they sort by
//!   bytes and page with `ZRANGEBYLEX`.
//! - `suppressed:{channel}` sorted set: the addresses suppressed on the channel, all
//!   scored 0. A sorted set rather than a set or a hash because it does both jobs:
//!   `ZMSCORE` answers membership for thousands of addresses per command (as
//!   `SMISMEMBER` would), and `ZRANGEBYLEX` pages the list in byte order after a
//!   given address, which `SSCAN`/`HSCAN` cannot.
//! - `suppression:{channel}` hash: address → `{created_at}:{reason}`, what a listing
//!   shows; every change keeps it in step with `suppressed:{channel}`.
//! - `fingerprints:{channel}` sorted set: the fingerprints of recent sends on the
//!   channel, scored by when each was last remembered (ms). `ZMSCORE` answers
//!   membership and time at once, and the oldest are the lowest ranks to remove.
//! - `reply:{id}`, `replies`, `replies-from:{number}`, `reply-seq` and
//!   `last:{provider}:{to}`: the replies ledger and what links a reply to the
//!   message it answers (see `replies.rs`).
//! - `unacked:{source}:{hash}` sorted set: the idempotency keys of messages an
//!   ingest source stored but may not have acknowledged, scored by when (ms);
//!   expires a day after its last marker.
//! - `to:{address}` and `ref:{ref}` sorted sets: the messages to an address and
//!   with a ref, for searches (see `search.rs`); `erase-salt` string: the salt
//!   erased addresses are hashed with (see `erase.rs`); `messages-indexed` says
//!   the messages stored before version 6 were added to the search indexes.
//! - `dlv:{seq}` hashes and the `dlv-…` keys beside them: the outbox's deliveries
//!   (see `scripts/outbox.rs`); a batch's `callback_url` and `subscriptions` (JSON)
//!   are fields of its hash.
//! - `finished` sorted set: the batches with nothing left to send, scored by when
//!   they last changed, which retention prunes oldest first; `finished-indexed`
//!   says it holds the batches finished before it existed too (see `prune.rs`).
//! - `audit:{seq}` hashes, `audit`, `audit-actor:{name}` and
//!   `audit-action:{action}` sorted sets and the `audit-seq` counter: the audit
//!   trail (see `audit.rs`).
//!
//! A message is in `ready:…` exactly when pending and in `leased:…` exactly when
//! sending or unknown; every script keeps that and the batch counts in step. Keys
//! and fields added to the layout that older builds never read (templates,
//! suppressions, fingerprints, receipts) leave its version alone. Version 2 added
//! a batch's `template_source` and the empty bodies of its messages, which a
//! version 1 build would send as they are: a version 1 store is upgraded in place
//! when opened, and a version 1 build refuses a version 2 store. Version 3 added
//! the `expired` state and batch deadlines: an older build would not read the
//! state, so it refuses a version 3 store, and a version 1 or 2 store (with no
//! deadlines) is upgraded in place. Version 4 added batch subscriptions, whose
//! events every change records in its script: an older build would change their
//! messages without telling, so it refuses a version 4 store, and an older store
//! (with none) is upgraded in place. Version 5 added spend caps, charges and the
//! `held` state: an older build would neither read the state nor give a charge
//! back, so it refuses a version 5 store, and an older one is upgraded in place.
//! Version 6 added the search indexes, which
//! every staged message joins: an older build would store messages that cannot
//! be found nor erased, so it refuses a version 6 store, and an older store is
//! upgraded in place (its messages indexed once, when opened).
//!
//! **Files.** This one holds the engine, `open` and the [`Engine`] methods, each
//! handed to the file that owns it: `accept` (idempotency, arrival numbers, writing
//! and committing a batch), `staging` (a batch staged chunk by chunk, the sweep of
//! abandoned ones), `claim`, `settle` (outcomes and delivery receipts), `ledger`
//! (summaries, messages, pending counts, batch control), `outbox` (deliveries
//! claimed, settled, listed, replayed, counted, pruned), `records` (templates,
//! suppressions, fingerprints, ingest markers), `replies` (the replies ledger),
//! `search` (messages across batches by address or ref), `erase` (a person's
//! address hashed),
//! `prune` (retention), `audit` (the audit trail),
//! `scripts` (the Lua), `server` (what
//! `open` checks), `expiry` (the deadline sweep), `keyspace` (walking and deleting keys), `url` ([`Target`]),
//! `spend` (charges, caps and days), `slot` (a message's place), `reply` (reading replies) and `tests`.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use async_trait::async_trait;
use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::CapStore;
use super::spend::{Charge, Charged, Micros};
use super::{
    Accepted, Arrival, BatchAction, BatchSummary, Begun, Claim, Engine, Error, Lease, MessageQuery,
    MessageRecord, NewBatch, ReceiptEffect, Result, Settlement,
};
use crate::domain::{BatchId, DeliveryReport};
use crate::ratelimit::Limits;

mod accept;
mod audit;
mod claim;
mod due;
mod erase;
mod expiry;
mod keyspace;
mod lease;
mod ledger;
mod outbox;
mod prune;
mod records;
mod replies;
mod reply;
mod scripts;
mod search;
mod server;
mod settle;
mod slot;
mod spend;
mod staging;
#[cfg(test)]
mod tests;
mod url;

use scripts::{PRELUDE, Scripts};
use server::failure;
use url::Target;

#[cfg(test)]
pub(crate) use tests::{indexed_ids, stored_keys, test_store};

/// Long enough for the largest script (accepting or pausing a 100,000-message batch
/// with an fsync); the crate's default of 500 ms is not.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The engine: one multiplexed connection (reconnecting on failure) and the scripts.
#[derive(Clone)]
pub(crate) struct Redis {
    conn: ConnectionManager,
    /// The key prefix, with its trailing `:`.
    prefix: String,
    /// `host:port/db`, for messages.
    place: String,
    scripts: Scripts,
    records: records::Scripts,
    replies: replies::Scripts,
    /// Searching and erasing a person's messages.
    person: search::Scripts,
    prunes: prune::Scripts,
    audits: audit::Scripts,
    /// When `accept` next sweeps abandoned staging (ms since the epoch).
    next_sweep_ms: Arc<AtomicI64>,
}

/// Opens the redis store at `url`.
pub(crate) async fn open(url: &::url::Url) -> Result<Arc<Redis>> {
    Ok(Arc::new(Redis::open(url).await?))
}

impl Redis {
    async fn open(url: &::url::Url) -> Result<Redis> {
        let target = Target::parse(url)?;
        let place = target.place.clone();
        let client = redis::Client::open(target.connect.as_str()).map_err(|e| {
            if url.scheme() == "rediss" && e.kind() == redis::ErrorKind::InvalidClientConfig {
                return Error::Unsupported(format!(
                    "the redis store URL for {place} asks for TLS (`rediss://`), which this build of herald \
                     does not include: use `redis://` over a trusted network or a TLS tunnel"
                ));
            }
            Error::Unsupported(format!(
                "the redis store URL for {place} is not usable: {e} \
                 (expected redis://host:port/db or rediss://…, optionally with ?prefix=NAME)"
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| failure(&place, e))?;
        let store = Redis {
            conn,
            prefix: target.prefix,
            place,
            scripts: Scripts::new(),
            records: records::Scripts::new(),
            replies: replies::Scripts::new(),
            person: search::Scripts::new(),
            prunes: prune::Scripts::new(),
            audits: audit::Scripts::new(),
            next_sweep_ms: Arc::new(AtomicI64::new(0)),
        };
        store.check_layout().await?;
        store.index_batches().await?;
        store.index_messages().await?;
        store.index_finished().await?;
        store.check_durability().await;
        store.sweep_staging().await?;
        Ok(store)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn fail(&self, e: RedisError) -> Error {
        failure(&self.place, e)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }
}

#[async_trait]
impl Engine for Redis {
    async fn accept(&self, batch: NewBatch) -> Result<Accepted> {
        self.accept_batch(batch).await
    }

    async fn begin(&self, batch: NewBatch, arrival: Arrival) -> Result<Begun> {
        self.begin_staging(batch, arrival).await
    }

    async fn claim(
        &self,
        provider: &str,
        limit: usize,
        lease: Duration,
        limits: &Limits,
    ) -> Result<Claim> {
        self.claim_due(provider, limit, lease, limits).await
    }

    async fn renew(&self, leases: Vec<Lease>, lease: Duration) -> Result<usize> {
        self.renew_leases(leases, lease).await
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<Vec<super::AppliedReceipt>> {
        self.settle_leases(settlements).await
    }

    async fn apply_receipts(
        &self,
        provider: &str,
        reports: Vec<DeliveryReport>,
        now: i64,
    ) -> Result<Vec<ReceiptEffect>> {
        self.apply_reports(provider, reports, now).await
    }

    async fn batch(&self, id: BatchId) -> Result<Option<BatchSummary>> {
        self.summary(id).await
    }

    async fn window(&self, id: BatchId) -> Result<Option<String>> {
        self.stored_window(id).await
    }

    async fn batches(&self, before: Option<BatchId>, limit: u32) -> Result<Vec<BatchSummary>> {
        self.summaries(before, limit).await
    }

    async fn pending(&self, provider: &str, cap: u64) -> Result<u64> {
        self.count_pending(provider, cap).await
    }

    async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>> {
        self.ledger_page(id, query).await
    }

    async fn next_due(&self, provider: &str) -> Result<Option<i64>> {
        self.earliest_due(provider).await
    }

    async fn control(&self, id: BatchId, action: BatchAction) -> Result<Option<BatchSummary>> {
        self.apply_control(id, action).await
    }

    async fn expire(&self, now_ms: i64, limit: u64) -> Result<u64> {
        self.sweep_expired(now_ms, limit).await
    }
}

#[async_trait]
impl CapStore for Redis {
    async fn charge(&self, charges: Vec<Charge>) -> Result<Vec<Charged>> {
        self.charge_claimed(charges).await
    }

    async fn raise_cap(&self, id: BatchId, max_cost: Micros) -> Result<Option<()>> {
        self.raise_batch_cap(id, max_cost).await
    }

    async fn recent_sends(
        &self,
        owner: &str,
        since_ms: i64,
        addresses: Vec<String>,
    ) -> Result<std::collections::HashMap<String, Vec<i64>>> {
        self.sends_since(owner, since_ms, addresses).await
    }

    async fn spent(&self, provider: &str, day: &str) -> Result<Micros> {
        self.spent_on(provider, day).await
    }
}
