//! The embedded engine: one SQLite database in WAL mode with `synchronous = FULL`,
//! so a committed transaction survives a crash or power loss. One connection writes
//! (behind a mutex, so writes never contend for SQLite's lock) and one reads; both
//! run on Tokio's blocking pool. Every engine call is one transaction, whatever the
//! number of messages it touches.
//!
//! This file holds the engine's handle, `open` and the [`Engine`] impl; its rooms:
//! - `schema`: the versioned migrations, `migrate`, stored states and channels;
//! - `connection`: connecting, the write transaction, the blocking pool, the WAL
//!   checkpointer;
//! - `accept`: the batch row, idempotent replay, the multi-row message inserts;
//! - `staging`: batches stored in chunks, staged or on a held writer, and the sweep;
//! - `claim`: claims under a lease, rate buckets, recipient caps, templates;
//! - `settle`, `receipts`: what becomes of a claimed message and its receipts;
//! - `ledger`: batch summaries and pages of messages, control of a batch;
//! - `records`: stored templates, suppressions, fingerprints, unacked markers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::{
    Accepted, Arrival, BatchSummary, BatchTemplate, Begun, Claim, Claimed, Control,
    EARLY_RECEIPT_TTL_MS, EARLY_RECEIPTS_MAX, Engine, Error, Lease, MessageQuery, MessageRecord,
    NewBatch, Outcome, ReceiptEffect, Result, Settlement, parse_batch_id,
};
use crate::domain::{BatchControl, BatchId, DeliveryReport, MessageState, message_id, now_ms};
use crate::ratelimit::{Limits, segment_bucket_key};

mod accept;
mod claim;
mod connection;
mod ledger;
mod receipts;
mod records;
mod schema;
mod staging;
#[cfg(test)]
mod tests;

use accept::{insert_batch, replay};
use claim::{claimed_row, due_segments, pick_capped, store_bucket, stored_bucket, template_of};
use connection::{connect, run_blocking, spawn_checkpointer, unavailable, write_transaction};
use ledger::{BatchRef, batch_by_id, batch_by_seq, summary};
use receipts::{apply_held_receipts, apply_receipt};
use schema::{REQUEUED_STATE, migrate, parse_state};
use staging::sweep_staging;

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
