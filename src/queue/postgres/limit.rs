//! Rate limits in a claim: the token buckets, stored on the server and read by its
//! clock, and the per-recipient caps, which defer what they do not allow.

use std::collections::HashMap;

use deadpool_postgres::Transaction;

use super::{Postgres, db};
use crate::queue::Result;
use crate::ratelimit::{Bucket, Candidate, Cap, longest_window, pick};

/// The server's clock in ms: rate buckets are counted on one clock, whichever
/// machine claims.
pub(super) const CLOCK: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Locks provider `$1`'s bucket until the transaction ends (creating it full, with
/// `$2` tokens, if it is new) and returns it with the server's clock.
pub(super) const TAKE_BUCKET: &str = "
INSERT INTO {s}.rate_buckets AS r (provider, tokens, at) VALUES ($1, $2, {clock})
ON CONFLICT (provider) DO UPDATE SET provider = r.provider
RETURNING r.tokens, r.at, {clock}";

pub(super) const STORE_BUCKET: &str =
    "UPDATE {s}.rate_buckets SET tokens = $2, at = $3 WHERE provider = $1";

/// The segments of up to `$3` due messages of provider `$1`, in due order.
pub(super) const DUE_SEGMENTS: &str = "
SELECT segments FROM {s}.messages
WHERE state = 'pending' AND provider = $1 AND available_at <= $2
ORDER BY priority DESC, available_at, id
LIMIT $3";

/// Makes capped claims for provider `$1` take turns until the transaction ends.
pub(super) const LOCK_CAPS: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended({schema} || ':recipient caps:' || $1, 0))";

/// Up to `$3` due messages of provider `$1`, in due order, locked for this claim.
pub(super) const CANDIDATES: &str = "
SELECT id, to_addr FROM {s}.messages
WHERE state = 'pending' AND provider = $1 AND available_at <= $2
ORDER BY priority DESC, available_at, id
LIMIT $3
FOR UPDATE SKIP LOCKED";

pub(super) const RECENT_SENDS: &str = "
SELECT to_addr, at FROM {s}.recipient_sends
WHERE provider = $1 AND at > $2 AND to_addr = ANY($3::text[])";

impl Postgres {
    /// [`Engine::recent_sends`](crate::queue::Engine::recent_sends).
    pub(super) async fn sends_since(
        &self,
        owner: &str,
        since: i64,
        tos: Vec<String>,
    ) -> Result<HashMap<String, Vec<i64>>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.recent_sends)
            .await
            .map_err(db)?;
        let mut recent: HashMap<String, Vec<i64>> = HashMap::new();
        for row in client
            .query(&stmt, &[&owner, &since, &tos])
            .await
            .map_err(db)?
        {
            recent.entry(row.get(0)).or_default().push(row.get(1));
        }
        Ok(recent)
    }
}

pub(super) const DEFER: &str = "
UPDATE {s}.messages m SET available_at = d.at, updated_at = $3
FROM UNNEST($1::bigint[], $2::bigint[]) AS d(id, at)
WHERE m.id = d.id";

pub(super) const RECORD_SENDS: &str = "
INSERT INTO {s}.recipient_sends (provider, to_addr, at) SELECT $1, t, $2 FROM UNNEST($3::text[]) AS t";

pub(super) const PRUNE_SENDS: &str = "
DELETE FROM {s}.recipient_sends WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {s}.recipient_sends WHERE provider = $1 AND at <= $2 LIMIT 1000))";

impl Postgres {
    /// Locks the bucket stored under `key` (creating it full, with `burst` tokens),
    /// and reads it with the server's clock.
    pub(super) async fn lock_bucket(
        &self,
        tx: &Transaction<'_>,
        key: &str,
        burst: f64,
    ) -> Result<(Bucket, i64)> {
        let take = tx.prepare_cached(&self.sql.take_bucket).await.map_err(db)?;
        let row = tx.query_one(&take, &[&key, &burst]).await.map_err(db)?;
        let stored = Bucket {
            tokens: row.get(0),
            at_ms: row.get(1),
        };
        Ok((stored, row.get(2)))
    }

    pub(super) async fn store_bucket(
        &self,
        tx: &Transaction<'_>,
        key: &str,
        bucket: Bucket,
    ) -> Result<()> {
        let store = tx
            .prepare_cached(&self.sql.store_bucket)
            .await
            .map_err(db)?;
        tx.execute(&store, &[&key, &bucket.tokens, &bucket.at_ms])
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The segments of up to `limit` due messages of `provider`, in due order.
    pub(super) async fn due_segments(
        &self,
        tx: &Transaction<'_>,
        provider: &str,
        limit: usize,
        now: i64,
    ) -> Result<Vec<u32>> {
        let due = tx
            .prepare_cached(&self.sql.due_segments)
            .await
            .map_err(db)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = tx
            .query(&due, &[&provider, &now, &limit])
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| u32::try_from(r.get::<_, i32>(0)).unwrap_or(1))
            .collect())
    }

    /// The ids of up to `limit` due messages of `provider` that their recipients'
    /// caps at `owner` allow (see [`Limits::owner`]), locked, in due order. Defers
    /// the others to when their caps allow and records a send to each chosen
    /// recipient.
    pub(super) async fn pick_capped(
        &self,
        tx: &Transaction<'_>,
        provider: &str,
        owner: &str,
        caps: &[Cap],
        limit: usize,
        now: i64,
    ) -> Result<Vec<i64>> {
        let lock = tx.prepare_cached(&self.sql.lock_caps).await.map_err(db)?;
        tx.execute(&lock, &[&owner]).await.map_err(db)?;
        let candidates = tx.prepare_cached(&self.sql.candidates).await.map_err(db)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let candidates: Vec<Candidate<i64>> = tx
            .query(&candidates, &[&provider, &now, &limit])
            .await
            .map_err(db)?
            .iter()
            .map(|r| Candidate {
                key: r.get(0),
                to: r.get(1),
            })
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let since = now - longest_window(caps);
        let tos: Vec<&str> = candidates.iter().map(|c| c.to.as_str()).collect();
        let recent_sends = tx
            .prepare_cached(&self.sql.recent_sends)
            .await
            .map_err(db)?;
        let mut recent: HashMap<String, Vec<i64>> = HashMap::new();
        for row in tx
            .query(&recent_sends, &[&owner, &since, &tos])
            .await
            .map_err(db)?
        {
            recent.entry(row.get(0)).or_default().push(row.get(1));
        }
        let picked = pick(caps, candidates, recent, now);
        let (deferred, until): (Vec<i64>, Vec<i64>) = picked.defer.iter().copied().unzip();
        let chosen: Vec<&str> = picked.claim.iter().map(|c| c.to.as_str()).collect();
        let defer = tx.prepare_cached(&self.sql.defer).await.map_err(db)?;
        let record = tx
            .prepare_cached(&self.sql.record_sends)
            .await
            .map_err(db)?;
        let prune = tx.prepare_cached(&self.sql.prune_sends).await.map_err(db)?;
        tx.execute(&defer, &[&deferred, &until, &now])
            .await
            .map_err(db)?;
        tx.execute(&record, &[&owner, &now, &chosen])
            .await
            .map_err(db)?;
        tx.execute(&prune, &[&owner, &since]).await.map_err(db)?;
        Ok(picked.claim.into_iter().map(|c| c.key).collect())
    }
}
