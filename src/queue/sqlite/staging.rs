//! The embedded engine's stagings: a streamed batch staged in rows of its own, a
//! batch at hand written whole by one transaction on a held writer (with the
//! [`WalFlusher`]), and the sweep of stagings abandoned past their deadline.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, Transaction, params};

use super::accept::{Head, insert_batch_row, insert_messages, replay};
use super::connection::{
    CACHE_KIB, WHOLE_BATCH_CACHE_KIB, run_blocking, unavailable, write_transaction,
};
use crate::domain::now_ms;
use crate::queue::{Accepted, Begun, Error, NewBatch, NewMessage, Result, Stage, Staging};

/// Stages `batch` in rows of its own on the store's `writer`, invisible until the
/// commit.
pub(super) async fn begin_staged(writer: Arc<Mutex<Connection>>, batch: NewBatch) -> Result<Begun> {
    let held = writer.clone();
    run_blocking(held, move |conn| {
        let tx = write_transaction(conn)?;
        let now = now_ms();
        sweep_staging(&tx, now)?;
        if let Some(replayed) = replay(&tx, &batch)? {
            return Ok(Begun::Answered(replayed));
        }
        let head = insert_batch_row(&tx, &batch, "staging", STAGING_SPAN)?;
        tx.commit().map_err(unavailable)?;
        Ok(Begun::Staging(Staging::new(Box::new(SqliteStaging {
            writer,
            batch,
            head,
        }))))
    })
    .await
}

/// Holds the store's `writer` for `batch`, written in one transaction chunk by
/// chunk.
pub(super) async fn begin_held(writer: Arc<Mutex<Connection>>, batch: NewBatch) -> Result<Begun> {
    let (chunks, incoming) = tokio::sync::mpsc::channel(1);
    let (begun_tx, begun) = tokio::sync::oneshot::channel();
    let (done_tx, done) = tokio::sync::oneshot::channel();
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

/// The message ids a batch being staged reserves: more than any batch can span.
const STAGING_SPAN: i64 = 1 << 32;

/// A staged batch not committed within this time is abandoned and swept.
pub(super) const STAGING_DEADLINE_MS: i64 = 10 * 60 * 1000;

/// Message ids a committing batch publishes per statement.
const PUBLISH_SLICE: usize = 10_000;

/// A batch being stored in chunks: its rows exist, in state `staged` under a batch
/// row whose control is `staging`, invisible to claims and the ledger until
/// `commit` makes them `pending` in one transaction. Each chunk is a short write
/// transaction of its own, so a big upload never holds the store's one writer.
struct SqliteStaging {
    writer: Arc<Mutex<Connection>>,
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
pub(super) fn sweep_staging(tx: &Transaction<'_>, now: i64) -> Result<usize> {
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
        run_blocking(self.writer.clone(), move |conn| {
            let tx = write_transaction(conn)?;
            still_staging(&tx, &batch, head)?;
            insert_messages(&tx, &batch, head, &messages, "staged")?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn commit(self: Box<Self>, report: serde_json::Value, span: u32) -> Result<Accepted> {
        let SqliteStaging {
            writer,
            batch,
            head,
        } = *self;
        run_blocking(writer, move |conn| {
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
        let SqliteStaging {
            writer,
            batch,
            head,
        } = *self;
        let discarded = run_blocking(writer, move |conn| {
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
