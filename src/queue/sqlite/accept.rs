//! The embedded engine's accept path: the batch row, the idempotent replay, and
//! the multi-row inserts of messages, the hot path of a big batch.

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::connection::{unavailable, write_transaction};
use crate::domain::now_ms;
use crate::queue::outbox::subscriptions_to_stored;
use crate::queue::{Accepted, Error, NewBatch, NewMessage, Result, parse_batch_id};

/// Messages inserted by one statement.
const ROWS_PER_INSERT: usize = 100;

/// Parameters of [`insert_sql`] the same for every row: the batch, provider,
/// state, priority, template, creation time and deadline.
const SHARED_PARAMS: usize = 7;
/// Parameters of [`insert_sql`] of each row: id, address, ref, subject, body,
/// segments, vars and due time.
const ROW_PARAMS: usize = 8;

/// `INSERT INTO messages … VALUES (…), (…), …` for `rows` rows. What every row
/// shares is bound once, as parameters 1 to [`SHARED_PARAMS`]; each row then has
/// its own [`ROW_PARAMS`].
fn insert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let p = SHARED_PARAMS + row * ROW_PARAMS;
            format!(
                "(?{}, ?1, ?2, ?3, ?4, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?5, ?{}, ?6, ?6, ?7)",
                p + 1,
                p + 8,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7
            )
        })
        .collect();
    format!(
        "INSERT INTO messages (id, batch, provider, state, priority, available_at, to_addr, ref, subject, body,
                               segments, template, vars, created_at, updated_at, expires_at)
         VALUES {}",
        values.join(", ")
    )
}

fn insert_batch(tx: &Transaction<'_>, batch: &NewBatch) -> Result<()> {
    // The span of indices, not the count: rejected recipients leave gaps.
    let span = batch.messages.last().map_or(0, |m| i64::from(m.index) + 1);
    let head = insert_batch_row(tx, batch, "active", span)?;
    insert_messages(tx, batch, head, &batch.messages, "pending")
}

/// The answer stored for the batch's idempotency key, if it was used before: the
/// same request replays it, another is a conflict, and so is a batch with that key
/// still being staged.
pub(super) fn replay(tx: &Transaction<'_>, batch: &NewBatch) -> Result<Option<Accepted>> {
    let Some(idem) = &batch.idempotency else {
        return Ok(None);
    };
    let seen: Option<(String, Option<String>, String, String)> = tx
        .query_row(
            "SELECT id, request_hash, report, control FROM batches WHERE idempotency_key = ?1",
            [&idem.key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(unavailable)?;
    let Some((id, hash, report, control)) = seen else {
        return Ok(None);
    };
    if hash.as_deref() != Some(idem.request_hash.as_str()) {
        return Err(Error::Conflict(format!(
            "the Idempotency-Key `{}` was used before with a different request",
            idem.key
        )));
    }
    if control == "staging" {
        return Err(Error::Conflict(format!(
            "a batch with the Idempotency-Key `{}` is still being stored; ask again when it is",
            idem.key
        )));
    }
    let id = parse_batch_id(&id)?;
    let report = serde_json::from_str(&report).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok(Some(Accepted::Replayed { id, report }))
}

/// Where a batch's rows are: its batch row and the id of its message of index 0.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    pub(super) seq: i64,
    pub(super) first_row: i64,
}

/// Inserts the batch row, with `control` and `size` (the span of message ids it
/// owns from `first_row`), after every id in use or reserved by a batch being staged.
pub(super) fn insert_batch_row(
    tx: &Transaction<'_>,
    batch: &NewBatch,
    control: &str,
    size: i64,
) -> Result<Head> {
    let (key, hash) = match &batch.idempotency {
        Some(i) => (Some(i.key.as_str()), Some(i.request_hash.as_str())),
        None => (None, None),
    };
    let first_row: i64 = tx
        .prepare_cached(
            "SELECT MAX((SELECT COALESCE(MAX(id), 0) FROM messages),
                        (SELECT COALESCE(MAX(first_row + size - 1), 0) FROM batches WHERE control = 'staging')) + 1",
        )
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(unavailable)?;
    tx.execute(
        "INSERT INTO batches (id, channel, source, control, priority, send_at, created_at, idempotency_key,
                              request_hash, report, first_row, size, template_source, expires_at,
                              callback_url, subscriptions, send_window, max_cost)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        params![
            batch.id.to_string(),
            batch.channel.as_str(),
            batch.source,
            control,
            batch.priority,
            batch.send_at_ms,
            now_ms(),
            key,
            hash,
            batch.report.to_string(),
            first_row,
            size,
            batch
                .template
                .as_ref()
                .map(|t| t.to_stored()),
            batch.expires_at_ms,
            batch.callback_url,
            subscriptions_to_stored(&batch.subscriptions),
            batch.window.as_ref().map(|w| w.to_stored()),
            batch.max_cost,
        ],
    )
    .map_err(unavailable)?;
    Ok(Head {
        seq: tx.last_insert_rowid(),
        first_row,
    })
}

/// Inserts `messages` of `batch` in `state`.
pub(super) fn insert_messages(
    tx: &Transaction<'_>,
    batch: &NewBatch,
    head: Head,
    messages: &[NewMessage],
    state: &str,
) -> Result<()> {
    let now = now_ms();
    // Due order is priority, then send time, then arrival: a send_at in the past
    // keeps its place ahead of later ones.
    let due: Vec<i64> = messages
        .iter()
        .map(|m| m.due_at(batch.send_at_ms))
        .collect();
    // Many rows per INSERT: statement steps are far fewer (about a quarter off the
    // insert time of a 10,000-message batch). A statement's rows share a provider.
    static FULL_SQL: LazyLock<String> = LazyLock::new(|| insert_sql(ROWS_PER_INSERT));
    let mut full = tx.prepare_cached(&FULL_SQL).map_err(unavailable)?;
    let mut rest = messages;
    let mut rest_due = due.as_slice();
    while let Some(first) = rest.first() {
        let run = rest
            .iter()
            .take(ROWS_PER_INSERT)
            .take_while(|m| m.provider == first.provider)
            .count();
        let (rows, after) = rest.split_at(run);
        rest = after;
        let mut partial;
        let stmt = if rows.len() == ROWS_PER_INSERT {
            &mut full
        } else {
            partial = tx
                .prepare_cached(&insert_sql(rows.len()))
                .map_err(unavailable)?;
            &mut partial
        };
        let ids: Vec<i64> = rows
            .iter()
            .map(|m| head.first_row + i64::from(m.index))
            .collect();
        let (row_due, later) = rest_due.split_at(rows.len());
        rest_due = later;
        let mut values: Vec<&dyn rusqlite::ToSql> =
            Vec::with_capacity(SHARED_PARAMS + rows.len() * ROW_PARAMS);
        values.extend([
            &head.seq as &dyn rusqlite::ToSql,
            &first.provider,
            &state,
            &batch.priority,
            &batch.template_id,
            &now,
            &batch.expires_at_ms,
        ]);
        for ((m, id), due) in rows.iter().zip(&ids).zip(row_due) {
            // With the batch's template stored, each body is rendered at claim.
            let body: &dyn rusqlite::ToSql = match batch.template {
                Some(_) if m.vars.is_some() => &"",
                _ => &m.body,
            };
            values.extend([
                id as &dyn rusqlite::ToSql,
                &m.to,
                &m.reference,
                &m.subject,
                body,
                &m.segments,
                &m.vars,
                due,
            ]);
        }
        stmt.execute(values.as_slice()).map_err(unavailable)?;
    }
    Ok(())
}

/// Stores `batch` whole in one transaction, or answers from the store when its
/// idempotency key was used before.
pub(super) fn accept(conn: &mut Connection, batch: NewBatch) -> Result<Accepted> {
    let tx = write_transaction(conn)?;
    if let Some(replayed) = replay(&tx, &batch)? {
        return Ok(replayed);
    }
    insert_batch(&tx, &batch)?;
    tx.commit().map_err(unavailable)?;
    Ok(Accepted::New(batch.id))
}
