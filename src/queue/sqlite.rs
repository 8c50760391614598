//! The embedded engine: one SQLite database in WAL mode with `synchronous = FULL`,
//! so a committed transaction survives a crash or power loss. One connection writes
//! (behind a mutex, so writes never contend for SQLite's lock) and one reads; both
//! run on Tokio's blocking pool. Every engine call is one transaction, whatever the
//! number of messages it touches.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{
    Accepted, Arrival, BatchSummary, BatchTemplate, Begun, Claim, Claimed, Control,
    EARLY_RECEIPT_TTL_MS, EARLY_RECEIPTS_MAX, Engine, Error, Lease, MessageQuery, MessageRecord,
    NewBatch, NewMessage, Outcome, ReceiptEffect, ReceiptTarget, Result, Settlement, Stage,
    Staging, parse_batch_id, receipt_state, receipt_target,
};
use crate::domain::{
    BatchControl, BatchId, Channel, Counts, DeliveryReport, MessageState, message_id, now_ms,
};
use crate::ratelimit::{Bucket, Candidate, Cap, Limits, longest_window, pick, segment_bucket_key};

mod records;

/// Versioned migrations, applied in order; a store's `user_version` is how many it
/// has had. Never edit one that has shipped: add one.
const MIGRATIONS: &[&str] = &["
CREATE TABLE batches (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    channel         TEXT NOT NULL,
    source          TEXT NOT NULL,
    control         TEXT NOT NULL DEFAULT 'active',
    priority        INTEGER NOT NULL,
    send_at         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE,
    request_hash    TEXT,
    report          TEXT NOT NULL,
    -- The batch's messages have ids first_row .. first_row + size - 1, in index
    -- order, so a batch needs no index of its own on messages.
    first_row       INTEGER NOT NULL,
    size            INTEGER NOT NULL
);
CREATE TABLE messages (
    id                  INTEGER PRIMARY KEY,
    batch               INTEGER NOT NULL REFERENCES batches(seq),
    provider            TEXT NOT NULL,
    state               TEXT NOT NULL,
    priority            INTEGER NOT NULL,
    available_at        INTEGER NOT NULL,
    lease               INTEGER,
    lease_until         INTEGER,
    attempts            INTEGER NOT NULL DEFAULT 0,
    to_addr             TEXT NOT NULL,
    ref                 TEXT,
    subject             TEXT,
    body                TEXT NOT NULL,
    last_error          TEXT,
    provider_message_id TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    sent_at             INTEGER
);
CREATE INDEX messages_ready ON messages(provider, priority DESC, available_at, id) WHERE state = 'pending';
CREATE INDEX messages_leased ON messages(lease_until) WHERE state = 'sending';
", "
-- One token bucket per rate-limited provider, shared by every process on the store.
CREATE TABLE rate_buckets (
    provider TEXT PRIMARY KEY,
    tokens   REAL NOT NULL,
    at       INTEGER NOT NULL
);
-- When each recipient was claimed for, per provider with per-recipient caps; rows
-- older than the provider's longest cap window are pruned by its claims.
CREATE TABLE recipient_sends (
    provider TEXT NOT NULL,
    to_addr  TEXT NOT NULL,
    at       INTEGER NOT NULL
);
CREATE INDEX recipient_sends_to ON recipient_sends(provider, to_addr, at);
CREATE INDEX recipient_sends_at ON recipient_sends(provider, at);
", "
-- Message templates by the id their user chose. `providers` is a JSON object:
-- provider name → that provider's template code and sign name.
CREATE TABLE templates (
    id         TEXT PRIMARY KEY,
    channel    TEXT NOT NULL,
    subject    TEXT,
    body       TEXT NOT NULL,
    providers  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
-- Recipients that must not be messaged, per channel. Every submitted batch looks
-- its recipients up here by the primary key.
CREATE TABLE suppressions (
    channel    TEXT NOT NULL,
    address    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel, address)
) WITHOUT ROWID;
", "
-- Fingerprints of (recipient, content) pairs accepted recently, per channel, with
-- when. A batch looks its recipients up by the primary key; the (channel, at) index
-- tells whether a channel has any recent ones and finds the old ones to forget.
CREATE TABLE send_fingerprints (
    channel     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (channel, fingerprint)
) WITHOUT ROWID;
CREATE INDEX send_fingerprints_at ON send_fingerprints(channel, at);
", "
-- What per-segment rate limits count, and what providers that render a stored
-- template on their side need: its id and the recipient's variables (JSON).
ALTER TABLE messages ADD COLUMN segments INTEGER NOT NULL DEFAULT 1;
ALTER TABLE messages ADD COLUMN template TEXT;
ALTER TABLE messages ADD COLUMN vars TEXT;
-- The batches being stored in chunks: every accept finds the ids they reserve, and
-- the sweep the abandoned ones, without reading every batch.
CREATE INDEX batches_staging ON batches(first_row) WHERE control = 'staging';
", "
-- Delivery receipts: the code and time of the receipt that set a message's
-- delivered / undelivered, receipts looking messages up by the provider's id, and
-- the receipts that came before their send was recorded (kept a day at most).
ALTER TABLE messages ADD COLUMN receipt_code TEXT;
ALTER TABLE messages ADD COLUMN receipt_at INTEGER;
CREATE INDEX messages_provider_id ON messages(provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE TABLE early_receipts (
    provider            TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    to_addr             TEXT,
    delivered           INTEGER NOT NULL,
    code                TEXT,
    at                  INTEGER,
    received_at         INTEGER NOT NULL
);
CREATE INDEX early_receipts_id ON early_receipts(provider, provider_message_id);
CREATE INDEX early_receipts_received ON early_receipts(received_at);
-- Unknown outcomes: when the first attempt whose outcome is unknown was made
-- (cleared once the message is sent), and the unknown messages by when they are
-- due again.
ALTER TABLE messages ADD COLUMN unknown_since INTEGER;
CREATE INDEX messages_unknown ON messages(available_at) WHERE state = 'unknown';
", "
-- Migration 7: messages an ingest source stored as batches whose acknowledgement
-- its broker may not have taken, by source and body hash.
CREATE TABLE ingest_unacked (
    source TEXT NOT NULL,
    hash   TEXT NOT NULL,
    key    TEXT NOT NULL,
    at     INTEGER NOT NULL,
    PRIMARY KEY (source, hash, key)
);
CREATE INDEX ingest_unacked_at ON ingest_unacked(at);
", "
-- Migration 8: the template a batch's messages are rendered from when they are
-- claimed (JSON: body, subject). Its messages keep their variables in `vars` and
-- an empty `body`; batches without it keep each rendered body.
ALTER TABLE batches ADD COLUMN template_source TEXT;
"];

/// The state a message returns to when it goes back to the queue: its batch's
/// pause or cancel wins over `pending`.
const REQUEUED_STATE: &str = "CASE (SELECT control FROM batches WHERE seq = messages.batch)
    WHEN 'paused' THEN 'paused' WHEN 'cancelled' THEN 'cancelled' ELSE 'pending' END";

#[derive(Clone)]
pub(crate) struct Sqlite {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    /// Batch row → what claims need of it; none of it changes once stored.
    batches: Arc<Mutex<HashMap<i64, BatchRef>>>,
    /// Batch row → the template its messages are rendered from at claim, compiled
    /// (`None`: the batch stores each body).
    templates: Arc<Mutex<HashMap<i64, Option<Arc<BatchTemplate>>>>>,
}

/// What claims and the ledger need to know of a stored batch.
#[derive(Debug, Clone, Copy)]
struct BatchRef {
    seq: i64,
    id: BatchId,
    channel: Channel,
    first_row: i64,
    size: i64,
}

impl BatchRef {
    fn last_row(&self) -> i64 {
        self.first_row + self.size - 1
    }

    fn index_of(&self, row: i64) -> u32 {
        u32::try_from(row - self.first_row).expect("a message row lies in its batch's range")
    }
}

fn unavailable(e: rusqlite::Error) -> Error {
    Error::Unavailable(format!("sqlite: {e}"))
}

/// Each connection's page cache, in KiB.
const CACHE_KIB: i64 = 8000;
/// The writer's page cache while it writes a batch stored whole, in KiB.
const WHOLE_BATCH_CACHE_KIB: i64 = 2000;

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(unavailable)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(unavailable)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{CACHE_KIB};"
    ))
    .map_err(unavailable)?;
    Ok(conn)
}

impl Sqlite {
    /// Opens (creating if needed) the store in directory `dir` and applies the schema.
    pub(crate) async fn open(dir: &Path) -> Result<Sqlite> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| {
                Error::Unavailable(format!(
                    "cannot create the store directory {}: {e}",
                    dir.display()
                ))
            })?;
            let path = dir.join("herald.db");
            let mut writer = connect(&path)?;
            migrate(&mut writer)?;
            // Uploads a dead process left in staging go now, not only at the next
            // upload (other processes' live ones are younger than the deadline).
            let tx = write_transaction(&mut writer)?;
            let swept = sweep_staging(&tx, now_ms())?;
            tx.commit().map_err(unavailable)?;
            if swept > 0 {
                tracing::info!(
                    batches = swept,
                    "removed batches abandoned while being stored"
                );
            }
            // Checkpoints run on their own connection and thread, so a commit never
            // pays for copying the WAL into the database; the writer only does it
            // itself (as a safety net) if the WAL grows past ~80 MB.
            writer
                .execute_batch("PRAGMA wal_autocheckpoint = 20000;")
                .map_err(unavailable)?;
            let writer = Arc::new(Mutex::new(writer));
            spawn_checkpointer(connect(&path)?, Arc::downgrade(&writer));
            let reader = connect(&path)?;
            Ok(Sqlite {
                writer,
                reader: Arc::new(Mutex::new(reader)),
                batches: Arc::default(),
                templates: Arc::default(),
            })
        })
        .await
        .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        run_blocking(self.writer.clone(), f).await
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        run_blocking(self.reader.clone(), f).await
    }
}

/// How often the background checkpoint copies committed WAL pages into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Checkpoints the WAL in the background until the store is dropped.
fn spawn_checkpointer(conn: Connection, writer: std::sync::Weak<Mutex<Connection>>) {
    let spawned = std::thread::Builder::new()
        .name("herald-checkpoint".into())
        .spawn(move || {
            while writer.strong_count() > 0 {
                std::thread::sleep(CHECKPOINT_EVERY);
                // PASSIVE never blocks readers or the writer; a busy database just
                // means the next round does the work.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will try again");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the checkpoint thread; the writer will checkpoint instead");
    }
}

async fn run_blocking<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        // A panic while holding the lock cannot leave a transaction open: rusqlite
        // rolls back on drop. So a poisoned lock is still a usable connection.
        let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut conn)
    })
    .await
    .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?
}

/// Begins a write transaction holding the write lock from its first statement: with
/// several processes on one store, a transaction that read first and then tried to
/// write could fail at once (SQLITE_BUSY_SNAPSHOT) instead of waiting its turn.
fn write_transaction(conn: &mut Connection) -> Result<Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(unavailable)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    // Under the write lock, so processes starting together migrate once.
    let tx = write_transaction(conn)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(unavailable)?;
    let latest = MIGRATIONS.len() as i64;
    if version > latest {
        return Err(Error::Corrupt(format!(
            "the store has schema version {version}, this herald knows up to {latest}: upgrade herald"
        )));
    }
    for (applied, migration) in (version.max(0)..).zip(&MIGRATIONS[version.max(0) as usize..]) {
        tx.execute_batch(&format!(
            "{migration} PRAGMA user_version = {};",
            applied + 1
        ))
        .map_err(unavailable)?;
    }
    tx.commit().map_err(unavailable)
}

/// A claimed message as the claim statements return it.
struct ClaimedRow {
    row: i64,
    batch: i64,
    to: String,
    reference: Option<String>,
    subject: Option<String>,
    body: String,
    attempts: u32,
    segments: u32,
    template: Option<String>,
    vars: Option<String>,
    unknown_since: Option<i64>,
}

fn claimed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimedRow> {
    Ok(ClaimedRow {
        row: r.get(0)?,
        batch: r.get(1)?,
        to: r.get(2)?,
        reference: r.get(3)?,
        subject: r.get(4)?,
        body: r.get(5)?,
        attempts: r.get(6)?,
        segments: r.get(7)?,
        template: r.get(8)?,
        vars: r.get(9)?,
        unknown_since: r.get(10)?,
    })
}

/// The template batch `seq` was stored with, if any: what the handle renders
/// each claimed message's body from. Read once per batch and kept in `known`.
fn template_of(
    tx: &Transaction<'_>,
    known: &mut HashMap<i64, Option<Arc<BatchTemplate>>>,
    seq: i64,
) -> Result<Option<Arc<BatchTemplate>>> {
    if let Some(template) = known.get(&seq) {
        return Ok(template.clone());
    }
    let source: Option<String> = tx
        .prepare_cached("SELECT template_source FROM batches WHERE seq = ?1")
        .and_then(|mut s| s.query_row([seq], |row| row.get(0)))
        .map_err(unavailable)?;
    let template = source
        .map(|source| {
            serde_json::from_str::<BatchTemplate>(&source)
                .map(Arc::new)
                .map_err(|e| Error::Corrupt(format!("a batch's template is not readable: {e}")))
        })
        .transpose()?;
    known.insert(seq, template.clone());
    Ok(template)
}

/// The bucket stored under `key`, if there is one yet.
fn stored_bucket(tx: &Transaction<'_>, key: &str) -> Result<Option<Bucket>> {
    tx.prepare_cached("SELECT tokens, at FROM rate_buckets WHERE provider = ?1")
        .and_then(|mut s| {
            s.query_row([key], |r| {
                Ok(Bucket {
                    tokens: r.get(0)?,
                    at_ms: r.get(1)?,
                })
            })
            .optional()
        })
        .map_err(unavailable)
}

fn store_bucket(tx: &Transaction<'_>, key: &str, bucket: Bucket) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO rate_buckets (provider, tokens, at) VALUES (?1, ?2, ?3)
         ON CONFLICT (provider) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
    )
    .and_then(|mut s| s.execute(params![key, bucket.tokens, bucket.at_ms]))
    .map_err(unavailable)?;
    Ok(())
}

/// The segments of up to `limit` due messages of `provider`, in due order: what a
/// claim of them would cost under a segment rate.
fn due_segments(tx: &Transaction<'_>, provider: &str, limit: usize, now: i64) -> Result<Vec<u32>> {
    tx.prepare_cached(
        "SELECT segments FROM messages
         WHERE state = 'pending' AND provider = ?1 AND available_at <= ?2
         ORDER BY priority DESC, available_at, id LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(params![provider, now, limit as i64], |r| r.get(0))?
            .collect()
    })
    .map_err(unavailable)
}

/// The rows of up to `limit` due messages of `provider` that their recipients' caps
/// at `owner` allow (see [`Limits::owner`]), in due order. Defers the others to when
/// their caps allow and records a send to each chosen recipient. The caller's write
/// transaction makes capped claims take turns.
fn pick_capped(
    tx: &Transaction<'_>,
    provider: &str,
    owner: &str,
    caps: &[Cap],
    limit: usize,
    now: i64,
) -> Result<Vec<i64>> {
    let candidates = tx
        .prepare_cached(
            "SELECT id, to_addr FROM messages
             WHERE state = 'pending' AND provider = ?1 AND available_at <= ?2
             ORDER BY priority DESC, available_at, id LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![provider, now, limit as i64], |r| {
                Ok(Candidate {
                    key: r.get::<_, i64>(0)?,
                    to: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(unavailable)?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let since = now - longest_window(caps);
    let tos = serde_json::to_string(&candidates.iter().map(|c| &c.to).collect::<Vec<_>>())
        .map_err(|e| Error::Corrupt(e.to_string()))?;
    let mut recent: HashMap<String, Vec<i64>> = HashMap::new();
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT to_addr, at FROM recipient_sends
                 WHERE provider = ?1 AND at > ?2 AND to_addr IN (SELECT value FROM json_each(?3))",
            )
            .map_err(unavailable)?;
        let rows = stmt
            .query_map(params![owner, since, tos], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(unavailable)?;
        for row in rows {
            let (to, at) = row.map_err(unavailable)?;
            recent.entry(to).or_default().push(at);
        }
    }
    let picked = pick(caps, candidates, recent, now);
    {
        let mut defer = tx
            .prepare_cached("UPDATE messages SET available_at = ?2, updated_at = ?3 WHERE id = ?1")
            .map_err(unavailable)?;
        for (id, at) in &picked.defer {
            defer.execute(params![id, at, now]).map_err(unavailable)?;
        }
        let mut record = tx
            .prepare_cached(
                "INSERT INTO recipient_sends (provider, to_addr, at) VALUES (?1, ?2, ?3)",
            )
            .map_err(unavailable)?;
        for chosen in &picked.claim {
            record
                .execute(params![owner, chosen.to, now])
                .map_err(unavailable)?;
        }
    }
    tx.prepare_cached(
        "DELETE FROM recipient_sends WHERE rowid IN (
             SELECT rowid FROM recipient_sends WHERE provider = ?1 AND at <= ?2 LIMIT 1000)",
    )
    .and_then(|mut s| s.execute(params![owner, since]))
    .map_err(unavailable)?;
    Ok(picked.claim.into_iter().map(|c| c.key).collect())
}

fn parse_channel(s: String) -> Result<Channel> {
    s.parse().map_err(Error::Corrupt)
}

fn parse_state(s: &str) -> Result<MessageState> {
    MessageState::parse(s).ok_or_else(|| Error::Corrupt(format!("unknown message state `{s}`")))
}

impl Sqlite {
    /// Stages `batch` in rows of its own, invisible until the commit.
    async fn begin_staged(&self, batch: NewBatch) -> Result<Begun> {
        let store = self.clone();
        self.write(move |conn| {
            let tx = write_transaction(conn)?;
            let now = now_ms();
            sweep_staging(&tx, now)?;
            if let Some(replayed) = replay(&tx, &batch)? {
                return Ok(Begun::Answered(replayed));
            }
            let head = insert_batch_row(&tx, &batch, "staging", STAGING_SPAN)?;
            tx.commit().map_err(unavailable)?;
            Ok(Begun::Staging(Staging::new(Box::new(SqliteStaging {
                store,
                batch,
                head,
            }))))
        })
        .await
    }

    /// Holds the writer for `batch`, written in one transaction chunk by chunk.
    async fn begin_held(&self, batch: NewBatch) -> Result<Begun> {
        let (chunks, incoming) = tokio::sync::mpsc::channel(1);
        let (begun_tx, begun) = tokio::sync::oneshot::channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
            // A small page cache while the batch is written: its pages spill into
            // the WAL (which the flusher syncs) chunk by chunk, leaving the commit
            // little to write. A cache that cannot be resized only costs time.
            let _ = conn.pragma_update(None, "cache_size", -WHOLE_BATCH_CACHE_KIB);
            let stored = store_whole(&mut conn, &batch, begun_tx, incoming);
            let _ = conn.pragma_update(None, "cache_size", -CACHE_KIB);
            let _ = done_tx.send(stored);
        });
        match begun.await {
            Ok(Ok(None)) => Ok(Begun::Staging(Staging::new(Box::new(SqliteWhole {
                chunks,
                done: Some(done),
            })))),
            Ok(Ok(Some(replayed))) => Ok(Begun::Answered(replayed)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Unavailable(
                "the store's writer thread stopped".into(),
            )),
        }
    }
}

#[async_trait]
impl Engine for Sqlite {
    async fn accept(&self, batch: NewBatch) -> Result<Accepted> {
        self.write(move |conn| {
            let tx = write_transaction(conn)?;
            if let Some(replayed) = replay(&tx, &batch)? {
                return Ok(replayed);
            }
            insert_batch(&tx, &batch)?;
            tx.commit().map_err(unavailable)?;
            Ok(Accepted::New(batch.id))
        })
        .await
    }

    async fn begin(&self, batch: NewBatch, arrival: Arrival) -> Result<Begun> {
        match arrival {
            Arrival::AtHand => self.begin_held(batch).await,
            Arrival::Streamed => self.begin_staged(batch).await,
        }
    }

    async fn claim(
        &self,
        provider: &str,
        limit: usize,
        lease: Duration,
        limits: &Limits,
    ) -> Result<Claim> {
        let owner = limits.owner_or(provider).to_owned();
        let provider = provider.to_owned();
        let limits = limits.clone();
        let cache = self.batches.clone();
        let templates = self.templates.clone();
        self.write(move |conn| {
            let now = now_ms();
            let token = fastrand::i64(..);
            let until = now.saturating_add(crate::domain::millis(lease));
            let tx = write_transaction(conn)?;
            tx.prepare_cached(&format!(
                "UPDATE messages SET state = {REQUEUED_STATE}, lease = NULL, lease_until = NULL, updated_at = ?1
                 WHERE state = 'sending' AND lease_until <= ?1"
            ))
            .and_then(|mut s| s.execute([now]))
            .map_err(unavailable)?;
            // Unknown outcomes whose time has come are due again, like a lapsed lease.
            tx.prepare_cached(&format!(
                "UPDATE messages SET state = {REQUEUED_STATE}, updated_at = ?1
                 WHERE state = 'unknown' AND available_at <= ?1"
            ))
            .and_then(|mut s| s.execute([now]))
            .map_err(unavailable)?;
            let (limit, bucket) = match &limits.rate {
                None => (limit, None),
                Some(rate) => match rate.take(stored_bucket(&tx, &owner)?, now, limit) {
                    Ok((n, bucket)) => (n, Some(bucket)),
                    Err(wait) => {
                        // The requeue above stands.
                        tx.commit().map_err(unavailable)?;
                        return Ok(Claim::Wait(wait));
                    }
                },
            };
            let segment_key = segment_bucket_key(&owner);
            let (limit, segment_bucket) = match &limits.segments {
                None => (limit, None),
                Some(rate) => {
                    let bucket = rate.refill(stored_bucket(&tx, &segment_key)?, now);
                    match rate.fit(&bucket, &due_segments(&tx, &provider, limit, now)?) {
                        Ok(n) => (n, Some(bucket)),
                        Err(wait) => {
                            tx.commit().map_err(unavailable)?;
                            return Ok(Claim::Wait(wait));
                        }
                    }
                }
            };
            let rows = if limits.per_recipient.is_empty() {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE messages SET state = 'sending', lease = ?1, lease_until = ?2, updated_at = ?3
                         WHERE id IN (
                             SELECT id FROM messages
                             WHERE state = 'pending' AND provider = ?4 AND available_at <= ?3
                             ORDER BY priority DESC, available_at, id LIMIT ?5)
                         RETURNING id, batch, to_addr, ref, subject, body, attempts, segments, template, vars, unknown_since",
                    )
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(params![token, until, now, provider, limit as i64], claimed_row)
                    .map_err(unavailable)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(unavailable)?
            } else {
                let ids = pick_capped(&tx, &provider, &owner, &limits.per_recipient, limit, now)?;
                let order: HashMap<i64, usize> =
                    ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE messages SET state = 'sending', lease = ?1, lease_until = ?2, updated_at = ?3
                         WHERE id IN (SELECT value FROM json_each(?4))
                         RETURNING id, batch, to_addr, ref, subject, body, attempts, segments, template, vars, unknown_since",
                    )
                    .map_err(unavailable)?;
                let ids = serde_json::to_string(&ids).map_err(|e| Error::Corrupt(e.to_string()))?;
                let mut rows = stmt
                    .query_map(params![token, until, now, ids], claimed_row)
                    .map_err(unavailable)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(unavailable)?;
                rows.sort_unstable_by_key(|r| order.get(&r.row).copied());
                rows
            };
            let mut claimed = Vec::with_capacity(rows.len());
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() > 10_000 {
                cache.clear();
            }
            let mut templates = templates.lock().unwrap_or_else(|p| p.into_inner());
            if templates.len() > 256 {
                templates.clear();
            }
            for r in rows {
                let known = match cache.get(&r.batch) {
                    Some(known) => *known,
                    None => {
                        let known = batch_by_seq(&tx, r.batch)?;
                        cache.insert(r.batch, known);
                        known
                    }
                };
                claimed.push(Claimed {
                    lease: Lease { row: r.row, token },
                    id: message_id(known.id, known.index_of(r.row)),
                    batch_id: known.id,
                    channel: known.channel,
                    provider: provider.clone(),
                    to: r.to,
                    reference: r.reference,
                    subject: r.subject,
                    body: r.body,
                    segments: r.segments,
                    vars: r.vars,
                    template_id: r.template,
                    attempts: r.attempts,
                    unknown_since_ms: r.unknown_since,
                    template: template_of(&tx, &mut templates, r.batch)?,
                });
            }
            if let Some(bucket) = bucket {
                store_bucket(&tx, &owner, bucket.spend(claimed.len()))?;
            }
            if let Some(bucket) = segment_bucket {
                let segments = claimed.iter().map(|c| c.segments as usize).sum();
                store_bucket(&tx, &segment_key, bucket.spend(segments))?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(Claim::Messages(claimed))
        })
        .await
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<()> {
        self.write(move |conn| {
            let now = now_ms();
            let tx = write_transaction(conn)?;
            let mut identified = Vec::new();
            {
                let mut sent = tx
                    .prepare_cached(
                        "UPDATE messages SET state = 'sent', attempts = attempts + ?5, provider_message_id = ?3,
                             last_error = NULL, sent_at = ?4, updated_at = ?4, lease = NULL, lease_until = NULL,
                             unknown_since = NULL, provider = COALESCE(?6, provider)
                         WHERE id = ?1 AND lease = ?2 AND state = 'sending'",
                    )
                    .map_err(unavailable)?;
                let mut retry = tx
                    .prepare_cached(&format!(
                        "UPDATE messages SET state = {REQUEUED_STATE}, attempts = attempts + ?5, available_at = ?3,
                             last_error = COALESCE(?6, last_error), updated_at = ?4, lease = NULL, lease_until = NULL
                         WHERE id = ?1 AND lease = ?2 AND state = 'sending'"
                    ))
                    .map_err(unavailable)?;
                let mut unknown = tx
                    .prepare_cached(
                        "UPDATE messages SET state = 'unknown', attempts = attempts + 1, available_at = ?3,
                             last_error = ?5, unknown_since = COALESCE(unknown_since, ?4), updated_at = ?4,
                             lease = NULL, lease_until = NULL
                         WHERE id = ?1 AND lease = ?2 AND state = 'sending'",
                    )
                    .map_err(unavailable)?;
                let mut failed = tx
                    .prepare_cached(
                        "UPDATE messages SET state = 'failed', attempts = attempts + 1, last_error = ?3,
                             updated_at = ?4, lease = NULL, lease_until = NULL
                         WHERE id = ?1 AND lease = ?2 AND state = 'sending'",
                    )
                    .map_err(unavailable)?;
                for Settlement { lease, outcome, sent_by } in &settlements {
                    let (row, token) = (lease.row, lease.token);
                    let changed = match outcome {
                        Outcome::Sent { provider_message_id } => {
                            sent.execute(params![row, token, provider_message_id, now, 1, sent_by])
                        }
                        Outcome::Confirmed { provider_message_id } => {
                            sent.execute(params![row, token, provider_message_id, now, 0, sent_by])
                        }
                        Outcome::Retry { at_ms, error } => retry.execute(params![row, token, at_ms, now, 1, error]),
                        Outcome::Release { at_ms } => {
                            retry.execute(params![row, token, at_ms, now, 0, Option::<String>::None])
                        }
                        Outcome::Unknown { at_ms, error } => unknown.execute(params![row, token, at_ms, now, error]),
                        Outcome::Failed { error } => failed.execute(params![row, token, error, now]),
                    }
                    .map_err(unavailable)?;
                    if changed > 0
                        && matches!(
                            outcome,
                            Outcome::Sent { provider_message_id: Some(_) }
                                | Outcome::Confirmed { provider_message_id: Some(_) }
                        )
                    {
                        identified.push(row);
                    }
                }
            }
            apply_held_receipts(&tx, &identified, now)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn apply_receipts(
        &self,
        provider: &str,
        reports: Vec<DeliveryReport>,
        now: i64,
    ) -> Result<Vec<ReceiptEffect>> {
        let provider = provider.to_owned();
        self.write(move |conn| {
            let tx = write_transaction(conn)?;
            let mut effects = Vec::with_capacity(reports.len());
            let mut held = false;
            for report in &reports {
                let effect = match apply_receipt(&tx, &provider, report, now)? {
                    Some(effect) => effect,
                    None => {
                        tx.prepare_cached(
                            "INSERT INTO early_receipts (provider, provider_message_id, to_addr, delivered, code, at, received_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        )
                        .and_then(|mut s| {
                            s.execute(params![
                                provider,
                                report.provider_message_id,
                                report.to,
                                report.delivered,
                                report.code,
                                report.at_ms,
                                now
                            ])
                        })
                        .map_err(unavailable)?;
                        held = true;
                        ReceiptEffect::Held
                    }
                };
                effects.push(effect);
            }
            if held {
                tx.execute(
                    "DELETE FROM early_receipts WHERE received_at < ?1",
                    [now - EARLY_RECEIPT_TTL_MS],
                )
                .and_then(|_| {
                    tx.execute(
                        "DELETE FROM early_receipts WHERE rowid IN (
                             SELECT rowid FROM early_receipts ORDER BY received_at DESC LIMIT -1 OFFSET ?1)",
                        [EARLY_RECEIPTS_MAX],
                    )
                })
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(effects)
        })
        .await
    }

    async fn batch(&self, id: BatchId) -> Result<Option<BatchSummary>> {
        self.read(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            let summary = summary(&tx, id)?;
            tx.commit().map_err(unavailable)?;
            Ok(summary)
        })
        .await
    }

    async fn batches(&self, before: Option<BatchId>, limit: u32) -> Result<Vec<BatchSummary>> {
        self.read(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            // Ids are stored in their canonical hyphenated form, whose byte order is
            // the UUIDs' order; the unique index on `id` reads them backwards.
            let ids = tx
                .prepare_cached(
                    "SELECT id FROM batches WHERE control != 'staging' AND (?1 IS NULL OR id < ?1)
                     ORDER BY id DESC LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![before.map(|b| b.to_string()), limit], |r| {
                        r.get::<_, String>(0)
                    })?
                    .collect::<rusqlite::Result<Vec<String>>>()
                })
                .map_err(unavailable)?;
            let mut summaries = Vec::with_capacity(ids.len());
            for id in ids {
                summaries.extend(summary(&tx, parse_batch_id(&id)?)?);
            }
            tx.commit().map_err(unavailable)?;
            Ok(summaries)
        })
        .await
    }

    async fn pending(&self, provider: &str, cap: u64) -> Result<u64> {
        let provider = provider.to_owned();
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        self.read(move |conn| {
            // The ready index holds exactly the pending messages, by provider first.
            conn.prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM messages WHERE provider = ?1 AND state = 'pending' LIMIT ?2)",
            )
            .and_then(|mut s| s.query_row(params![provider, cap], |r| r.get::<_, i64>(0)))
            .map(i64::unsigned_abs)
            .map_err(unavailable)
        })
        .await
    }

    async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>> {
        self.read(move |conn| {
            let Some(batch) = batch_by_id(conn, id)? else {
                return Ok(Vec::new());
            };
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, to_addr, ref, state, provider, attempts, last_error, provider_message_id,
                            created_at, updated_at, sent_at, receipt_code, receipt_at
                     FROM messages
                     WHERE id BETWEEN ?1 AND ?2 AND (?3 IS NULL OR state = ?3)
                     ORDER BY id LIMIT ?4",
                )
                .map_err(unavailable)?;
            let state = query.state.map(MessageState::as_str);
            let from = query.after.map_or(batch.first_row, |after| batch.first_row + i64::from(after) + 1);
            let rows = stmt
                .query_map(params![from, batch.last_row(), state, query.limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, u32>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, i64>(8)?,
                        r.get::<_, i64>(9)?,
                        r.get::<_, Option<i64>>(10)?,
                        (r.get::<_, Option<String>>(11)?, r.get::<_, Option<i64>>(12)?),
                    ))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                let (row, to, reference, state, provider, attempts, last_error, pid, created, updated, sent, receipt) =
                    row.map_err(unavailable)?;
                let index = batch.index_of(row);
                out.push(MessageRecord {
                    id: message_id(id, index),
                    index,
                    to,
                    reference,
                    state: parse_state(&state)?,
                    provider,
                    attempts,
                    last_error,
                    provider_message_id: pid,
                    created_at_ms: created,
                    updated_at_ms: updated,
                    sent_at_ms: sent,
                    receipt_code: receipt.0,
                    receipt_at_ms: receipt.1,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn control(&self, id: BatchId, action: Control) -> Result<Option<BatchSummary>> {
        self.write(move |conn| {
            let tx = write_transaction(conn)?;
            let Some(batch) = batch_by_id(&tx, id)? else {
                return Ok(None);
            };
            let (seq, first, last) = (batch.seq, batch.first_row, batch.last_row());
            let control: String = tx
                .query_row("SELECT control FROM batches WHERE seq = ?1", [seq], |r| r.get(0))
                .map_err(unavailable)?;
            if control == BatchControl::Cancelled.as_str() && action != Control::Cancel {
                return Err(Error::Conflict("the batch is cancelled".into()));
            }
            let now = now_ms();
            let set_control = |control: BatchControl| {
                tx.execute("UPDATE batches SET control = ?2 WHERE seq = ?1", params![seq, control.as_str()])
                    .map_err(unavailable)
            };
            let move_messages = |to: &str, from: &str| {
                tx.execute(
                    &format!(
                        "UPDATE messages SET state = {to}, updated_at = ?3
                         WHERE id BETWEEN ?1 AND ?2 AND state IN ({from})"
                    ),
                    params![first, last, now],
                )
                .map_err(unavailable)
            };
            match action {
                Control::Pause => {
                    set_control(BatchControl::Paused)?;
                    move_messages("'paused'", "'pending'")?;
                }
                Control::Resume => {
                    set_control(BatchControl::Active)?;
                    move_messages("'pending'", "'paused'")?;
                }
                Control::Cancel => {
                    set_control(BatchControl::Cancelled)?;
                    move_messages("'cancelled'", "'pending', 'paused'")?;
                }
                Control::Retry => {
                    tx.execute(
                        &format!(
                            "UPDATE messages SET state = {REQUEUED_STATE}, attempts = 0, available_at = ?3, updated_at = ?3
                             WHERE id BETWEEN ?1 AND ?2 AND state = 'failed'"
                        ),
                        params![first, last, now],
                    )
                    .map_err(unavailable)?;
                }
            }
            let summary = summary(&tx, id)?;
            tx.commit().map_err(unavailable)?;
            Ok(summary)
        })
        .await
    }
}

/// Applies one delivery report to the message it names; `None` when it names none
/// (yet).
fn apply_receipt(
    tx: &Transaction<'_>,
    provider: &str,
    report: &DeliveryReport,
    now: i64,
) -> Result<Option<ReceiptEffect>> {
    let candidates: Vec<(i64, String, String, String)> = tx
        .prepare_cached(
            "SELECT m.id, m.state, m.to_addr, b.channel FROM messages m JOIN batches b ON b.seq = m.batch
             WHERE m.provider = ?1 AND m.provider_message_id = ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![provider, report.provider_message_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .map_err(unavailable)?;
    let (id, state, to, channel) = match receipt_target(
        candidates.iter().map(|c| c.2.as_str()),
        report.to.as_deref(),
    ) {
        ReceiptTarget::None => return Ok(None),
        ReceiptTarget::Ambiguous => return Ok(Some(ReceiptEffect::Ambiguous)),
        ReceiptTarget::One(i) => &candidates[i],
    };
    let Some(next) = receipt_state(parse_state(state)?, report.delivered) else {
        return Ok(Some(ReceiptEffect::Unchanged));
    };
    tx.prepare_cached(
        "UPDATE messages SET state = ?2, receipt_code = ?3, receipt_at = ?4, updated_at = ?5
         WHERE id = ?1 AND state = ?6",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            next.as_str(),
            report.code,
            report.at_ms.unwrap_or(now),
            now,
            state
        ])
    })
    .map_err(unavailable)?;
    Ok(Some(ReceiptEffect::Applied {
        to: to.clone(),
        channel: parse_channel(channel.clone())?,
    }))
}

/// Applies the held delivery reports that name the just-sent messages `rows` by
/// their provider id, and forgets them; those that still match nothing stay held.
fn apply_held_receipts(tx: &Transaction<'_>, rows: &[i64], now: i64) -> Result<()> {
    let any: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM early_receipts)")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(unavailable)?;
    if !any || rows.is_empty() {
        return Ok(());
    }
    for row in rows {
        let held: Vec<(i64, String, DeliveryReport)> = tx
            .prepare_cached(
                "SELECT e.rowid, e.provider, e.provider_message_id, e.to_addr, e.delivered, e.code, e.at
                 FROM messages m JOIN early_receipts e
                   ON e.provider = m.provider AND e.provider_message_id = m.provider_message_id
                 WHERE m.id = ?1
                 ORDER BY e.received_at",
            )
            .and_then(|mut s| {
                s.query_map([row], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        DeliveryReport {
                            provider_message_id: r.get(2)?,
                            to: r.get(3)?,
                            delivered: r.get(4)?,
                            code: r.get(5)?,
                            at_ms: r.get(6)?,
                        },
                    ))
                })?
                .collect()
            })
            .map_err(unavailable)?;
        for (rowid, provider, report) in held {
            if apply_receipt(tx, &provider, &report, now)?.is_some() {
                tx.execute("DELETE FROM early_receipts WHERE rowid = ?1", [rowid])
                    .map_err(unavailable)?;
            }
        }
    }
    Ok(())
}

const BATCH_REF: &str = "SELECT seq, id, channel, first_row, size FROM batches";

fn batch_ref(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_batch_ref(
    (seq, id, channel, first_row, size): (i64, String, String, i64, i64),
) -> Result<BatchRef> {
    let id = parse_batch_id(&id)?;
    Ok(BatchRef {
        seq,
        id,
        channel: parse_channel(channel)?,
        first_row,
        size,
    })
}

/// A stored batch; one still being staged is not there yet.
fn batch_by_id(conn: &Connection, id: BatchId) -> Result<Option<BatchRef>> {
    conn.prepare_cached(&format!(
        "{BATCH_REF} WHERE id = ?1 AND control != 'staging'"
    ))
    .and_then(|mut s| s.query_row([id.to_string()], batch_ref).optional())
    .map_err(unavailable)?
    .map(to_batch_ref)
    .transpose()
}

fn batch_by_seq(conn: &Connection, seq: i64) -> Result<BatchRef> {
    let row = conn
        .prepare_cached(&format!("{BATCH_REF} WHERE seq = ?1"))
        .and_then(|mut s| s.query_row([seq], batch_ref))
        .map_err(unavailable)?;
    to_batch_ref(row)
}

/// Messages inserted by one statement.
const ROWS_PER_INSERT: usize = 100;

/// Parameters of [`insert_sql`] the same for every row: the batch, provider,
/// state, priority, due time, template and creation time.
const SHARED_PARAMS: usize = 7;
/// Parameters of [`insert_sql`] of each row: id, address, ref, subject, body,
/// segments and vars.
const ROW_PARAMS: usize = 7;

/// `INSERT INTO messages … VALUES (…), (…), …` for `rows` rows. What every row
/// shares is bound once, as parameters 1 to [`SHARED_PARAMS`]; each row then has
/// its own [`ROW_PARAMS`].
fn insert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let p = SHARED_PARAMS + row * ROW_PARAMS;
            format!(
                "(?{}, ?1, ?2, ?3, ?4, ?5, ?{}, ?{}, ?{}, ?{}, ?{}, ?6, ?{}, ?7, ?7)",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7
            )
        })
        .collect();
    format!(
        "INSERT INTO messages (id, batch, provider, state, priority, available_at, to_addr, ref, subject, body,
                               segments, template, vars, created_at, updated_at)
         VALUES {}",
        values.join(", ")
    )
}

fn insert_batch(tx: &Transaction<'_>, batch: &NewBatch) -> Result<()> {
    // The span of indices, not the count: rejected recipients leave gaps.
    let span = batch.messages.last().map_or(0, |m| i64::from(m.index) + 1);
    let head = insert_batch_row(tx, batch, "active", span)?;
    insert_messages(tx, batch, head, &batch.messages, "pending")
}

/// The answer stored for the batch's idempotency key, if it was used before: the
/// same request replays it, another is a conflict, and so is a batch with that key
/// still being staged.
fn replay(tx: &Transaction<'_>, batch: &NewBatch) -> Result<Option<Accepted>> {
    let Some(idem) = &batch.idempotency else {
        return Ok(None);
    };
    let seen: Option<(String, Option<String>, String, String)> = tx
        .query_row(
            "SELECT id, request_hash, report, control FROM batches WHERE idempotency_key = ?1",
            [&idem.key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(unavailable)?;
    let Some((id, hash, report, control)) = seen else {
        return Ok(None);
    };
    if hash.as_deref() != Some(idem.request_hash.as_str()) {
        return Err(Error::Conflict(format!(
            "the Idempotency-Key `{}` was used before with a different request",
            idem.key
        )));
    }
    if control == "staging" {
        return Err(Error::Conflict(format!(
            "a batch with the Idempotency-Key `{}` is still being stored; ask again when it is",
            idem.key
        )));
    }
    let id = parse_batch_id(&id)?;
    let report = serde_json::from_str(&report).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok(Some(Accepted::Replayed { id, report }))
}

/// Where a batch's rows are: its batch row and the id of its message of index 0.
#[derive(Debug, Clone, Copy)]
struct Head {
    seq: i64,
    first_row: i64,
}

/// Inserts the batch row, with `control` and `size` (the span of message ids it
/// owns from `first_row`), after every id in use or reserved by a batch being staged.
fn insert_batch_row(
    tx: &Transaction<'_>,
    batch: &NewBatch,
    control: &str,
    size: i64,
) -> Result<Head> {
    let (key, hash) = match &batch.idempotency {
        Some(i) => (Some(i.key.as_str()), Some(i.request_hash.as_str())),
        None => (None, None),
    };
    let first_row: i64 = tx
        .prepare_cached(
            "SELECT MAX((SELECT COALESCE(MAX(id), 0) FROM messages),
                        (SELECT COALESCE(MAX(first_row + size - 1), 0) FROM batches WHERE control = 'staging')) + 1",
        )
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(unavailable)?;
    tx.execute(
        "INSERT INTO batches (id, channel, source, control, priority, send_at, created_at, idempotency_key,
                              request_hash, report, first_row, size, template_source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            batch.id.to_string(),
            batch.channel.as_str(),
            batch.source,
            control,
            batch.priority,
            batch.send_at_ms,
            now_ms(),
            key,
            hash,
            batch.report.to_string(),
            first_row,
            size,
            batch
                .template
                .as_ref()
                .map(|t| serde_json::to_string(t).expect("a template serializes")),
        ],
    )
    .map_err(unavailable)?;
    Ok(Head {
        seq: tx.last_insert_rowid(),
        first_row,
    })
}

/// Inserts `messages` of `batch` in `state`.
fn insert_messages(
    tx: &Transaction<'_>,
    batch: &NewBatch,
    head: Head,
    messages: &[NewMessage],
    state: &str,
) -> Result<()> {
    let now = now_ms();
    // Due order is priority, then send time, then arrival: a send_at in the past
    // keeps its place ahead of later ones.
    let available_at = batch.send_at_ms;
    // Many rows per INSERT: statement steps are far fewer (about a quarter off the
    // insert time of a 10,000-message batch). A statement's rows share a provider.
    static FULL_SQL: LazyLock<String> = LazyLock::new(|| insert_sql(ROWS_PER_INSERT));
    let mut full = tx.prepare_cached(&FULL_SQL).map_err(unavailable)?;
    let mut rest = messages;
    while let Some(first) = rest.first() {
        let run = rest
            .iter()
            .take(ROWS_PER_INSERT)
            .take_while(|m| m.provider == first.provider)
            .count();
        let (rows, after) = rest.split_at(run);
        rest = after;
        let mut partial;
        let stmt = if rows.len() == ROWS_PER_INSERT {
            &mut full
        } else {
            partial = tx
                .prepare_cached(&insert_sql(rows.len()))
                .map_err(unavailable)?;
            &mut partial
        };
        let ids: Vec<i64> = rows
            .iter()
            .map(|m| head.first_row + i64::from(m.index))
            .collect();
        let mut values: Vec<&dyn rusqlite::ToSql> =
            Vec::with_capacity(SHARED_PARAMS + rows.len() * ROW_PARAMS);
        values.extend([
            &head.seq as &dyn rusqlite::ToSql,
            &first.provider,
            &state,
            &batch.priority,
            &available_at,
            &batch.template_id,
            &now,
        ]);
        for (m, id) in rows.iter().zip(&ids) {
            // With the batch's template stored, each body is rendered at claim.
            let body: &dyn rusqlite::ToSql = match batch.template {
                Some(_) if m.vars.is_some() => &"",
                _ => &m.body,
            };
            values.extend([
                id as &dyn rusqlite::ToSql,
                &m.to,
                &m.reference,
                &m.subject,
                body,
                &m.segments,
                &m.vars,
            ]);
        }
        stmt.execute(values.as_slice()).map_err(unavailable)?;
    }
    Ok(())
}

/// The message ids a batch being staged reserves: more than any batch can span.
const STAGING_SPAN: i64 = 1 << 32;

/// A staged batch not committed within this time is abandoned and swept.
const STAGING_DEADLINE_MS: i64 = 10 * 60 * 1000;

/// Message ids a committing batch publishes per statement.
const PUBLISH_SLICE: usize = 10_000;

/// A batch being stored in chunks: its rows exist, in state `staged` under a batch
/// row whose control is `staging`, invisible to claims and the ledger until
/// `commit` makes them `pending` in one transaction. Each chunk is a short write
/// transaction of its own, so a big upload never holds the store's one writer.
struct SqliteStaging {
    store: Sqlite,
    batch: NewBatch,
    head: Head,
}

/// A batch stored whole by one transaction on the writer, which a blocking thread
/// holds while the intake hands it chunks: each is written while the next is
/// being made. Dropped without a commit, the transaction rolls back.
struct SqliteWhole {
    chunks: tokio::sync::mpsc::Sender<Whole>,
    /// What the writer thread ended with; taken once.
    done: Option<tokio::sync::oneshot::Receiver<Result<Accepted>>>,
}

enum Whole {
    Add(Vec<NewMessage>),
    Commit {
        report: serde_json::Value,
        span: u32,
    },
}

/// The writer thread's side of [`SqliteWhole`]: answers `begun` (with the replayed
/// batch, if its idempotency key was used), then writes what arrives until the
/// commit. Everything is one transaction: nothing is visible before it commits.
fn store_whole(
    conn: &mut Connection,
    batch: &NewBatch,
    begun: tokio::sync::oneshot::Sender<Result<Option<Accepted>>>,
    mut incoming: tokio::sync::mpsc::Receiver<Whole>,
) -> Result<Accepted> {
    let started = open_whole(conn, batch);
    let (tx, head) = match started {
        Ok(Ok(begun_here)) => {
            let _ = begun.send(Ok(None));
            begun_here
        }
        Ok(Err(replayed)) => {
            let _ = begun.send(Ok(Some(replayed.clone())));
            return Ok(replayed);
        }
        Err(e) => {
            let _ = begun.send(Err(e));
            return Err(Error::Unavailable("the batch was not begun".into()));
        }
    };
    let flusher = WalFlusher::start(tx.path());
    while let Some(whole) = incoming.blocking_recv() {
        match whole {
            Whole::Add(messages) => {
                let started = std::time::Instant::now();
                insert_messages(&tx, batch, head, &messages, "pending")?;
                flusher.flush();
                tracing::debug!(rows = messages.len(), took = ?started.elapsed(), "chunk written");
            }
            Whole::Commit { report, span } => {
                tx.execute(
                    "UPDATE batches SET report = ?2, size = ?3 WHERE seq = ?1",
                    params![head.seq, report.to_string(), i64::from(span)],
                )
                .map_err(unavailable)?;
                tx.commit().map_err(unavailable)?;
                return Ok(Accepted::New(batch.id));
            }
        }
    }
    Err(Error::Unavailable(
        "the batch was abandoned before its commit".into(),
    ))
}

/// Flushes the WAL to disk on a thread of its own while a batch stored whole is
/// still being written. The batch's pages go into the WAL as SQLite's page cache
/// spills them, long before the commit; flushing them as they come leaves the
/// commit's own sync only the last pages to wait for, rather than the whole batch.
/// It changes nothing of what the commit makes durable: that sync still runs.
struct WalFlusher {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
}

impl WalFlusher {
    /// A flusher of the WAL beside the database at `db`; one that does nothing
    /// when the WAL cannot be opened (an in-memory database, say).
    fn start(db: Option<&str>) -> WalFlusher {
        let wal = db.and_then(|db| std::fs::File::open(format!("{db}-wal")).ok());
        let Some(wal) = wal else {
            return WalFlusher { wake: None };
        };
        // One flush waiting at most: a request made while one runs is folded into
        // the next, which covers every page written before it.
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("herald-wal-flush".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    if let Err(e) = wal.sync_data() {
                        tracing::debug!(error = %e, "early WAL flush failed; the commit syncs it");
                        return;
                    }
                }
            });
        WalFlusher {
            wake: spawned.is_ok().then_some(wake),
        }
    }

    /// Asks for a flush of what the WAL holds now, without waiting for it.
    fn flush(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }
}

/// The transaction of a batch stored whole, with its batch row written; or the
/// batch stored before under its idempotency key.
fn open_whole<'c>(
    conn: &'c mut Connection,
    batch: &NewBatch,
) -> Result<std::result::Result<(Transaction<'c>, Head), Accepted>> {
    let tx = write_transaction(conn)?;
    if let Some(replayed) = replay(&tx, batch)? {
        return Ok(Err(replayed));
    }
    // No other writer runs until this commits, so the span can be set then.
    let head = insert_batch_row(&tx, batch, "active", STAGING_SPAN)?;
    Ok(Ok((tx, head)))
}

impl SqliteWhole {
    /// Why the writer thread stopped before the commit.
    async fn stopped(&mut self) -> Error {
        let stopped = || Error::Unavailable("the store's writer thread stopped".into());
        match self.done.take() {
            Some(done) => match done.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => {
                    Error::Unavailable("the batch was committed before all its chunks".into())
                }
                Err(_) => stopped(),
            },
            None => stopped(),
        }
    }
}

#[async_trait]
impl Stage for SqliteWhole {
    async fn add(&mut self, messages: Vec<NewMessage>) -> Result<()> {
        match self.chunks.send(Whole::Add(messages)).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.stopped().await),
        }
    }

    async fn commit(mut self: Box<Self>, report: serde_json::Value, span: u32) -> Result<Accepted> {
        // A failed send means the writer already stopped; its error is the answer.
        let _ = self.chunks.send(Whole::Commit { report, span }).await;
        match self.done.take() {
            Some(done) => done
                .await
                .map_err(|_| Error::Unavailable("the store's writer thread stopped".into()))?,
            None => Err(self.stopped().await),
        }
    }

    async fn discard(self: Box<Self>) {
        let SqliteWhole { chunks, done } = *self;
        // Closing the channel rolls the transaction back; wait for the writer.
        drop(chunks);
        if let Some(done) = done {
            let _ = done.await;
        }
    }
}

/// Removes batches left in staging longer than the deadline (their process died or
/// gave up), with their messages.
fn sweep_staging(tx: &Transaction<'_>, now: i64) -> Result<usize> {
    let old: Vec<Head> = tx
        .prepare_cached(
            "SELECT seq, first_row FROM batches WHERE control = 'staging' AND created_at < ?1",
        )
        .and_then(|mut s| {
            s.query_map([now - STAGING_DEADLINE_MS], |r| {
                Ok(Head {
                    seq: r.get(0)?,
                    first_row: r.get(1)?,
                })
            })?
            .collect()
        })
        .map_err(unavailable)?;
    for head in &old {
        discard_rows(tx, *head)?;
    }
    Ok(old.len())
}

/// Fails unless the batch is still being staged: a sweep may have removed it, and
/// its row number and message ids may since belong to another batch.
fn still_staging(tx: &Transaction<'_>, batch: &NewBatch, head: Head) -> Result<()> {
    let staging: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM batches WHERE seq = ?1 AND id = ?2 AND control = 'staging')",
        )
        .and_then(|mut s| s.query_row(params![head.seq, batch.id.to_string()], |r| r.get(0)))
        .map_err(unavailable)?;
    if staging {
        Ok(())
    } else {
        Err(Error::Unavailable(format!(
            "storing the batch took longer than {} minutes and was abandoned; submit it again",
            STAGING_DEADLINE_MS / 60_000
        )))
    }
}

fn discard_rows(tx: &Transaction<'_>, head: Head) -> Result<()> {
    tx.execute(
        "DELETE FROM messages WHERE id BETWEEN ?1 AND ?2",
        params![head.first_row, head.first_row + STAGING_SPAN - 1],
    )
    .and_then(|_| {
        tx.execute(
            "DELETE FROM batches WHERE seq = ?1 AND control = 'staging'",
            [head.seq],
        )
    })
    .map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl Stage for SqliteStaging {
    async fn add(&mut self, messages: Vec<NewMessage>) -> Result<()> {
        let (batch, head) = (self.batch.clone(), self.head);
        self.store
            .write(move |conn| {
                let tx = write_transaction(conn)?;
                still_staging(&tx, &batch, head)?;
                insert_messages(&tx, &batch, head, &messages, "staged")?;
                tx.commit().map_err(unavailable)
            })
            .await
    }

    async fn commit(self: Box<Self>, report: serde_json::Value, span: u32) -> Result<Accepted> {
        let SqliteStaging { store, batch, head } = *self;
        store
            .write(move |conn| {
                let tx = write_transaction(conn)?;
                still_staging(&tx, &batch, head)?;
                tx.execute(
                    "UPDATE batches SET control = 'active', report = ?2, size = ?3 WHERE seq = ?1",
                    params![head.seq, report.to_string(), i64::from(span)],
                )
                .map_err(unavailable)?;
                // In slices: SQLite keeps each statement's journal in memory
                // (temp_store), so one statement over a million rows would hold
                // a hundred megabytes until it ends.
                let last = head.first_row + i64::from(span) - 1;
                let mut publish = tx
                    .prepare_cached(
                        "UPDATE messages SET state = 'pending' WHERE id BETWEEN ?1 AND ?2 AND state = 'staged'",
                    )
                    .map_err(unavailable)?;
                for from in (head.first_row..=last).step_by(PUBLISH_SLICE) {
                    let to = (from + PUBLISH_SLICE as i64 - 1).min(last);
                    publish.execute(params![from, to]).map_err(unavailable)?;
                }
                drop(publish);
                tx.commit().map_err(unavailable)?;
                Ok(Accepted::New(batch.id))
            })
            .await
    }

    async fn discard(self: Box<Self>) {
        let SqliteStaging { store, batch, head } = *self;
        let discarded = store
            .write(move |conn| {
                let tx = write_transaction(conn)?;
                if still_staging(&tx, &batch, head).is_ok() {
                    discard_rows(&tx, head)?;
                }
                tx.commit().map_err(unavailable)
            })
            .await;
        if let Err(e) = discarded {
            tracing::warn!(error = %e, "cannot discard a staged batch now; a later sweep will");
        }
    }
}

fn summary(conn: &Connection, id: BatchId) -> Result<Option<BatchSummary>> {
    let Some(batch) = batch_by_id(conn, id)? else {
        return Ok(None);
    };
    let (source, control, priority, created_at_ms, send_at_ms) = conn
        .prepare_cached(
            "SELECT source, control, priority, created_at, send_at FROM batches WHERE seq = ?1",
        )
        .and_then(|mut s| {
            s.query_row([batch.seq], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i32>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
        })
        .map_err(unavailable)?;
    let mut counts = Counts::default();
    let mut stmt = conn
        .prepare_cached(
            "SELECT state, COUNT(*) FROM messages WHERE id BETWEEN ?1 AND ?2 GROUP BY state",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([batch.first_row, batch.last_row()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(unavailable)?;
    for row in rows {
        let (state, n) = row.map_err(unavailable)?;
        counts.add(parse_state(&state)?, n.unsigned_abs());
    }
    let control = BatchControl::parse(&control)
        .ok_or_else(|| Error::Corrupt(format!("unknown control `{control}`")))?;
    Ok(Some(BatchSummary {
        id,
        channel: batch.channel,
        source,
        control,
        priority,
        created_at_ms,
        send_at_ms,
        counts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Accepted, Begun, Queue};

    /// A batch of three messages rendered from `Hi {{name}}`, as intake makes it
    /// for this engine: bodies rendered, each recipient's vars kept.
    fn template_batch(template_id: Option<&str>) -> NewBatch {
        let mut batch = crate::queue::tests::batch(3, 0, now_ms());
        batch.template_id = template_id.map(str::to_owned);
        batch.template = Some(BatchTemplate {
            subject: None,
            body: "Hi {{name}}, 你好".into(),
        });
        for m in &mut batch.messages {
            m.body = format!("Hi N{}, 你好", m.index);
            m.vars = Some(serde_json::json!({"name": format!("N{}", m.index)}).to_string());
        }
        batch
    }

    #[tokio::test]
    async fn a_template_batch_stores_variables_and_renders_each_body_at_claim() {
        for template_id in [None, Some("t1")] {
            let dir = tempfile::tempdir().unwrap();
            let store = dir.path().join("store");
            let queue = Queue::open(&format!("sqlite://{}", store.display()))
                .await
                .unwrap();
            let batch = template_batch(template_id);
            let expected: Vec<(String, Option<String>)> = batch
                .messages
                .iter()
                .map(|m| (m.body.clone(), m.vars.clone()))
                .collect();
            queue.accept(batch).await.unwrap();
            let db = Connection::open(store.join("herald.db")).unwrap();
            let stored: Vec<String> = db
                .prepare("SELECT body FROM messages ORDER BY id")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(stored, ["", "", ""], "bodies are not stored");
            let claimed = queue.claim("p", 10, Duration::from_secs(30)).await.unwrap();
            let got: Vec<(String, Option<String>)> =
                claimed.into_iter().map(|c| (c.body, c.vars)).collect();
            let expected: Vec<(String, Option<String>)> = expected
                .into_iter()
                .map(|(body, vars)| (body, template_id.and(vars)))
                .collect();
            // Providers see vars only for a stored template.
            assert_eq!(got, expected, "template {template_id:?}");
        }
    }

    #[tokio::test]
    async fn a_message_that_cannot_be_rendered_at_claim_fails_with_why_and_the_rest_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let queue = Queue::open(&format!("sqlite://{}", store.display()))
            .await
            .unwrap();
        let Accepted::New(id) = queue.accept(template_batch(None)).await.unwrap() else {
            panic!("a new batch");
        };
        let db = Connection::open(store.join("herald.db")).unwrap();
        db.execute(
            "UPDATE messages SET vars = '{}' WHERE id = (SELECT MIN(id) FROM messages)",
            [],
        )
        .unwrap();
        let claimed = queue.claim("p", 10, Duration::from_secs(30)).await.unwrap();
        let bodies: Vec<&str> = claimed.iter().map(|c| c.body.as_str()).collect();
        assert_eq!(bodies, ["Hi N1, 你好", "Hi N2, 你好"]);
        let summary = queue.batch(id).await.unwrap().unwrap();
        assert_eq!(summary.counts.failed, 1);
        let (state, error): (String, String) = db
            .query_row(
                "SELECT state, last_error FROM messages ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(state, "failed");
        assert!(error.contains("lack `name`"), "{error}");
    }

    #[tokio::test]
    async fn a_staging_abandoned_past_its_deadline_is_swept_by_the_next_begin() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let queue = Queue::open(&format!("sqlite://{}", store.display()))
            .await
            .unwrap();
        let new_batch = || crate::queue::tests::batch(0, 0, now_ms());
        let message = crate::queue::tests::batch(1, 0, now_ms())
            .messages
            .remove(0);
        let Begun::Staging(mut abandoned) =
            queue.begin(new_batch(), Arrival::Streamed).await.unwrap()
        else {
            panic!("a new batch");
        };
        abandoned.add(vec![message]).await.unwrap();
        // As if its process had died long ago.
        let db = Connection::open(store.join("herald.db")).unwrap();
        db.execute(
            "UPDATE batches SET created_at = ?1 WHERE control = 'staging'",
            [now_ms() - STAGING_DEADLINE_MS - 1],
        )
        .unwrap();
        let Begun::Staging(next) = queue.begin(new_batch(), Arrival::Streamed).await.unwrap()
        else {
            panic!("a new batch");
        };
        let left: (i64, i64) = db
            .query_row(
                "SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM batches)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(left, (0, 1), "only the new staging is left");
        // Opening the store sweeps too.
        db.execute(
            "UPDATE batches SET created_at = ?1 WHERE control = 'staging'",
            [now_ms() - STAGING_DEADLINE_MS - 1],
        )
        .unwrap();
        drop(Sqlite::open(&store).await.unwrap());
        let batches: i64 = db
            .query_row("SELECT COUNT(*) FROM batches", [], |r| r.get(0))
            .unwrap();
        assert_eq!(batches, 0, "the store's open swept the abandoned staging");
        match queue.commit(abandoned, serde_json::json!({}), 1).await {
            Err(Error::Unavailable(m)) => assert!(m.contains("abandoned"), "{m}"),
            other => panic!("expected a refused commit, got {other:?}"),
        }
        next.discard().await;
    }

    #[tokio::test]
    async fn a_batch_stored_whole_appears_at_its_commit_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(&format!("sqlite://{}", dir.path().display()))
            .await
            .unwrap();
        let whole = |key: &str| {
            let mut batch = crate::queue::tests::batch(3, 0, now_ms());
            batch.idempotency = Some(crate::queue::Idempotency {
                key: key.into(),
                request_hash: "h".into(),
            });
            let messages = std::mem::take(&mut batch.messages);
            (batch, messages)
        };

        let (batch, mut messages) = whole("a");
        let Begun::Staging(mut staging) =
            queue.begin(batch.clone(), Arrival::AtHand).await.unwrap()
        else {
            panic!("SQLite stores a batch whole");
        };
        let last = messages.split_off(1);
        staging.add(messages).await.unwrap();
        staging.add(last).await.unwrap();
        // The writer holds the transaction; readers see nothing of it yet.
        assert!(queue.batch(batch.id).await.unwrap().is_none());
        let accepted = queue
            .commit(staging, serde_json::json!({"accepted": 3}), 3)
            .await;
        assert_eq!(accepted.unwrap(), Accepted::New(batch.id));
        let summary = queue.batch(batch.id).await.unwrap().expect("committed");
        assert_eq!((summary.counts.total, summary.counts.pending), (3, 3));
        assert_eq!(
            queue
                .claim("p", 10, Duration::from_secs(60))
                .await
                .unwrap()
                .len(),
            3
        );

        // The same key again is answered from the store, with the stored report.
        match queue.begin(whole("a").0, Arrival::AtHand).await.unwrap() {
            Begun::Answered(Accepted::Replayed { id, report }) => {
                assert_eq!((id, report), (batch.id, serde_json::json!({"accepted": 3})));
            }
            _ => panic!("a replay"),
        }

        // Discarded, or dropped half-way: nothing stays, and the writer is free.
        let (discarded, messages) = whole("b");
        let Begun::Staging(mut staging) = queue
            .begin(discarded.clone(), Arrival::AtHand)
            .await
            .unwrap()
        else {
            panic!("a new batch");
        };
        staging.add(messages).await.unwrap();
        staging.discard().await;
        let (dropped, messages) = whole("c");
        let Begun::Staging(mut staging) =
            queue.begin(dropped.clone(), Arrival::AtHand).await.unwrap()
        else {
            panic!("a new batch");
        };
        staging.add(messages).await.unwrap();
        drop(staging);
        let next = crate::queue::tests::batch(1, 0, now_ms());
        assert_eq!(
            queue.accept(next.clone()).await.unwrap(),
            Accepted::New(next.id)
        );
        for gone in [discarded.id, dropped.id] {
            assert!(queue.batch(gone).await.unwrap().is_none());
        }
        let db = Connection::open(dir.path().join("herald.db")).unwrap();
        let rows: i64 = db
            .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 4, "the committed batch's 3 and the next one's 1");
    }

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn an_older_store_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let db = store.join("herald.db");
        drop(Sqlite::open(&store).await.unwrap());
        let latest = MIGRATIONS.len() as i64;
        assert_eq!(user_version(&db), latest);

        // A store of the first version, with a message in it.
        let old = dir.path().join("old");
        std::fs::create_dir_all(&old).unwrap();
        let old_db = old.join("herald.db");
        Connection::open(&old_db)
            .unwrap()
            .execute_batch(&format!(
                "{} PRAGMA user_version = 1;
                 INSERT INTO batches (id, channel, source, priority, send_at, created_at, report, first_row, size)
                 VALUES ('0190a0a0-0000-7000-8000-000000000000', 'sms', 'api', 0, 0, 0, '{{}}', 1, 1);
                 INSERT INTO messages (id, batch, provider, state, priority, available_at, to_addr, body, created_at, updated_at)
                 VALUES (1, 1, 'log', 'pending', 0, 0, '+8613800138000', 'hi', 0, 0);",
                MIGRATIONS[0]
            ))
            .unwrap();
        drop(Sqlite::open(&old).await.unwrap());
        assert_eq!(user_version(&old_db), latest);
        let conn = Connection::open(&old_db).unwrap();
        for table in [
            "rate_buckets",
            "recipient_sends",
            "templates",
            "suppressions",
            "send_fingerprints",
            "early_receipts",
        ] {
            let tables: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(tables, 1, "{table}");
        }
        // The message kept its place, with the defaults of the later columns.
        let (segments, template): (u32, Option<String>) = conn
            .query_row(
                "SELECT segments, template FROM messages WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((segments, template), (1, None));

        Connection::open(&db)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99;")
            .unwrap();
        match Sqlite::open(&store).await {
            Err(Error::Corrupt(m)) => assert!(m.contains("99"), "{m}"),
            Ok(_) => panic!("a newer schema was accepted"),
            Err(other) => panic!("expected Corrupt, got {other}"),
        }
    }
}
