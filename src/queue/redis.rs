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
//!   `priority`, `send_at`, `created_at`, `report`) and its message counts by state.
//! - `m:{seq}:{index}` hash: one message; `{seq}` is the batch's arrival number and
//!   both parts are zero-padded to 10 digits, so the member `{seq}:{index}` sorts in
//!   arrival order and the ledger pages by index (rejected recipients leave gaps).
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
//! - `rate:{provider}` hash: a rate-limited provider's token bucket (`tokens`, `at`).
//! - `sent:{provider}:{to}` sorted set: a capped recipient's recent sends, scored by
//!   time; it expires after the provider's longest cap window.
//! - `batches` sorted set: every committed batch's id, all scored 0, so that they
//!   sort by bytes — for UUIDv7 ids, by creation — and page with `ZREVRANGEBYLEX`.
//!   `batches-indexed` says it holds the batches stored before it existed too.
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
//! - `unacked:{source}:{hash}` sorted set: the idempotency keys of messages an
//!   ingest source stored but may not have acknowledged, scored by when (ms);
//!   expires a day after its last marker.
//!
//! A message is in `ready:…` exactly when pending and in `leased:…` exactly when
//! sending or unknown; every script keeps that and the batch counts in step. Keys
//! and fields added to the layout that older builds never read (templates,
//! suppressions, fingerprints, receipts) leave its version alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};

use super::{
    Accepted, Arrival, BatchSummary, Begun, Claim, Claimed, Control, EARLY_RECEIPT_TTL_MS,
    EARLY_RECEIPTS_MAX, Engine, Error, Lease, MessageQuery, MessageRecord, NewBatch, NewMessage,
    Outcome, ReceiptEffect, Result, Settlement, Stage, Staging, parse_batch_id,
};
use crate::domain::{
    BatchControl, BatchId, Channel, Counts, DeliveryReport, MessageState, message_id, now_ms,
};
use crate::ratelimit::Limits;

mod records;
mod scripts;

use scripts::{PRELUDE, Scripts};

/// The key layout this build reads and writes.
const LAYOUT_VERSION: &str = "1";

const DEFAULT_PREFIX: &str = "herald";

/// Long enough for the largest script (accepting or pausing a 100,000-message batch
/// with an fsync); the crate's default of 500 ms is not.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Message hashes written per pipeline while a batch is staged.
const STAGE_CHUNK: usize = 1_000;

/// A staged batch not committed within this time is abandoned and swept.
const STAGING_DEADLINE_MS: i64 = 10 * 60 * 1000;

/// How often `accept` also sweeps abandoned staging.
const SWEEP_EVERY_MS: i64 = 60 * 1000;

/// The batch hash fields a summary reads, in this order (scripts use the same list).
const SUMMARY_FIELDS: [&str; 15] = [
    "channel",
    "source",
    "control",
    "priority",
    "created_at",
    "send_at",
    "pending",
    "sending",
    "sent",
    "failed",
    "cancelled",
    "paused",
    "delivered",
    "undelivered",
    "unknown",
];

/// `text` as a `SCAN MATCH` pattern that matches only itself.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The parts of a store URL: what the redis crate connects to, the key prefix, and
/// where it is for messages (no user name or password).
#[derive(Debug, PartialEq, Eq)]
struct StoreUrl {
    connect: String,
    prefix: String,
    place: String,
}

impl StoreUrl {
    /// Parses `redis[s]://[user:password@]host[:port][/db][?prefix=NAME]`, taking
    /// out `prefix` and leaving any other parameter to the redis crate.
    fn parse(url: &str) -> Result<StoreUrl> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut prefix = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("prefix", value)) if prefix.is_none() => prefix = Some(value),
                Some(("prefix", _)) => {
                    return Err(Error::Unsupported(
                        "the redis store URL names `prefix` twice".into(),
                    ));
                }
                None if pair == "prefix" => {
                    return Err(Error::Unsupported(
                        "the redis store URL's `prefix` needs a value: `?prefix=NAME`".into(),
                    ));
                }
                _ => rest.push(pair),
            }
        }
        let prefix = prefix.unwrap_or(DEFAULT_PREFIX);
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
        if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(valid) {
            return Err(Error::Unsupported(format!(
                "the redis key prefix `{prefix}` is not allowed: use 1 to 64 letters, digits, `_`, `-`, `.` or `:`"
            )));
        }
        let connect = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let authority = base.split_once("://").map_or(base, |(_, rest)| rest);
        let place = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        Ok(StoreUrl {
            connect,
            prefix: format!("{prefix}:"),
            place: place.to_owned(),
        })
    }
}

/// Where a message lives: its batch's arrival number and its index. Also the
/// `row` of its [`Lease`] (`seq << 32 | index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    seq: u32,
    index: u32,
}

impl Slot {
    /// Arrival numbers stay below this so a slot fits a lease's non-negative `row`.
    const MAX_SEQ: u64 = i32::MAX as u64;

    /// `{seq}:{index}`, both zero-padded to 10 digits so members sort in arrival order.
    fn member(self) -> String {
        format!("{:010}:{:010}", self.seq, self.index)
    }

    fn parse_member(member: &str) -> Option<Slot> {
        let (seq, index) = member.split_once(':')?;
        let seq = seq.parse().ok()?;
        (u64::from(seq) <= Self::MAX_SEQ).then_some(())?;
        Some(Slot {
            seq,
            index: index.parse().ok()?,
        })
    }

    fn row(self) -> i64 {
        (i64::from(self.seq) << 32) | i64::from(self.index)
    }

    fn from_row(row: i64) -> Option<Slot> {
        let seq = u32::try_from(row >> 32).ok()?;
        Some(Slot {
            seq,
            index: (row & 0xffff_ffff) as u32,
        })
    }
}

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
    /// When `accept` next sweeps abandoned staging (ms since the epoch).
    next_sweep_ms: Arc<AtomicI64>,
}

/// Opens the redis store at `url`.
pub(crate) async fn open(url: &url::Url) -> Result<Arc<Redis>> {
    Ok(Arc::new(Redis::open(url.as_str()).await?))
}

impl Redis {
    async fn open(url: &str) -> Result<Redis> {
        let target = StoreUrl::parse(url)?;
        let place = target.place.clone();
        let client = redis::Client::open(target.connect.as_str()).map_err(|e| {
            if url.starts_with("rediss://") && e.kind() == redis::ErrorKind::InvalidClientConfig {
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
            next_sweep_ms: Arc::new(AtomicI64::new(0)),
        };
        store.check_layout().await?;
        store.index_batches().await?;
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

    async fn check_layout(&self) -> Result<()> {
        let key = self.key("version");
        let (version,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(LAYOUT_VERSION)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        match version.as_deref() {
            Some(LAYOUT_VERSION) => Ok(()),
            other => Err(Error::Corrupt(format!(
                "the redis store at {} (prefix `{}`) has layout version {}, this herald knows {LAYOUT_VERSION}: \
                 upgrade herald or use another prefix",
                self.place,
                self.prefix.trim_end_matches(':'),
                other.unwrap_or("none"),
            ))),
        }
    }

    /// Adds the batches stored before the `batches` index existed to it, once per
    /// store: their hashes are found by `SCAN`. Batches committed meanwhile add
    /// themselves.
    async fn index_batches(&self) -> Result<()> {
        let marker = self.key("batches-indexed");
        let indexed: bool = redis::cmd("EXISTS")
            .arg(&marker)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if indexed {
            return Ok(());
        }
        let head = self.key("b:");
        let pattern = format!("{}*", glob_escape(&head));
        let mut cursor = 0u64;
        // SCAN ends after one pass over the keyspace, about COUNT keys a step.
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| self.fail(e))?;
            let ids: Vec<&str> = keys
                .iter()
                .filter_map(|k| k.strip_prefix(&head))
                .filter(|id| BatchId::parse(id).is_some())
                .collect();
            if !ids.is_empty() {
                let mut zadd = redis::cmd("ZADD");
                zadd.arg(self.key("batches"));
                for id in ids {
                    zadd.arg(0).arg(id);
                }
                zadd.query_async::<()>(&mut self.conn())
                    .await
                    .map_err(|e| self.fail(e))?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        redis::cmd("SET")
            .arg(&marker)
            .arg(1)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    /// Warns, saying what to set, when the server would lose acknowledged writes.
    async fn check_durability(&self) {
        let mut settings = std::collections::HashMap::new();
        for name in ["appendonly", "appendfsync", "maxmemory-policy"] {
            let answer: redis::RedisResult<std::collections::HashMap<String, String>> =
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async(&mut self.conn())
                    .await;
            match answer {
                Ok(values) => settings.extend(values),
                Err(e) => {
                    tracing::warn!(
                        store = %self.place, error = %e,
                        "cannot read the Redis durability settings (CONFIG GET is refused); make sure the server runs \
                         with `appendonly yes`, `appendfsync always` and `maxmemory-policy noeviction`, \
                         or accepted messages can be lost"
                    );
                    return;
                }
            }
        }
        for warning in durability_warnings(&settings) {
            tracing::warn!(store = %self.place, "{warning}");
        }
    }

    /// Deletes the message hashes of batches whose staging was abandoned (the process
    /// writing them stopped before committing).
    async fn sweep_staging(&self) -> Result<()> {
        let now = now_ms();
        self.next_sweep_ms
            .store(now + SWEEP_EVERY_MS, Ordering::Relaxed);
        let staging = self.key("staging");
        let abandoned: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&staging)
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(100)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        for entry in abandoned {
            let parsed = entry.split_once(':').and_then(|(seq, span)| {
                Some((seq.parse::<u32>().ok()?, span.parse::<u32>().ok()?))
            });
            match parsed {
                Some((seq, span)) => self.discard_staged(seq, span).await?,
                None => {
                    redis::cmd("ZREM")
                        .arg(&staging)
                        .arg(&entry)
                        .query_async::<()>(&mut self.conn())
                        .await
                        .map_err(|e| self.fail(e))?;
                }
            }
        }
        Ok(())
    }

    /// Deletes a staged batch's message hashes, unless its commit got there first:
    /// whoever removes the staging entry owns the keys.
    async fn discard_staged(&self, seq: u32, span: u32) -> Result<()> {
        let removed: i64 = redis::cmd("ZREM")
            .arg(self.key("staging"))
            .arg(format!("{seq:010}:{span}"))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if removed == 0 {
            return Ok(());
        }
        let keys: Vec<String> = (0..span)
            .map(|index| self.key(&format!("m:{}", Slot { seq, index }.member())))
            .collect();
        for chunk in keys.chunks(STAGE_CHUNK) {
            redis::cmd("UNLINK")
                .arg(chunk)
                .query_async::<()>(&mut self.conn())
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    async fn lookup(&self, key: &str) -> Result<Option<(BatchId, Option<String>, String)>> {
        let reply: Vec<Value> = self
            .scripts
            .lookup
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(key)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        match reply.as_slice() {
            [] => Ok(None),
            [id, hash, report] => Ok(Some((
                batch_id(id)?,
                text(hash)?,
                text(report)?.unwrap_or_else(|| "null".into()),
            ))),
            _ => Err(unexpected("an idempotency lookup")),
        }
    }

    /// Writes the batch's message hashes under keys nothing refers to yet. The
    /// chunks go out together on the multiplexed connection, so Redis runs them back
    /// to back instead of waiting a round trip between them.
    async fn stage(
        &self,
        batch: &NewBatch,
        messages: &[NewMessage],
        seq: u32,
        now: i64,
    ) -> Result<()> {
        let id = batch.id.to_string();
        let calls = messages.chunks(STAGE_CHUNK).map(|chunk| {
            let mut call = self.scripts.stage.prepare_invoke();
            call.arg(&self.prefix)
                .arg(now)
                .arg(&id)
                .arg(batch.send_at_ms)
                .arg(batch.template_id.as_deref().unwrap_or(""));
            for m in chunk {
                let has = u8::from(m.reference.is_some())
                    + 2 * u8::from(m.subject.is_some())
                    + 4 * u8::from(m.vars.is_some());
                call.arg(
                    Slot {
                        seq,
                        index: m.index,
                    }
                    .member(),
                )
                .arg(&m.provider)
                .arg(&m.to)
                .arg(&m.body)
                .arg(m.segments)
                .arg(has)
                .arg(m.reference.as_deref().unwrap_or(""))
                .arg(m.subject.as_deref().unwrap_or(""))
                .arg(m.vars.as_deref().unwrap_or(""));
            }
            let mut conn = self.conn();
            async move { call.invoke_async::<()>(&mut conn).await }
        });
        futures_util::future::try_join_all(calls)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Makes a staged batch visible (the commit script), with `runs` of message
    /// indices per provider, and reads the script's answer.
    async fn commit(&self, batch: &NewBatch, staged: &Layout, report: &str) -> Result<Accepted> {
        let (key, hash) = match &batch.idempotency {
            Some(i) => (i.key.as_str(), i.request_hash.as_str()),
            None => ("", ""),
        };
        let mut call = self.scripts.commit.prepare_invoke();
        call.arg(&self.prefix)
            .arg(now_ms())
            .arg(batch.id.to_string())
            .arg(batch.channel.as_str())
            .arg(&batch.source)
            .arg(batch.priority)
            .arg(batch.send_at_ms)
            .arg(report)
            .arg(format!("{:010}", staged.seq))
            .arg(staged.span)
            .arg(staged.total)
            .arg(key)
            .arg(hash)
            .arg(staged.reserved);
        for (provider, runs) in &staged.runs {
            call.arg(provider).arg(runs.len());
            for (from, to) in runs {
                call.arg(from).arg(to);
            }
        }
        let reply: Vec<Value> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        match reply.first().map(text).transpose()?.flatten().as_deref() {
            Some("new") => Ok(Accepted::New(batch.id)),
            Some("seen") => match (reply.get(1), reply.get(2), reply.get(3)) {
                (Some(id), Some(hash), Some(report)) => {
                    let report = text(report)?.unwrap_or_else(|| "null".into());
                    replay(key, batch_id(id)?, text(hash)?, &report, batch)
                }
                _ => Err(unexpected("a batch commit")),
            },
            Some("exists") => Err(Error::Conflict(format!(
                "a batch with id {} is already stored",
                batch.id
            ))),
            Some("expired") => Err(Error::Unavailable(format!(
                "redis at {}: storing the batch took longer than {} minutes and was abandoned; submit it again",
                self.place,
                STAGING_DEADLINE_MS / 60_000
            ))),
            _ => Err(unexpected("a batch commit")),
        }
    }

    /// Allocates a batch's arrival number, recording it as staging up to `span`.
    async fn reserve(&self, span: u32) -> Result<u32> {
        let seq: String = self
            .scripts
            .reserve
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(now_ms() + STAGING_DEADLINE_MS)
            .arg(span)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        seq.parse::<u32>()
            .ok()
            .filter(|&s| u64::from(s) <= Slot::MAX_SEQ)
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "the batch sequence of the redis store at {} is exhausted or bad (`{seq}`)",
                    self.place
                ))
            })
    }

    /// Sweeps abandoned staging when it is time, and answers a used idempotency key.
    async fn prepare_accept(&self, batch: &NewBatch) -> Result<Option<Accepted>> {
        if now_ms() >= self.next_sweep_ms.load(Ordering::Relaxed)
            && let Err(e) = self.sweep_staging().await
        {
            tracing::warn!(error = %e, "sweeping abandoned batch staging failed; will try again");
        }
        if let Some(idem) = &batch.idempotency
            && let Some((id, hash, report)) = self.lookup(&idem.key).await?
        {
            return replay(&idem.key, id, hash, &report, batch).map(Some);
        }
        Ok(None)
    }
}

/// Where a batch's messages are: its arrival number, the span of its indices, the
/// span its staging entry records, how many messages, and the runs of consecutive
/// indices of each provider (rejected recipients leave gaps).
#[derive(Debug, Default)]
struct Layout {
    seq: u32,
    span: u32,
    reserved: u32,
    total: usize,
    runs: Vec<(String, Vec<(u32, u32)>)>,
}

impl Layout {
    /// Counts `m` in; messages come in index order.
    fn add(&mut self, m: &NewMessage) {
        self.span = m.index + 1;
        self.total += 1;
        let runs = match self.runs.iter_mut().find(|(p, _)| *p == m.provider) {
            Some((_, runs)) => runs,
            None => {
                self.runs.push((m.provider.clone(), Vec::new()));
                &mut self.runs.last_mut().expect("just pushed").1
            }
        };
        match runs.last_mut() {
            Some((_, to)) if *to == m.index => *to += 1,
            _ => runs.push((m.index, m.index + 1)),
        }
    }
}

/// A batch being stored in chunks: its message hashes are written under keys
/// nothing refers to, recorded in the staging set so an abandoned one is swept,
/// and the commit script publishes them all at once.
struct RedisStaging {
    redis: Redis,
    batch: NewBatch,
    layout: Layout,
}

impl Redis {
    async fn discard_or_leave(&self, layout: &Layout) {
        if let Err(e) = self.discard_staged(layout.seq, layout.reserved).await {
            tracing::warn!(error = %e, "cannot discard a staged batch now; a later sweep will");
        }
    }
}

#[async_trait]
impl Stage for RedisStaging {
    async fn add(&mut self, messages: Vec<NewMessage>) -> Result<()> {
        let Some(last) = messages.last() else {
            return Ok(());
        };
        let span = last.index + 1;
        // The staging entry covers the new messages before they are written.
        let extended: i64 = self
            .redis
            .scripts
            .extend
            .arg(&self.redis.prefix)
            .arg(now_ms())
            .arg(format!("{:010}", self.layout.seq))
            .arg(self.layout.reserved)
            .arg(span)
            .arg(now_ms() + STAGING_DEADLINE_MS)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.fail(e))?;
        if extended == 0 {
            return Err(Error::Unavailable(format!(
                "redis at {}: storing the batch took longer than {} minutes and was abandoned; submit it again",
                self.redis.place,
                STAGING_DEADLINE_MS / 60_000
            )));
        }
        self.layout.reserved = span;
        self.redis
            .stage(&self.batch, &messages, self.layout.seq, now_ms())
            .await?;
        for m in &messages {
            self.layout.add(m);
        }
        Ok(())
    }

    async fn commit(self: Box<Self>, report: serde_json::Value, _span: u32) -> Result<Accepted> {
        let stored = self
            .redis
            .commit(&self.batch, &self.layout, &report.to_string())
            .await;
        if !matches!(stored, Ok(Accepted::New(_))) {
            self.redis.discard_or_leave(&self.layout).await;
        }
        stored
    }

    async fn discard(self: Box<Self>) {
        self.redis.discard_or_leave(&self.layout).await;
    }
}

fn failure(place: &str, e: RedisError) -> Error {
    let hint = if e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
    {
        "check the user name and password in the store URL"
    } else if e.code() == Some("READONLY") {
        "the URL points at a read-only replica: use the primary"
    } else if e.code() == Some("OOM") {
        "the server reached maxmemory: give it more memory (with maxmemory-policy noeviction)"
    } else if e.code() == Some("LOADING") {
        "the server is loading its data: try again shortly"
    } else if e.is_timeout() {
        "the server did not answer in time: check that it is not overloaded or blocked"
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        "check that the server is running and reachable at that address"
    } else {
        "check the server's log"
    };
    Error::Unavailable(format!("redis at {place}: {e}; {hint}"))
}

/// What to tell the operator about the server's settings, from `CONFIG GET`.
fn durability_warnings(settings: &std::collections::HashMap<String, String>) -> Vec<String> {
    let get = |name: &str| settings.get(name).map(String::as_str);
    let mut warnings = Vec::new();
    match (get("appendonly"), get("appendfsync")) {
        (Some("yes"), Some("always")) => {}
        (Some("yes"), Some("everysec")) => warnings.push(
            "Redis fsyncs its append-only file once a second (`appendfsync everysec`): a crash or power loss \
             can lose up to ~1 s of accepted batches and delivery outcomes; set `appendfsync always` for no loss"
                .to_owned(),
        ),
        (Some("yes"), other) => warnings.push(format!(
            "Redis leaves fsync to the OS (`appendfsync {}`): a crash or power loss can lose accepted batches \
             and delivery outcomes; set `appendfsync always`",
            other.unwrap_or("?")
        )),
        _ => warnings.push(
            "Redis does not log writes to disk (`appendonly no`): accepted batches and delivery outcomes are \
             lost if the server stops; set `appendonly yes` and `appendfsync always` \
             (redis.conf, or CONFIG SET then CONFIG REWRITE)"
                .to_owned(),
        ),
    }
    if let Some(policy) = get("maxmemory-policy")
        && policy.starts_with("allkeys")
    {
        warnings.push(format!(
            "Redis may evict queue keys when full (`maxmemory-policy {policy}`): set `maxmemory-policy noeviction`"
        ));
    }
    warnings
}

fn unexpected(what: &str) -> Error {
    Error::Corrupt(format!("redis answered {what} in an unexpected shape"))
}

/// A string reply; `None` for nil (or RESP3 false, which a Lua `false` becomes).
fn text(v: &Value) -> Result<Option<String>> {
    match v {
        Value::Nil | Value::Boolean(false) => Ok(None),
        Value::BulkString(bytes) => String::from_utf8(bytes.clone())
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("a stored value is not UTF-8: {e}"))),
        Value::SimpleString(s) => Ok(Some(s.clone())),
        Value::Int(n) => Ok(Some(n.to_string())),
        Value::Okay => Ok(Some("OK".into())),
        other => Err(Error::Corrupt(format!(
            "expected a string from redis, got {other:?}"
        ))),
    }
}

fn required(v: &Value, what: &str) -> Result<String> {
    text(v)?.ok_or_else(|| Error::Corrupt(format!("a stored {what} is missing")))
}

fn number<T: std::str::FromStr>(v: &Value, what: &str) -> Result<T> {
    let s = required(v, what)?;
    s.parse()
        .map_err(|_| Error::Corrupt(format!("a stored {what} is not a number: `{s}`")))
}

fn optional_number(v: &Value, what: &str) -> Result<Option<i64>> {
    text(v)?
        .map(|s| {
            s.parse()
                .map_err(|_| Error::Corrupt(format!("a stored {what} is not a number: `{s}`")))
        })
        .transpose()
}

fn batch_id(v: &Value) -> Result<BatchId> {
    parse_batch_id(&required(v, "batch id")?)
}

fn replay(
    key: &str,
    id: BatchId,
    hash: Option<String>,
    report: &str,
    batch: &NewBatch,
) -> Result<Accepted> {
    let expected = batch.idempotency.as_ref().map(|i| i.request_hash.as_str());
    if hash.as_deref() != expected {
        return Err(Error::Conflict(format!(
            "the Idempotency-Key `{key}` was used before with a different request"
        )));
    }
    let report = serde_json::from_str(report).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok(Accepted::Replayed { id, report })
}

fn parse_summary(id: BatchId, f: &[Value]) -> Result<Option<BatchSummary>> {
    let [
        channel,
        source,
        control,
        priority,
        created,
        send_at,
        pending,
        sending,
        sent,
        failed,
        cancelled,
        paused,
        delivered,
        undelivered,
        unknown,
    ] = f
    else {
        return Err(unexpected("a batch summary"));
    };
    let Some(channel) = text(channel)? else {
        return Ok(None);
    };
    let control = required(control, "batch control")?;
    let count = |v: &Value, what: &str| -> Result<u64> {
        Ok(optional_number(v, what)?.unwrap_or(0).max(0).unsigned_abs())
    };
    let mut counts = Counts::default();
    counts.add(MessageState::Pending, count(pending, "pending count")?);
    counts.add(MessageState::Sending, count(sending, "sending count")?);
    counts.add(MessageState::Sent, count(sent, "sent count")?);
    counts.add(MessageState::Failed, count(failed, "failed count")?);
    counts.add(
        MessageState::Cancelled,
        count(cancelled, "cancelled count")?,
    );
    counts.add(MessageState::Paused, count(paused, "paused count")?);
    counts.add(
        MessageState::Delivered,
        count(delivered, "delivered count")?,
    );
    counts.add(
        MessageState::Undelivered,
        count(undelivered, "undelivered count")?,
    );
    counts.add(MessageState::Unknown, count(unknown, "unknown count")?);
    Ok(Some(BatchSummary {
        id,
        channel: channel.parse::<Channel>().map_err(Error::Corrupt)?,
        source: required(source, "batch source")?,
        control: BatchControl::parse(&control)
            .ok_or_else(|| Error::Corrupt(format!("unknown control `{control}`")))?,
        priority: number(priority, "batch priority")?,
        created_at_ms: number(created, "batch creation time")?,
        send_at_ms: number(send_at, "batch send time")?,
        counts,
    }))
}

fn parse_claimed(provider: &str, token: i64, reply: &[Value]) -> Result<Vec<Claimed>> {
    if !reply.len().is_multiple_of(12) {
        return Err(unexpected("a claim"));
    }
    reply
        .chunks_exact(12)
        .map(|m| {
            let member = required(&m[0], "message member")?;
            let slot = Slot::parse_member(&member)
                .ok_or_else(|| Error::Corrupt(format!("bad message member `{member}`")))?;
            let batch = batch_id(&m[1])?;
            Ok(Claimed {
                lease: Lease {
                    row: slot.row(),
                    token,
                },
                id: message_id(batch, slot.index),
                batch_id: batch,
                channel: required(&m[2], "batch channel")?
                    .parse()
                    .map_err(Error::Corrupt)?,
                provider: provider.to_owned(),
                to: required(&m[3], "recipient")?,
                reference: text(&m[4])?,
                subject: text(&m[5])?,
                body: required(&m[6], "message body")?,
                attempts: number(&m[7], "attempt count")?,
                // Messages staged before segments were stored count as one.
                segments: optional_number(&m[8], "segment count")?
                    .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX)),
                template_id: text(&m[9])?,
                vars: text(&m[10])?,
                unknown_since_ms: optional_number(&m[11], "unknown outcome time")?,
                template: None,
            })
        })
        .collect()
}

fn parse_records(id: BatchId, reply: &[Value]) -> Result<Vec<MessageRecord>> {
    if !reply.len().is_multiple_of(13) {
        return Err(unexpected("a ledger page"));
    }
    reply
        .chunks_exact(13)
        .map(|m| {
            let index: u32 = number(&m[0], "message index")?;
            let state = required(&m[3], "message state")?;
            Ok(MessageRecord {
                id: message_id(id, index),
                index,
                to: required(&m[1], "recipient")?,
                reference: text(&m[2])?,
                state: MessageState::parse(&state)
                    .ok_or_else(|| Error::Corrupt(format!("unknown message state `{state}`")))?,
                provider: required(&m[4], "provider")?,
                attempts: number(&m[5], "attempt count")?,
                last_error: text(&m[6])?,
                provider_message_id: text(&m[7])?,
                created_at_ms: number(&m[8], "message creation time")?,
                updated_at_ms: number(&m[9], "message update time")?,
                sent_at_ms: optional_number(&m[10], "message sent time")?,
                receipt_code: text(&m[11])?,
                receipt_at_ms: optional_number(&m[12], "receipt time")?,
            })
        })
        .collect()
}

#[async_trait]
impl Engine for Redis {
    async fn accept(&self, batch: NewBatch) -> Result<Accepted> {
        if let Some(replayed) = self.prepare_accept(&batch).await? {
            return Ok(replayed);
        }
        let mut layout = Layout::default();
        for m in &batch.messages {
            layout.add(m);
        }
        layout.seq = self.reserve(layout.span).await?;
        layout.reserved = layout.span;
        let stored = async {
            self.stage(&batch, &batch.messages, layout.seq, now_ms())
                .await?;
            self.commit(&batch, &layout, &batch.report.to_string())
                .await
        }
        .await;
        if !matches!(stored, Ok(Accepted::New(_))) {
            // Anything not committed goes; if this fails too, the sweep will do it.
            self.discard_or_leave(&layout).await;
        }
        stored
    }

    async fn begin(&self, batch: NewBatch, arrival: Arrival) -> Result<Begun> {
        if arrival == Arrival::AtHand {
            // Gathered and stored by one accept, as fast as the chunks are made.
            return Ok(Begun::Staging(Staging::gather(batch)));
        }
        if let Some(replayed) = self.prepare_accept(&batch).await? {
            return Ok(Begun::Answered(replayed));
        }
        let layout = Layout {
            seq: self.reserve(0).await?,
            ..Layout::default()
        };
        Ok(Begun::Staging(Staging::new(Box::new(RedisStaging {
            redis: self.clone(),
            batch,
            layout,
        }))))
    }

    async fn claim(
        &self,
        provider: &str,
        limit: usize,
        lease: Duration,
        limits: &Limits,
    ) -> Result<Claim> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let token = fastrand::i64(..);
        let (per_sec, burst) = limits.rate.map_or((String::new(), String::new()), |r| {
            (r.per_sec.to_string(), r.burst.to_string())
        });
        let mut call = self.scripts.claim.prepare_invoke();
        call.arg(&self.prefix)
            .arg(now)
            .arg(provider)
            .arg(limit)
            .arg(until)
            .arg(token)
            .arg(per_sec)
            .arg(burst)
            .arg(limits.per_recipient.len());
        for cap in &limits.per_recipient {
            call.arg(cap.count).arg(cap.window_ms);
        }
        match limits.segments {
            Some(rate) => call.arg(rate.per_sec).arg(rate.burst),
            None => call.arg("").arg(""),
        };
        call.arg(limits.owner_or(provider));
        let reply: Vec<Value> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        let Some((wait, messages)) = reply.split_first() else {
            return Err(unexpected("a claim"));
        };
        match number::<u64>(wait, "rate wait")? {
            0 => Ok(Claim::Messages(parse_claimed(provider, token, messages)?)),
            ms => Ok(Claim::Wait(Duration::from_millis(ms))),
        }
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<()> {
        let mut call = self.scripts.settle.prepare_invoke();
        call.arg(&self.prefix).arg(now_ms());
        for Settlement {
            lease,
            outcome,
            sent_by,
        } in &settlements
        {
            let Some(slot) = Slot::from_row(lease.row) else {
                continue;
            };
            let (kind, at, text) = match outcome {
                Outcome::Sent {
                    provider_message_id,
                } => ("sent", 0, provider_message_id.as_deref()),
                Outcome::Confirmed {
                    provider_message_id,
                } => ("confirmed", 0, provider_message_id.as_deref()),
                Outcome::Retry { at_ms, error } => ("retry", *at_ms, Some(error.as_str())),
                Outcome::Unknown { at_ms, error } => ("unknown", *at_ms, Some(error.as_str())),
                Outcome::Release { at_ms } => ("release", *at_ms, None),
                Outcome::Failed { error } => ("failed", 0, Some(error.as_str())),
            };
            call.arg(slot.member())
                .arg(lease.token)
                .arg(kind)
                .arg(at)
                .arg(if text.is_some() { "1" } else { "0" })
                .arg(text.unwrap_or(""))
                .arg(sent_by.as_deref().unwrap_or(""));
        }
        call.invoke_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    async fn apply_receipts(
        &self,
        provider: &str,
        reports: Vec<DeliveryReport>,
        now: i64,
    ) -> Result<Vec<ReceiptEffect>> {
        let mut call = self.scripts.apply_receipts.prepare_invoke();
        call.arg(&self.prefix)
            .arg(now)
            .arg(provider)
            .arg(EARLY_RECEIPT_TTL_MS)
            .arg(EARLY_RECEIPTS_MAX);
        for r in &reports {
            call.arg(&r.provider_message_id)
                .arg(r.to.as_deref().unwrap_or(""))
                .arg(if r.delivered { "1" } else { "0" })
                .arg(r.code.as_deref().unwrap_or(""))
                .arg(r.at_ms.map(|at| at.to_string()).unwrap_or_default());
        }
        let reply: Vec<Value> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if reply.len() != 3 * reports.len() {
            return Err(unexpected("applying receipts"));
        }
        reply
            .chunks_exact(3)
            .map(|r| {
                Ok(match required(&r[0], "receipt effect")?.as_str() {
                    "applied" => ReceiptEffect::Applied {
                        to: required(&r[1], "recipient")?,
                        channel: required(&r[2], "batch channel")?
                            .parse()
                            .map_err(Error::Corrupt)?,
                    },
                    "same" => ReceiptEffect::Unchanged,
                    "ambiguous" => ReceiptEffect::Ambiguous,
                    "held" => ReceiptEffect::Held,
                    _ => return Err(unexpected("applying receipts")),
                })
            })
            .collect()
    }

    async fn batch(&self, id: BatchId) -> Result<Option<BatchSummary>> {
        let fields: Vec<Value> = redis::cmd("HMGET")
            .arg(self.key(&format!("b:{id}")))
            .arg(&SUMMARY_FIELDS[..])
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        parse_summary(id, &fields)
    }

    async fn batches(&self, before: Option<BatchId>, limit: u32) -> Result<Vec<BatchSummary>> {
        let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
            .arg(self.key("batches"))
            .arg(before.map_or_else(|| "+".to_owned(), |b| format!("({b}")))
            .arg("-")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.key(&format!("b:{id}")))
                .arg(&SUMMARY_FIELDS[..]);
        }
        let replies: Vec<Vec<Value>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        let mut summaries = Vec::with_capacity(ids.len());
        for (id, fields) in ids.iter().zip(&replies) {
            summaries.extend(parse_summary(parse_batch_id(id)?, fields)?);
        }
        Ok(summaries)
    }

    async fn pending(&self, provider: &str, cap: u64) -> Result<u64> {
        // The ready sets hold exactly the pending messages, one per priority: as
        // many commands as priorities in use, whatever their sizes.
        let priorities: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.key(&format!("prios:{provider}")))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if priorities.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for priority in &priorities {
            pipe.cmd("ZCARD")
                .arg(self.key(&format!("ready:{priority}:{provider}")));
        }
        let sizes: Vec<u64> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(sizes.iter().sum::<u64>().min(cap))
    }

    async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let from = query.after.map_or(0, |after| u64::from(after) + 1);
        let reply: Vec<Value> = self
            .scripts
            .messages
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(id.to_string())
            .arg(from)
            .arg(query.limit)
            .arg(query.state.map_or("", MessageState::as_str))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        parse_records(id, &reply)
    }

    async fn control(&self, id: BatchId, action: Control) -> Result<Option<BatchSummary>> {
        let action_name = match action {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
            Control::Retry => "retry",
        };
        let reply: Vec<Value> = self
            .scripts
            .control
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(id.to_string())
            .arg(action_name)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        match reply.first().map(text).transpose()?.flatten().as_deref() {
            Some("none") => Ok(None),
            Some("conflict") => Err(Error::Conflict("the batch is cancelled".into())),
            Some("ok") => parse_summary(id, &reply[1..]),
            _ => Err(unexpected("a batch control")),
        }
    }
}

/// A store of this engine for one conformance test, under a key prefix of its own on
/// the server named by `HERALD_TEST_REDIS` (default `redis://127.0.0.1:6379/0`); the
/// guard deletes the prefix's keys. Panics when the server cannot be reached.
#[cfg(test)]
pub(crate) async fn test_store() -> Option<super::tests::TestStore> {
    let server = std::env::var("HERALD_TEST_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let prefix = format!("herald-test-{}", uuid::Uuid::now_v7().simple());
    let joiner = if server.contains('?') { '&' } else { '?' };
    let url = format!("{server}{joiner}prefix={prefix}");
    let queue = match super::Queue::open(&url).await {
        Ok(queue) => queue,
        Err(e) => panic!(
            "the Redis test server at {server} cannot be used: {e}\n\
             start one (scripts/test does: redis-server --port 6379) or point HERALD_TEST_REDIS at one"
        ),
    };
    let guard = TestPrefix { server, prefix };
    Some((queue, url, Box::new(guard)))
}

/// Deletes a test's keys when dropped.
#[cfg(test)]
struct TestPrefix {
    server: String,
    prefix: String,
}

#[cfg(test)]
impl Drop for TestPrefix {
    fn drop(&mut self) {
        let server = self.server.clone();
        let pattern = format!("{}:*", self.prefix);
        // Dropped inside a test's runtime, where blocking is not allowed: the sync
        // client runs on a thread of its own.
        let cleanup = std::thread::spawn(move || -> redis::RedisResult<()> {
            let client = redis::Client::open(server.as_str())?;
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
            let mut cursor = 0u64;
            for _ in 0..10_000 {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut conn)?;
                if !keys.is_empty() {
                    redis::cmd("UNLINK").arg(&keys).query::<()>(&mut conn)?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            Ok(())
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot delete the test keys {}:*: {e}", self.prefix),
            Err(_) => eprintln!("deleting the test keys {}:* panicked", self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::queue::{NewMessage, Queue};

    #[test]
    fn members_sort_in_arrival_order() {
        let slots = [
            Slot { seq: 1, index: 0 },
            Slot { seq: 1, index: 9 },
            Slot { seq: 1, index: 10 },
            Slot { seq: 9, index: 0 },
            Slot { seq: 10, index: 0 },
            Slot {
                seq: Slot::MAX_SEQ as u32,
                index: u32::MAX,
            },
        ];
        let members: Vec<String> = slots.iter().map(|s| s.member()).collect();
        let mut sorted = members.clone();
        sorted.sort();
        assert_eq!(members, sorted);
        for slot in slots {
            assert_eq!(Slot::parse_member(&slot.member()), Some(slot));
            assert_eq!(Slot::from_row(slot.row()), Some(slot));
            assert!(slot.row() >= 0);
        }
    }

    #[test]
    fn priority_scores_put_the_highest_first_and_are_exact() {
        // `prios:{provider}` is scored by -priority: ascending scores are priority DESC.
        let priorities = [i32::MAX, 100, 7, 0, -5, i32::MIN];
        let scores: Vec<f64> = priorities.iter().map(|&p| -f64::from(p)).collect();
        assert!(scores.windows(2).all(|w| w[0] < w[1]));
        for (p, s) in priorities.iter().zip(&scores) {
            assert_eq!(-(*s as i64), i64::from(*p), "no precision lost");
        }
        // Available-at scores are ms timestamps, exact in a double for ~285,000 years.
        let t: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        assert_eq!(t as f64 as i64, t);
    }

    #[test]
    fn urls_keep_the_prefix_out_of_the_connection() {
        let parsed = StoreUrl::parse("redis://127.0.0.1:6379/0").unwrap();
        assert_eq!(
            parsed,
            StoreUrl {
                connect: "redis://127.0.0.1:6379/0".into(),
                prefix: "herald:".into(),
                place: "127.0.0.1:6379/0".into(),
            }
        );
        let parsed = StoreUrl::parse(
            "rediss://user:secret@cache.example:6380/2?protocol=resp3&prefix=prod.sms",
        )
        .unwrap();
        assert_eq!(
            parsed,
            StoreUrl {
                connect: "rediss://user:secret@cache.example:6380/2?protocol=resp3".into(),
                prefix: "prod.sms:".into(),
                place: "cache.example:6380/2".into(),
            }
        );
        assert_eq!(
            StoreUrl::parse("redis://h/0?prefix=a:b").unwrap().prefix,
            "a:b:"
        );
    }

    #[test]
    fn bad_prefixes_are_refused_with_the_rule() {
        for url in [
            "redis://h/0?prefix=",
            "redis://h/0?prefix",
            "redis://h/0?prefix=a*b",
            "redis://h/0?prefix=a&prefix=b",
            "redis://h/0?prefix=with%20space",
        ] {
            assert!(
                matches!(StoreUrl::parse(url), Err(Error::Unsupported(_))),
                "{url} must be refused"
            );
        }
    }

    #[test]
    fn durability_warnings_say_what_to_set() {
        let settings = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let durable = settings(&[
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("maxmemory-policy", "noeviction"),
        ]);
        assert!(durability_warnings(&durable).is_empty());
        let off = durability_warnings(&settings(&[("appendonly", "no")]));
        assert!(off[0].contains("appendonly yes") && off[0].contains("appendfsync always"));
        let everysec = durability_warnings(&settings(&[
            ("appendonly", "yes"),
            ("appendfsync", "everysec"),
        ]));
        assert!(everysec[0].contains("appendfsync always"));
        let evicting = durability_warnings(&settings(&[
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("maxmemory-policy", "allkeys-lru"),
        ]));
        assert!(evicting[0].contains("noeviction"));
    }

    #[test]
    fn connection_failures_say_what_to_check_and_hide_the_password() {
        let e = failure(
            "127.0.0.1:1/0",
            RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        );
        let Error::Unavailable(message) = e else {
            panic!("expected Unavailable");
        };
        assert!(message.contains("127.0.0.1:1/0") && message.contains("running and reachable"));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable() {
        match Queue::open("redis://127.0.0.1:1/0").await {
            Err(Error::Unavailable(message)) => assert!(message.contains("127.0.0.1:1/0")),
            Err(other) => panic!("expected Unavailable, got {other:?}"),
            Ok(_) => panic!("nothing listens on port 1"),
        }
    }

    fn big_batch(n: u32) -> NewBatch {
        NewBatch {
            id: BatchId::new(),
            channel: Channel::Sms,
            source: "test".into(),
            priority: 0,
            send_at_ms: now_ms(),
            idempotency: None,
            report: serde_json::json!({"accepted": n}),
            template_id: None,
            template: None,
            messages: (0..n)
                .map(|index| NewMessage {
                    index,
                    provider: "p".into(),
                    to: format!("+8613800{index:06}"),
                    reference: Some(format!("r{index}")),
                    subject: None,
                    body: format!("Your code is {index:06}. It expires in 10 minutes."),
                    segments: 1,
                    vars: None,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn accepting_ten_thousand_messages_is_quick_and_whole() {
        let (queue, _url, _guard) = test_store().await.expect("a redis store");
        // Warm the connection and load the scripts, as a running server would have.
        queue.accept(big_batch(1)).await.unwrap();
        let started = std::time::Instant::now();
        let Accepted::New(id) = queue.accept(big_batch(10_000)).await.unwrap() else {
            panic!("a new batch");
        };
        let took = started.elapsed();
        eprintln!("accepted 10,000 messages in {took:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        let counts = queue.batch(id).await.unwrap().unwrap().counts;
        assert_eq!((counts.total, counts.pending), (10_000, 10_000));
    }

    #[tokio::test]
    async fn batches_stored_before_the_batch_index_existed_are_indexed_on_open() {
        let (queue, url, _guard) = test_store().await.expect("a redis store");
        let first = big_batch(2);
        let second = big_batch(1);
        let ids = [second.id, first.id];
        queue.accept(first).await.unwrap();
        queue.accept(second).await.unwrap();
        drop(queue);
        let store = Redis::open(&url).await.unwrap();
        // As a store written by a build without the index.
        redis::cmd("DEL")
            .arg(store.key("batches"))
            .arg(store.key("batches-indexed"))
            .query_async::<()>(&mut store.conn())
            .await
            .unwrap();
        assert!(store.batches(None, 10).await.unwrap().is_empty());
        let reopened = Redis::open(&url).await.unwrap();
        let listed: Vec<BatchId> = reopened
            .batches(None, 10)
            .await
            .unwrap()
            .iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(listed, ids);
    }

    #[tokio::test]
    async fn abandoned_staging_is_swept_and_a_late_commit_refused() {
        let (queue, url, _guard) = test_store().await.expect("a redis store");
        drop(queue);
        let store = Redis::open(&url).await.unwrap();
        let batch = big_batch(3);
        // Staged as by a process that died before committing, long ago.
        let seq: String = store
            .scripts
            .reserve
            .arg(&store.prefix)
            .arg(now_ms())
            .arg(now_ms() - 1)
            .arg(3)
            .invoke_async(&mut store.conn())
            .await
            .unwrap();
        let seq: u32 = seq.parse().unwrap();
        store
            .stage(&batch, &batch.messages, seq, now_ms())
            .await
            .unwrap();
        let staged = store.key(&format!("m:{}", Slot { seq, index: 0 }.member()));
        let exists = |store: &Redis| {
            let staged = staged.clone();
            let mut conn = store.conn();
            async move {
                redis::cmd("EXISTS")
                    .arg(staged)
                    .query_async::<i64>(&mut conn)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(exists(&store).await, 1);
        store.sweep_staging().await.unwrap();
        assert_eq!(exists(&store).await, 0, "the staged messages are gone");
        let mut layout = Layout::default();
        for m in &batch.messages {
            layout.add(m);
        }
        layout.seq = seq;
        layout.reserved = 3;
        match store.commit(&batch, &layout, "{}").await {
            Err(Error::Unavailable(m)) => assert!(m.contains("abandoned"), "{m}"),
            other => panic!("expected a refused commit, got {other:?}"),
        }
        assert!(store.batch(batch.id).await.unwrap().is_none());
    }
}
