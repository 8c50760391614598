//! Renewing the leases of messages whose sends are in progress.

use rusqlite::{Connection, params};

use super::connection::{unavailable, write_transaction};
use crate::queue::{Lease, Result};

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
