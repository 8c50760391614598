//! The embedded engine's next due time: when a claim for a provider could next
//! take a message, read through indexes so that an idle claimer writes nothing.

use rusqlite::Connection;

use super::connection::unavailable;
use crate::queue::Result;

/// The earliest of `provider`'s pending messages' due times (the `messages_due`
/// index), its leases' ends and its unknown outcomes' next checks (few rows, in
/// the order of their indexes), or `None` when it has none.
pub(super) fn next_due(conn: &mut Connection, provider: &str) -> Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT MIN(t) FROM (
             SELECT MIN(available_at) AS t FROM messages WHERE state = 'pending' AND provider = ?1
             UNION ALL
             SELECT MIN(lease_until) FROM messages WHERE state = 'sending' AND provider = ?1
             UNION ALL
             SELECT MIN(available_at) FROM messages WHERE state = 'unknown' AND provider = ?1)",
    )
    .and_then(|mut s| s.query_row([provider], |r| r.get(0)))
    .map_err(unavailable)
}
