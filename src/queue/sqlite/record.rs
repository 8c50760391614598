//! The embedded engine's side of the outbox that writes: recording events as
//! deliveries, in the transaction of the change that causes them.

use rusqlite::{OptionalExtension, Transaction, params};

use super::connection::unavailable;
use crate::queue::outbox::{finished_event_id, subscriptions_from_stored};
use crate::queue::{EventKind, NewEvent, Result, Subscription, parse_batch_id};

/// Whether any batch has subscriptions: one probe of their partial index. When
/// none has, there is nothing to record and a change pays no more than this.
fn any_subscribed(tx: &Transaction<'_>) -> Result<bool> {
    tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM batches WHERE subscriptions IS NOT NULL)")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(unavailable)
}

/// A subscribed batch that messages of a change belong to.
struct Subscribed {
    seq: i64,
    id: String,
    first_row: i64,
    size: i64,
    subscriptions: Vec<Subscription>,
}

/// The subscribed batches of the messages `rows` (a JSON array).
fn subscribed_batches(tx: &Transaction<'_>, rows: &str) -> Result<Vec<Subscribed>> {
    let stored: Vec<(i64, String, i64, i64, String)> = tx
        .prepare_cached(
            "SELECT DISTINCT b.seq, b.id, b.first_row, b.size, b.subscriptions
             FROM json_each(?1) r JOIN messages m ON m.id = r.value JOIN batches b ON b.seq = m.batch
             WHERE b.subscriptions IS NOT NULL",
        )
        .and_then(|mut s| {
            s.query_map([rows], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .map_err(unavailable)?;
    stored
        .into_iter()
        .map(|(seq, id, first_row, size, subscriptions)| {
            Ok(Subscribed {
                seq,
                id,
                first_row,
                size,
                subscriptions: subscriptions_from_stored(&subscriptions)?,
            })
        })
        .collect()
}

/// Records an event of `kind` for each message of `rows` that just changed (in
/// `tx`, before it commits), to its batch's subscriptions wanting `kind`; then,
/// when the change can finish a batch, `batch.finished` for each subscribed batch
/// it left with no unfinished message. The code kept is `code` when given, else
/// what the message row says: its receipt's code, or its last error (failed,
/// expired). An event already recorded is left as it is.
///
/// For another module's transaction that changed messages (a cancel by an
/// opt-out: [`EventKind::Cancelled`] with the reason as `code`).
pub(crate) fn record_message_events(
    tx: &Transaction<'_>,
    rows: &[i64],
    kind: EventKind,
    code: Option<&str>,
    now: i64,
) -> Result<()> {
    if rows.is_empty() || !any_subscribed(tx)? {
        return Ok(());
    }
    let suffix = kind
        .message_suffix()
        .expect("a message's event has a message suffix");
    let rows = serde_json::to_string(rows).expect("numbers serialize");
    let batches = subscribed_batches(tx, &rows)?;
    // The subscriptions are read once per batch here, so that each message costs
    // one plain insert per endpoint: no JSON is taken apart per row.
    let stored_code = match kind {
        EventKind::Delivered | EventKind::Undelivered => "m.receipt_code",
        EventKind::Failed | EventKind::Expired => "m.last_error",
        _ => "NULL",
    };
    // The event id is `message_id(batch, index)` and the kind's suffix, as
    // `outbox::message_event_id` writes it.
    let mut insert = tx
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO deliveries (endpoint, event_id, kind, batch, message, at, code, first_at, due_at)
             SELECT ?2, ?3 || '-' || (m.id - ?4) || '.' || ?5, ?6, ?7, m.id, ?8,
                    COALESCE(?9, {stored_code}), ?8, ?8
             FROM json_each(?1) r JOIN messages m ON m.id = r.value
             WHERE m.batch = ?7"
        ))
        .map_err(unavailable)?;
    for batch in &batches {
        for subscription in batch
            .subscriptions
            .iter()
            .filter(|s| s.kinds.contains(kind))
        {
            insert
                .execute(params![
                    rows,
                    subscription.endpoint,
                    batch.id,
                    batch.first_row,
                    suffix,
                    kind.as_str(),
                    batch.seq,
                    now,
                    code
                ])
                .map_err(unavailable)?;
        }
    }
    if matches!(
        kind,
        EventKind::Sent | EventKind::Failed | EventKind::Expired | EventKind::Cancelled
    ) {
        record_finished(tx, &batches, now)?;
    }
    Ok(())
}

/// Those of `rows`, messages just requeued, that ended `cancelled` (their batch
/// was); none are looked for when no batch has subscriptions.
pub(super) fn ended_cancelled(tx: &Transaction<'_>, rows: &[i64]) -> Result<Vec<i64>> {
    if rows.is_empty() || !any_subscribed(tx)? {
        return Ok(Vec::new());
    }
    let rows = serde_json::to_string(rows).expect("numbers serialize");
    tx.prepare_cached(
        "SELECT m.id FROM json_each(?1) r JOIN messages m ON m.id = r.value WHERE m.state = 'cancelled'",
    )
    .and_then(|mut s| s.query_map([rows], |r| r.get(0))?.collect())
    .map_err(unavailable)
}

/// Records `batch.finished` for each of `batches` that wants it and has no
/// unfinished message left.
fn record_finished(tx: &Transaction<'_>, batches: &[Subscribed], now: i64) -> Result<()> {
    for batch in batches {
        let wanting: Vec<String> = batch
            .subscriptions
            .iter()
            .filter(|s| s.kinds.contains(EventKind::BatchFinished))
            .map(|s| s.endpoint.clone())
            .collect();
        if wanting.is_empty() {
            continue;
        }
        // Messages are claimed roughly in index order, so the unfinished ones
        // gather at the end: read from there.
        let unfinished: Option<i64> = tx
            .prepare_cached(
                "SELECT id FROM messages
                 WHERE id BETWEEN ?1 AND ?2 AND state IN ('pending', 'sending', 'unknown', 'paused', 'held')
                 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![batch.first_row, batch.first_row + batch.size - 1],
                    |r| r.get(0),
                )
                .optional()
            })
            .map_err(unavailable)?;
        if unfinished.is_some() {
            continue;
        }
        let event = NewEvent {
            id: finished_event_id(parse_batch_id(&batch.id)?),
            kind: EventKind::BatchFinished,
            at_ms: now,
            message_row: None,
            code: None,
            payload: None,
        };
        insert(tx, &wanting, &event, Some(batch.seq))?;
    }
    Ok(())
}

/// Records `event` for each of `endpoints`, and for each subscription of its
/// message's batch (when it names a message) that wants its kind, in `tx`; an
/// event already recorded for an endpoint is left as it is.
///
/// For a reply, from the transaction that stores it: kind [`EventKind::Reply`],
/// id `reply.{reply id}`, the reply record as JSON in `payload`, the linked
/// message's row as `message_row`, and as `endpoints` the configured webhooks
/// that want replies.
pub(crate) fn record_deliveries(
    tx: &Transaction<'_>,
    endpoints: &[String],
    event: &NewEvent,
) -> Result<()> {
    let mut all = endpoints.to_vec();
    if let Some(row) = event.message_row {
        let subscriptions: Option<String> = tx
            .prepare_cached(
                "SELECT b.subscriptions FROM messages m JOIN batches b ON b.seq = m.batch WHERE m.id = ?1",
            )
            .and_then(|mut s| s.query_row([row], |r| r.get(0)).optional())
            .map_err(unavailable)?
            .flatten();
        if let Some(stored) = subscriptions {
            all.extend(
                subscriptions_from_stored(&stored)?
                    .into_iter()
                    .filter(|s| s.kinds.contains(event.kind))
                    .map(|s| s.endpoint),
            );
        }
    }
    insert(tx, &all, event, None)
}

/// Inserts `event` for each of `endpoints`, of batch `batch` (else its message's).
fn insert(
    tx: &Transaction<'_>,
    endpoints: &[String],
    event: &NewEvent,
    batch: Option<i64>,
) -> Result<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO deliveries
                 (endpoint, event_id, kind, batch, message, at, code, payload, first_at, due_at)
             VALUES (?1, ?2, ?3, COALESCE(?4, (SELECT batch FROM messages WHERE id = ?5)), ?5, ?6, ?7, ?8, ?6, ?6)",
        )
        .map_err(unavailable)?;
    for endpoint in endpoints {
        stmt.execute(params![
            endpoint,
            event.id,
            event.kind.as_str(),
            batch,
            event.message_row,
            event.at_ms,
            event.code,
            event.payload,
        ])
        .map_err(unavailable)?;
    }
    Ok(())
}
