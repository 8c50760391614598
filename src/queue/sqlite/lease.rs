//! Leases: renewing those of messages whose sends are in progress, and ending
//! those of a process that is gone when a claimer starts alone.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use rusqlite::{Connection, params};
use tokio::sync::OnceCell;

use super::connection::{unavailable, write_transaction};
use crate::queue::{Error, Lease, Result};

/// Extends each of `leases` still held to `until` (ms), in one transaction. A row
/// whose lease token changed (claimed again) or that left `sending` (settled) is
/// not touched; `updated_at` stays the claim's time, which a lapsed lease's
/// message comes back marked with.
pub(super) fn renew(conn: &mut Connection, leases: &[Lease], until: i64) -> Result<usize> {
    let tx = write_transaction(conn)?;
    let mut renewed = 0;
    {
        let mut stmt = tx
            .prepare_cached(
                "UPDATE messages SET lease_until = ?3
                 WHERE id = ?1 AND lease = ?2 AND state = 'sending'",
            )
            .map_err(unavailable)?;
        for lease in leases {
            renewed += stmt
                .execute(params![lease.row, lease.token, until])
                .map_err(unavailable)?;
        }
    }
    tx.commit().map_err(unavailable)?;
    Ok(renewed)
}

/// The store's claimers: every process that claims holds a shared lock on
/// `claimers.lock` in the store's directory from its first claim on, and the
/// kernel lets go of it when the process ends, however it ends. A process that
/// finds no other claimer (it gets the lock exclusively) knows that every lease
/// left in the store belongs to a process that is gone, and ends them all before
/// it claims: a restarted `herald serve` does not wait for its own old leases,
/// while a process that starts beside a live one leaves that one's leases alone.
/// The lock is taken once per process and store, whatever its handles, and kept
/// until the process ends.
#[derive(Clone)]
pub(super) struct Claimers {
    path: PathBuf,
    joined: Arc<OnceCell<()>>,
}

/// The claimers' locks this process holds, by path: kept until it ends.
static HELD: LazyLock<Mutex<HashMap<PathBuf, File>>> = LazyLock::new(Mutex::default);

impl Claimers {
    pub(super) fn new(dir: &Path) -> Claimers {
        Claimers {
            path: dir.join("claimers.lock"),
            joined: Arc::default(),
        }
    }

    /// Joins the claimers, once per process (later calls return at once), ending
    /// the leases of processes that are gone when this is the only one.
    pub(super) async fn join(&self, writer: Arc<Mutex<Connection>>) -> Result<()> {
        let path = self.path.clone();
        self.joined
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
                    if let Entry::Vacant(entry) = held.entry(path) {
                        let file = lock(entry.key(), &writer)?;
                        entry.insert(file);
                    }
                    Ok(())
                })
                .await
                .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?
            })
            .await?;
        Ok(())
    }
}

/// Takes the claimers' lock at `path` shared, ending every lease first when no
/// other claimer holds it.
fn lock(path: &Path, writer: &Mutex<Connection>) -> Result<File> {
    let failed =
        |e: std::io::Error| Error::Unavailable(format!("cannot lock {}: {e}", path.display()));
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {
            let ended = end_all(&mut writer.lock().unwrap_or_else(|p| p.into_inner()))?;
            if ended > 0 {
                tracing::info!(
                    messages = ended,
                    "leases of a process that is gone ended: those messages are due again, as unknown outcomes"
                );
            }
            // Whoever takes the lock exclusively in between finds no lease of
            // ours: this handle claims only once it holds the lock shared.
            file.unlock().map_err(failed)?;
        }
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => return Err(failed(e)),
    }
    file.lock_shared().map_err(failed)?;
    Ok(file)
}

/// Makes every lease in the store lapse now; the next claim takes their messages
/// as lapsed leases.
fn end_all(conn: &mut Connection) -> Result<usize> {
    let tx = write_transaction(conn)?;
    let ended = tx
        .execute(
            "UPDATE messages SET lease_until = 0 WHERE state = 'sending'",
            [],
        )
        .map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    Ok(ended)
}
