//! The embedded engine's outbox reads and upkeep: claiming due deliveries under a
//! lease, settling them, listing, replaying, counting and pruning them. Recording
//! them is `record`'s, in the transactions of the changes; `posting` is the
//! store's one poster and its leases.

mod posting;

use rusqlite::{Connection, params};

use super::connection::{light_transaction, unavailable, write_transaction};
use super::ledger::count_states;
use super::schema::parse_channel;
use crate::domain::message_id;
use crate::queue::outbox::StoredDelivery;
use crate::queue::{
    Delivery, DeliveryKey, DeliveryOutcome, DeliveryRecord, DeliveryState, Error, Event, EventKind,
    Replay, Result, parse_batch_id,
};
pub(super) use posting::Posting;

/// A delivery with what the ledger says of its batch and message, for [`read_row`].
const DELIVERY: &str = "
SELECT d.seq, d.endpoint, d.event_id, d.kind, d.at, d.code, d.payload, d.attempts, d.first_at,
       d.state, d.last_error, d.due_at, d.posted_at,
       b.id, b.channel, b.source, b.callback_url, b.first_row, b.size,
       m.id, m.to_addr, m.ref, m.provider, m.provider_message_id
FROM deliveries d LEFT JOIN batches b ON b.seq = d.batch LEFT JOIN messages m ON m.id = d.message";

/// One row of [`DELIVERY`], as read.
struct Row {
    seq: i64,
    endpoint: String,
    state: String,
    attempts: u32,
    first_at: i64,
    last_error: Option<String>,
    due_at: Option<i64>,
    posted_at: Option<i64>,
    callback_url: Option<String>,
    /// The batch's first row and size, when the event names a batch.
    range: Option<(i64, i64)>,
    event: Event,
    /// The event's stored kind and batch id, checked when the row is completed.
    kind: String,
    batch_id: Option<String>,
    channel: Option<String>,
    message: Option<i64>,
    payload: Option<String>,
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let first_row: Option<i64> = r.get(17)?;
    let size: Option<i64> = r.get(18)?;
    Ok(Row {
        seq: r.get(0)?,
        endpoint: r.get(1)?,
        kind: r.get(3)?,
        payload: r.get(6)?,
        attempts: r.get(7)?,
        first_at: r.get(8)?,
        state: r.get(9)?,
        last_error: r.get(10)?,
        due_at: r.get(11)?,
        posted_at: r.get(12)?,
        batch_id: r.get(13)?,
        channel: r.get(14)?,
        callback_url: r.get(16)?,
        range: first_row.zip(size),
        message: r.get(19)?,
        event: Event {
            id: r.get(2)?,
            // Set from `kind` when the row is completed.
            kind: EventKind::Sent,
            at_ms: r.get(4)?,
            batch_id: None,
            message_id: None,
            channel: None,
            source: r.get(15)?,
            to: r.get(20)?,
            reference: r.get(21)?,
            provider: r.get(22)?,
            provider_message_id: r.get(23)?,
            code: r.get(5)?,
            counts: None,
            data: None,
        },
    })
}

impl Row {
    /// The delivery, with what the stored text of its event means: kind, batch and
    /// message ids, channel, data, and a finished batch's counts.
    fn complete(mut self, conn: &Connection) -> Result<StoredDelivery> {
        let event = &mut self.event;
        event.kind = EventKind::from_stored(&self.kind)?;
        event.batch_id = self.batch_id.as_deref().map(parse_batch_id).transpose()?;
        event.channel = self.channel.take().map(parse_channel).transpose()?;
        event.data = self
            .payload
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| Error::Corrupt(format!("a delivery's payload is not JSON: {e}")))?;
        if let (Some(batch), Some((first, size))) = (event.batch_id, self.range) {
            if let Some(row) = self.message {
                let index = u32::try_from(row - first)
                    .map_err(|_| Error::Corrupt(format!("message {row} is not of its batch")))?;
                event.message_id = Some(message_id(batch, index));
            }
            if event.kind == EventKind::BatchFinished {
                event.counts = Some(count_states(conn, first, first + size - 1)?);
            }
        }
        Ok(StoredDelivery {
            seq: self.seq,
            endpoint: self.endpoint,
            state: DeliveryState::from_stored(&self.state)?,
            attempts: self.attempts,
            first_at_ms: self.first_at,
            last_error: self.last_error,
            due_at_ms: self.due_at,
            posted_at_ms: self.posted_at,
            callback_url: self.callback_url,
            event: self.event,
        })
    }
}

/// Reads the deliveries `sql` (a [`DELIVERY`] with its conditions) selects.
fn select(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredDelivery>> {
    let rows: Vec<Row> = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_map(params, read_row)?.collect())
        .map_err(unavailable)?;
    rows.into_iter().map(|row| row.complete(conn)).collect()
}

/// Claims up to `limit` due deliveries, oldest due first, under fresh leases
/// until `until`, when this process is the store's poster. A read: the leases
/// are the poster's, in memory, and the deliveries it holds leased are passed
/// over.
pub(super) fn claim(
    conn: &mut Connection,
    posting: &Posting,
    limit: u32,
    until: i64,
    now: i64,
) -> Result<Vec<Delivery>> {
    let Some(mut leases) = posting.claiming(now)? else {
        return Ok(Vec::new());
    };
    let tx = conn.transaction().map_err(unavailable)?;
    let wanted = i64::from(limit) + i64::try_from(leases.len()).unwrap_or(i64::MAX);
    let seqs: Vec<i64> = tx
        .prepare_cached(
            "SELECT seq FROM deliveries WHERE state = 'pending' AND due_at <= ?1
             ORDER BY due_at, seq LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![now, wanted], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()
        })
        .map_err(unavailable)?
        .into_iter()
        .filter(|&seq| !leases.holds(seq))
        .take(limit as usize)
        .collect();
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = select(
        &tx,
        &format!("{DELIVERY} WHERE d.seq IN (SELECT value FROM json_each(?1)) ORDER BY d.seq"),
        [serde_json::to_string(&seqs).expect("numbers serialize")],
    )?;
    tx.commit().map_err(unavailable)?;
    let token = fastrand::i64(..);
    leases.lease(&seqs, token, until);
    Ok(rows.into_iter().map(|row| row.claimed(token)).collect())
}

/// Settles claimed deliveries whose leases are still the poster's, in one
/// transaction. The posted ones (nearly all, when endpoints answer) are settled
/// by one statement over their rows; the others one by one.
pub(super) fn settle(
    conn: &mut Connection,
    posting: &Posting,
    settled: Vec<(DeliveryKey, DeliveryOutcome)>,
    now: i64,
) -> Result<()> {
    let mut posted: Vec<i64> = Vec::new();
    let mut others = Vec::new();
    {
        let mut leases = posting.settling();
        for (key, outcome) in &settled {
            if !leases.end(key) {
                continue;
            }
            match outcome {
                DeliveryOutcome::Posted => posted.push(key.row),
                _ => others.push((key, outcome)),
            }
        }
    }
    if posted.is_empty() && others.is_empty() {
        return Ok(());
    }
    let tx = light_transaction(conn)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "UPDATE deliveries SET state = 'posted', attempts = attempts + 1, lease = NULL,
                     due_at = NULL, posted_at = ?2
                 WHERE seq IN (SELECT value FROM json_each(?1)) AND state = 'pending'",
            )
            .map_err(unavailable)?;
        if !posted.is_empty() {
            let rows = serde_json::to_string(&posted).expect("numbers serialize");
            stmt.execute(params![rows, now]).map_err(unavailable)?;
        }
        let mut stmt = tx
            .prepare_cached(
                "UPDATE deliveries SET state = ?2, attempts = attempts + 1, lease = NULL,
                     due_at = ?3, last_error = COALESCE(?4, last_error), posted_at = ?5
                 WHERE seq = ?1 AND state = 'pending'",
            )
            .map_err(unavailable)?;
        for (key, outcome) in others {
            let settled = outcome.settled(now);
            stmt.execute(params![
                key.row,
                settled.state.as_str(),
                settled.due_at_ms,
                settled.error,
                settled.posted_at_ms
            ])
            .map_err(unavailable)?;
        }
    }
    tx.commit().map_err(unavailable)
}

/// A page of deliveries, newest first.
pub(super) fn list(
    conn: &mut Connection,
    endpoint: Option<String>,
    state: Option<DeliveryState>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<DeliveryRecord>> {
    // With an endpoint, its index reads the page in order.
    let endpoint_is = if endpoint.is_some() {
        "d.endpoint = ?1"
    } else {
        "?1 IS NULL"
    };
    let tx = conn.transaction().map_err(unavailable)?;
    let rows = select(
        &tx,
        &format!(
            "{DELIVERY} WHERE {endpoint_is} AND (?2 IS NULL OR d.state = ?2)
                 AND d.seq < COALESCE(?3, 9223372036854775807)
             ORDER BY d.seq DESC LIMIT ?4"
        ),
        params![endpoint, state.map(DeliveryState::as_str), before, limit],
    )?;
    tx.commit().map_err(unavailable)?;
    Ok(rows.into_iter().map(StoredDelivery::record).collect())
}

/// Makes the chosen deliveries of `endpoint` pending and due at `now`, afresh.
/// Those the poster holds leased are freed, so a post in flight settles nothing
/// and the replay posts them again.
pub(super) fn replay(
    conn: &mut Connection,
    posting: &Posting,
    endpoint: String,
    which: Replay,
    now: i64,
) -> Result<u64> {
    let (condition, event) = match which {
        Replay::Event(id) => ("event_id = ?3", Some(id)),
        Replay::Failed => ("state = 'failed' AND ?3 IS NULL", None),
    };
    let tx = write_transaction(conn)?;
    let rows: Vec<i64> = tx
        .prepare(&format!(
            "UPDATE deliveries SET state = 'pending', attempts = 0, first_at = ?2, due_at = ?2,
                 lease = NULL, posted_at = NULL
             WHERE endpoint = ?1 AND {condition}
             RETURNING seq"
        ))
        .and_then(|mut s| {
            s.query_map(params![endpoint, now, event], |r| r.get(0))?
                .collect()
        })
        .map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    posting.settling().forget(&rows);
    Ok(rows.len() as u64)
}

/// Per endpoint with any: its pending and failed deliveries.
pub(super) fn counts(conn: &mut Connection) -> Result<Vec<(String, u64, u64)>> {
    conn.prepare_cached(
        "SELECT endpoint, SUM(pending), SUM(failed) FROM (
             SELECT endpoint, COUNT(*) AS pending, 0 AS failed FROM deliveries
             WHERE state = 'pending' GROUP BY endpoint
             UNION ALL
             SELECT endpoint, 0, COUNT(*) FROM deliveries WHERE state = 'failed' GROUP BY endpoint)
         GROUP BY endpoint ORDER BY endpoint",
    )
    .and_then(|mut s| {
        s.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?.unsigned_abs(),
                r.get::<_, i64>(2)?.unsigned_abs(),
            ))
        })?
        .collect()
    })
    .map_err(unavailable)
}

/// Deletes up to `limit` deliveries posted before `before`.
pub(super) fn prune(conn: &mut Connection, before: i64, limit: u32) -> Result<u64> {
    let tx = write_transaction(conn)?;
    let n = tx
        .prepare_cached(
            "DELETE FROM deliveries WHERE seq IN (
                 SELECT seq FROM deliveries WHERE state = 'posted' AND posted_at < ?1 LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![before, limit]))
        .map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    Ok(n as u64)
}
