//! The embedded engine's search across batches: messages by recipient through
//! the `messages_to` index (on [`TO_KEY`], the address without a mailbox's display
//! name), by ref through `messages_ref`, newest row first; and the one reading of
//! a message's ledger columns that searches and batch pages share.

use rusqlite::{Connection, params};

use super::connection::unavailable;
use super::schema::parse_state;
use crate::domain::message_id;
use crate::queue::search::{Found, SearchQuery};
use crate::queue::{MessageRecord, Result, parse_batch_id};

/// A message's recipient as searches and erasure compare it: the stored `to`,
/// or for a mailbox with a display name (`Name <a@example.com>`) the address
/// after its last `<`. Written exactly so in the index, which SQLite uses only for
/// the same expression. (`rtrim(x, replace(x, '<', ''))` keeps `x` up to its last
/// `<`.)
pub(super) const TO_KEY: &str = "(CASE WHEN substr(to_addr, -1) = '>' \
     THEN rtrim(substr(to_addr, length(rtrim(to_addr, replace(to_addr, '<', ''))) + 1), '>') \
     ELSE to_addr END)";

/// A message's ledger columns, in the order [`read_message`] reads them from.
pub(super) const LEDGER_COLUMNS: &str = "m.id, m.to_addr, m.ref, m.state, m.provider, m.attempts, \
     m.last_error, m.provider_message_id, m.created_at, m.updated_at, m.sent_at, m.receipt_code, \
     m.receipt_at, m.segments";

/// A message's ledger columns as read, before its id and index are known.
pub(super) struct LedgerRow {
    pub(super) row: i64,
    state: String,
    record: MessageRecord,
}

/// Reads [`LEDGER_COLUMNS`] starting at column `at`.
pub(super) fn read_message(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<LedgerRow> {
    Ok(LedgerRow {
        row: r.get(at)?,
        state: r.get(at + 3)?,
        record: MessageRecord {
            id: String::new(),
            index: 0,
            to: r.get(at + 1)?,
            reference: r.get(at + 2)?,
            // Set from `state` once read.
            state: crate::domain::MessageState::Pending,
            provider: r.get(at + 4)?,
            attempts: r.get(at + 5)?,
            last_error: r.get(at + 6)?,
            provider_message_id: r.get(at + 7)?,
            created_at_ms: r.get(at + 8)?,
            updated_at_ms: r.get(at + 9)?,
            sent_at_ms: r.get(at + 10)?,
            receipt_code: r.get(at + 11)?,
            receipt_at_ms: r.get(at + 12)?,
            segments: r.get(at + 13)?,
        },
    })
}

impl LedgerRow {
    /// The message, index `index` of batch `batch`.
    pub(super) fn record(self, batch: crate::domain::BatchId, index: u32) -> Result<MessageRecord> {
        Ok(MessageRecord {
            id: message_id(batch, index),
            index,
            state: parse_state(&self.state)?,
            ..self.record
        })
    }
}

/// A page of the messages `query` selects, newest row first.
pub(super) fn search(conn: &mut Connection, query: &SearchQuery) -> Result<Vec<Found>> {
    // The key with an index leads; the other, if given, only narrows.
    let (key, other, first, second) = match (&query.to, &query.reference) {
        (Some(to), reference) => (TO_KEY, "m.ref", to, reference.as_ref()),
        (None, Some(reference)) => ("m.ref", TO_KEY, reference, None),
        (None, None) => return Ok(Vec::new()),
    };
    let sql = format!(
        "SELECT b.id, b.first_row, {LEDGER_COLUMNS}
         FROM messages m JOIN batches b ON b.seq = m.batch
         WHERE {key} = ?1 AND (?2 IS NULL OR {other} = ?2) AND m.id < ?3
           AND (?4 IS NULL OR m.state = ?4) AND (?5 IS NULL OR m.created_at >= ?5)
           AND (?6 IS NULL OR m.created_at < ?6) AND b.control != 'staging'
         ORDER BY m.id DESC LIMIT ?7"
    );
    let rows = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(
                params![
                    first,
                    second,
                    query.before.unwrap_or(i64::MAX),
                    query.state.map(crate::domain::MessageState::as_str),
                    query.since_ms,
                    query.until_ms,
                    query.limit,
                ],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        read_message(r, 2)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|(batch, first_row, row)| {
            let batch_id = parse_batch_id(&batch)?;
            let position = row.row;
            let index = u32::try_from(position - first_row).map_err(|_| {
                crate::queue::Error::Corrupt(format!("message {position} is not of its batch"))
            })?;
            Ok(Found {
                batch_id,
                position,
                message: row.record(batch_id, index)?,
            })
        })
        .collect()
}

/// SQLite's plan for a search by recipient, one line per step: what a test
/// holds to the index.
#[cfg(test)]
pub(super) fn plan(conn: &Connection, by_ref: bool) -> Vec<String> {
    let key = if by_ref { "m.ref" } else { TO_KEY };
    let sql = format!(
        "EXPLAIN QUERY PLAN SELECT b.id, {LEDGER_COLUMNS}
         FROM messages m JOIN batches b ON b.seq = m.batch
         WHERE {key} = ?1 AND m.id < ?2 AND b.control != 'staging'
         ORDER BY m.id DESC LIMIT 50"
    );
    let mut stmt = conn.prepare(&sql).expect("the plan's query is valid");
    stmt.query_map(params!["+8613800000000", i64::MAX], |r| {
        r.get::<_, String>(3)
    })
    .expect("explained")
    .collect::<rusqlite::Result<Vec<_>>>()
    .expect("explained")
}
