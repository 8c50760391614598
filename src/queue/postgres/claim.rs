//! Claiming: due messages leased in one statement, or, within rate limits, in one
//! transaction that also pays the provider's buckets and minds its recipient caps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{Postgres, attempts, db, index_of, parse_channel};
use crate::domain::{BatchId, message_id, millis, now_ms};
use crate::queue::{BatchTemplate, Claim, Claimed, Lease, Result, parse_batch_id};
use crate::ratelimit::{Limits, segment_bucket_key};

/// Expired leases, and unknown outcomes whose time has come, back to the queue.
/// A lapsed lease's request may have reached the provider: its message comes back
/// as an unknown outcome since its claim (`updated_at`; renewals leave it).
/// `SKIP LOCKED`: a row being settled right now is left to its settlement, and
/// concurrent claimers never queue up behind each other. (`= ANY(ARRAY(…))` here
/// and in [`CLAIM`] keeps the plan an index lookup by id whatever the row estimates
/// of a generic plan.) `{only}` narrows the messages taken.
const REQUEUE_DUE: &str = "
UPDATE {s}.messages m SET state = {requeued}, lease = NULL, lease_until = NULL, updated_at = $1,
    unknown_since = CASE m.state WHEN 'sending' THEN COALESCE(m.unknown_since, m.updated_at)
        ELSE m.unknown_since END
WHERE m.id = ANY(ARRAY(
    SELECT d.id FROM {s}.messages d
    WHERE d.lease_until <= $1 AND d.state = 'sending' {only}
    LIMIT 1000
    FOR UPDATE SKIP LOCKED) || ARRAY(
    SELECT d.id FROM {s}.messages d
    WHERE d.state = 'unknown' AND d.available_at <= $1 {only}
    LIMIT 1000
    FOR UPDATE SKIP LOCKED))";

/// What is due again, back to the queue; one requeued into a cancelled batch ends
/// there, and is told so.
pub(super) fn requeue() -> String {
    format!(
        "WITH requeued AS ({} RETURNING m.id, m.state
), changed AS (
    SELECT id, CASE WHEN state = 'cancelled' THEN 'message.cancelled' END AS kind,
           NULL::text AS code, $1::bigint AS at
    FROM requeued
), {{record}}
SELECT {{finishing}}",
        REQUEUE_DUE.replace("{only}", "")
    )
}

/// What is due again of batches without subscriptions, with nothing to record:
/// what a claim outside a transaction runs.
pub(super) fn requeue_unsubscribed() -> String {
    REQUEUE_DUE.replace("{only}", "AND NOT {subscribed}")
}

/// `{subscribed}`: message `d` is of a batch with subscriptions.
pub(super) const SUBSCRIBED: &str = "EXISTS (SELECT 1 FROM {s}.batches sb
    WHERE sb.seq = d.id >> 32 AND sb.subscriptions IS NOT NULL)";

/// Whether a message of a batch with subscriptions is due again, or pending for
/// provider `$2` past its deadline, at `$1`: left by a claim outside a transaction
/// to [`Postgres::requeue_and_expire`], which records their events.
pub(super) const SUBSCRIBED_DUE: &str = "
SELECT EXISTS (SELECT 1 FROM {s}.batches WHERE subscriptions IS NOT NULL) AND (
    EXISTS (SELECT 1 FROM {s}.messages d
            WHERE d.lease_until <= $1 AND d.state = 'sending' AND {subscribed})
    OR EXISTS (SELECT 1 FROM {s}.messages d
               WHERE d.state = 'unknown' AND d.available_at <= $1 AND {subscribed})
    OR EXISTS (SELECT 1 FROM {s}.messages d
               WHERE d.state = 'pending' AND d.expires_at <= $1 AND d.provider = $2 AND {subscribed}))";

impl Postgres {
    /// [`Postgres::requeue_and_expire`] in a transaction of its own.
    async fn requeue_in_transaction(
        &self,
        client: &mut deadpool_postgres::Object,
        provider: &str,
        now: i64,
    ) -> Result<()> {
        let tx = client.transaction().await.map_err(db)?;
        self.requeue_and_expire(&tx, provider, now).await?;
        tx.commit().await.map_err(db)
    }
}

/// What `{claimed}` stands for: the end of both claims, the leased rows with their
/// batch's id, channel and template id, and its template's sources on the first
/// row of each batch only, so that a template crosses the wire once per claim. The
/// `LIMIT 1` keeps the batch lookup a per-row index probe rather than a hash join
/// over all batches.
pub(super) const CLAIMED: &str = "
    RETURNING m.id, m.priority, m.available_at, m.to_addr, m.ref, m.subject, m.body, m.attempts,
              m.segments, m.vars, m.unknown_since, m.charge IS NOT NULL AS charged
)
SELECT c.id, c.priority, c.available_at, c.to_addr, c.ref, c.subject, c.body, c.attempts, b.id, b.channel,
       c.segments, b.template, c.vars, c.unknown_since,
       CASE WHEN row_number() OVER (PARTITION BY b.id) = 1 THEN b.template_source END,
       c.charged, b.max_cost IS NOT NULL
FROM claimed c
CROSS JOIN LATERAL (
    SELECT id, channel, template, template_source, max_cost FROM {s}.batches
    WHERE seq = c.id >> 32 LIMIT 1
) b";

/// Leases up to `$3` due messages of provider `$1`; none past its deadline, even
/// one requeued by another process since [`EXPIRE_PENDING`](super::expiry::EXPIRE_PENDING) ran.
pub(super) const CLAIM: &str = "
WITH claimed AS (
    UPDATE {s}.messages m SET state = 'sending', lease = $4, lease_until = $5, updated_at = $2
    WHERE m.id = ANY(ARRAY(
        SELECT id FROM {s}.messages
        WHERE state = 'pending' AND provider = $1 AND available_at <= $2
          AND (expires_at IS NULL OR expires_at > $2)
        ORDER BY priority DESC, available_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED))
{claimed}";

/// Leases the messages `$1` (locked by [`CANDIDATES`] in this transaction), but
/// any past its deadline.
pub(super) const CLAIM_IDS: &str = "
WITH claimed AS (
    UPDATE {s}.messages m SET state = 'sending', lease = $2, lease_until = $3, updated_at = $4
    WHERE m.id = ANY($1::bigint[]) AND m.state = 'pending'
      AND (m.expires_at IS NULL OR m.expires_at > $4)
{claimed}";

impl Postgres {
    /// [`Engine::claim`](crate::queue::Engine::claim).
    pub(super) async fn claim_due(
        &self,
        provider: &str,
        limit: usize,
        lease: Duration,
        limits: &Limits,
    ) -> Result<Claim> {
        let owner = limits.owner_or(provider);
        let mut client = self.client().await?;
        let now = now_ms();
        let token = fastrand::i64(..);
        let until = now.saturating_add(millis(lease));
        let rows = match limits.rate {
            None if limits.per_recipient.is_empty() && limits.segments.is_none() => {
                let requeue = client
                    .prepare_cached(&self.sql.requeue_unsubscribed)
                    .await
                    .map_err(db)?;
                let expire = client
                    .prepare_cached(&self.sql.expire_pending_unsubscribed)
                    .await
                    .map_err(db)?;
                let subscribed_due = client
                    .prepare_cached(&self.sql.subscribed_due)
                    .await
                    .map_err(db)?;
                let claim = client.prepare_cached(&self.sql.claim).await.map_err(db)?;
                // The statements go out before any answer is awaited (the client
                // pipelines them), so this is one round trip; each commits on its own,
                // the requeue first, then the deadlines, so the claim sees both.
                // Messages of batches with subscriptions are left to a transaction
                // that records their events with the change.
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let requeue_params: [&(dyn ToSql + Sync); 1] = [&now];
                let expire_params: [&(dyn ToSql + Sync); 2] = [&provider, &now];
                let due_params: [&(dyn ToSql + Sync); 2] = [&now, &provider];
                let claim_params: [&(dyn ToSql + Sync); 5] =
                    [&provider, &now, &limit, &token, &until];
                let (requeued, expired, subscribed_due, rows) = tokio::join!(
                    client.execute(&requeue, &requeue_params),
                    client.execute(&expire, &expire_params),
                    client.query_one(&subscribed_due, &due_params),
                    client.query(&claim, &claim_params),
                );
                expired.map_err(db)?;
                if let Err(e) = requeued {
                    // The claim stands (its rows are leased now); the next claim requeues.
                    tracing::warn!(error = %db(e), "requeueing expired leases failed; will try again");
                }
                let rows = rows.map_err(db)?;
                let subscribed_due = match subscribed_due {
                    Ok(row) => row.get::<_, bool>(0),
                    Err(e) => {
                        tracing::warn!(error = %db(e), "looking for due messages of subscribed batches failed; will try again");
                        false
                    }
                };
                if subscribed_due {
                    // As with the requeue above, the claim stands whatever becomes of this.
                    if let Err(e) = self
                        .requeue_in_transaction(&mut client, provider, now)
                        .await
                    {
                        tracing::warn!(error = %e, "requeueing messages of subscribed batches failed; will try again");
                    }
                }
                rows
            }
            _ => {
                // Limited claims for one provider take turns: the bucket's row lock
                // and the caps' advisory lock are held to the end of the transaction,
                // across every process on the store.
                let tx = client.transaction().await.map_err(db)?;
                self.requeue_and_expire(&tx, provider, now).await?;
                let (limit, bucket) = match &limits.rate {
                    None => (limit, None),
                    Some(rate) => {
                        let (stored, clock) = self.lock_bucket(&tx, owner, rate.burst).await?;
                        match rate.take(Some(stored), clock, limit) {
                            Ok((n, bucket)) => (n, Some(bucket)),
                            Err(wait) => {
                                // The requeue stands.
                                tx.commit().await.map_err(db)?;
                                return Ok(Claim::Wait(wait));
                            }
                        }
                    }
                };
                let segment_key = segment_bucket_key(owner);
                let (limit, segment_bucket) = match &limits.segments {
                    None => (limit, None),
                    Some(rate) => {
                        let (stored, clock) =
                            self.lock_bucket(&tx, &segment_key, rate.burst).await?;
                        let bucket = rate.refill(Some(stored), clock);
                        let costs = self.due_segments(&tx, provider, limit, now).await?;
                        match rate.fit(&bucket, &costs) {
                            Ok(n) => (n, Some(bucket)),
                            Err(wait) => {
                                tx.commit().await.map_err(db)?;
                                return Ok(Claim::Wait(wait));
                            }
                        }
                    }
                };
                let rows = if limits.per_recipient.is_empty() {
                    let claim = tx.prepare_cached(&self.sql.claim).await.map_err(db)?;
                    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                    tx.query(&claim, &[&provider, &now, &limit, &token, &until])
                        .await
                        .map_err(db)?
                } else {
                    let ids = self
                        .pick_capped(&tx, provider, owner, &limits.per_recipient, limit, now)
                        .await?;
                    let claim = tx.prepare_cached(&self.sql.claim_ids).await.map_err(db)?;
                    tx.query(&claim, &[&ids, &token, &until, &now])
                        .await
                        .map_err(db)?
                };
                if let Some(bucket) = bucket {
                    self.store_bucket(&tx, owner, bucket.spend(rows.len()))
                        .await?;
                }
                if let Some(bucket) = segment_bucket {
                    let segments = rows
                        .iter()
                        .map(|r| usize::try_from(r.get::<_, i32>(10)).unwrap_or(1))
                        .sum();
                    self.store_bucket(&tx, &segment_key, bucket.spend(segments))
                        .await?;
                }
                tx.commit().await.map_err(db)?;
                rows
            }
        };
        Ok(Claim::Messages(claimed(&rows, provider, token)?))
    }
}

/// The messages claimed under `token` from the rows of [`CLAIMED`], in due order.
/// A batch stored with its template is read once and shared by its messages, which
/// the handle renders.
fn claimed(rows: &[Row], provider: &str, token: i64) -> Result<Vec<Claimed>> {
    let mut templates: HashMap<BatchId, Arc<BatchTemplate>> = HashMap::new();
    for row in rows {
        if let Some(source) = row.get::<_, Option<&str>>(14) {
            let template = BatchTemplate::from_stored(source)?;
            templates.insert(parse_batch_id(row.get(8))?, template);
        }
    }
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.get(0);
        let batch_id = parse_batch_id(row.get(8))?;
        let claim = Claimed {
            lease: Lease { row: id, token },
            id: message_id(batch_id, index_of(id)),
            batch_id,
            channel: parse_channel(row.get(9))?,
            provider: provider.to_owned(),
            to: row.get(3),
            reference: row.get(4),
            subject: row.get(5),
            body: row.get(6),
            attempts: attempts(row.get(7))?,
            segments: u32::try_from(row.get::<_, i32>(10)).unwrap_or(1),
            template_id: row.get(11),
            vars: row.get(12),
            unknown_since_ms: row.get(13),
            template: templates.get(&batch_id).cloned(),
            charged: row.get(15),
            capped: row.get(16),
        };
        let order = (
            std::cmp::Reverse(row.get::<_, i32>(1)),
            row.get::<_, i64>(2),
            id,
        );
        claimed.push((order, claim));
    }
    // RETURNING rows come in no particular order; hand them out in due order.
    claimed.sort_unstable_by_key(|(order, _)| *order);
    Ok(claimed.into_iter().map(|(_, claim)| claim).collect())
}
