//! The embedded engine's erasure of a person, in one write transaction: their
//! queued messages cancelled, their address hashed in messages (through the
//! `messages_to` index), replies (`replies_from`), the payloads of those replies'
//! events (`deliveries_reply`), held receipts and recipient-cap records; and the
//! store's erasure salt.

use rusqlite::{Connection, OptionalExtension, params};

use super::connection::{unavailable, write_transaction};
use super::record::record_message_events;
use super::search::TO_KEY;
use crate::queue::erase::{ERASED_REASON, Erased, erase_in_payload, new_salt};
use crate::queue::{EventKind, Result};

/// The store's salt, read; `None` until the first erasure makes it.
pub(super) fn read_salt(conn: &mut Connection) -> Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT salt FROM erase_salt WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(unavailable)
}

/// The store's salt, made now if it has none (processes racing to make it agree:
/// the first insert wins, the others read it).
pub(super) fn make_salt(conn: &mut Connection) -> Result<Vec<u8>> {
    let salt = new_salt()?;
    let tx = write_transaction(conn)?;
    tx.execute(
        "INSERT OR IGNORE INTO erase_salt (id, salt) VALUES (1, ?1)",
        [salt],
    )
    .map_err(unavailable)?;
    let salt = tx
        .query_row("SELECT salt FROM erase_salt WHERE id = 1", [], |r| r.get(0))
        .map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    Ok(salt)
}

/// Erases `address` as [`crate::queue::EraseStore::erase`] says.
pub(super) fn erase(
    conn: &mut Connection,
    address: &str,
    erased_as: &str,
    now: i64,
) -> Result<Erased> {
    let tx = write_transaction(conn)?;
    let cancelled: Vec<i64> = tx
        .prepare_cached(&format!(
            "UPDATE messages SET state = 'cancelled', updated_at = ?2, last_error = ?3
             WHERE {TO_KEY} = ?1 AND state IN ('pending', 'paused', 'unknown')
             RETURNING id"
        ))
        .and_then(|mut s| {
            s.query_map(params![address, now, ERASED_REASON], |r| r.get(0))?
                .collect()
        })
        .map_err(unavailable)?;
    record_message_events(
        &tx,
        &cancelled,
        EventKind::Cancelled,
        Some(ERASED_REASON),
        now,
    )?;
    let sending: i64 = tx
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM messages WHERE {TO_KEY} = ?1 AND state = 'sending'"
        ))
        .and_then(|mut s| s.query_row([address], |r| r.get(0)))
        .map_err(unavailable)?;
    let messages = tx
        .prepare_cached(&format!(
            "UPDATE messages SET to_addr = ?2 WHERE {TO_KEY} = ?1 AND state != 'sending'"
        ))
        .and_then(|mut s| s.execute(params![address, erased_as]))
        .map_err(unavailable)?;
    let replies: Vec<String> = tx
        .prepare_cached("UPDATE replies SET from_addr = ?2 WHERE from_addr = ?1 RETURNING id")
        .and_then(|mut s| {
            s.query_map(params![address, erased_as], |r| r.get(0))?
                .collect()
        })
        .map_err(unavailable)?;
    let mut events = 0;
    for reply in &replies {
        let payloads: Vec<(i64, String)> = tx
            .prepare_cached(
                "SELECT seq, payload FROM deliveries
                 WHERE kind = 'reply' AND event_id = 'reply.' || ?1 AND payload IS NOT NULL",
            )
            .and_then(|mut s| {
                s.query_map([reply], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(unavailable)?;
        for (seq, payload) in payloads {
            if let Some(erased) = erase_in_payload(&payload, address, erased_as) {
                tx.execute(
                    "UPDATE deliveries SET payload = ?2 WHERE seq = ?1",
                    params![seq, erased],
                )
                .map_err(unavailable)?;
                events += 1;
            }
        }
    }
    // Both are short-lived (a day of held receipts, a cap's window of sends) and
    // small; what they key by the address goes too.
    for table in ["early_receipts", "recipient_sends"] {
        tx.execute(
            &format!("UPDATE {table} SET to_addr = ?2 WHERE to_addr = ?1"),
            params![address, erased_as],
        )
        .map_err(unavailable)?;
    }
    tx.commit().map_err(unavailable)?;
    Ok(Erased {
        messages: messages as u64,
        replies: replies.len() as u64,
        events,
        cancelled: cancelled.len() as u64,
        sending: sending.unsigned_abs(),
    })
}
