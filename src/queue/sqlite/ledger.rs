//! The embedded engine's ledger reads: a stored batch's place (`BatchRef`) found
//! by id or row, and a batch's summary.

use rusqlite::{Connection, OptionalExtension, params};

use super::connection::{unavailable, write_transaction};
use super::record::record_message_events;
use super::schema::{REQUEUED_STATE, parse_channel, parse_state};
use super::search::{LEDGER_COLUMNS, read_message};
use crate::domain::{BatchControl, BatchId, Channel, Counts, MessageState, now_ms};
use crate::queue::{
    BatchAction, BatchSummary, Error, EventKind, MessageQuery, MessageRecord, Result,
    parse_batch_id,
};

/// What claims and the ledger need to know of a stored batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchRef {
    seq: i64,
    pub(super) id: BatchId,
    pub(super) channel: Channel,
    first_row: i64,
    size: i64,
    /// It has a spend cap (a cap is raised, never added or taken away).
    pub(super) capped: bool,
}

impl BatchRef {
    /// The batch's row in `batches`.
    pub(super) fn seq(&self) -> i64 {
        self.seq
    }

    /// The rows of its first and last messages.
    pub(super) fn rows(&self) -> (i64, i64) {
        (self.first_row, self.last_row())
    }

    fn last_row(&self) -> i64 {
        self.first_row + self.size - 1
    }

    /// The index in its batch of the message in row `row`, which lies in its range.
    pub(super) fn index_of(&self, row: i64) -> u32 {
        u32::try_from(row - self.first_row).expect("a message row lies in its batch's range")
    }
}

const BATCH_REF: &str =
    "SELECT seq, id, channel, first_row, size, max_cost IS NOT NULL FROM batches";

type BatchRow = (i64, String, String, i64, i64, bool);

fn batch_ref(r: &rusqlite::Row<'_>) -> rusqlite::Result<BatchRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_batch_ref((seq, id, channel, first_row, size, capped): BatchRow) -> Result<BatchRef> {
    let id = parse_batch_id(&id)?;
    Ok(BatchRef {
        seq,
        id,
        channel: parse_channel(channel)?,
        first_row,
        size,
        capped,
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

/// The stored batch of row `seq`, staged or not.
pub(super) fn batch_by_seq(conn: &Connection, seq: i64) -> Result<BatchRef> {
    let row = conn
        .prepare_cached(&format!("{BATCH_REF} WHERE seq = ?1"))
        .and_then(|mut s| s.query_row([seq], batch_ref))
        .map_err(unavailable)?;
    to_batch_ref(row)
}

fn summary(conn: &Connection, id: BatchId) -> Result<Option<BatchSummary>> {
    let Some(batch) = batch_by_id(conn, id)? else {
        return Ok(None);
    };
    let (source, control, priority, created_at_ms, send_at_ms, expires_at_ms, spend) = conn
        .prepare_cached(
            "SELECT source, control, priority, created_at, send_at, expires_at, spent, max_cost
             FROM batches WHERE seq = ?1",
        )
        .and_then(|mut s| {
            s.query_row([batch.seq], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i32>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    (r.get::<_, i64>(6)?, r.get::<_, Option<i64>>(7)?),
                ))
            })
        })
        .map_err(unavailable)?;
    let counts = count_states(conn, batch.first_row, batch.last_row())?;
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
        expires_at_ms,
        counts,
        spent: spend.0,
        max_cost: spend.1,
    }))
}

/// The counts of the messages in rows `first` to `last` (a batch's), by state.
pub(super) fn count_states(conn: &Connection, first: i64, last: i64) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut stmt = conn
        .prepare_cached(
            "SELECT state, COUNT(*) FROM messages WHERE id BETWEEN ?1 AND ?2 GROUP BY state",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([first, last], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(unavailable)?;
    for row in rows {
        let (state, n) = row.map_err(unavailable)?;
        counts.add(parse_state(&state)?, n.unsigned_abs());
    }
    Ok(counts)
}

/// The summary of batch `id`, read in one transaction.
pub(super) fn batch(conn: &mut Connection, id: BatchId) -> Result<Option<BatchSummary>> {
    let tx = conn.transaction().map_err(unavailable)?;
    let summary = summary(&tx, id)?;
    tx.commit().map_err(unavailable)?;
    Ok(summary)
}

/// The stored sending window of batch `id`, if it has one.
pub(super) fn window(conn: &mut Connection, id: BatchId) -> Result<Option<String>> {
    conn.prepare_cached("SELECT send_window FROM batches WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.to_string()], |r| r.get(0)).optional())
        .map(Option::flatten)
        .map_err(unavailable)
}

/// Up to `limit` summaries of batches with ids below `before`, newest first.
pub(super) fn batches(
    conn: &mut Connection,
    before: Option<BatchId>,
    limit: u32,
) -> Result<Vec<BatchSummary>> {
    let tx = conn.transaction().map_err(unavailable)?;
    // Ids are stored in their canonical hyphenated form, whose byte order is
    // the UUIDs' order; the unique index on `id` reads them backwards.
    let ids = tx
        .prepare_cached(
            "SELECT id FROM batches WHERE control != 'staging' AND (?1 IS NULL OR id < ?1)
             ORDER BY id DESC LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![before.map(|b| b.to_string()), limit], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(unavailable)?;
    let mut summaries = Vec::with_capacity(ids.len());
    for id in ids {
        summaries.extend(summary(&tx, parse_batch_id(&id)?)?);
    }
    tx.commit().map_err(unavailable)?;
    Ok(summaries)
}

/// How many messages for `provider` are pending, counting no further than `cap`.
pub(super) fn pending(conn: &mut Connection, provider: String, cap: i64) -> Result<u64> {
    // The ready index holds exactly the pending messages, by provider first.
    conn.prepare_cached(
        "SELECT COUNT(*) FROM (SELECT 1 FROM messages WHERE provider = ?1 AND state = 'pending' LIMIT ?2)",
    )
    .and_then(|mut s| s.query_row(params![provider, cap], |r| r.get::<_, i64>(0)))
    .map(i64::unsigned_abs)
    .map_err(unavailable)
}

/// A page of batch `id`'s messages in index order, as `query` asks.
pub(super) fn messages(
    conn: &mut Connection,
    id: BatchId,
    query: MessageQuery,
) -> Result<Vec<MessageRecord>> {
    let Some(batch) = batch_by_id(conn, id)? else {
        return Ok(Vec::new());
    };
    let state = query.state.map(MessageState::as_str);
    let from = query.after.map_or(batch.first_row, |after| {
        batch.first_row + i64::from(after) + 1
    });
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {LEDGER_COLUMNS} FROM messages m
             WHERE m.id BETWEEN ?1 AND ?2 AND (?3 IS NULL OR m.state = ?3)
             ORDER BY m.id LIMIT ?4"
        ))
        .and_then(|mut s| {
            s.query_map(params![from, batch.last_row(), state, query.limit], |r| {
                read_message(r, 0)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|row| {
            let index = batch.index_of(row.row);
            row.record(id, index)
        })
        .collect()
}

/// Applies `action` to batch `id` and answers its summary; `None` when there is
/// no such batch.
pub(super) fn control(
    conn: &mut Connection,
    id: BatchId,
    action: BatchAction,
) -> Result<Option<BatchSummary>> {
    let tx = write_transaction(conn)?;
    let Some(batch) = batch_by_id(&tx, id)? else {
        return Ok(None);
    };
    let (seq, first, last) = (batch.seq, batch.first_row, batch.last_row());
    let before = summary(&tx, id)?.expect("the batch was just read in this transaction");
    if let Some(why) = action.refusal(before.control, &before.counts) {
        return Err(Error::Conflict(why));
    }
    let now = now_ms();
    let set_control = |control: BatchControl| {
        tx.execute(
            "UPDATE batches SET control = ?2 WHERE seq = ?1",
            params![seq, control.as_str()],
        )
        .map_err(unavailable)
    };
    let move_messages = |to: &str, from: &str| {
        tx.execute(
            &format!(
                "UPDATE messages SET state = {to}, updated_at = ?3
                 WHERE id BETWEEN ?1 AND ?2 AND state IN ({from})"
            ),
            params![first, last, now],
        )
        .map_err(unavailable)
    };
    match action {
        BatchAction::Pause => {
            set_control(BatchControl::Paused)?;
            move_messages("'paused'", "'pending'")?;
        }
        BatchAction::Resume => {
            set_control(BatchControl::Active)?;
            move_messages("'pending'", "'paused'")?;
        }
        BatchAction::Cancel => {
            set_control(BatchControl::Cancelled)?;
            let cancelled: Vec<i64> = tx
                .prepare_cached(
                    "UPDATE messages SET state = 'cancelled', updated_at = ?3
                     WHERE id BETWEEN ?1 AND ?2 AND state IN ('pending', 'paused', 'held')
                     RETURNING id",
                )
                .and_then(|mut s| {
                    s.query_map(params![first, last, now], |r| r.get(0))?
                        .collect()
                })
                .map_err(unavailable)?;
            record_message_events(&tx, &cancelled, EventKind::Cancelled, None, now)?;
        }
        BatchAction::Retry { expires_at_ms } => {
            tx.execute(
                "UPDATE batches SET expires_at = ?2 WHERE seq = ?1",
                params![seq, expires_at_ms],
            )
            .map_err(unavailable)?;
            // Every message of the batch keeps the batch's deadline: the unsent
            // ones wait for the new one, and it is there for the retried ones.
            tx.execute(
                &format!(
                    "UPDATE messages SET expires_at = ?4,
                         state = CASE WHEN state IN ('failed', 'expired') THEN {REQUEUED_STATE} ELSE state END,
                         attempts = CASE WHEN state IN ('failed', 'expired') THEN 0 ELSE attempts END,
                         available_at = CASE WHEN state IN ('failed', 'expired') THEN ?3 ELSE available_at END,
                         updated_at = CASE WHEN state IN ('failed', 'expired') THEN ?3 ELSE updated_at END
                     WHERE id BETWEEN ?1 AND ?2"
                ),
                params![first, last, now, expires_at_ms],
            )
            .map_err(unavailable)?;
        }
    }
    let summary = summary(&tx, id)?;
    tx.commit().map_err(unavailable)?;
    Ok(summary)
}
