//! The worker's unit tests: retry maths, and the in-flight bound on a real store.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::domain::{BatchId, Channel};
use crate::queue::{
    Accepted, BatchSummary, Control, Engine, MessageQuery, MessageRecord, NewBatch, NewMessage,
};
use crate::ratelimit::Limits;

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base: Duration::from_secs(1),
        max: Duration::from_secs(10),
    }
}

#[test]
fn delays_double_with_jitter_and_stop_at_the_maximum() {
    let p = policy();
    assert_eq!(p.delay(1, None, 1.0), Duration::from_secs(1));
    assert_eq!(p.delay(1, None, 0.0), Duration::from_millis(500));
    assert_eq!(p.delay(3, None, 1.0), Duration::from_secs(4));
    assert_eq!(p.delay(20, None, 1.0), Duration::from_secs(10));
}

#[test]
fn retry_after_wins_but_is_capped() {
    let p = policy();
    assert_eq!(
        p.delay(1, Some(Duration::from_secs(3)), 0.0),
        Duration::from_secs(3)
    );
    assert_eq!(
        p.delay(1, Some(Duration::from_secs(99)), 0.0),
        Duration::from_secs(10)
    );
}

#[test]
fn transient_errors_retry_until_the_last_attempt_permanent_ones_fail_at_once() {
    let p = policy();
    let transient = provider::Error::Transient {
        reason: "HTTP 503".into(),
        retry_after: Some(Duration::from_secs(2)),
    };
    assert!(matches!(
        p.outcome(1, &transient, 1_000),
        Outcome::Retry { at_ms: 3_000, .. }
    ));
    match p.outcome(4, &transient, 0) {
        Outcome::Failed { error } => assert!(error.contains("after 4 attempts"), "{error}"),
        other => panic!("{other:?}"),
    }
    let permanent = provider::Error::Permanent {
        reason: "HTTP 400".into(),
    };
    assert!(matches!(
        p.outcome(1, &permanent, 0),
        Outcome::Failed { .. }
    ));
}

#[test]
fn a_recipients_frequency_cap_waits_its_whole_window_without_counting_an_attempt() {
    let p = policy();
    let day = Duration::from_secs(12 * 3600);
    let capped =
        provider::Error::recipient_capped("tencent LimitExceeded.PhoneNumberDailyLimit", day);
    // Even at the last attempt, and past retry.max_delay_ms (10 s here).
    for attempts in [1, 4] {
        match p.outcome(attempts, &capped, 1_000) {
            Outcome::Release { at_ms } => assert_eq!(at_ms, 1_000 + 12 * 3_600_000),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn an_unknown_outcome_waits_as_unknown_until_the_last_attempt_fails_it() {
    let p = policy();
    let unknown = provider::Error::Unknown {
        reason: "no answer within 30000 ms".into(),
    };
    match p.outcome(1, &unknown, 1_000) {
        Outcome::Unknown { at_ms, error } => {
            assert!((1_500..=2_000).contains(&at_ms), "{at_ms}");
            assert_eq!(error, "no answer within 30000 ms");
        }
        other => panic!("{other:?}"),
    }
    match p.outcome(4, &unknown, 0) {
        Outcome::Failed { error } => assert!(error.contains("unknown"), "{error}"),
        other => panic!("{other:?}"),
    }
}

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
    async fn settle(&self, settlements: Vec<Settlement>) -> crate::queue::Result<()> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let n = settlements.len();
        self.inner.settle(settlements).await?;
        self.unrecorded.lock().unwrap().0 -= n;
        self.settled.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }
    async fn batch(&self, id: BatchId) -> crate::queue::Result<Option<BatchSummary>> {
        self.inner.batch(id).await
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
    async fn control(
        &self,
        id: BatchId,
        action: Control,
    ) -> crate::queue::Result<Option<BatchSummary>> {
        self.inner.control(id, action).await
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
    let real = Queue::open(&dir.path().display().to_string())
        .await
        .unwrap();
    let slow = Arc::new(SlowSettle {
        inner: real.engine(),
        unrecorded: Mutex::new((0, 0)),
        settled: AtomicUsize::new(0),
    });
    let queue = Queue::from_engine(slow.clone());
    let messages = (0..300)
        .map(|index| NewMessage {
            index,
            provider: "log".into(),
            to: format!("+86138{index:08}"),
            reference: None,
            subject: None,
            body: "hi".into(),
            segments: 1,
            vars: None,
        })
        .collect();
    queue
        .accept(NewBatch {
            id: BatchId::new(),
            channel: Channel::Sms,
            source: "test".into(),
            priority: 0,
            send_at_ms: now_ms(),
            idempotency: None,
            report: serde_json::json!({}),
            template_id: None,
            template: None,
            messages,
        })
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
