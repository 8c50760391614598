//! Deadlines: unsent messages whose batch's deadline has passed become `expired`,
//! keeping their last error, at claim time for the claiming provider and by a
//! bounded sweep for the rest.

use deadpool_postgres::Transaction;

use super::{Postgres, db};
use crate::queue::Result;

/// Provider `$1`'s pending messages whose deadline is at or before `$2`: run just
/// before each claim of the provider (on its connection, in order), so that no
/// message is claimed after its deadline.
pub(super) const EXPIRE_PENDING: &str = "
WITH expired AS (
    UPDATE {s}.messages SET state = 'expired', updated_at = $2
    WHERE state = 'pending' AND expires_at <= $2 AND provider = $1
    RETURNING id, last_error
), changed AS (
    SELECT id, 'message.expired' AS kind, last_error AS code, $2::bigint AS at FROM expired
), {record}
SELECT {finishing}";

/// [`EXPIRE_PENDING`] for messages of batches without subscriptions only, with
/// nothing to record: what a claim outside a transaction runs.
pub(super) const EXPIRE_PENDING_UNSUBSCRIBED: &str = "
UPDATE {s}.messages d SET state = 'expired', updated_at = $2
WHERE d.state = 'pending' AND d.expires_at <= $2 AND d.provider = $1 AND NOT {subscribed}";

/// Up to `$2` unsent messages (pending, paused, or of unknown outcome) whose
/// deadline is at or before `$1`, of any provider. `SKIP LOCKED`: a message being
/// claimed or settled right now is left to that, and to the next sweep.
pub(super) const SWEEP: &str = "
WITH expired AS (
    UPDATE {s}.messages SET state = 'expired', updated_at = $1
    WHERE id = ANY(ARRAY(
        SELECT id FROM {s}.messages
        WHERE state IN ('pending', 'paused', 'unknown', 'held') AND expires_at <= $1
        LIMIT $2
        FOR UPDATE SKIP LOCKED))
      AND state IN ('pending', 'paused', 'unknown', 'held')
    RETURNING id, last_error
), changed AS (
    SELECT id, 'message.expired' AS kind, last_error AS code, $1::bigint AS at FROM expired
), {record}
SELECT (SELECT COUNT(*) FROM expired), {finishing}";

impl Postgres {
    /// [`Engine::expire`](crate::queue::Engine::expire).
    pub(super) async fn sweep_expired(&self, now: i64, limit: u64) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let stmt = tx.prepare_cached(&self.sql.sweep).await.map_err(db)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let row = tx.query_one(&stmt, &[&now, &limit]).await.map_err(db)?;
        self.finish(&tx, &row.get::<_, Vec<i64>>(1), now).await?;
        tx.commit().await.map_err(db)?;
        Ok(row.get::<_, i64>(0).unsigned_abs())
    }

    /// Requeues what is due again and expires `provider`'s pending messages past
    /// their deadline, recording their events, in `tx`: what a claim in a
    /// transaction runs first.
    pub(super) async fn requeue_and_expire(
        &self,
        tx: &Transaction<'_>,
        provider: &str,
        now: i64,
    ) -> Result<()> {
        let requeue = tx.prepare_cached(&self.sql.requeue).await.map_err(db)?;
        let requeued = tx.query_one(&requeue, &[&now]).await.map_err(db)?;
        let expire = tx
            .prepare_cached(&self.sql.expire_pending)
            .await
            .map_err(db)?;
        let expired = tx
            .query_one(&expire, &[&provider, &now])
            .await
            .map_err(db)?;
        let mut finishing: Vec<i64> = requeued.get(0);
        finishing.extend(expired.get::<_, Vec<i64>>(0));
        finishing.sort_unstable();
        finishing.dedup();
        self.finish(tx, &finishing, now).await
    }
}
