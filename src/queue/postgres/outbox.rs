//! The outbox's reads and upkeep: claiming due deliveries under a lease, settling
//! them, listing, replaying, counting and pruning them. Recording them is
//! `record`'s, in the statements of the changes.

use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{Postgres, attempts, db, index_of, parse_channel};
use crate::domain::{message_id, millis};
use crate::queue::outbox::StoredDelivery;
use crate::queue::{
    Delivery, DeliveryKey, DeliveryOutcome, DeliveryRecord, DeliveryState, Error, Event, EventKind,
    Outbox, Replay, Result, parse_batch_id,
};

/// `{delivery}`: what a listed or claimed delivery `d` reads, with what the ledger
/// says of its batch `b` and message `m` (see [`Postgres::event`]).
pub(super) const DELIVERY: &str = "
    d.seq, d.endpoint, d.event_id, d.kind, d.at, d.code, d.payload, d.attempts, d.first_at,
    d.state, d.last_error, d.due_at, d.posted_at,
    b.id, b.channel, b.source, b.callback_url,
    m.id, m.to_addr, m.ref, m.provider, m.provider_message_id";

/// Leases up to `$4` due deliveries under token `$1` until `$2` (a leased delivery's
/// `due_at` is its lease's end), oldest due first.
pub(super) const CLAIM: &str = "
WITH claimed AS (
    UPDATE {s}.deliveries SET lease = $1, due_at = $2
    WHERE seq = ANY(ARRAY(
        SELECT seq FROM {s}.deliveries WHERE state = 'pending' AND due_at <= $3
        ORDER BY due_at, seq LIMIT $4
        FOR UPDATE SKIP LOCKED))
    RETURNING *
)
SELECT {delivery}
FROM claimed d
LEFT JOIN {s}.batches b ON b.seq = d.batch
LEFT JOIN {s}.messages m ON m.id = d.message
ORDER BY d.seq";

/// Settles claimed deliveries still under their lease: (seq, token, new state,
/// due, error, posted at).
pub(super) const SETTLE: &str = "
UPDATE {s}.deliveries d SET state = s.state, attempts = d.attempts + 1, lease = NULL, due_at = s.due,
    last_error = COALESCE(s.error, d.last_error), posted_at = s.posted
FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[])
     AS s(seq, token, state, due, error, posted)
WHERE d.seq = s.seq AND d.lease = s.token AND d.state = 'pending'";

/// A page of every endpoint's deliveries in state `$1` (any when NULL), seq below
/// `$2`, newest first.
pub(super) const LIST: &str = "
SELECT {delivery}
FROM (SELECT * FROM {s}.deliveries
      WHERE ($1::text IS NULL OR state = $1) AND seq < $2 ORDER BY seq DESC LIMIT $3) d
LEFT JOIN {s}.batches b ON b.seq = d.batch
LEFT JOIN {s}.messages m ON m.id = d.message
ORDER BY d.seq DESC";

/// [`LIST`] of endpoint `$4` only.
pub(super) const LIST_OF: &str = "
SELECT {delivery}
FROM (SELECT * FROM {s}.deliveries
      WHERE endpoint = $4 AND ($1::text IS NULL OR state = $1) AND seq < $2 ORDER BY seq DESC LIMIT $3) d
LEFT JOIN {s}.batches b ON b.seq = d.batch
LEFT JOIN {s}.messages m ON m.id = d.message
ORDER BY d.seq DESC";

/// `{replayed}`: a delivery made pending and due at `$2` afresh.
pub(super) const REPLAYED: &str =
    "UPDATE {s}.deliveries SET state = 'pending', attempts = 0, first_at = $2,
    due_at = $2, lease = NULL, posted_at = NULL";

pub(super) const REPLAY_EVENT: &str = "{replayed} WHERE endpoint = $1 AND event_id = $3";

pub(super) const REPLAY_FAILED: &str = "{replayed} WHERE endpoint = $1 AND state = 'failed'";

pub(super) const COUNTS: &str = "
SELECT endpoint, SUM(pending)::bigint, SUM(failed)::bigint FROM (
    SELECT endpoint, COUNT(*) AS pending, 0 AS failed FROM {s}.deliveries
    WHERE state = 'pending' GROUP BY endpoint
    UNION ALL
    SELECT endpoint, 0, COUNT(*) FROM {s}.deliveries WHERE state = 'failed' GROUP BY endpoint
) c
GROUP BY endpoint ORDER BY endpoint";

pub(super) const PRUNE: &str = "
DELETE FROM {s}.deliveries WHERE seq = ANY(ARRAY(
    SELECT seq FROM {s}.deliveries WHERE state = 'posted' AND posted_at < $1 LIMIT $2))";

impl Postgres {
    /// A row of `{delivery}`, with a finished batch's counts read now.
    async fn stored(&self, row: &Row) -> Result<StoredDelivery> {
        Ok(StoredDelivery {
            seq: row.get(0),
            endpoint: row.get(1),
            state: DeliveryState::from_stored(row.get(9))?,
            attempts: attempts(row.get(7))?,
            first_at_ms: row.get(8),
            last_error: row.get(10),
            due_at_ms: row.get(11),
            posted_at_ms: row.get(12),
            callback_url: row.get(16),
            event: self.event(row).await?,
        })
    }

    /// The event of a row of `{delivery}`, with a finished batch's counts read now.
    async fn event(&self, row: &Row) -> Result<Event> {
        let kind = EventKind::from_stored(row.get(3))?;
        let batch_id = row
            .get::<_, Option<&str>>(13)
            .map(parse_batch_id)
            .transpose()?;
        let counts = match (kind, batch_id) {
            (EventKind::BatchFinished, Some(id)) => self.summary(id).await?.map(|s| s.counts),
            _ => None,
        };
        Ok(Event {
            id: row.get(2),
            kind,
            at_ms: row.get(4),
            batch_id,
            message_id: batch_id
                .zip(row.get::<_, Option<i64>>(17))
                .map(|(batch, id)| message_id(batch, index_of(id))),
            channel: row
                .get::<_, Option<&str>>(14)
                .map(parse_channel)
                .transpose()?,
            source: row.get(15),
            to: row.get(18),
            reference: row.get(19),
            provider: row.get(20),
            provider_message_id: row.get(21),
            code: row.get(5),
            counts,
            data: row
                .get::<_, Option<&str>>(6)
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| Error::Corrupt(format!("a delivery's payload is not JSON: {e}")))?,
        })
    }
}

#[async_trait]
impl Outbox for Postgres {
    async fn claim_deliveries(
        &self,
        limit: u32,
        lease: Duration,
        now: i64,
    ) -> Result<Vec<Delivery>> {
        let token = fastrand::i64(..);
        let until = now.saturating_add(millis(lease));
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.claim_deliveries)
            .await
            .map_err(db)?;
        let rows = client
            .query(&stmt, &[&token, &until, &now, &i64::from(limit)])
            .await
            .map_err(db)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            claimed.push(self.stored(row).await?.claimed(token));
        }
        Ok(claimed)
    }

    async fn settle_deliveries(
        &self,
        settled: Vec<(DeliveryKey, DeliveryOutcome)>,
        now: i64,
    ) -> Result<()> {
        let n = settled.len();
        let (mut seqs, mut tokens, mut states, mut due, mut errors, mut posted) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (key, outcome) in &settled {
            seqs.push(key.row);
            tokens.push(key.token);
            let settled = outcome.settled(now);
            states.push(settled.state.as_str());
            due.push(settled.due_at_ms);
            errors.push(settled.error);
            posted.push(settled.posted_at_ms);
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.settle_delivery)
            .await
            .map_err(db)?;
        client
            .execute(&stmt, &[&seqs, &tokens, &states, &due, &errors, &posted])
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn deliveries(
        &self,
        endpoint: Option<&str>,
        state: Option<DeliveryState>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        let client = self.client().await?;
        let state_name = state.map(DeliveryState::as_str);
        let before = before.unwrap_or(i64::MAX);
        let limit = i64::from(limit);
        let rows = match endpoint {
            Some(endpoint) => {
                let stmt = client
                    .prepare_cached(&self.sql.deliveries_of)
                    .await
                    .map_err(db)?;
                client
                    .query(&stmt, &[&state_name, &before, &limit, &endpoint])
                    .await
            }
            None => {
                let stmt = client
                    .prepare_cached(&self.sql.deliveries)
                    .await
                    .map_err(db)?;
                client.query(&stmt, &[&state_name, &before, &limit]).await
            }
        }
        .map_err(db)?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            records.push(self.stored(row).await?.record());
        }
        Ok(records)
    }

    async fn replay(&self, endpoint: &str, which: Replay, now: i64) -> Result<u64> {
        let client = self.client().await?;
        match which {
            Replay::Event(id) => {
                let stmt = client
                    .prepare_cached(&self.sql.replay_event)
                    .await
                    .map_err(db)?;
                client.execute(&stmt, &[&endpoint, &now, &id]).await
            }
            Replay::Failed => {
                let stmt = client
                    .prepare_cached(&self.sql.replay_failed)
                    .await
                    .map_err(db)?;
                client.execute(&stmt, &[&endpoint, &now]).await
            }
        }
        .map_err(db)
    }

    async fn delivery_counts(&self) -> Result<Vec<(String, u64, u64)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.delivery_counts)
            .await
            .map_err(db)?;
        let rows = client.query(&stmt, &[]).await.map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get::<_, i64>(1).unsigned_abs(),
                    r.get::<_, i64>(2).unsigned_abs(),
                )
            })
            .collect())
    }

    async fn prune_deliveries(&self, before_ms: i64, limit: u32) -> Result<u64> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.prune_deliveries)
            .await
            .map_err(db)?;
        client
            .execute(&stmt, &[&before_ms, &i64::from(limit)])
            .await
            .map_err(db)
    }
}
