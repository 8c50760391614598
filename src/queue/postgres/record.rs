//! Recording events as deliveries, in the statement or transaction of the change
//! that causes them, and `batch.finished` once a subscribed batch has no
//! unfinished message.
//!
//! A changing statement names its changed messages in a CTE `changed (id, kind,
//! code, at)` (kind NULL: no event) and adds `{record}`, which inserts their
//! deliveries and names in `finishing` the batches that may have just finished;
//! its caller then runs [`Postgres::finish`] on them in the same transaction.

use deadpool_postgres::Transaction;

use super::{Postgres, db};
use crate::queue::{EventKind, NewEvent, Result};

/// What `{record}` stands for (see the module's doc). Nothing is read when no
/// batch has subscriptions: the uncommitted probe of their index is one-time.
pub(super) const RECORD: &str = "
recorded AS (
    INSERT INTO {s}.deliveries (endpoint, event_id, kind, batch, message, at, code, first_at, due_at)
    SELECT sub.value->>'endpoint', b.id || '-' || (c.id & 4294967295) || '.' || {kind_suffix},
           c.kind, b.seq, c.id, c.at, c.code, c.at, c.at
    FROM changed c
    JOIN {s}.batches b ON b.seq = c.id >> 32
    CROSS JOIN LATERAL jsonb_array_elements(b.subscriptions) sub
    WHERE (SELECT EXISTS (SELECT 1 FROM {s}.batches WHERE subscriptions IS NOT NULL))
      AND c.kind IS NOT NULL AND b.subscriptions IS NOT NULL
      AND ((sub.value->>'kinds')::int & {kind_bit}) <> 0
    ON CONFLICT (endpoint, event_id) DO NOTHING
), finishing AS (
    SELECT DISTINCT b.seq
    FROM changed c
    JOIN {s}.batches b ON b.seq = c.id >> 32
    WHERE (SELECT EXISTS (SELECT 1 FROM {s}.batches WHERE subscriptions IS NOT NULL))
      AND c.kind IN ('message.sent', 'message.failed', 'message.expired', 'message.cancelled')
      AND b.subscriptions IS NOT NULL
      AND EXISTS (SELECT 1 FROM jsonb_array_elements(b.subscriptions) f
                  WHERE ((f.value->>'kinds')::int & {finished_bit}) <> 0)
)";

/// The finishing batches of a statement with `{record}`, in lock order: its last
/// column.
pub(super) const FINISHING: &str = "ARRAY(SELECT seq FROM finishing ORDER BY seq)";

/// Events of kind `$2` for the messages `$1`, each with the code `$3`, or what its
/// row says (its receipt's code, or its last error), at `$4`.
pub(super) const RECORD_EVENTS: &str = "
WITH changed AS (
    SELECT m.id, $2::text AS kind,
           COALESCE($3::text, CASE WHEN $2 IN ('message.delivered', 'message.undelivered') THEN m.receipt_code
                                   WHEN $2 IN ('message.failed', 'message.expired') THEN m.last_error END) AS code,
           $4::bigint AS at
    FROM {s}.messages m WHERE m.id = ANY($1::bigint[])
), {record}
SELECT {finishing}";

/// Serializes the finishing checks of the batches `$1` (sorted): each transaction
/// that may finish a batch changes its messages first, then takes this lock, then
/// looks; so of two that end a batch's last messages at once, the second to look
/// sees the first's change.
pub(super) const LOCK_FINISHING: &str = "
SELECT pg_advisory_xact_lock(hashtext({schema} || ':finish'), seq::int)
FROM (SELECT unnest($1::bigint[]) AS seq ORDER BY 1) batches";

/// `batch.finished` at `$2` for each batch of `$1` with no message pending,
/// sending, unknown or paused, to its subscriptions that want it. Unfinished
/// messages gather at a batch's end (claims go in index order): read from there.
pub(super) const RECORD_FINISHED: &str = "
INSERT INTO {s}.deliveries (endpoint, event_id, kind, batch, at, first_at, due_at)
SELECT sub.value->>'endpoint', b.id || '.finished', 'batch.finished', b.seq, $2, $2, $2
FROM {s}.batches b
CROSS JOIN LATERAL jsonb_array_elements(b.subscriptions) sub
WHERE b.seq = ANY($1::bigint[]) AND ((sub.value->>'kinds')::int & {finished_bit}) <> 0
  AND (SELECT m.id FROM {s}.messages m
       WHERE m.id >= b.seq << 32 AND m.id < (b.seq + 1) << 32
         AND m.state IN ('pending', 'sending', 'unknown', 'paused', 'held')
       ORDER BY m.id DESC LIMIT 1) IS NULL
ON CONFLICT (endpoint, event_id) DO NOTHING";

/// One event to the endpoints `$1` and to the subscriptions wanting it of the
/// batch of its message `$5`, if any.
pub(super) const RECORD_DELIVERIES: &str = "
INSERT INTO {s}.deliveries (endpoint, event_id, kind, batch, message, at, code, payload, first_at, due_at)
SELECT e.endpoint, $2, $3, $5::bigint >> 32, $5, $4, $6, $7, $4, $4
FROM (
    SELECT unnest($1::text[]) AS endpoint
    UNION
    SELECT sub.value->>'endpoint' FROM {s}.batches b
    CROSS JOIN LATERAL jsonb_array_elements(b.subscriptions) sub
    WHERE b.seq = $5::bigint >> 32 AND b.subscriptions IS NOT NULL
      AND ((sub.value->>'kinds')::int & $8) <> 0
) e
ON CONFLICT (endpoint, event_id) DO NOTHING";

/// The SQL `CASE` of a kind's name in `column`, giving what `of` says of it.
fn case(column: &str, of: impl Fn(EventKind) -> Option<String>) -> String {
    let arms: String = EventKind::ALL
        .into_iter()
        .filter_map(|k| Some(format!(" WHEN '{}' THEN {}", k.as_str(), of(k)?)))
        .collect();
    format!("(CASE {column}{arms} END)")
}

/// `{kind_bit}`, `{kind_suffix}` and `{finished_bit}`, the kinds' bits and
/// event-id suffixes as `outbox` defines them.
pub(super) fn fill_kinds(sql: &str) -> String {
    sql.replace("{kind_bit}", &case("c.kind", |k| Some(k.bit().to_string())))
        .replace(
            "{kind_suffix}",
            &case("c.kind", |k| k.message_suffix().map(|s| format!("'{s}'"))),
        )
        .replace(
            "{finished_bit}",
            &EventKind::BatchFinished.bit().to_string(),
        )
}

impl Postgres {
    /// Records `batch.finished` for those of the batches `finishing` (sorted, as
    /// [`FINISHING`] answers them) left with no unfinished message, in `tx`, after
    /// the change.
    pub(super) async fn finish(
        &self,
        tx: &Transaction<'_>,
        finishing: &[i64],
        now: i64,
    ) -> Result<()> {
        if finishing.is_empty() {
            return Ok(());
        }
        let lock = tx
            .prepare_cached(&self.sql.lock_finishing)
            .await
            .map_err(db)?;
        tx.execute(&lock, &[&finishing]).await.map_err(db)?;
        let record = tx
            .prepare_cached(&self.sql.record_finished)
            .await
            .map_err(db)?;
        tx.execute(&record, &[&finishing, &now]).await.map_err(db)?;
        Ok(())
    }

    /// Records an event of `kind` for each message of `ids` that just changed (in
    /// `tx`, before it commits), to its batch's subscriptions wanting `kind`; then
    /// `batch.finished` of the batches it finished. The code kept is `code` when
    /// given, else what the row says (its receipt's code, or its last error).
    ///
    /// For another module's transaction that changed messages (a cancel by an
    /// opt-out: [`EventKind::Cancelled`] with the reason as `code`).
    #[allow(dead_code)] // until replies are stored
    pub(crate) async fn record_message_events(
        &self,
        tx: &Transaction<'_>,
        ids: &[i64],
        kind: EventKind,
        code: Option<&str>,
        now: i64,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let stmt = tx
            .prepare_cached(&self.sql.record_events)
            .await
            .map_err(db)?;
        let row = tx
            .query_one(&stmt, &[&ids, &kind.as_str(), &code, &now])
            .await
            .map_err(db)?;
        self.finish(tx, &row.get::<_, Vec<i64>>(0), now).await
    }

    /// Records `event` for each of `endpoints`, and for each subscription of its
    /// message's batch (when it names a message) wanting its kind, in `tx`; an
    /// event already recorded for an endpoint is left as it is.
    ///
    /// For a reply, from the transaction that stores it: kind [`EventKind::Reply`],
    /// id `reply.{reply id}`, the reply record as JSON in `payload`, the linked
    /// message's id as `message_row`, and as `endpoints` the configured webhooks
    /// that want replies.
    pub(crate) async fn record_deliveries(
        &self,
        tx: &Transaction<'_>,
        endpoints: &[String],
        event: &NewEvent,
    ) -> Result<()> {
        let stmt = tx
            .prepare_cached(&self.sql.record_deliveries)
            .await
            .map_err(db)?;
        tx.execute(
            &stmt,
            &[
                &endpoints,
                &event.id,
                &event.kind.as_str(),
                &event.at_ms,
                &event.message_row,
                &event.code,
                &event.payload,
                &i32::from(event.kind.bit()),
            ],
        )
        .await
        .map_err(db)?;
        Ok(())
    }
}
