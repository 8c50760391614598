//! The worker pool's unit tests: the in-flight bound on a real store here, and in
//! `turns` what the send path makes of each answer of a scripted stub provider.

mod idle;
mod turns;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::domain::{BatchId, Channel, now_ms};
use crate::queue::{
    Accepted, BatchAction, BatchSummary, Claim, Engine, MessageQuery, MessageRecord, NewBatch,
    NewMessage, Settlement,
};
use crate::ratelimit::Limits;

/// A real SQLite engine whose settlements are slow, counting how many messages
/// are claimed and not yet recorded at any moment.
struct SlowSettle {
    inner: Arc<dyn Engine>,
    unrecorded: Mutex<(usize, usize)>,
    settled: AtomicUsize,
}

#[async_trait]
impl Engine for SlowSettle {
    async fn accept(&self, batch: NewBatch) -> crate::queue::Result<Accepted> {
        self.inner.accept(batch).await
    }
    async fn begin(
        &self,
        batch: NewBatch,
        arrival: crate::queue::Arrival,
    ) -> crate::queue::Result<crate::queue::Begun> {
        self.inner.begin(batch, arrival).await
    }
    async fn claim(
        &self,
        provider: &str,
        limit: usize,
        lease: Duration,
        limits: &Limits,
    ) -> crate::queue::Result<Claim> {
        let claim = self.inner.claim(provider, limit, lease, limits).await?;
        if let Claim::Messages(claimed) = &claim {
            let mut u = self.unrecorded.lock().unwrap();
            u.0 += claimed.len();
            u.1 = u.1.max(u.0);
        }
        Ok(claim)
    }
    async fn renew(
        &self,
        leases: Vec<crate::queue::Lease>,
        lease: Duration,
    ) -> crate::queue::Result<usize> {
        self.inner.renew(leases, lease).await
    }
    async fn settle(
        &self,
        settlements: Vec<Settlement>,
    ) -> crate::queue::Result<Vec<crate::queue::AppliedReceipt>> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let n = settlements.len();
        let held = self.inner.settle(settlements).await?;
        self.unrecorded.lock().unwrap().0 -= n;
        self.settled.fetch_add(n, Ordering::SeqCst);
        Ok(held)
    }
    async fn batch(&self, id: BatchId) -> crate::queue::Result<Option<BatchSummary>> {
        self.inner.batch(id).await
    }
    async fn window(&self, id: BatchId) -> crate::queue::Result<Option<String>> {
        self.inner.window(id).await
    }
    async fn batches(
        &self,
        before: Option<BatchId>,
        limit: u32,
    ) -> crate::queue::Result<Vec<BatchSummary>> {
        self.inner.batches(before, limit).await
    }
    async fn messages(
        &self,
        id: BatchId,
        query: MessageQuery,
    ) -> crate::queue::Result<Vec<MessageRecord>> {
        self.inner.messages(id, query).await
    }
    async fn pending(&self, provider: &str, cap: u64) -> crate::queue::Result<u64> {
        self.inner.pending(provider, cap).await
    }
    async fn next_due(&self, provider: &str) -> crate::queue::Result<Option<i64>> {
        self.inner.next_due(provider).await
    }
    async fn control(
        &self,
        id: BatchId,
        action: BatchAction,
    ) -> crate::queue::Result<Option<BatchSummary>> {
        self.inner.control(id, action).await
    }
    async fn expire(&self, now_ms: i64, limit: u64) -> crate::queue::Result<u64> {
        self.inner.expire(now_ms, limit).await
    }
    async fn apply_receipts(
        &self,
        provider: &str,
        reports: Vec<crate::domain::DeliveryReport>,
        now_ms: i64,
    ) -> crate::queue::Result<Vec<crate::queue::ReceiptEffect>> {
        self.inner.apply_receipts(provider, reports, now_ms).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_max_in_flight_messages_are_ever_claimed_and_unrecorded() {
    let dir = tempfile::tempdir().unwrap();
    let real = store(&dir).await;
    let mut slow = None;
    let queue = real.wrapped(|inner| {
        let wrapper = Arc::new(SlowSettle {
            inner,
            unrecorded: Mutex::new((0, 0)),
            settled: AtomicUsize::new(0),
        });
        slow = Some(wrapper.clone());
        wrapper
    });
    let slow = slow.expect("the engine was wrapped");
    queue
        .accept(batch(BatchId::new(), "log", 300))
        .await
        .unwrap();
    let mut config = Config::default();
    config.worker.max_in_flight = 8;
    config.worker.poll_interval_ms = 5;
    let registry = Registry::build(
        &[],
        &Default::default(),
        &Default::default(),
        config.send_timeout(),
    )
    .unwrap();
    let circuits = Circuits::new(["log"], &config.circuit);
    let shutdown = CancellationToken::new();
    let pool = tokio::spawn(
        Pool::new(queue, registry, circuits, &config, Metrics::default()).run(shutdown.clone()),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while slow.settled.load(Ordering::SeqCst) < 300 {
        assert!(tokio::time::Instant::now() < deadline, "delivery stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    pool.await.unwrap();
    let (now, peak) = *slow.unrecorded.lock().unwrap();
    assert_eq!(now, 0);
    assert!(
        peak <= 8,
        "{peak} messages were claimed and unrecorded at once"
    );
    assert!(
        peak >= 2,
        "the pool never had more than one message in flight"
    );
}

/// A SQLite store in `dir`.
async fn store(dir: &tempfile::TempDir) -> Queue {
    let url = dir.path().display().to_string();
    Queue::open(&url.parse().expect("a store URL"))
        .await
        .expect("a new SQLite store")
}

/// A batch `id` of `count` SMS for `provider`, due now, to distinct numbers.
fn batch(id: BatchId, provider: &str, count: u32) -> NewBatch {
    let messages = (0..count)
        .map(|index| NewMessage {
            index,
            provider: provider.into(),
            to: format!("+86138{index:08}"),
            reference: None,
            subject: None,
            body: "hi".into(),
            segments: 1,
            vars: None,
            due_ms: None,
        })
        .collect();
    NewBatch {
        id,
        channel: Channel::Sms,
        source: "test".into(),
        priority: 0,
        send_at_ms: now_ms(),
        expires_at_ms: None,
        idempotency: None,
        report: serde_json::json!({}),
        template_id: None,
        template: None,
        callback_url: None,
        subscriptions: Vec::new(),
        window: None,
        max_cost: None,
        messages,
    }
}
