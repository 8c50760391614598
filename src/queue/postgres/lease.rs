//! Renewing the leases of messages whose sends are in progress.

use std::time::Duration;

use crate::domain::{millis, now_ms};
use crate::queue::{Lease, Result};

use super::{Postgres, db};

/// Extends the leases `($1, $2)` (row, token) still held to `$3`. A row whose
/// lease token changed (claimed again) or that left `sending` (settled) is not
/// touched; `updated_at` stays the claim's time, which a lapsed lease's message
/// comes back marked with.
pub(super) const RENEW: &str = "
UPDATE {s}.messages m SET lease_until = $3
FROM UNNEST($1::bigint[], $2::bigint[]) AS l(id, token)
WHERE m.id = l.id AND m.lease = l.token AND m.state = 'sending'";

impl Postgres {
    /// [`Engine::renew`](crate::queue::Engine::renew).
    pub(super) async fn renew_leases(&self, leases: Vec<Lease>, lease: Duration) -> Result<usize> {
        let (rows, tokens): (Vec<i64>, Vec<i64>) = leases.iter().map(|l| (l.row, l.token)).unzip();
        let until = now_ms().saturating_add(millis(lease));
        let client = self.client().await?;
        let renew = client.prepare_cached(&self.sql.renew).await.map_err(db)?;
        let renewed = client
            .execute(&renew, &[&rows, &tokens, &until])
            .await
            .map_err(db)?;
        Ok(usize::try_from(renewed).unwrap_or(usize::MAX))
    }
}
