//! The PostgreSQL engine: Herald's tables in one schema of a PostgreSQL database,
//! shared by any number of Herald processes. Every engine call is one statement or
//! one transaction; claims take rows with `FOR UPDATE SKIP LOCKED`, so concurrent
//! claimers never wait on each other nor take the same message.
//!
//! This file holds the engine, its connection pool and the [`Engine`] impl; each
//! call is written in the room named for it, beside the SQL it runs:
//! - `location`: the store URL's connection settings, schema and retention;
//! - `schema`: the versioned migrations and how a store is brought up to date;
//! - `sql`: every statement filled in for the schema, once, at open;
//! - `accept`: a whole batch in one statement, idempotent replays, the column binding;
//! - `staging`: a batch stored in chunks on a transaction of its own;
//! - `claim` and `limit`: leasing due messages, within rate buckets and recipient caps;
//! - `settle` and `receipts`: outcomes in bulk, delivery receipts applied or held;
//! - `record`: events recorded as deliveries in the statements of the changes, and
//!   `batch.finished`; `outbox`: claiming, settling, listing, replaying and pruning
//!   deliveries;
//! - `ledger`: summaries, message pages, pending counts and batch controls;
//! - `prune`: removing finished batches and the records beside them past
//!   retention; `audit`: the audit trail;
//! - `spend`: charges against batches' caps and providers' days;
//! - `records`: templates, suppressions, send fingerprints and ingest markers;
//! - `replies`: the replies ledger;
//! - `search`: messages across batches by recipient or ref; `erase`: a person's
//!   address hashed everywhere but the suppression list.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::NoTls;

use super::CapStore;
use super::spend::{Charge, Charged, Micros};
use super::{
    Accepted, Arrival, BatchAction, BatchSummary, Begun, Claim, Engine, Error, Lease, MessageQuery,
    MessageRecord, NewBatch, ReceiptEffect, Result, Settlement,
};
use crate::domain::{BatchControl, BatchId, Channel, DeliveryReport, MessageState};
use crate::ratelimit::Limits;

mod accept;
mod audit;
mod claim;
mod due;
mod erase;
mod expiry;
mod lease;
mod ledger;
mod limit;
mod location;
mod outbox;
mod prune;
mod receipts;
mod record;
mod records;
mod replies;
mod schema;
mod search;
mod settle;
mod spend;
mod sql;
mod staging;

use location::{Location, describe};
use schema::migrate;
use sql::Sql;

/// The engine: a pool of connections and the statements, filled in for the schema.
/// Statements are prepared once per connection and cached.
pub(crate) struct Postgres {
    pool: Pool,
    sql: Arc<Sql>,
    /// Where to open the connection of each batch stored in chunks.
    config: tokio_postgres::Config,
}

/// Opens the PostgreSQL store at `url` (`postgres://user[:password]@host[:port]/db`,
/// optionally `?schema=NAME`), applying migrations.
pub(crate) async fn open(url: &url::Url) -> Result<Arc<Postgres>> {
    let location = Location::parse(url)?;
    Ok(Arc::new(Postgres::connect(&location).await?))
}

/// The retention the store URL gives in its older spelling, `retention_days=N`
/// (`Some(0)`: keep everything), if it gives one; `[retention] days` replaced it.
pub(crate) fn url_retention_days(url: &url::Url) -> Result<Option<u32>> {
    Ok(Location::parse(url)?.retention_days)
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
}

#[async_trait]
impl Engine for Postgres {
    async fn accept(&self, batch: NewBatch) -> Result<Accepted> {
        self.accept_batch(batch).await
    }

    async fn begin(&self, batch: NewBatch, arrival: Arrival) -> Result<Begun> {
        self.stage(batch, arrival).await
    }

    async fn claim(
        &self,
        provider: &str,
        limit: usize,
        lease: Duration,
        limits: &Limits,
    ) -> Result<Claim> {
        self.claim_due(provider, limit, lease, limits).await
    }

    async fn renew(&self, leases: Vec<Lease>, lease: Duration) -> Result<usize> {
        self.renew_leases(leases, lease).await
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<Vec<super::AppliedReceipt>> {
        self.settle_leases(settlements).await
    }

    async fn batch(&self, id: BatchId) -> Result<Option<BatchSummary>> {
        self.summary(id).await
    }

    async fn window(&self, id: BatchId) -> Result<Option<String>> {
        self.stored_window(id).await
    }

    async fn batches(&self, before: Option<BatchId>, limit: u32) -> Result<Vec<BatchSummary>> {
        self.summaries(before, limit).await
    }

    async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>> {
        self.message_page(id, query).await
    }

    async fn pending(&self, provider: &str, cap: u64) -> Result<u64> {
        self.count_pending(provider, cap).await
    }

    async fn next_due(&self, provider: &str) -> Result<Option<i64>> {
        self.earliest_due(provider).await
    }

    async fn control(&self, id: BatchId, action: BatchAction) -> Result<Option<BatchSummary>> {
        self.apply_control(id, action).await
    }

    async fn expire(&self, now_ms: i64, limit: u64) -> Result<u64> {
        self.sweep_expired(now_ms, limit).await
    }

    async fn apply_receipts(
        &self,
        provider: &str,
        reports: Vec<DeliveryReport>,
        now: i64,
    ) -> Result<Vec<ReceiptEffect>> {
        self.apply_reports(provider, reports, now).await
    }
}

#[async_trait]
impl CapStore for Postgres {
    async fn charge(&self, charges: Vec<Charge>) -> Result<Vec<Charged>> {
        self.charge_claimed(charges).await
    }

    async fn raise_cap(&self, id: BatchId, max_cost: Micros) -> Result<Option<()>> {
        self.raise_batch_cap(id, max_cost).await
    }

    async fn recent_sends(
        &self,
        owner: &str,
        since_ms: i64,
        addresses: Vec<String>,
    ) -> Result<std::collections::HashMap<String, Vec<i64>>> {
        self.sends_since(owner, since_ms, addresses).await
    }

    async fn spent(&self, provider: &str, day: &str) -> Result<Micros> {
        self.spent_on(provider, day).await
    }
}

/// A message's index in its batch: the low 32 bits of its id.
fn index_of(id: i64) -> u32 {
    u32::try_from(id & 0xFFFF_FFFF).expect("masked to 32 bits")
}

fn attempts(n: i32) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Corrupt(format!("negative attempt count {n}")))
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

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::{row_versions, segment_rows, test_store};
