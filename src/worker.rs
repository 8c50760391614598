//! The worker pool: claim → send → settle.
//!
//! Each provider has a claimer that takes in-flight slots first and then claims up
//! to that many due messages under a lease, within the provider's rate limit (a
//! token bucket in the store, shared by every process), so waiting for a limit
//! never holds a lease or counts as an attempt. Each claimed message is sent
//! on its own task; outcomes go to one settler that writes them back in bulk. A
//! message holds its in-flight slot until its outcome is committed, so at most
//! `max_in_flight` messages are ever claimed and unrecorded: that bounds how many a
//! crash can repeat. On
//! shutdown claimers stop, in-flight sends get a grace period, everything finished
//! is written, and whatever is left comes back through lease expiry.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, RetryConfig};
use crate::domain::now_ms;
use crate::metrics::Metrics;
use crate::provider::{self, Message, Receipt, Registry, Route};
use crate::queue::{Claim, Claimed, Outcome, ProviderTemplate, Queue, Settlement, Suppression};
use crate::ratelimit::Pace;
use crate::recipient;

/// Most settlements written in one transaction.
const SETTLE_CHUNK: usize = 4096;
/// Most messages claimed in one transaction.
const CLAIM_CHUNK: usize = 512;
/// Back-off after the store fails, before trying again.
const STORE_RETRY: Duration = Duration::from_millis(500);

/// When to try a failed send again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(c: &RetryConfig) -> Self {
        RetryPolicy {
            max_attempts: c.max_attempts,
            base: Duration::from_millis(c.base_delay_ms),
            max: Duration::from_millis(c.max_delay_ms),
        }
    }
}

impl RetryPolicy {
    /// The delay before the next attempt, after `attempts` attempts have failed:
    /// the provider's `retry_after` when it gave one, else `base · 2^(attempts-1)`
    /// with equal jitter (between half and all of it); never more than `max`.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        if let Some(hint) = retry_after {
            return hint.min(self.max);
        }
        let exp = attempts.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1 << exp).min(self.max);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// What becomes of a message whose attempt number `attempts` failed with `error`.
    pub fn outcome(&self, attempts: u32, error: &provider::Error, now_ms: i64) -> Outcome {
        match error {
            provider::Error::Permanent { reason } | provider::Error::Undeliverable { reason } => {
                Outcome::Failed {
                    error: reason.clone(),
                }
            }
            provider::Error::Transient { reason, .. } if attempts >= self.max_attempts => {
                Outcome::Failed {
                    error: format!("{reason} (gave up after {attempts} attempts)"),
                }
            }
            provider::Error::Transient {
                reason,
                retry_after,
            } => {
                let delay = self.delay(attempts, *retry_after, fastrand::f64());
                let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                Outcome::Retry {
                    at_ms: now_ms.saturating_add(delay_ms),
                    error: reason.clone(),
                }
            }
        }
    }
}

/// The worker pool; cheap to clone (one shared allocation).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Queue,
    registry: Registry,
    policy: RetryPolicy,
    lease: Duration,
    send_timeout: Duration,
    poll: Duration,
    grace: Duration,
    slots: Arc<Semaphore>,
    templates: TemplateCodes,
    /// Each provider's pace after it throttled this process (see [`Pace`]).
    paces: HashMap<String, Mutex<Pace>>,
    metrics: Metrics,
}

impl Pool {
    /// A pool delivering `queue`'s messages through `registry`, counting each
    /// attempt in `metrics`.
    pub fn new(queue: Queue, registry: Registry, config: &Config, metrics: Metrics) -> Self {
        let paces = registry
            .routes()
            .map(|r| {
                let ceiling = r.limits.rate.map(|rate| rate.per_sec);
                (r.name.clone(), Mutex::new(Pace::new(ceiling)))
            })
            .collect();
        let inner = Inner {
            queue,
            registry,
            policy: RetryPolicy::from(&config.retry),
            lease: config.lease(),
            send_timeout: config.send_timeout(),
            poll: Duration::from_millis(config.worker.poll_interval_ms),
            grace: Duration::from_millis(config.worker.shutdown_grace_ms),
            slots: Arc::new(Semaphore::new(config.worker.max_in_flight)),
            templates: TemplateCodes::default(),
            paces,
            metrics,
        };
        Pool {
            inner: Arc::new(inner),
        }
    }

    /// Delivers until `shutdown` fires, then drains as described in the module docs.
    pub async fn run(self, shutdown: CancellationToken) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop_settler = CancellationToken::new();
        let settler = tokio::spawn(settle_loop(
            self.inner.queue.clone(),
            rx,
            stop_settler.clone(),
        ));
        let sends = TaskTracker::new();
        let claimers: Vec<_> = self
            .inner
            .registry
            .routes()
            .cloned()
            .map(|route| {
                tokio::spawn(self.clone().claim_loop(
                    route,
                    tx.clone(),
                    sends.clone(),
                    shutdown.clone(),
                ))
            })
            .collect();
        drop(tx);
        for claimer in claimers {
            if let Err(e) = claimer.await {
                tracing::error!(error = %e, "a claimer task failed");
            }
        }
        sends.close();
        if tokio::time::timeout(self.inner.grace, sends.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = sends.len(),
                "shutdown grace period over; unfinished sends will be retried after their lease expires"
            );
        }
        stop_settler.cancel();
        if let Err(e) = settler.await {
            tracing::error!(error = %e, "the settler task failed");
        }
    }

    async fn claim_loop(
        self,
        route: Route,
        results: mpsc::UnboundedSender<Done>,
        sends: TaskTracker,
        shutdown: CancellationToken,
    ) {
        loop {
            let work = self.inner.queue.work_arrived().notified();
            tokio::pin!(work);
            work.as_mut().enable();

            // Biased: once shutdown is asked for, no further claim may start.
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                permit = self.inner.slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let mut permits = vec![first];
            while permits.len() < CLAIM_CHUNK {
                match self.inner.slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // A provider that throttled this process is paced first.
            match self.pace(&route.name, |pace| pace.take(permits.len(), now_ms())) {
                Some(Err(wait)) => {
                    drop(permits);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
                Some(Ok(allowed)) => permits.truncate(allowed),
                None => {}
            }
            let asked = permits.len();
            let claimed = match self
                .inner
                .queue
                .claim_within(&route.name, permits.len(), self.inner.lease, &route.limits)
                .await
            {
                Ok(Claim::Messages(claimed)) => claimed,
                Ok(Claim::Wait(wait)) => {
                    drop(permits);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
                Err(e) => {
                    tracing::error!(provider = %route.name, error = %e, "claiming messages failed");
                    drop(permits);
                    tokio::select! {
                        () = tokio::time::sleep(STORE_RETRY) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
            };
            permits.truncate(claimed.len());
            self.pace(&route.name, |pace| {
                pace.refund(asked - claimed.len());
                pace.sending(claimed.len(), now_ms());
            });
            let idle = claimed.is_empty();
            // One task per message, or per request for providers that take many
            // messages in one (`batch_limit`).
            let per_task = route.provider.batch_limit().max(1);
            let mut claimed = claimed.into_iter().zip(permits).peekable();
            while claimed.peek().is_some() {
                let group: Vec<_> = claimed.by_ref().take(per_task).collect();
                sends.spawn(self.clone().send(route.clone(), group, results.clone()));
            }
            if idle {
                tokio::select! {
                    () = &mut work => {}
                    () = tokio::time::sleep(self.inner.poll) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }

    /// Sends a group of claimed messages (one, or up to the provider's
    /// `batch_limit`) in one attempt each, and hands each outcome to the settler.
    async fn send(
        self,
        route: Route,
        group: Vec<(Claimed, OwnedSemaphorePermit)>,
        results: mpsc::UnboundedSender<Done>,
    ) {
        let mut messages = Vec::with_capacity(group.len());
        let mut slots = Vec::with_capacity(group.len());
        for (claimed, permit) in group {
            let attempt = Attempt {
                number: claimed.attempts + 1,
                lease: claimed.lease,
                permit,
                sent_ms: now_ms(),
            };
            let template = match &claimed.template_id {
                Some(id) => {
                    self.inner
                        .templates
                        .code(&self.inner.queue, id, &route.name)
                        .await
                }
                None => Ok(None),
            };
            let message = Message {
                id: claimed.id,
                batch_id: claimed.batch_id,
                reference: claimed.reference,
                channel: claimed.channel,
                to: claimed.to,
                subject: claimed.subject,
                body: claimed.body,
                vars: claimed.vars.as_deref().and_then(parse_vars),
                template: template.as_ref().ok().cloned().flatten(),
            };
            match template {
                Err(error) => {
                    self.finish(&route, &message, attempt, Err(error), &results)
                        .await
                }
                Ok(_) => {
                    messages.push(message);
                    slots.push(attempt);
                }
            }
        }
        if messages.is_empty() {
            return;
        }
        let timeout = self.inner.send_timeout;
        let answers = match tokio::time::timeout(timeout, async {
            match messages.as_slice() {
                [one] => vec![route.provider.send(one).await],
                many => route.provider.send_many(many).await,
            }
        })
        .await
        {
            Ok(answers) if answers.len() == messages.len() => answers,
            Ok(answers) => {
                let error = provider::Error::Transient {
                    reason: format!(
                        "the provider answered {} results for {} messages",
                        answers.len(),
                        messages.len()
                    ),
                    retry_after: None,
                };
                messages.iter().map(|_| Err(error.clone())).collect()
            }
            Err(_) => {
                let error = provider::Error::Transient {
                    reason: format!("no answer within {} ms", timeout.as_millis()),
                    retry_after: None,
                };
                messages.iter().map(|_| Err(error.clone())).collect()
            }
        };
        for ((message, attempt), answer) in messages.iter().zip(slots).zip(answers) {
            self.finish(&route, message, attempt, answer, &results)
                .await;
        }
    }

    /// Turns one attempt's answer into the message's outcome (suppressing an
    /// undeliverable recipient) and hands it to the settler.
    async fn finish(
        &self,
        route: &Route,
        message: &Message,
        attempt: Attempt,
        answer: Result<Receipt, provider::Error>,
        results: &mpsc::UnboundedSender<Done>,
    ) {
        match &answer {
            Err(error) if error.is_throttle() => {
                let paced = self.pace(&route.name, |pace| {
                    let before = pace.rate();
                    pace.throttled(attempt.sent_ms, now_ms());
                    (before != pace.rate()).then(|| pace.rate()).flatten()
                });
                if let Some(Some(rate)) = paced {
                    tracing::info!(provider = %route.name, rate_per_sec = rate, "the provider throttles: sending slower");
                }
            }
            _ => {}
        }
        let outcome = match answer {
            Ok(receipt) => Outcome::Sent {
                provider_message_id: receipt.provider_message_id,
            },
            Err(error) => {
                if let provider::Error::Undeliverable { reason } = &error {
                    self.suppress(route, message, reason).await;
                }
                let outcome = self.inner.policy.outcome(attempt.number, &error, now_ms());
                let verdict = if matches!(outcome, Outcome::Failed { .. }) {
                    "failed"
                } else {
                    "will retry"
                };
                tracing::warn!(provider = %route.name, id = %message.id, attempt = attempt.number, error = %error, verdict, "send failed");
                outcome
            }
        };
        let took = Duration::from_millis(now_ms().saturating_sub(attempt.sent_ms).unsigned_abs());
        self.inner
            .metrics
            .attempted(&route.name, message.channel, &outcome, took);
        let settlement = Settlement {
            lease: attempt.lease,
            outcome,
        };
        // The settler outlives every send it can receive from; if it is gone the
        // process is past its grace period and the lease brings the message back.
        let _ = results.send((settlement, attempt.permit));
    }
}

/// One claimed message's attempt: its number, its lease, and its in-flight slot.
struct Attempt {
    number: u32,
    lease: crate::queue::Lease,
    permit: OwnedSemaphorePermit,
    /// When it was handed to the provider (ms).
    sent_ms: i64,
}

impl Pool {
    /// Runs `f` on the pace of provider `name`.
    fn pace<T>(&self, name: &str, f: impl FnOnce(&mut Pace) -> T) -> Option<T> {
        let pace = self.inner.paces.get(name)?;
        Some(f(&mut pace.lock().unwrap_or_else(|p| p.into_inner())))
    }

    /// Adds the recipient of a message the provider called undeliverable to the
    /// channel's suppression list, so later batches reject it as `suppressed`.
    async fn suppress(&self, route: &Route, message: &Message, reason: &str) {
        let entry = Suppression {
            channel: message.channel,
            address: recipient::address_key(message.channel, &message.to),
            reason: format!("{}: {reason}", route.name),
            created_at_ms: 0,
        };
        match self.inner.queue.suppress(vec![entry]).await {
            Ok(_) => {
                tracing::info!(provider = %route.name, id = %message.id, "recipient suppressed: the provider called it undeliverable");
            }
            Err(e) => {
                tracing::error!(provider = %route.name, id = %message.id, error = %e, "suppressing an undeliverable recipient failed");
            }
        }
    }
}

/// A recipient's stored vars, as providers that render templates take them.
fn parse_vars(json: &str) -> Option<Arc<serde_json::Map<String, serde_json::Value>>> {
    serde_json::from_str(json).ok().map(Arc::new)
}

/// How long a stored template's provider codes are reused before being read again,
/// so that a replaced template reaches the workers soon without a read per message.
const TEMPLATE_CODES_FOR: Duration = Duration::from_secs(10);

/// A stored template's code and sign name per provider.
type Codes = BTreeMap<String, ProviderTemplate>;

/// The provider codes of stored templates, read from the store and kept briefly.
#[derive(Default)]
struct TemplateCodes {
    read: std::sync::Mutex<HashMap<String, (Instant, Codes)>>,
}

impl TemplateCodes {
    /// Template `id`'s code and sign at `provider`, if it has them. A store that
    /// cannot answer is a transient failure of the send; a deleted template has no
    /// codes (the provider decides whether it can send without).
    async fn code(
        &self,
        queue: &Queue,
        id: &str,
        provider: &str,
    ) -> Result<Option<ProviderTemplate>, provider::Error> {
        let fresh = |read: &Instant| read.elapsed() < TEMPLATE_CODES_FOR;
        {
            let read = self.read.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, codes)) = read.get(id)
                && fresh(at)
            {
                return Ok(codes.get(provider).cloned());
            }
        }
        let codes = match queue.template(id).await {
            Ok(template) => template.map(|t| t.providers).unwrap_or_default(),
            Err(e) => {
                return Err(provider::Error::Transient {
                    reason: format!("cannot read template `{id}`: {e}"),
                    retry_after: None,
                });
            }
        };
        let found = codes.get(provider).cloned();
        let mut read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        read.retain(|_, (at, _)| fresh(at));
        read.insert(id.to_string(), (Instant::now(), codes));
        Ok(found)
    }
}

/// Frees the slots of recorded outcomes in one step, so a waiting claimer sees
/// them all at once and claims them in one transaction rather than a few at a time.
fn release(done: &mut Vec<Done>) {
    let mut permits = done.drain(..).map(|(_, permit)| permit);
    if let Some(mut all) = permits.next() {
        permits.for_each(|p| all.merge(p));
    }
}

/// A finished send: its outcome, and the in-flight slot it frees once recorded.
type Done = (Settlement, OwnedSemaphorePermit);

/// Writes outcomes back in bulk until stopped, then writes what is left once more.
/// Slots are freed only after their outcomes are committed.
async fn settle_loop(queue: Queue, mut rx: mpsc::UnboundedReceiver<Done>, stop: CancellationToken) {
    let mut pending: Vec<Done> = Vec::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                received = rx.recv_many(&mut pending, SETTLE_CHUNK) => if received == 0 { break },
                () = stop.cancelled() => break,
            }
        } else {
            while pending.len() < SETTLE_CHUNK
                && let Ok(s) = rx.try_recv()
            {
                pending.push(s);
            }
        }
        let settlements = pending.iter().map(|(s, _)| s.clone()).collect();
        if let Err(e) = queue.settle(settlements).await {
            tracing::error!(error = %e, count = pending.len(), "recording delivery outcomes failed; will try again");
            tokio::select! {
                () = tokio::time::sleep(STORE_RETRY) => continue,
                () = stop.cancelled() => break,
            }
        }
        release(&mut pending);
    }
    while let Ok(s) = rx.try_recv() {
        pending.push(s);
    }
    if let Err(e) = queue
        .settle(pending.into_iter().map(|(s, _)| s).collect())
        .await
    {
        tracing::error!(error = %e, "recording the last outcomes failed; those messages will be sent again after their lease");
    }
}

#[cfg(test)]
mod tests {
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
        async fn begin(&self, batch: NewBatch) -> crate::queue::Result<crate::queue::Staged> {
            self.inner.begin(batch).await
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
                messages,
            })
            .await
            .unwrap();
        let mut config = Config::default();
        config.worker.max_in_flight = 8;
        config.worker.poll_interval_ms = 5;
        let registry = Registry::build(&[], &Default::default(), config.send_timeout()).unwrap();
        let shutdown = CancellationToken::new();
        let pool = tokio::spawn(
            Pool::new(queue, registry, &config, Metrics::default()).run(shutdown.clone()),
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
}
