//! The embedded engine: one SQLite database in WAL mode with `synchronous = FULL`,
//! so a committed transaction survives a crash or power loss. One connection writes
//! (behind a mutex, so writes never contend for SQLite's lock) and one reads; both
//! run on Tokio's blocking pool. Every engine call is one transaction, whatever the
//! number of messages it touches.
//!
//! This file holds the engine's handle, `open` and the [`Engine`] impl; its rooms:
//! - `schema`: the versioned migrations, `migrate`, stored states and channels;
//! - `connection`: connecting, the write transaction, the blocking pool, the WAL
//!   checkpointer;
//! - `accept`: the batch row, idempotent replay, the multi-row message inserts;
//! - `staging`: batches stored in chunks, staged or on a held writer, and the sweep;
//! - `claim`: claims under a lease, rate buckets, recipient caps, templates;
//! - `lease`: renewing leases, and ending a gone process's at the first claim;
//! - `settle`, `receipts`: what becomes of a claimed message and its receipts;
//! - `ledger`: batch summaries and pages of messages, control of a batch;
//! - `expiry`: deadlines, at claim and by the sweep;
//! - `spend`: charges against batches' caps and providers' days;
//! - `record`: events recorded as deliveries in the transactions of the changes;
//!   `outbox`: claiming, settling, listing, replaying and pruning deliveries;
//! - `records`: stored templates, suppressions, fingerprints, unacked markers;
//! - `replies`: the replies ledger;
//! - `search`: messages across batches by recipient or ref; `erase`: a person's
//!   address hashed everywhere but the suppression list.
//! - `prune`: retention, and handing freed pages back; `audit`: the audit trail.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;

use super::CapStore;
use super::spend::{Charge, Charged, Micros};
use super::{
    Accepted, Arrival, BatchAction, BatchSummary, Begun, Claim, Delivery, DeliveryKey,
    DeliveryOutcome, DeliveryRecord, DeliveryState, Engine, Error, Lease, MessageQuery,
    MessageRecord, NewBatch, Outbox, ReceiptEffect, Replay, Result, Settlement,
};
use crate::domain::{BatchId, DeliveryReport, now_ms};
use crate::ratelimit::Limits;

mod accept;
mod audit;
mod claim;
mod connection;
mod due;
mod erase;
mod expiry;
mod lease;
mod ledger;
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
mod staging;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::segment_rows;

use connection::{connect, run_blocking, spawn_checkpointer, unavailable, write_transaction};
// For the transactions of other modules' stores (replies), as `outbox` documents.
#[allow(unused_imports)]
pub(crate) use record::{record_deliveries, record_message_events};
use schema::migrate;
use staging::sweep_staging;

/// The embedded engine's handle: cheap to clone, every clone on the same store.
#[derive(Clone)]
pub(crate) struct Sqlite {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    /// What claims remember of stored batches.
    known: claim::Known,
    /// This process's place among the store's claimers, taken at the first claim.
    claimers: lease::Claimers,
    /// The store's one poster of webhook deliveries, and its leases.
    posting: outbox::Posting,
}

impl Sqlite {
    /// Opens (creating if needed) the store in directory `dir` and applies the schema.
    pub(crate) async fn open(dir: &Path) -> Result<Sqlite> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| {
                Error::Unavailable(format!(
                    "cannot create the store directory {}: {e}",
                    dir.display()
                ))
            })?;
            let path = dir.join("herald.db");
            let mut writer = connect(&path)?;
            prune::use_incremental_vacuum(&writer)?;
            migrate(&mut writer)?;
            // Uploads a dead process left in staging go now, not only at the next
            // upload (other processes' live ones are younger than the deadline).
            let tx = write_transaction(&mut writer)?;
            let swept = sweep_staging(&tx, now_ms())?;
            tx.commit().map_err(unavailable)?;
            if swept > 0 {
                tracing::info!(
                    batches = swept,
                    "removed batches abandoned while being stored"
                );
            }
            // Checkpoints run on their own connection and thread, so a commit never
            // pays for copying the WAL into the database; the writer only does it
            // itself (as a safety net) if the WAL grows past ~80 MB.
            writer
                .execute_batch("PRAGMA wal_autocheckpoint = 20000;")
                .map_err(unavailable)?;
            let writer = Arc::new(Mutex::new(writer));
            spawn_checkpointer(connect(&path)?, Arc::downgrade(&writer));
            let reader = connect(&path)?;
            Ok(Sqlite {
                writer,
                reader: Arc::new(Mutex::new(reader)),
                known: claim::Known::default(),
                claimers: lease::Claimers::new(&dir),
                posting: outbox::Posting::new(&dir),
            })
        })
        .await
        .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        run_blocking(self.writer.clone(), f).await
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        run_blocking(self.reader.clone(), f).await
    }
}

#[async_trait]
impl Engine for Sqlite {
    async fn accept(&self, batch: NewBatch) -> Result<Accepted> {
        self.write(move |conn| accept::accept(conn, batch)).await
    }

    async fn begin(&self, batch: NewBatch, arrival: Arrival) -> Result<Begun> {
        match arrival {
            Arrival::AtHand => staging::begin_held(self.writer.clone(), batch).await,
            Arrival::Streamed => staging::begin_staged(self.writer.clone(), batch).await,
        }
    }

    async fn claim(
        &self,
        provider: &str,
        limit: usize,
        lease: Duration,
        limits: &Limits,
    ) -> Result<Claim> {
        let request = claim::Request {
            provider: provider.to_owned(),
            owner: limits.owner_or(provider).to_owned(),
            limit,
            lease,
            limits: limits.clone(),
        };
        self.claimers.join(self.writer.clone()).await?;
        let known = self.known.clone();
        self.write(move |conn| claim::claim(conn, &request, &known))
            .await
    }

    async fn renew(&self, leases: Vec<Lease>, lease: Duration) -> Result<usize> {
        let until = now_ms().saturating_add(crate::domain::millis(lease));
        self.write(move |conn| lease::renew(conn, &leases, until))
            .await
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<Vec<super::AppliedReceipt>> {
        self.write(move |conn| settle::settle(conn, settlements))
            .await
    }

    async fn apply_receipts(
        &self,
        provider: &str,
        reports: Vec<DeliveryReport>,
        now: i64,
    ) -> Result<Vec<ReceiptEffect>> {
        let provider = provider.to_owned();
        self.write(move |conn| receipts::apply_receipts(conn, provider, reports, now))
            .await
    }

    async fn batch(&self, id: BatchId) -> Result<Option<BatchSummary>> {
        self.read(move |conn| ledger::batch(conn, id)).await
    }

    async fn window(&self, id: BatchId) -> Result<Option<String>> {
        self.read(move |conn| ledger::window(conn, id)).await
    }

    async fn batches(&self, before: Option<BatchId>, limit: u32) -> Result<Vec<BatchSummary>> {
        self.read(move |conn| ledger::batches(conn, before, limit))
            .await
    }

    async fn pending(&self, provider: &str, cap: u64) -> Result<u64> {
        let provider = provider.to_owned();
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        self.read(move |conn| ledger::pending(conn, provider, cap))
            .await
    }

    async fn next_due(&self, provider: &str) -> Result<Option<i64>> {
        let provider = provider.to_owned();
        self.read(move |conn| due::next_due(conn, &provider)).await
    }

    async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>> {
        self.read(move |conn| ledger::messages(conn, id, query))
            .await
    }

    async fn control(&self, id: BatchId, action: BatchAction) -> Result<Option<BatchSummary>> {
        self.write(move |conn| ledger::control(conn, id, action))
            .await
    }

    async fn expire(&self, now_ms: i64, limit: u64) -> Result<u64> {
        self.write(move |conn| expiry::sweep(conn, now_ms, limit))
            .await
    }
}

#[async_trait]
impl CapStore for Sqlite {
    async fn charge(&self, charges: Vec<Charge>) -> Result<Vec<Charged>> {
        self.write(move |conn| spend::charge(conn, charges)).await
    }

    async fn raise_cap(&self, id: BatchId, max_cost: Micros) -> Result<Option<()>> {
        self.write(move |conn| spend::raise_cap(conn, id, max_cost))
            .await
    }

    async fn recent_sends(
        &self,
        owner: &str,
        since_ms: i64,
        addresses: Vec<String>,
    ) -> Result<std::collections::HashMap<String, Vec<i64>>> {
        let owner = owner.to_owned();
        self.read(move |conn| {
            let tos: Vec<&str> = addresses.iter().map(String::as_str).collect();
            claim::recent_sends(conn, &owner, since_ms, &tos)
        })
        .await
    }

    async fn spent(&self, provider: &str, day: &str) -> Result<Micros> {
        let (provider, day) = (provider.to_owned(), day.to_owned());
        self.read(move |conn| spend::spent(conn, &provider, &day))
            .await
    }
}

#[async_trait]
impl Outbox for Sqlite {
    async fn claim_deliveries(
        &self,
        limit: u32,
        lease: Duration,
        now: i64,
    ) -> Result<Vec<Delivery>> {
        let until = now.saturating_add(crate::domain::millis(lease));
        let posting = self.posting.clone();
        self.read(move |conn| outbox::claim(conn, &posting, limit, until, now))
            .await
    }

    async fn settle_deliveries(
        &self,
        settled: Vec<(DeliveryKey, DeliveryOutcome)>,
        now: i64,
    ) -> Result<()> {
        let posting = self.posting.clone();
        self.write(move |conn| outbox::settle(conn, &posting, settled, now))
            .await
    }

    async fn deliveries(
        &self,
        endpoint: Option<&str>,
        state: Option<DeliveryState>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        let endpoint = endpoint.map(str::to_owned);
        self.read(move |conn| outbox::list(conn, endpoint, state, before, limit))
            .await
    }

    async fn replay(&self, endpoint: &str, which: Replay, now: i64) -> Result<u64> {
        let (endpoint, posting) = (endpoint.to_owned(), self.posting.clone());
        self.write(move |conn| outbox::replay(conn, &posting, endpoint, which, now))
            .await
    }

    async fn delivery_counts(&self) -> Result<Vec<(String, u64, u64)>> {
        self.read(outbox::counts).await
    }

    async fn prune_deliveries(&self, before_ms: i64, limit: u32) -> Result<u64> {
        self.write(move |conn| outbox::prune(conn, before_ms, limit))
            .await
    }
}

#[async_trait]
impl super::SearchStore for Sqlite {
    async fn search(&self, query: super::SearchQuery) -> Result<Vec<super::Found>> {
        self.read(move |conn| search::search(conn, &query)).await
    }
}

#[async_trait]
impl super::EraseStore for Sqlite {
    async fn erase_salt(&self) -> Result<Vec<u8>> {
        match self.read(erase::read_salt).await? {
            Some(salt) => Ok(salt),
            None => self.write(erase::make_salt).await,
        }
    }

    async fn erase(&self, address: &str, erased_as: &str, now_ms: i64) -> Result<super::Erased> {
        let (address, erased_as) = (address.to_owned(), erased_as.to_owned());
        self.write(move |conn| erase::erase(conn, &address, &erased_as, now_ms))
            .await
    }
}
