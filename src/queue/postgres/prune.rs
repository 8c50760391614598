//! Pruning: finished batches past their retention are removed, with their
//! messages, in short transactions by a background task.

use std::sync::Weak;
use std::time::Duration;

use super::{Postgres, db};
use crate::domain::{millis, now_ms};
use crate::queue::Result;

/// Batches removed per prune statement, so no transaction grows large.
const PRUNE_CHUNK: i64 = 100;

/// When the background pruner first runs after `open`, and how often after that.
const PRUNE_FIRST: Duration = Duration::from_secs(60);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What [`Postgres::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pruned {
    pub batches: u64,
    pub messages: u64,
}

impl Postgres {
    /// Removes batches whose messages have all finished (sent, failed or cancelled)
    /// and were last touched more than `older_than` ago, with their messages. Frees
    /// their idempotency keys. Runs in short transactions; safe to run from many
    /// processes at once.
    pub(crate) async fn prune(&self, older_than: Duration) -> Result<Pruned> {
        let cutoff = now_ms().saturating_sub(millis(older_than));
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.prune).await.map_err(db)?;
        let mut pruned = Pruned::default();
        loop {
            let row = client
                .query_one(&stmt, &[&cutoff, &PRUNE_CHUNK])
                .await
                .map_err(db)?;
            let (batches, messages): (i64, i64) = (row.get(0), row.get(1));
            pruned.batches += batches.unsigned_abs();
            pruned.messages += messages.unsigned_abs();
            if batches < PRUNE_CHUNK {
                return Ok(pruned);
            }
        }
    }
}

/// Prunes every hour while the engine lives.
pub(super) fn spawn_pruner(engine: Weak<Postgres>, retention: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(PRUNE_FIRST).await;
        loop {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            match engine.prune(retention).await {
                Ok(pruned) if pruned.batches > 0 => tracing::info!(
                    batches = pruned.batches,
                    messages = pruned.messages,
                    "pruned finished batches past retention"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "pruning finished batches failed; will try again")
                }
            }
            drop(engine);
            tokio::time::sleep(PRUNE_EVERY).await;
        }
    });
}

/// Removes up to `$2` batches created before `$1` whose messages all finished
/// before `$1`, with their messages. Batches a control holds are left for next time.
pub(super) const PRUNE: &str = "
WITH doomed AS (
    SELECT b.seq FROM {s}.batches b
    WHERE b.created_at < $1
      AND NOT EXISTS (
          SELECT 1 FROM {s}.messages m
          WHERE m.id >= b.seq << 32 AND m.id < (b.seq + 1) << 32
            AND (m.state IN ('pending', 'sending', 'paused', 'unknown', 'held') OR m.updated_at >= $1))
    ORDER BY b.seq
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), messages AS (
    DELETE FROM {s}.messages m USING doomed d
    WHERE m.id >= d.seq << 32 AND m.id < (d.seq + 1) << 32
    RETURNING 1
), batches AS (
    DELETE FROM {s}.batches b USING doomed d WHERE b.seq = d.seq RETURNING 1
)
SELECT (SELECT COUNT(*) FROM batches), (SELECT COUNT(*) FROM messages)";
