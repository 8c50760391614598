//! The embedded engine's deadlines: unsent messages whose batch's deadline has
//! passed become `expired`, keeping their last error, at claim time for the
//! claiming provider and by a bounded sweep for the rest.

use rusqlite::{Connection, Transaction, params};

use super::connection::{unavailable, write_transaction};
use super::record::record_message_events;
use crate::queue::{EventKind, Result};

/// Expires `provider`'s pending messages whose deadline is at or before `now`, in
/// the claim's transaction and before it leases anything, so that no message is
/// claimed after its deadline.
pub(super) fn expire_pending(tx: &Transaction<'_>, provider: &str, now: i64) -> Result<usize> {
    let expired: Vec<i64> = tx
        .prepare_cached(
            "UPDATE messages SET state = 'expired', updated_at = ?1
             WHERE state = 'pending' AND expires_at <= ?1 AND provider = ?2
             RETURNING id",
        )
        .and_then(|mut s| s.query_map(params![now, provider], |r| r.get(0))?.collect())
        .map_err(unavailable)?;
    record_message_events(tx, &expired, EventKind::Expired, None, now)?;
    Ok(expired.len())
}

/// Expires up to `limit` unsent messages (pending, paused, or of unknown outcome)
/// whose deadline is at or before `now`, of any provider; answers how many.
pub(super) fn sweep(conn: &mut Connection, now: i64, limit: u64) -> Result<u64> {
    let tx = write_transaction(conn)?;
    let expired: Vec<i64> = tx
        .prepare_cached(
            "UPDATE messages SET state = 'expired', updated_at = ?1
             WHERE id IN (SELECT id FROM messages
                          WHERE state IN ('pending', 'paused', 'unknown', 'held') AND expires_at <= ?1
                          LIMIT ?2)
             RETURNING id",
        )
        .and_then(|mut s| {
            s.query_map(
                params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )?
            .collect()
        })
        .map_err(unavailable)?;
    record_message_events(&tx, &expired, EventKind::Expired, None, now)?;
    tx.commit().map_err(unavailable)?;
    Ok(expired.len() as u64)
}
