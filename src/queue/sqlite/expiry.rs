//! The embedded engine's deadlines: unsent messages whose batch's deadline has
//! passed become `expired`, keeping their last error, at claim time for the
//! claiming provider and by a bounded sweep for the rest.

use rusqlite::{Connection, Transaction, params};

use super::connection::{unavailable, write_transaction};
use crate::queue::Result;

/// Expires `provider`'s pending messages whose deadline is at or before `now`, in
/// the claim's transaction and before it leases anything, so that no message is
/// claimed after its deadline.
pub(super) fn expire_pending(tx: &Transaction<'_>, provider: &str, now: i64) -> Result<usize> {
    tx.prepare_cached(
        "UPDATE messages SET state = 'expired', updated_at = ?1
         WHERE state = 'pending' AND expires_at <= ?1 AND provider = ?2",
    )
    .and_then(|mut s| s.execute(params![now, provider]))
    .map_err(unavailable)
}

/// Expires up to `limit` unsent messages (pending, paused, or of unknown outcome)
/// whose deadline is at or before `now`, of any provider; answers how many.
pub(super) fn sweep(conn: &mut Connection, now: i64, limit: u64) -> Result<u64> {
    let tx = write_transaction(conn)?;
    let n = tx
        .prepare_cached(
            "UPDATE messages SET state = 'expired', updated_at = ?1
             WHERE id IN (SELECT id FROM messages
                          WHERE state IN ('pending', 'paused', 'unknown') AND expires_at <= ?1
                          LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![now, i64::try_from(limit).unwrap_or(i64::MAX)]))
        .map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    Ok(n as u64)
}
