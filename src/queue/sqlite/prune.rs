//! The embedded engine's retention (see [`crate::queue::prune`]): finished batches
//! and their messages (with their segments' ids), replies, deliveries and held
//! receipts past the age, a step per write transaction; and handing freed pages
//! back to the file system.
//!
//! The store's file shrinks only with `auto_vacuum = INCREMENTAL`, which SQLite
//! takes only before the first table exists or at a `VACUUM`. A new store gets it
//! at once; a store made before it is rewritten once, by one `VACUUM` when it is
//! first opened by this build: that takes about as long as copying the file
//! (seconds a GB) and as much free disk again, and holds the write lock meanwhile.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::Sqlite;
use super::connection::{unavailable, write_transaction};
use crate::queue::prune::{Prune, Pruned};
use crate::queue::{Error, Result};

/// `PRAGMA auto_vacuum`'s value for INCREMENTAL.
const INCREMENTAL: i64 = 2;

/// How many batches one step prunes from, at most.
const BATCHES_PER_STEP: u32 = 100;

/// The oldest finished batch after seq `?2` created before `?1` whose messages
/// were all last touched before it. One at a time: telling that a batch has
/// finished reads its messages, so a step reads no more batches than it prunes.
const DOOMED: &str = "
SELECT b.seq, b.first_row, b.first_row + b.size FROM batches b
WHERE b.created_at < ?1 AND b.seq > ?2 AND b.control <> 'staging'
  AND NOT EXISTS (
      SELECT 1 FROM messages m
      WHERE m.id >= b.first_row AND m.id < b.first_row + b.size
        AND (m.state IN ('pending', 'sending', 'paused', 'unknown') OR m.updated_at >= ?1))
ORDER BY b.seq
LIMIT 1";

/// Makes a store whose tables predate incremental vacuum use it: one `VACUUM`,
/// once (see the module's doc); a new store's is instant.
pub(super) fn use_incremental_vacuum(conn: &Connection) -> Result<()> {
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .map_err(unavailable)?;
    if mode == INCREMENTAL {
        return Ok(());
    }
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    if tables > 0 {
        tracing::info!(
            "rewriting the store once so that pruning can shrink its file (VACUUM); this takes about as long as copying it"
        );
    }
    let started = std::time::Instant::now();
    // Once the file has a header (WAL mode writes one), only a VACUUM applies it.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
        .map_err(|e| {
            Error::Unavailable(format!(
                "sqlite: rewriting the store for incremental vacuum failed ({e}): it needs as much free disk as the store takes"
            ))
        })?;
    if tables > 0 {
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store rewritten"
        );
    }
    Ok(())
}

/// One step of [`Prune::prune_ledger`].
fn prune_ledger(conn: &mut Connection, before: i64, limit: u32) -> Result<Pruned> {
    let tx = write_transaction(conn)?;
    let mut pruned = Pruned::default();
    let mut budget = i64::from(limit);
    let mut after = i64::MIN;
    for _ in 0..BATCHES_PER_STEP {
        if budget <= 0 {
            break;
        }
        let doomed: Option<(i64, i64, i64)> = tx
            .prepare_cached(DOOMED)
            .and_then(|mut s| {
                s.query_row(params![before, after], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
            })
            .map_err(unavailable)?;
        let Some((seq, first, end)) = doomed else {
            break;
        };
        after = seq;
        tx.prepare_cached(
            "DELETE FROM message_segments WHERE message IN (
                 SELECT id FROM messages WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3)",
        )
        .and_then(|mut s| s.execute(params![first, end, budget]))
        .map_err(unavailable)?;
        let removed = tx
            .prepare_cached(
                "DELETE FROM messages WHERE id IN (
                     SELECT id FROM messages WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3)",
            )
            .and_then(|mut s| s.execute(params![first, end, budget]))
            .map_err(unavailable)?;
        pruned.messages += removed as u64;
        budget -= i64::try_from(removed).unwrap_or(budget);
        let left: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE id >= ?1 AND id < ?2)")
            .and_then(|mut s| s.query_row(params![first, end], |r| r.get(0)))
            .map_err(unavailable)?;
        if !left {
            tx.prepare_cached("DELETE FROM batches WHERE seq = ?1")
                .and_then(|mut s| s.execute([seq]))
                .map_err(unavailable)?;
            pruned.batches += 1;
        }
    }
    tx.commit().map_err(unavailable)?;
    Ok(pruned)
}

/// One step of [`Prune::prune_beside`]: each kind of record gets the step's whole
/// budget, so a step is at most three times `limit` rows.
fn prune_beside(conn: &mut Connection, before: i64, limit: u32) -> Result<Pruned> {
    let tx = write_transaction(conn)?;
    let delete = |sql: &str| -> Result<u64> {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.execute(params![before, limit]))
            .map(|n| n as u64)
            .map_err(unavailable)
    };
    let pruned = Pruned {
        replies: delete(
            "DELETE FROM replies WHERE seq IN (
                 SELECT seq FROM replies WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)",
        )?,
        deliveries: delete(
            "DELETE FROM deliveries WHERE seq IN (
                 SELECT seq FROM deliveries WHERE first_at < ?1 AND state IN ('posted', 'failed')
                 ORDER BY first_at LIMIT ?2)",
        )?,
        receipts: delete(
            "DELETE FROM early_receipts WHERE rowid IN (
                 SELECT rowid FROM early_receipts WHERE received_at < ?1 LIMIT ?2)",
        )?,
        ..Pruned::default()
    };
    tx.commit().map_err(unavailable)?;
    Ok(pruned)
}

/// Hands up to `pages` free pages back; answers how many it handed back (none
/// when the store does not use incremental vacuum).
fn reclaim(conn: &mut Connection, pages: u32) -> Result<u64> {
    let free = |conn: &Connection| -> Result<i64> {
        conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .map_err(unavailable)
    };
    let before = free(conn)?;
    if before == 0 {
        return Ok(0);
    }
    // The pragma answers a row per page freed; stepping through them runs it.
    conn.prepare(&format!("PRAGMA incremental_vacuum({pages})"))
        .and_then(|mut s| {
            s.query_map([], |_| Ok(()))?
                .collect::<rusqlite::Result<()>>()
        })
        .map_err(unavailable)?;
    Ok((before - free(conn)?).max(0).unsigned_abs())
}

#[async_trait]
impl Prune for Sqlite {
    async fn prune_ledger(&self, before_ms: i64, limit: u32) -> Result<Pruned> {
        self.write(move |conn| prune_ledger(conn, before_ms, limit))
            .await
    }

    async fn prune_beside(&self, before_ms: i64, limit: u32) -> Result<Pruned> {
        self.write(move |conn| prune_beside(conn, before_ms, limit))
            .await
    }

    async fn reclaim(&self, pages: u32) -> Result<u64> {
        self.write(move |conn| reclaim(conn, pages)).await
    }
}
