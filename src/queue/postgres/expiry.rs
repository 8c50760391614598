//! Deadlines: unsent messages whose batch's deadline has passed become `expired`,
//! keeping their last error, at claim time for the claiming provider and by a
//! bounded sweep for the rest.

use super::{Postgres, db};
use crate::queue::Result;

/// Provider `$1`'s pending messages whose deadline is at or before `$2`: run just
/// before each claim of the provider (on its connection, in order), so that no
/// message is claimed after its deadline.
pub(super) const EXPIRE_PENDING: &str = "
UPDATE {s}.messages SET state = 'expired', updated_at = $2
WHERE state = 'pending' AND expires_at <= $2 AND provider = $1";

/// Up to `$2` unsent messages (pending, paused, or of unknown outcome) whose
/// deadline is at or before `$1`, of any provider. `SKIP LOCKED`: a message being
/// claimed or settled right now is left to that, and to the next sweep.
pub(super) const SWEEP: &str = "
UPDATE {s}.messages SET state = 'expired', updated_at = $1
WHERE id = ANY(ARRAY(
    SELECT id FROM {s}.messages
    WHERE state IN ('pending', 'paused', 'unknown') AND expires_at <= $1
    LIMIT $2
    FOR UPDATE SKIP LOCKED))
  AND state IN ('pending', 'paused', 'unknown')";

impl Postgres {
    /// [`Engine::expire`](crate::queue::Engine::expire).
    pub(super) async fn sweep_expired(&self, now: i64, limit: u64) -> Result<u64> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.sweep).await.map_err(db)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        client.execute(&stmt, &[&now, &limit]).await.map_err(db)
    }
}
