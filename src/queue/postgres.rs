//! The PostgreSQL engine: Herald's tables in one schema of a PostgreSQL database,
//! shared by any number of Herald processes. Every engine call is one statement or
//! one transaction; claims take rows with `FOR UPDATE SKIP LOCKED`, so concurrent
//! claimers never wait on each other nor take the same message. Finished batches
//! are pruned in the background after a retention period.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, Transaction,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{
    Accepted, Arrival, BatchSummary, Begun, Claim, Claimed, Control, EARLY_RECEIPT_TTL_MS,
    EARLY_RECEIPTS_MAX, Engine, Error, Lease, MessageQuery, MessageRecord, NewBatch, NewMessage,
    Outcome, ReceiptEffect, ReceiptTarget, Result, Settlement, Stage, Staging, parse_batch_id,
    receipt_state, receipt_target,
};
use crate::domain::{
    BatchControl, BatchId, Channel, Counts, DeliveryReport, MessageState, message_id, now_ms,
};
use crate::ratelimit::{Bucket, Candidate, Cap, Limits, longest_window, pick, segment_bucket_key};

mod location;
mod records;
mod sql;

use location::{Location, describe, parse_location};
use sql::{MIGRATIONS, Sql, quote_ident};

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

/// The engine: a pool of connections and the statements, filled in for the schema.
/// Statements are prepared once per connection and cached.
pub(crate) struct Postgres {
    pool: Pool,
    sql: Arc<Sql>,
    /// Where to open the connection of each batch stored in chunks.
    config: tokio_postgres::Config,
}

/// Opens the PostgreSQL store at `url` (`postgres://user[:password]@host[:port]/db`,
/// optionally `?schema=NAME&retention_days=N`), applying migrations, and starts the
/// background pruner unless retention is 0.
pub(crate) async fn open(url: &url::Url) -> Result<Arc<Postgres>> {
    let location = parse_location(url.as_str())?;
    let engine = Arc::new(Postgres::connect(&location).await?);
    if let Some(retention) = location.retention {
        spawn_pruner(Arc::downgrade(&engine), retention);
    }
    Ok(engine)
}

impl Postgres {
    async fn connect(location: &Location) -> Result<Postgres> {
        let mut config = location.config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("herald");
        }
        let staging_config = config.clone();
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::Unavailable(format!("postgres: cannot build the pool: {e}")))?;
        let where_ = describe(&location.config);
        let mut client = pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => Error::Unavailable(format!(
                "cannot connect to PostgreSQL at {where_}: {}: check that the server is running and \
                 accepts TCP connections there, and the user, password and database in the store URL \
                 (this build connects without TLS)",
                cause(&e)
            )),
            other => pool_error(other),
        })?;
        migrate(&mut client, &location.schema).await?;
        Ok(Postgres {
            pool,
            sql: Arc::new(Sql::new(&location.schema)),
            config: staging_config,
        })
    }

    async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// The stored answer for an idempotency key and the hash of its request, if the
    /// key is taken: the same request replays it, another is a conflict.
    async fn replayed(&self, client: &Object, key: &str, hash: &str) -> Result<Option<Accepted>> {
        let replay = client.prepare_cached(&self.sql.replay).await.map_err(db)?;
        let Some(seen) = client.query_opt(&replay, &[&key]).await.map_err(db)? else {
            return Ok(None);
        };
        if seen.get::<_, Option<&str>>(1) != Some(hash) {
            return Err(Error::Conflict(format!(
                "the Idempotency-Key `{key}` was used before with a different request"
            )));
        }
        let report = serde_json::from_str(seen.get(2))
            .map_err(|e| Error::Corrupt(format!("bad stored report: {e}")))?;
        Ok(Some(Accepted::Replayed {
            id: parse_batch_id(seen.get(0))?,
            report,
        }))
    }

    /// Locks the bucket stored under `key` (creating it full, with `burst` tokens),
    /// and reads it with the server's clock.
    async fn lock_bucket(
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

    async fn store_bucket(&self, tx: &Transaction<'_>, key: &str, bucket: Bucket) -> Result<()> {
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
    async fn due_segments(
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
    async fn pick_capped(
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

    /// Applies one delivery report to the message it names; `None` when it names
    /// none (yet).
    async fn apply_receipt(
        &self,
        tx: &Transaction<'_>,
        provider: &str,
        report: &DeliveryReport,
        now: i64,
    ) -> Result<Option<ReceiptEffect>> {
        let candidates = tx
            .prepare_cached(&self.sql.receipt_candidates)
            .await
            .map_err(db)?;
        let rows = tx
            .query(&candidates, &[&provider, &report.provider_message_id])
            .await
            .map_err(db)?;
        let row = match receipt_target(
            rows.iter().map(|r| r.get::<_, &str>(2)),
            report.to.as_deref(),
        ) {
            ReceiptTarget::None => return Ok(None),
            ReceiptTarget::Ambiguous => return Ok(Some(ReceiptEffect::Ambiguous)),
            ReceiptTarget::One(i) => &rows[i],
        };
        let state: &str = row.get(1);
        let Some(next) = receipt_state(parse_state(state)?, report.delivered) else {
            return Ok(Some(ReceiptEffect::Unchanged));
        };
        let apply = tx
            .prepare_cached(&self.sql.apply_receipt)
            .await
            .map_err(db)?;
        tx.execute(
            &apply,
            &[
                &row.get::<_, i64>(0),
                &next.as_str(),
                &report.code,
                &report.at_ms.unwrap_or(now),
                &now,
                &state,
            ],
        )
        .await
        .map_err(db)?;
        Ok(Some(ReceiptEffect::Applied {
            to: row.get(2),
            channel: parse_channel(row.get(3))?,
        }))
    }

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
fn spawn_pruner(engine: Weak<Postgres>, retention: Duration) {
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

async fn migrate(client: &mut Object, schema: &str) -> Result<()> {
    let quoted = quote_ident(schema);
    let tx = client.transaction().await.map_err(db)?;
    // Concurrent starts take turns, so the schema is created and migrated once.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await
        .map_err(db)?;
    // Only create what is missing: CREATE SCHEMA needs a privilege on the database
    // that a user of an existing schema need not have.
    let exists = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map_err(db)?
        .is_some();
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {quoted}"))
            .await
            .map_err(db)?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {quoted}.herald_schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at BIGINT NOT NULL
         )"
    ))
    .await
    .map_err(db)?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {quoted}.herald_schema_version"),
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    let latest = i32::try_from(MIGRATIONS.len()).expect("a handful of migrations");
    if current > latest {
        return Err(Error::Corrupt(format!(
            "the PostgreSQL schema `{schema}` has version {current}, this herald knows up to {latest}: upgrade herald"
        )));
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.batch_execute(&sql.replace("{s}", &quoted))
            .await
            .map_err(db)?;
        tx.execute(
            &format!(
                "INSERT INTO {quoted}.herald_schema_version (version, applied_at) VALUES ($1, $2)"
            ),
            &[&version, &now_ms()],
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

#[async_trait]
impl Engine for Postgres {
    async fn accept(&self, batch: NewBatch) -> Result<Accepted> {
        let client = self.client().await?;
        let insert = client.prepare_cached(&self.sql.accept).await.map_err(db)?;
        let (key, hash) = match &batch.idempotency {
            Some(i) => (Some(i.key.as_str()), Some(i.request_hash.as_str())),
            None => (None, None),
        };
        let columns = Columns::of(&batch.messages);
        let report = batch.report.to_string();
        // A replay can race with pruning of the batch it replays: then the key is
        // free again and the next round stores the batch.
        for _ in 0..3 {
            let head = BatchHead::of(&batch);
            let mut params = head.params(&batch);
            params.push(&report);
            params.extend(columns.params());
            params.push(&batch.template_id);
            let stored = client.query_opt(&insert, &params).await.map_err(db)?;
            if stored.is_some() {
                return Ok(Accepted::New(batch.id));
            }
            let (Some(key), Some(hash)) = (key, hash) else {
                return Err(Error::Corrupt(
                    "a batch without an idempotency key was not stored".into(),
                ));
            };
            if let Some(replayed) = self.replayed(&client, key, hash).await? {
                return Ok(replayed);
            }
        }
        Err(Error::Unavailable(format!(
            "the Idempotency-Key `{}` keeps being taken and released: try again",
            key.unwrap_or_default()
        )))
    }

    async fn begin(&self, batch: NewBatch, arrival: Arrival) -> Result<Begun> {
        if arrival == Arrival::AtHand {
            // Gathered and stored by one accept, as fast as the chunks are made.
            return Ok(Begun::Staging(Staging::gather(batch)));
        }
        // A connection of its own, outside the pool, holding one transaction from
        // the batch row to the last chunk: if this process dies or gives up, the
        // connection closes and the server rolls everything back.
        let (client, connection) = self.config.connect(NoTls).await.map_err(db)?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a staging connection to PostgreSQL ended");
            }
        });
        client.batch_execute("BEGIN").await.map_err(db)?;
        let (key, hash) = match &batch.idempotency {
            Some(i) => (Some(i.key.as_str()), Some(i.request_hash.as_str())),
            None => (None, None),
        };
        let head = BatchHead::of(&batch);
        let mut params = head.params(&batch);
        params.push(&batch.template_id);
        let row = client
            .query_opt(&self.sql.stage_batch, &params)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            // The key is taken (a batch with it committed while we waited).
            let (Some(key), Some(hash)) = (key, hash) else {
                return Err(Error::Corrupt("a batch row was not stored".into()));
            };
            let pooled = self.client().await?;
            return match self.replayed(&pooled, key, hash).await? {
                Some(replayed) => Ok(Begun::Answered(replayed)),
                None => Err(Error::Unavailable(format!(
                    "the Idempotency-Key `{key}` was taken and released: try again"
                ))),
            };
        };
        Ok(Begun::Staging(Staging::new(Box::new(PgStaging {
            client,
            connection,
            sql: self.sql.clone(),
            seq: row.get(0),
            batch,
        }))))
    }

    async fn claim(
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
                let requeue = client.prepare_cached(&self.sql.requeue).await.map_err(db)?;
                let claim = client.prepare_cached(&self.sql.claim).await.map_err(db)?;
                // Both statements go out before either answer is awaited (the client
                // pipelines them), so this is one round trip; each commits on its own,
                // the requeue first, so the claim sees what it requeued.
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let requeue_params: [&(dyn ToSql + Sync); 1] = [&now];
                let claim_params: [&(dyn ToSql + Sync); 5] =
                    [&provider, &now, &limit, &token, &until];
                let (requeued, rows) = tokio::join!(
                    client.execute(&requeue, &requeue_params),
                    client.query(&claim, &claim_params),
                );
                if let Err(e) = requeued {
                    // The claim stands (its rows are leased now); the next claim requeues.
                    tracing::warn!(error = %db(e), "requeueing expired leases failed; will try again");
                }
                rows.map_err(db)?
            }
            _ => {
                // Limited claims for one provider take turns: the bucket's row lock
                // and the caps' advisory lock are held to the end of the transaction,
                // across every process on the store.
                let tx = client.transaction().await.map_err(db)?;
                let requeue = tx.prepare_cached(&self.sql.requeue).await.map_err(db)?;
                tx.execute(&requeue, &[&now]).await.map_err(db)?;
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
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
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
                template: None,
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
        Ok(Claim::Messages(
            claimed.into_iter().map(|(_, claim)| claim).collect(),
        ))
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<()> {
        let n = settlements.len();
        let (mut ids, mut tokens, mut kinds, mut at, mut errors, mut provider_ids) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut sent_by = Vec::with_capacity(n);
        for Settlement {
            lease,
            outcome,
            sent_by: by,
        } in &settlements
        {
            sent_by.push(by.as_deref());
            ids.push(lease.row);
            tokens.push(lease.token);
            let (kind, when, error, provider_id) = match outcome {
                Outcome::Sent {
                    provider_message_id,
                } => ("sent", None, None, provider_message_id.as_deref()),
                Outcome::Confirmed {
                    provider_message_id,
                } => ("confirmed", None, None, provider_message_id.as_deref()),
                Outcome::Retry { at_ms, error } => {
                    ("retry", Some(*at_ms), Some(error.as_str()), None)
                }
                Outcome::Unknown { at_ms, error } => {
                    ("unknown", Some(*at_ms), Some(error.as_str()), None)
                }
                Outcome::Failed { error } => ("failed", None, Some(error.as_str()), None),
                Outcome::Release { at_ms } => ("release", Some(*at_ms), None, None),
            };
            kinds.push(kind);
            at.push(when);
            errors.push(error);
            provider_ids.push(provider_id);
        }
        let now = now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let lock = tx
            .prepare_cached(&self.sql.lock_receipts_shared)
            .await
            .map_err(db)?;
        let settle = tx.prepare_cached(&self.sql.settle).await.map_err(db)?;
        tx.execute(&lock, &[]).await.map_err(db)?;
        let rows = tx
            .query(
                &settle,
                &[
                    &ids,
                    &tokens,
                    &kinds,
                    &at,
                    &errors,
                    &provider_ids,
                    &now,
                    &sent_by,
                ],
            )
            .await
            .map_err(db)?;
        let (providers, sent_ids): (Vec<&str>, Vec<&str>) = rows
            .iter()
            .filter_map(|r| Some((r.get::<_, Option<&str>>(0)?, r.get::<_, Option<&str>>(1)?)))
            .unzip();
        if !providers.is_empty() {
            let held = tx
                .prepare_cached(&self.sql.held_receipts)
                .await
                .map_err(db)?;
            let forget = tx
                .prepare_cached(&self.sql.forget_receipt)
                .await
                .map_err(db)?;
            for row in tx
                .query(&held, &[&providers, &sent_ids])
                .await
                .map_err(db)?
            {
                let report = DeliveryReport {
                    provider_message_id: row.get(2),
                    to: row.get(3),
                    delivered: row.get(4),
                    code: row.get(5),
                    at_ms: row.get(6),
                };
                if self
                    .apply_receipt(&tx, row.get(1), &report, now)
                    .await?
                    .is_some()
                {
                    tx.execute(&forget, &[&row.get::<_, i64>(0)])
                        .await
                        .map_err(db)?;
                }
            }
        }
        tx.commit().await.map_err(db)
    }

    async fn apply_receipts(
        &self,
        provider: &str,
        reports: Vec<DeliveryReport>,
        now: i64,
    ) -> Result<Vec<ReceiptEffect>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let lock = tx
            .prepare_cached(&self.sql.lock_receipts)
            .await
            .map_err(db)?;
        tx.execute(&lock, &[]).await.map_err(db)?;
        let hold = tx
            .prepare_cached(&self.sql.hold_receipt)
            .await
            .map_err(db)?;
        let mut effects = Vec::with_capacity(reports.len());
        let mut held = false;
        for report in &reports {
            let effect = match self.apply_receipt(&tx, provider, report, now).await? {
                Some(effect) => effect,
                None => {
                    tx.execute(
                        &hold,
                        &[
                            &provider,
                            &report.provider_message_id,
                            &report.to,
                            &report.delivered,
                            &report.code,
                            &report.at_ms,
                            &now,
                        ],
                    )
                    .await
                    .map_err(db)?;
                    held = true;
                    ReceiptEffect::Held
                }
            };
            effects.push(effect);
        }
        if held {
            let expire = tx
                .prepare_cached(&self.sql.expire_receipts)
                .await
                .map_err(db)?;
            tx.execute(
                &expire,
                &[&(now - EARLY_RECEIPT_TTL_MS), &EARLY_RECEIPTS_MAX],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(effects)
    }

    async fn batch(&self, id: BatchId) -> Result<Option<BatchSummary>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.summary).await.map_err(db)?;
        let rows = client.query(&stmt, &[&id.to_string()]).await.map_err(db)?;
        summary(id, &rows)
    }

    async fn batches(&self, before: Option<BatchId>, limit: u32) -> Result<Vec<BatchSummary>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.batches).await.map_err(db)?;
        let rows = client
            .query(&stmt, &[&before.map(|b| b.to_string()), &i64::from(limit)])
            .await
            .map_err(db)?;
        let mut summaries = Vec::with_capacity(rows.len());
        for rows in rows.chunk_by(|a, b| a.get::<_, &str>(8) == b.get::<_, &str>(8)) {
            summaries.extend(summary(parse_batch_id(rows[0].get(8))?, rows)?);
        }
        Ok(summaries)
    }

    async fn pending(&self, provider: &str, cap: u64) -> Result<u64> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.pending).await.map_err(db)?;
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let row = client
            .query_one(&stmt, &[&provider, &cap])
            .await
            .map_err(db)?;
        Ok(row.get::<_, i64>(0).unsigned_abs())
    }

    async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.messages)
            .await
            .map_err(db)?;
        let from = query.after.map_or(0, |after| i64::from(after) + 1);
        let state = query.state.map(MessageState::as_str);
        let rows = client
            .query(
                &stmt,
                &[&id.to_string(), &from, &state, &i64::from(query.limit)],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let index = index_of(r.get(0));
                Ok(MessageRecord {
                    id: message_id(id, index),
                    index,
                    to: r.get(1),
                    reference: r.get(2),
                    state: parse_state(r.get(3))?,
                    provider: r.get(4),
                    attempts: attempts(r.get(5))?,
                    last_error: r.get(6),
                    provider_message_id: r.get(7),
                    created_at_ms: r.get(8),
                    updated_at_ms: r.get(9),
                    sent_at_ms: r.get(10),
                    receipt_code: r.get(11),
                    receipt_at_ms: r.get(12),
                })
            })
            .collect()
    }

    async fn control(&self, id: BatchId, action: Control) -> Result<Option<BatchSummary>> {
        let mut client = self.client().await?;
        let lock = client
            .prepare_cached(&self.sql.lock_batch)
            .await
            .map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        // Locked first: settlements and requeues read the control under a key-share
        // lock, so none of them can slip a message past this change.
        let Some(row) = tx.query_opt(&lock, &[&id.to_string()]).await.map_err(db)? else {
            return Ok(None);
        };
        let seq: i64 = row.get(0);
        let control = parse_control(row.get(1))?;
        if control == BatchControl::Cancelled && action != Control::Cancel {
            return Err(Error::Conflict("the batch is cancelled".into()));
        }
        let now = now_ms();
        let moves = match action {
            Control::Pause => Some((BatchControl::Paused, "paused", &["pending"][..])),
            Control::Resume => Some((BatchControl::Active, "pending", &["paused"][..])),
            Control::Cancel => Some((
                BatchControl::Cancelled,
                "cancelled",
                &["pending", "paused"][..],
            )),
            Control::Retry => None,
        };
        match moves {
            Some((to_control, to_state, from_states)) => {
                let stmt = tx.prepare_cached(&self.sql.set_control).await.map_err(db)?;
                tx.execute(
                    &stmt,
                    &[&seq, &to_control.as_str(), &to_state, &now, &from_states],
                )
                .await
                .map_err(db)?;
            }
            None => {
                let to_state = match control {
                    BatchControl::Paused => "paused",
                    _ => "pending",
                };
                let stmt = tx
                    .prepare_cached(&self.sql.retry_failed)
                    .await
                    .map_err(db)?;
                tx.execute(&stmt, &[&seq, &to_state, &now])
                    .await
                    .map_err(db)?;
            }
        }
        let stmt = tx.prepare_cached(&self.sql.summary).await.map_err(db)?;
        let rows = tx.query(&stmt, &[&id.to_string()]).await.map_err(db)?;
        let summary = summary(id, &rows)?;
        tx.commit().await.map_err(db)?;
        Ok(summary)
    }
}

/// A batch's summary from the rows of the summary statement: one per message state (one with
/// a NULL state for a batch without messages), none for an unknown batch.
fn summary(id: BatchId, rows: &[Row]) -> Result<Option<BatchSummary>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut counts = Counts::default();
    for row in rows {
        if let Some(state) = row.get::<_, Option<&str>>(6) {
            counts.add(parse_state(state)?, row.get::<_, i64>(7).unsigned_abs());
        }
    }
    Ok(Some(BatchSummary {
        id,
        channel: parse_channel(first.get(0))?,
        source: first.get(1),
        control: parse_control(first.get(2))?,
        priority: first.get(3),
        created_at_ms: first.get(4),
        send_at_ms: first.get(5),
        counts,
    }))
}

/// A message's index in its batch: the low 32 bits of its id.
fn index_of(id: i64) -> u32 {
    u32::try_from(id & 0xFFFF_FFFF).expect("masked to 32 bits")
}

fn attempts(n: i32) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Corrupt(format!("negative attempt count {n}")))
}

fn millis(d: Duration) -> i64 {
    crate::domain::millis(d)
}

fn parse_channel(s: &str) -> Result<Channel> {
    s.parse().map_err(Error::Corrupt)
}

fn parse_state(s: &str) -> Result<MessageState> {
    MessageState::parse(s).ok_or_else(|| Error::Corrupt(format!("unknown message state `{s}`")))
}

fn parse_control(s: &str) -> Result<BatchControl> {
    BatchControl::parse(s).ok_or_else(|| Error::Corrupt(format!("unknown control `{s}`")))
}

/// An error from the server or the connection, with the server's own words.
/// The values of a batch row that the statements storing it take first, as text
/// and numbers.
struct BatchHead<'a> {
    id: String,
    channel: &'a str,
    now: i64,
    key: Option<&'a str>,
    hash: Option<&'a str>,
}

impl<'a> BatchHead<'a> {
    fn of(batch: &'a NewBatch) -> Self {
        BatchHead {
            id: batch.id.to_string(),
            channel: batch.channel.as_str(),
            now: now_ms(),
            key: batch.idempotency.as_ref().map(|i| i.key.as_str()),
            hash: batch.idempotency.as_ref().map(|i| i.request_hash.as_str()),
        }
    }

    /// `$1` … `$8`: id, channel, source, priority, send_at, created_at, idempotency
    /// key and request hash.
    fn params(&'a self, batch: &'a NewBatch) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.channel,
            &batch.source,
            &batch.priority,
            &batch.send_at_ms,
            &self.now,
            &self.key,
            &self.hash,
        ]
    }
}

/// Messages as the columns that `UNNEST` turns back into rows.
struct Columns<'a> {
    idx: Vec<i64>,
    provider: Vec<&'a str>,
    to: Vec<&'a str>,
    reference: Vec<Option<&'a str>>,
    subject: Vec<Option<&'a str>>,
    body: Vec<&'a str>,
    segments: Vec<i32>,
    vars: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn of(messages: &'a [NewMessage]) -> Self {
        let n = messages.len();
        let mut c = Columns {
            idx: Vec::with_capacity(n),
            provider: Vec::with_capacity(n),
            to: Vec::with_capacity(n),
            reference: Vec::with_capacity(n),
            subject: Vec::with_capacity(n),
            body: Vec::with_capacity(n),
            segments: Vec::with_capacity(n),
            vars: Vec::with_capacity(n),
        };
        for m in messages {
            c.idx.push(i64::from(m.index));
            c.provider.push(&m.provider);
            c.to.push(&m.to);
            c.reference.push(m.reference.as_deref());
            c.subject.push(m.subject.as_deref());
            c.body.push(&m.body);
            c.segments
                .push(i32::try_from(m.segments).unwrap_or(i32::MAX));
            c.vars.push(m.vars.as_deref());
        }
        c
    }

    /// The columns in the order the statements take them.
    fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.idx,
            &self.provider,
            &self.to,
            &self.reference,
            &self.subject,
            &self.body,
            &self.segments,
            &self.vars,
        ]
    }
}

/// A batch being stored in chunks: one open transaction on a connection of its own.
struct PgStaging {
    client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
    sql: Arc<Sql>,
    seq: i64,
    batch: NewBatch,
}

#[async_trait]
impl Stage for PgStaging {
    async fn add(&mut self, messages: Vec<NewMessage>) -> Result<()> {
        let columns = Columns::of(&messages);
        let now = now_ms();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &self.seq,
            &self.batch.priority,
            &self.batch.send_at_ms,
            &now,
        ];
        params.extend(columns.params());
        self.client
            .execute(&self.sql.stage_messages, &params)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn commit(self: Box<Self>, report: serde_json::Value, _span: u32) -> Result<Accepted> {
        self.client
            .execute(&self.sql.stage_report, &[&self.seq, &report.to_string()])
            .await
            .map_err(db)?;
        self.client.batch_execute("COMMIT").await.map_err(db)?;
        drop(self.client);
        let _ = self.connection.await;
        Ok(Accepted::New(self.batch.id))
    }

    async fn discard(self: Box<Self>) {
        // Closing the connection rolls the transaction back.
        drop(self.client);
        let _ = self.connection.await;
    }
}

fn db(e: tokio_postgres::Error) -> Error {
    if e.is_closed() {
        return Error::Unavailable(
            "postgres: the connection to the server was lost: check that it is running and reachable"
                .into(),
        );
    }
    Error::Unavailable(format!("postgres: {}", cause(&e)))
}

fn cause(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{} ({})", db.message(), db.code().code()),
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    }
}

fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) if e.as_db_error().is_none() => Error::Unavailable(format!(
            "postgres: cannot connect: {}: check that the server is running and reachable",
            cause(&e)
        )),
        PoolError::Backend(e) => db(e),
        PoolError::Timeout(_) => Error::Unavailable(
            "postgres: timed out waiting for a connection: check that the server is reachable and not \
             overloaded"
                .into(),
        ),
        other => Error::Unavailable(format!("postgres: {other}")),
    }
}

/// The advisory lock that serializes migrations of one schema (FNV-1a, so every
/// Herald version agrees on it).
fn lock_key(schema: &str) -> i64 {
    let hash = format!("herald schema {schema}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::test_store;
