//! The PostgreSQL engine's retention (see [`crate::queue::prune`]): finished
//! batches past the age and their messages (with their segments' ids), a
//! bounded number of messages per transaction, then replies, deliveries and held
//! receipts. Doomed batches are locked `FOR UPDATE SKIP LOCKED`, so processes
//! pruning at once split the work and a batch control waits for one short step
//! at most. PostgreSQL reuses the freed space itself (autovacuum).

use async_trait::async_trait;

use super::{Postgres, db};
use crate::queue::Result;
use crate::queue::prune::{Prune, Pruned};

/// How many batches one step prunes from, at most.
const BATCHES_PER_STEP: i64 = 100;

/// The statements, with the schema filled in.
pub(super) struct PruneSql {
    doomed: String,
    messages: String,
    left: String,
    batch: String,
    replies: String,
    deliveries: String,
    receipts: String,
}

impl PruneSql {
    pub(super) fn new(fill: &dyn Fn(&str) -> String) -> PruneSql {
        PruneSql {
            doomed: fill(DOOMED),
            messages: fill(
                "WITH doomed AS (
                     SELECT id FROM {s}.messages WHERE id >= $1::bigint << 32 AND id < ($1::bigint + 1) << 32
                     ORDER BY id LIMIT $2
                 ), segments AS (
                     DELETE FROM {s}.message_segments WHERE message IN (SELECT id FROM doomed)
                 )
                 DELETE FROM {s}.messages WHERE id IN (SELECT id FROM doomed)",
            ),
            left: fill(
                "SELECT EXISTS (SELECT 1 FROM {s}.messages
                     WHERE id >= $1::bigint << 32 AND id < ($1::bigint + 1) << 32)",
            ),
            batch: fill("DELETE FROM {s}.batches WHERE seq = $1"),
            replies: fill(
                "DELETE FROM {s}.replies WHERE seq = ANY(ARRAY(
                     SELECT seq FROM {s}.replies WHERE received_at < $1
                     ORDER BY received_at LIMIT $2))",
            ),
            deliveries: fill(
                "DELETE FROM {s}.deliveries WHERE seq = ANY(ARRAY(
                     SELECT seq FROM {s}.deliveries
                     WHERE first_at < $1 AND state IN ('posted', 'failed')
                     ORDER BY first_at LIMIT $2))",
            ),
            receipts: fill(
                "DELETE FROM {s}.early_receipts WHERE id = ANY(ARRAY(
                     SELECT id FROM {s}.early_receipts WHERE received_at < $1 LIMIT $2))",
            ),
        }
    }
}

/// The oldest finished batch after seq `$2` created before `$1` whose messages
/// were all last touched before it, locked; one another process prunes is
/// skipped. One at a time: telling that a batch has finished reads its
/// messages, so a step reads no more batches than it prunes.
const DOOMED: &str = "
SELECT b.seq FROM {s}.batches b
WHERE b.created_at < $1 AND b.seq > $2
  AND NOT EXISTS (
      SELECT 1 FROM {s}.messages m
      WHERE m.id >= b.seq << 32 AND m.id < (b.seq + 1) << 32
        AND (m.state IN ('pending', 'sending', 'paused', 'unknown') OR m.updated_at >= $1))
ORDER BY b.seq
LIMIT 1
FOR UPDATE SKIP LOCKED";

#[async_trait]
impl Prune for Postgres {
    async fn prune_ledger(&self, before_ms: i64, limit: u32) -> Result<Pruned> {
        let sql = &self.sql.prune;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let mut pruned = Pruned::default();
        let mut budget = i64::from(limit);
        let mut after = 0_i64;
        for _ in 0..BATCHES_PER_STEP {
            if budget <= 0 {
                break;
            }
            let Some(row) = tx
                .query_opt(&sql.doomed, &[&before_ms, &after])
                .await
                .map_err(db)?
            else {
                break;
            };
            let seq: i64 = row.get(0);
            after = seq;
            let removed = tx
                .execute(&sql.messages, &[&seq, &budget])
                .await
                .map_err(db)?;
            pruned.messages += removed;
            budget -= i64::try_from(removed).unwrap_or(i64::MAX);
            let left: bool = tx.query_one(&sql.left, &[&seq]).await.map_err(db)?.get(0);
            if !left {
                tx.execute(&sql.batch, &[&seq]).await.map_err(db)?;
                pruned.batches += 1;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(pruned)
    }

    async fn prune_beside(&self, before_ms: i64, limit: u32) -> Result<Pruned> {
        let sql = &self.sql.prune;
        let limit = i64::from(limit);
        let client = self.client().await?;
        let delete = |statement: &str| {
            let client = &client;
            let statement = statement.to_owned();
            async move {
                client
                    .execute(&statement, &[&before_ms, &limit])
                    .await
                    .map_err(db)
            }
        };
        Ok(Pruned {
            replies: delete(&sql.replies).await?,
            deliveries: delete(&sql.deliveries).await?,
            receipts: delete(&sql.receipts).await?,
            ..Pruned::default()
        })
    }
}
