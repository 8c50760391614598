//! The embedded engine's ledger reads: a stored batch's place (`BatchRef`) found
//! by id or row, and a batch's summary.

use rusqlite::{Connection, OptionalExtension};

use super::connection::unavailable;
use super::schema::{parse_channel, parse_state};
use crate::domain::{BatchControl, BatchId, Channel, Counts};
use crate::queue::{BatchSummary, Error, Result, parse_batch_id};

/// What claims and the ledger need to know of a stored batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchRef {
    pub(super) seq: i64,
    pub(super) id: BatchId,
    pub(super) channel: Channel,
    pub(super) first_row: i64,
    pub(super) size: i64,
}

impl BatchRef {
    pub(super) fn last_row(&self) -> i64 {
        self.first_row + self.size - 1
    }

    pub(super) fn index_of(&self, row: i64) -> u32 {
        u32::try_from(row - self.first_row).expect("a message row lies in its batch's range")
    }
}

const BATCH_REF: &str = "SELECT seq, id, channel, first_row, size FROM batches";

fn batch_ref(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_batch_ref(
    (seq, id, channel, first_row, size): (i64, String, String, i64, i64),
) -> Result<BatchRef> {
    let id = parse_batch_id(&id)?;
    Ok(BatchRef {
        seq,
        id,
        channel: parse_channel(channel)?,
        first_row,
        size,
    })
}

/// A stored batch; one still being staged is not there yet.
pub(super) fn batch_by_id(conn: &Connection, id: BatchId) -> Result<Option<BatchRef>> {
    conn.prepare_cached(&format!(
        "{BATCH_REF} WHERE id = ?1 AND control != 'staging'"
    ))
    .and_then(|mut s| s.query_row([id.to_string()], batch_ref).optional())
    .map_err(unavailable)?
    .map(to_batch_ref)
    .transpose()
}

pub(super) fn batch_by_seq(conn: &Connection, seq: i64) -> Result<BatchRef> {
    let row = conn
        .prepare_cached(&format!("{BATCH_REF} WHERE seq = ?1"))
        .and_then(|mut s| s.query_row([seq], batch_ref))
        .map_err(unavailable)?;
    to_batch_ref(row)
}

pub(super) fn summary(conn: &Connection, id: BatchId) -> Result<Option<BatchSummary>> {
    let Some(batch) = batch_by_id(conn, id)? else {
        return Ok(None);
    };
    let (source, control, priority, created_at_ms, send_at_ms) = conn
        .prepare_cached(
            "SELECT source, control, priority, created_at, send_at FROM batches WHERE seq = ?1",
        )
        .and_then(|mut s| {
            s.query_row([batch.seq], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i32>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
        })
        .map_err(unavailable)?;
    let mut counts = Counts::default();
    let mut stmt = conn
        .prepare_cached(
            "SELECT state, COUNT(*) FROM messages WHERE id BETWEEN ?1 AND ?2 GROUP BY state",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([batch.first_row, batch.last_row()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(unavailable)?;
    for row in rows {
        let (state, n) = row.map_err(unavailable)?;
        counts.add(parse_state(&state)?, n.unsigned_abs());
    }
    let control = BatchControl::parse(&control)
        .ok_or_else(|| Error::Corrupt(format!("unknown control `{control}`")))?;
    Ok(Some(BatchSummary {
        id,
        channel: batch.channel,
        source,
        control,
        priority,
        created_at_ms,
        send_at_ms,
        counts,
    }))
}
