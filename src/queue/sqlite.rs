//! The embedded engine: one SQLite database in WAL mode with `synchronous = FULL`,
//! so a committed transaction survives a crash or power loss. One connection writes
//! (behind a mutex, so writes never contend for SQLite's lock) and one reads; both
//! run on Tokio's blocking pool. Every engine call is one transaction, whatever the
//! number of messages it touches.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{
    Accepted, BatchSummary, Claimed, Control, Engine, Error, Lease, MessageQuery, MessageRecord,
    NewBatch, Outcome, Result, Settlement,
};
use crate::domain::{BatchControl, BatchId, Channel, Counts, MessageState, message_id, now_ms};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
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
    report          TEXT NOT NULL
);
CREATE TABLE messages (
    id                  INTEGER PRIMARY KEY,
    batch               INTEGER NOT NULL REFERENCES batches(seq),
    idx                 INTEGER NOT NULL,
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
CREATE INDEX messages_batch ON messages(batch, state, idx);
";

/// The state a message returns to when it goes back to the queue: its batch's
/// pause or cancel wins over `pending`.
const REQUEUED_STATE: &str = "CASE (SELECT control FROM batches WHERE seq = messages.batch)
    WHEN 'paused' THEN 'paused' WHEN 'cancelled' THEN 'cancelled' ELSE 'pending' END";

pub(crate) struct Sqlite {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    /// Batch row → (public id, channel); both never change once stored.
    batches: Arc<Mutex<HashMap<i64, (BatchId, Channel)>>>,
}

fn unavailable(e: rusqlite::Error) -> Error {
    Error::Unavailable(format!("sqlite: {e}"))
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(unavailable)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(unavailable)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -32000;",
    )
    .map_err(unavailable)?;
    Ok(conn)
}

impl Sqlite {
    /// Opens (creating if needed) the store in directory `dir` and applies the schema.
    pub(crate) async fn open(dir: &Path) -> Result<Sqlite> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| {
                Error::Unavailable(format!("cannot create the store directory {}: {e}", dir.display()))
            })?;
            let path = dir.join("herald.db");
            let writer = connect(&path)?;
            migrate(&writer)?;
            let reader = connect(&path)?;
            Ok(Sqlite {
                writer: Arc::new(Mutex::new(writer)),
                reader: Arc::new(Mutex::new(reader)),
                batches: Arc::default(),
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

fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(unavailable)?;
    match version {
        0 => conn
            .execute_batch(&format!("BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))
            .map_err(unavailable),
        SCHEMA_VERSION => Ok(()),
        newer => Err(Error::Corrupt(format!(
            "the store has schema version {newer}, this herald knows up to {SCHEMA_VERSION}: upgrade herald"
        ))),
    }
}

fn parse_channel(s: String) -> Result<Channel> {
    s.parse().map_err(Error::Corrupt)
}

fn parse_state(s: &str) -> Result<MessageState> {
    MessageState::parse(s).ok_or_else(|| Error::Corrupt(format!("unknown message state `{s}`")))
}

#[async_trait]
impl Engine for Sqlite {
    async fn accept(&self, batch: NewBatch) -> Result<Accepted> {
        self.write(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            if let Some(idem) = &batch.idempotency {
                let seen: Option<(String, Option<String>, String)> = tx
                    .query_row(
                        "SELECT id, request_hash, report FROM batches WHERE idempotency_key = ?1",
                        [&idem.key],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()
                    .map_err(unavailable)?;
                if let Some((id, hash, report)) = seen {
                    if hash.as_deref() != Some(idem.request_hash.as_str()) {
                        return Err(Error::Conflict(format!(
                            "the Idempotency-Key `{}` was used before with a different request",
                            idem.key
                        )));
                    }
                    let id = BatchId::parse(&id).ok_or_else(|| Error::Corrupt(format!("bad batch id `{id}`")))?;
                    let report = serde_json::from_str(&report).map_err(|e| Error::Corrupt(e.to_string()))?;
                    return Ok(Accepted::Replayed { id, report });
                }
            }
            insert_batch(&tx, &batch)?;
            tx.commit().map_err(unavailable)?;
            Ok(Accepted::New(batch.id))
        })
        .await
    }

    async fn claim(&self, provider: &str, limit: usize, lease: Duration) -> Result<Vec<Claimed>> {
        let provider = provider.to_owned();
        let cache = self.batches.clone();
        self.write(move |conn| {
            let now = now_ms();
            let token = fastrand::i64(..);
            let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
            let tx = conn.transaction().map_err(unavailable)?;
            tx.prepare_cached(&format!(
                "UPDATE messages SET state = {REQUEUED_STATE}, lease = NULL, lease_until = NULL, updated_at = ?1
                 WHERE state = 'sending' AND lease_until <= ?1"
            ))
            .and_then(|mut s| s.execute([now]))
            .map_err(unavailable)?;
            let rows = {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE messages SET state = 'sending', lease = ?1, lease_until = ?2, updated_at = ?3
                         WHERE id IN (
                             SELECT id FROM messages
                             WHERE state = 'pending' AND provider = ?4 AND available_at <= ?3
                             ORDER BY priority DESC, available_at, id LIMIT ?5)
                         RETURNING id, batch, idx, to_addr, ref, subject, body, attempts",
                    )
                    .map_err(unavailable)?;
                let mapped = stmt
                    .query_map(params![token, until, now, provider, limit as i64], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, u32>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, String>(6)?,
                            r.get::<_, u32>(7)?,
                        ))
                    })
                    .map_err(unavailable)?;
                mapped.collect::<rusqlite::Result<Vec<_>>>().map_err(unavailable)?
            };
            let mut claimed = Vec::with_capacity(rows.len());
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() > 10_000 {
                cache.clear();
            }
            for (row, batch, index, to, reference, subject, body, attempts) in rows {
                let (batch_id, channel) = match cache.get(&batch) {
                    Some(known) => *known,
                    None => {
                        let (id, channel): (String, String) = tx
                            .query_row("SELECT id, channel FROM batches WHERE seq = ?1", [batch], |r| {
                                Ok((r.get(0)?, r.get(1)?))
                            })
                            .map_err(unavailable)?;
                        let id = BatchId::parse(&id).ok_or_else(|| Error::Corrupt(format!("bad batch id `{id}`")))?;
                        let known = (id, parse_channel(channel)?);
                        cache.insert(batch, known);
                        known
                    }
                };
                claimed.push(Claimed {
                    lease: Lease { row, token },
                    id: message_id(batch_id, index),
                    batch_id,
                    channel,
                    provider: provider.clone(),
                    to,
                    reference,
                    subject,
                    body,
                    attempts,
                });
            }
            tx.commit().map_err(unavailable)?;
            Ok(claimed)
        })
        .await
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<()> {
        self.write(move |conn| {
            let now = now_ms();
            let tx = conn.transaction().map_err(unavailable)?;
            {
                let mut sent = tx
                    .prepare_cached(
                        "UPDATE messages SET state = 'sent', attempts = attempts + 1, provider_message_id = ?3,
                             last_error = NULL, sent_at = ?4, updated_at = ?4, lease = NULL, lease_until = NULL
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
                let mut failed = tx
                    .prepare_cached(
                        "UPDATE messages SET state = 'failed', attempts = attempts + 1, last_error = ?3,
                             updated_at = ?4, lease = NULL, lease_until = NULL
                         WHERE id = ?1 AND lease = ?2 AND state = 'sending'",
                    )
                    .map_err(unavailable)?;
                for Settlement { lease, outcome } in &settlements {
                    let (row, token) = (lease.row, lease.token);
                    match outcome {
                        Outcome::Sent { provider_message_id } => sent.execute(params![row, token, provider_message_id, now]),
                        Outcome::Retry { at_ms, error } => retry.execute(params![row, token, at_ms, now, 1, error]),
                        Outcome::Release { at_ms } => {
                            retry.execute(params![row, token, at_ms, now, 0, Option::<String>::None])
                        }
                        Outcome::Failed { error } => failed.execute(params![row, token, error, now]),
                    }
                    .map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
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

    async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>> {
        self.read(move |conn| {
            let Some(seq) = batch_seq(conn, id)? else {
                return Ok(Vec::new());
            };
            let mut stmt = conn
                .prepare_cached(
                    "SELECT idx, to_addr, ref, state, provider, attempts, last_error, provider_message_id,
                            created_at, updated_at, sent_at
                     FROM messages
                     WHERE batch = ?1 AND (?2 IS NULL OR state = ?2) AND idx > ?3
                     ORDER BY idx LIMIT ?4",
                )
                .map_err(unavailable)?;
            let state = query.state.map(MessageState::as_str);
            let after = query.after.map_or(-1, i64::from);
            let rows = stmt
                .query_map(params![seq, state, after, query.limit], |r| {
                    Ok((
                        r.get::<_, u32>(0)?,
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
                    ))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                let (index, to, reference, state, provider, attempts, last_error, pid, created, updated, sent) =
                    row.map_err(unavailable)?;
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
                });
            }
            Ok(out)
        })
        .await
    }

    async fn control(&self, id: BatchId, action: Control) -> Result<Option<BatchSummary>> {
        self.write(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            let Some(seq) = batch_seq(&tx, id)? else {
                return Ok(None);
            };
            let control: String = tx
                .query_row("SELECT control FROM batches WHERE seq = ?1", [seq], |r| r.get(0))
                .map_err(unavailable)?;
            if control == BatchControl::Cancelled.as_str() && action != Control::Cancel {
                return Err(Error::Conflict("the batch is cancelled".into()));
            }
            let now = now_ms();
            let exec = |sql: &str, p: &[&dyn rusqlite::ToSql]| tx.execute(sql, p).map_err(unavailable);
            match action {
                Control::Pause => {
                    exec("UPDATE batches SET control = 'paused' WHERE seq = ?1", &[&seq])?;
                    exec(
                        "UPDATE messages SET state = 'paused', updated_at = ?2 WHERE batch = ?1 AND state = 'pending'",
                        &[&seq, &now],
                    )?;
                }
                Control::Resume => {
                    exec("UPDATE batches SET control = 'active' WHERE seq = ?1", &[&seq])?;
                    exec(
                        "UPDATE messages SET state = 'pending', updated_at = ?2 WHERE batch = ?1 AND state = 'paused'",
                        &[&seq, &now],
                    )?;
                }
                Control::Cancel => {
                    exec("UPDATE batches SET control = 'cancelled' WHERE seq = ?1", &[&seq])?;
                    exec(
                        "UPDATE messages SET state = 'cancelled', updated_at = ?2
                         WHERE batch = ?1 AND state IN ('pending', 'paused')",
                        &[&seq, &now],
                    )?;
                }
                Control::Retry => {
                    exec(
                        &format!(
                            "UPDATE messages SET state = {REQUEUED_STATE}, attempts = 0, available_at = ?2, updated_at = ?2
                             WHERE batch = ?1 AND state = 'failed'"
                        ),
                        &[&seq, &now],
                    )?;
                }
            }
            let summary = summary(&tx, id)?;
            tx.commit().map_err(unavailable)?;
            Ok(summary)
        })
        .await
    }
}

fn batch_seq(conn: &Connection, id: BatchId) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT seq FROM batches WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.to_string()], |r| r.get(0)).optional())
        .map_err(unavailable)
}

fn insert_batch(tx: &Transaction<'_>, batch: &NewBatch) -> Result<()> {
    let now = now_ms();
    let (key, hash) = match &batch.idempotency {
        Some(i) => (Some(i.key.as_str()), Some(i.request_hash.as_str())),
        None => (None, None),
    };
    tx.execute(
        "INSERT INTO batches (id, channel, source, priority, send_at, created_at, idempotency_key, request_hash, report)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            batch.id.to_string(),
            batch.channel.as_str(),
            batch.source,
            batch.priority,
            batch.send_at_ms,
            now,
            key,
            hash,
            batch.report.to_string()
        ],
    )
    .map_err(unavailable)?;
    let seq = tx.last_insert_rowid();
    // Due order is priority, then send time, then arrival: a send_at in the past
    // keeps its place ahead of later ones.
    let available_at = batch.send_at_ms;
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO messages (batch, idx, provider, state, priority, available_at, to_addr, ref, subject, body,
                                   created_at, updated_at)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
        )
        .map_err(unavailable)?;
    for m in &batch.messages {
        stmt.execute(params![
            seq,
            m.index,
            m.provider,
            batch.priority,
            available_at,
            m.to,
            m.reference,
            m.subject,
            m.body,
            now
        ])
        .map_err(unavailable)?;
    }
    Ok(())
}

fn summary(conn: &Connection, id: BatchId) -> Result<Option<BatchSummary>> {
    let row = conn
        .prepare_cached("SELECT seq, channel, source, control, priority, created_at, send_at FROM batches WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.to_string()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i32>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .optional()
        })
        .map_err(unavailable)?;
    let Some((seq, channel, source, control, priority, created_at_ms, send_at_ms)) = row else {
        return Ok(None);
    };
    let mut counts = Counts::default();
    let mut stmt = conn
        .prepare_cached("SELECT state, COUNT(*) FROM messages WHERE batch = ?1 GROUP BY state")
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([seq], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(unavailable)?;
    for row in rows {
        let (state, n) = row.map_err(unavailable)?;
        counts.add(parse_state(&state)?, n.unsigned_abs());
    }
    let control = BatchControl::parse(&control).ok_or_else(|| Error::Corrupt(format!("unknown control `{control}`")))?;
    Ok(Some(BatchSummary {
        id,
        channel: parse_channel(channel)?,
        source,
        control,
        priority,
        created_at_ms,
        send_at_ms,
        counts,
    }))
}
