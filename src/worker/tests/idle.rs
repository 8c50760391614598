//! An idle pool writes nothing, on each engine: with one message due only far in
//! the future, its claimer reads when that is instead of claiming (a claim under a
//! rate would pay the rate's bucket, a write), and a batch accepted meanwhile is
//! still sent at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::batch;
use crate::circuit::Circuits;
use crate::config::Config;
use crate::domain::{BatchId, DeliveryReport, now_ms};
use crate::metrics::Metrics;
use crate::provider::{ProviderConfig, Registry};
use crate::queue::tests::{TestStore, store};
use crate::queue::{
    Accepted, AppliedReceipt, Arrival, BatchAction, BatchSummary, Begun, Claim, Engine, Lease,
    MessageQuery, MessageRecord, NewBatch, Queue, ReceiptEffect, Result, Settlement,
};
use crate::ratelimit::Limits;
use crate::worker::Pool;

/// A real engine that counts how often the next due time is read.
struct Looks {
    inner: Arc<dyn Engine>,
    looks: AtomicUsize,
}

#[async_trait]
impl Engine for Looks {
    async fn accept(&self, batch: NewBatch) -> Result<Accepted> {
        self.inner.accept(batch).await
    }
    async fn begin(&self, batch: NewBatch, arrival: Arrival) -> Result<Begun> {
        self.inner.begin(batch, arrival).await
    }
    async fn claim(&self, p: &str, n: usize, lease: Duration, limits: &Limits) -> Result<Claim> {
        self.inner.claim(p, n, lease, limits).await
    }
    async fn renew(&self, leases: Vec<Lease>, lease: Duration) -> Result<usize> {
        self.inner.renew(leases, lease).await
    }
    async fn settle(&self, settlements: Vec<Settlement>) -> Result<Vec<AppliedReceipt>> {
        self.inner.settle(settlements).await
    }
    async fn batch(&self, id: BatchId) -> Result<Option<BatchSummary>> {
        self.inner.batch(id).await
    }
    async fn window(&self, id: BatchId) -> Result<Option<String>> {
        self.inner.window(id).await
    }
    async fn batches(&self, before: Option<BatchId>, limit: u32) -> Result<Vec<BatchSummary>> {
        self.inner.batches(before, limit).await
    }
    async fn messages(&self, id: BatchId, query: MessageQuery) -> Result<Vec<MessageRecord>> {
        self.inner.messages(id, query).await
    }
    async fn pending(&self, provider: &str, cap: u64) -> Result<u64> {
        self.inner.pending(provider, cap).await
    }
    async fn next_due(&self, provider: &str) -> Result<Option<i64>> {
        let due = self.inner.next_due(provider).await;
        self.looks.fetch_add(1, Ordering::SeqCst);
        due
    }
    async fn expire(&self, now_ms: i64, limit: u64) -> Result<u64> {
        self.inner.expire(now_ms, limit).await
    }
    async fn control(&self, id: BatchId, action: BatchAction) -> Result<Option<BatchSummary>> {
        self.inner.control(id, action).await
    }
    async fn apply_receipts(
        &self,
        provider: &str,
        reports: Vec<DeliveryReport>,
        now_ms: i64,
    ) -> Result<Vec<ReceiptEffect>> {
        self.inner.apply_receipts(provider, reports, now_ms).await
    }
}

/// What the store at `url` holds, as far as a write would change it: SQLite's
/// `data_version` seen from a connection of its own (`watch`, kept open), the
/// row versions on PostgreSQL, every key's value on Redis.
async fn stored(url: &str, watch: &Option<rusqlite::Connection>) -> String {
    if let Some(conn) = watch {
        let version: i64 = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .expect("data_version");
        return version.to_string();
    }
    if url.starts_with("postgres") {
        return store::row_versions(url).await;
    }
    format!("{:?}", store::stored_keys(url).await)
}

async fn an_idle_pool_writes_nothing_and_sends_new_work_at_once(store: TestStore) {
    let (real, url, _guard) = store;
    let watch = url.strip_prefix("sqlite://").map(|dir| {
        rusqlite::Connection::open(std::path::Path::new(dir).join("herald.db"))
            .expect("a watching connection")
    });
    let mut looks = None;
    let queue: Queue = real.wrapped(|inner| {
        let wrapper = Arc::new(Looks {
            inner,
            looks: AtomicUsize::new(0),
        });
        looks = Some(wrapper.clone());
        wrapper
    });
    let looks = looks.expect("the engine was wrapped");
    let mut later = batch(BatchId::new(), "log", 1);
    later.send_at_ms = now_ms() + 86_400_000;
    queue.accept(later).await.unwrap();

    let mut config = Config::default();
    config.worker.poll_interval_ms = 5;
    // Under a rate, every claim pays the rate's bucket in the store: a write.
    let log = ProviderConfig {
        rate_per_sec: Some(1000.0),
        ..ProviderConfig::log()
    };
    let registry = Registry::build(
        &[log],
        &config.defaults,
        &config.failover,
        config.send_timeout(),
    )
    .expect("a valid registry");
    let circuits = Circuits::new(["log"], &config.circuit);
    let shutdown = CancellationToken::new();
    let pool = tokio::spawn(
        Pool::new(
            queue.clone(),
            registry,
            circuits,
            &config,
            Metrics::default(),
        )
        .run(shutdown.clone()),
    );
    let wait_for_looks = |n: usize| {
        let looks = looks.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while looks.looks.load(Ordering::SeqCst) < n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the claimer never looked"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    // The first claim found nothing; from its first look on, the claimer waits.
    wait_for_looks(1).await;
    let before = stored(&url, &watch).await;
    wait_for_looks(5).await;
    assert_eq!(
        stored(&url, &watch).await,
        before,
        "{url}: the idle pool wrote"
    );

    let now = queue.accept(batch(BatchId::new(), "log", 3)).await.unwrap();
    let Accepted::New(id) = now else {
        panic!("expected a new batch, got {now:?}");
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let counts = queue.batch(id).await.unwrap().expect("the batch").counts;
        if counts.sent == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url}: new work was not sent"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    pool.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pool_writes_nothing_on_sqlite() {
    an_idle_pool_writes_nothing_and_sends_new_work_at_once(store::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pool_writes_nothing_on_postgres() {
    an_idle_pool_writes_nothing_and_sends_new_work_at_once(store::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pool_writes_nothing_on_redis() {
    an_idle_pool_writes_nothing_and_sends_new_work_at_once(store::redis().await).await;
}
