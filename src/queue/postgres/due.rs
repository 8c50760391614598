//! The PostgreSQL engine's next due time: when a claim for a provider could next
//! take a message, read through indexes so that an idle claimer writes nothing.

use super::{Postgres, db};
use crate::queue::Result;

/// The earliest of a provider's pending messages' due times (the `messages_due`
/// index), its leases' ends and its unknown outcomes' next checks. $1: provider.
pub(super) const NEXT_DUE: &str = "SELECT LEAST(
    (SELECT MIN(available_at) FROM {s}.messages WHERE state = 'pending' AND provider = $1),
    (SELECT MIN(lease_until) FROM {s}.messages WHERE state = 'sending' AND provider = $1),
    (SELECT MIN(available_at) FROM {s}.messages WHERE state = 'unknown' AND provider = $1))";

impl Postgres {
    /// [`Engine::next_due`](crate::queue::Engine::next_due): one read-only statement.
    pub(super) async fn earliest_due(&self, provider: &str) -> Result<Option<i64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.next_due)
            .await
            .map_err(db)?;
        let row = client.query_one(&stmt, &[&provider]).await.map_err(db)?;
        Ok(row.get::<_, Option<i64>>(0))
    }
}
