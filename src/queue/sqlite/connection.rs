//! The embedded engine's connections: opening one with the store's pragmas, the
//! write transaction, running a closure on a connection on Tokio's blocking pool,
//! and the background WAL checkpointer.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, Transaction};

use crate::queue::{Error, Result};

/// A SQLite failure as the queue's error: the store cannot answer now.
pub(super) fn unavailable(e: rusqlite::Error) -> Error {
    Error::Unavailable(format!("sqlite: {e}"))
}

/// Each connection's page cache, in KiB.
pub(super) const CACHE_KIB: i64 = 8000;
/// The writer's page cache while it writes a batch stored whole, in KiB.
pub(super) const WHOLE_BATCH_CACHE_KIB: i64 = 2000;

/// How many prepared statements each connection keeps. The engine prepares about
/// a hundred distinct ones and a claim, a settle and an outbox post each use
/// several: with rusqlite's default of 16 the hot path compiled its statements
/// again and again.
const STATEMENT_CACHE: usize = 256;

/// A connection to the database at `path`, in WAL mode with `synchronous = FULL`.
///
/// The query planner's stability guarantee is on: otherwise SQLite plans with the
/// values bound to some parameters (a `LIMIT ?`, a value a partial index's
/// condition is compared with) and compiles the statement again whenever one of
/// them is bound anew — every claim, and every recording of events, would pay
/// for a compilation. The engine's statements do not need those values to find
/// their indexes.
pub(super) fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(unavailable)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(unavailable)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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

/// How often the background checkpoint copies committed WAL pages into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Checkpoints the WAL in the background until the store is dropped.
pub(super) fn spawn_checkpointer(conn: Connection, writer: std::sync::Weak<Mutex<Connection>>) {
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

/// Runs `f` on `conn` on Tokio's blocking pool, holding the connection's lock.
pub(super) async fn run_blocking<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T>
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
/// write could fail at once (SQLITE_BUSY_SNAPSHOT) instead of waiting its turn. Its
/// commit is on disk before it returns (`synchronous = FULL`), and so is every
/// commit before it.
pub(super) fn write_transaction(conn: &mut Connection) -> Result<Transaction<'_>> {
    begin(conn, "FULL")
}

/// A write transaction whose commit reaches the operating system but is not
/// flushed to the disk (`synchronous = NORMAL`): for claims and settlements, whose
/// loss in a power failure only sends a message again. A process crash loses
/// nothing of it; a power loss can undo it, and every other such commit, back to
/// the last [`write_transaction`] or WAL checkpoint, which flush them all.
pub(super) fn light_transaction(conn: &mut Connection) -> Result<Transaction<'_>> {
    begin(conn, "NORMAL")
}

fn begin<'c>(conn: &'c mut Connection, synchronous: &str) -> Result<Transaction<'c>> {
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(unavailable)?;
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(unavailable)
}
