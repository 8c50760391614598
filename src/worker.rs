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
//!
//! Failover: while a provider's circuit is open (see [`crate::circuit`]), its
//! claimer claims its messages within the limits of the next provider of the
//! channel's failover list whose circuit lets it send, and sends them through that
//! one, with that provider's template code and sign; the ledger records who sent.
//! When every circuit of the list is open, the claimer waits.
//!
//! Unknown outcomes: a send that got no answer counts against the circuit of the
//! provider it went through, and the message waits as `unknown`. Before its next
//! attempt, its own provider and those it may have failed over to are asked
//! whether they have it (the ledger does not keep which one the unknown attempt
//! went through); one that has it settles it as sent by that provider.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::circuit::{Admission, Circuits, Probe, Verdict};
use crate::config::{Config, RetryConfig};
use crate::domain::ProviderTemplate;
use crate::domain::now_ms;
use crate::metrics::Metrics;
use crate::provider::{self, Lookup, Message, Receipt, Registry, Route};
use crate::queue::{Claim, Claimed, Outcome, Queue, Settlement, Suppression};
use crate::ratelimit::Pace;
use crate::recipient;

/// Most settlements written in one transaction.
const SETTLE_CHUNK: usize = 4096;
/// Most messages claimed in one transaction.
const CLAIM_CHUNK: usize = 512;
/// Back-off after the store fails, before trying again.
const STORE_RETRY: Duration = Duration::from_millis(500);
/// The longest a message over a recipient's frequency cap at the provider waits
/// (the caps' windows end by the next midnight).
const CAPPED_WAIT_MAX: Duration = Duration::from_secs(24 * 3600);
/// The least a failed-over message the fallback cannot carry waits for its own
/// provider, so that it is not claimed again and again while a probe is out.
const HOLD_AT_LEAST: Duration = Duration::from_secs(1);

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
    /// A recipient over the provider's frequency cap waits for the cap's window, and
    /// the attempt does not count: nothing was sent. An unknown outcome waits like a
    /// retry, but as `unknown`: the provider is asked about it before the next
    /// attempt.
    pub fn outcome(&self, attempts: u32, error: &provider::Error, now_ms: i64) -> Outcome {
        match error {
            provider::Error::Transient { retry_after, .. } if error.is_recipient_capped() => {
                let wait = retry_after.unwrap_or(self.base).min(CAPPED_WAIT_MAX);
                Outcome::Release {
                    at_ms: now_ms.saturating_add(millis(wait)),
                }
            }
            provider::Error::Unknown { reason } if attempts >= self.max_attempts => {
                Outcome::Failed {
                    error: format!(
                        "{reason} (gave up after {attempts} attempts; whether the last reached the provider is unknown)"
                    ),
                }
            }
            provider::Error::Unknown { reason } => {
                let delay = self.delay(attempts, None, fastrand::f64());
                Outcome::Unknown {
                    at_ms: now_ms.saturating_add(millis(delay)),
                    error: reason.clone(),
                }
            }
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
                Outcome::Retry {
                    at_ms: now_ms.saturating_add(millis(delay)),
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
    circuits: Circuits,
    /// Per provider, where its messages go while its circuit is open, in order.
    fallbacks: HashMap<String, Vec<Route>>,
}

impl Pool {
    /// A pool delivering `queue`'s messages through `registry`'s providers, each
    /// behind its circuit in `circuits`, counting each attempt in `metrics`.
    pub fn new(
        queue: Queue,
        registry: Registry,
        circuits: Circuits,
        config: &Config,
        metrics: Metrics,
    ) -> Self {
        let paces = registry
            .routes()
            .map(|r| {
                let ceiling = r.limits.rate.map(|rate| rate.per_sec);
                (r.name.clone(), Mutex::new(Pace::new(ceiling)))
            })
            .collect();
        let fallbacks = registry
            .routes()
            .map(|r| {
                let next = registry.fallbacks(&r.name).into_iter().cloned().collect();
                (r.name.clone(), next)
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
            circuits,
            fallbacks,
        };
        Pool {
            inner: Arc::new(inner),
        }
    }

    /// The providers' circuit breakers, as this pool keeps them.
    pub fn circuits(&self) -> &Circuits {
        &self.inner.circuits
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
        // The provider this loop sent through last time, to log a change once.
        let mut last_via = route.name.clone();
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
            let (via, mut probe) = match self.choose(&route) {
                Choice::Send { via, probe } => (via, probe),
                Choice::Wait(wait) => {
                    drop(first);
                    tokio::select! {
                        () = tokio::time::sleep(wait.min(self.inner.poll)) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
            };
            // A probe of the own provider is no change of route yet.
            let probing_own = probe.is_some() && via.name == route.name;
            if via.name != last_via && !probing_own {
                if via.name == route.name {
                    tracing::info!(provider = %route.name, "sending the provider's messages through it again");
                } else {
                    tracing::warn!(provider = %route.name, via = %via.name, "the provider's circuit is open: sending its messages through another provider");
                }
                last_via.clone_from(&via.name);
            }
            // A probe is one message.
            let most = if probe.is_some() { 1 } else { CLAIM_CHUNK };
            let mut permits = vec![first];
            while permits.len() < most {
                match self.inner.slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // A provider that throttled this process is paced first.
            match self.pace(&via.name, |pace| pace.take(permits.len(), now_ms())) {
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
                .claim_within(&route.name, permits.len(), self.inner.lease, &via.limits)
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
            self.pace(&via.name, |pace| {
                pace.refund(asked - claimed.len());
                pace.sending(claimed.len(), now_ms());
            });
            let idle = claimed.is_empty();
            // One task per message, or per request for providers that take many
            // messages in one (`batch_limit`).
            let per_task = via.provider.batch_limit().max(1);
            let mut claimed = claimed.into_iter().zip(permits).peekable();
            while claimed.peek().is_some() {
                let group: Vec<_> = claimed.by_ref().take(per_task).collect();
                let path = Path {
                    own: route.clone(),
                    via: via.clone(),
                };
                sends.spawn(
                    self.clone()
                        .send(path, probe.take(), group, results.clone()),
                );
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

    /// Where `own`'s messages go now: through `own` while its circuit admits
    /// sends, else through the first of its fallbacks whose circuit does; or, when
    /// none does, how long to wait.
    fn choose<'a>(&'a self, own: &'a Route) -> Choice<'a> {
        let fallbacks = self
            .inner
            .fallbacks
            .get(&own.name)
            .map_or(&[][..], Vec::as_slice);
        let mut wait = self.inner.poll;
        for route in std::iter::once(own).chain(fallbacks) {
            match self.inner.circuits.admit(&route.name) {
                Admission::Closed => {
                    return Choice::Send {
                        via: route,
                        probe: None,
                    };
                }
                Admission::Probe(probe) => {
                    return Choice::Send {
                        via: route,
                        probe: Some(probe),
                    };
                }
                Admission::Refused { until } => {
                    if let Some(until) = until {
                        let left = until.saturating_duration_since(tokio::time::Instant::now());
                        wait = wait.min(left.max(Duration::from_millis(1)));
                    }
                }
            }
        }
        Choice::Wait(wait)
    }

    /// Whether `message`, of `path.own`, may go through `path.via`: always when
    /// that is its own provider; else when both are on its channel's failover list
    /// and the fallback has what it needs (its code for a stored template).
    fn can_carry(&self, path: &Path, message: &Message) -> bool {
        let Path { own, via } = path;
        if own.name == via.name {
            return true;
        }
        let has_code = message.template.as_ref().is_some_and(|t| t.code.is_some());
        via.channels.contains(&message.channel)
            && self
                .inner
                .registry
                .fails_over(message.channel, &own.name, &via.name)
            && (has_code || !via.provider.needs_template_code())
    }

    /// Sends a group of claimed messages (one, or up to the provider's
    /// `batch_limit`) in one attempt each through `path.via`, and hands each
    /// outcome to the settler. Messages the fallback cannot carry go back to wait
    /// for their own provider, unattempted. The request's verdict goes to the
    /// circuit of the provider it went through, with the probe if it was one.
    async fn send(
        self,
        path: Path,
        probe: Option<Probe>,
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
                unknown_since_ms: claimed.unknown_since_ms,
            };
            let template = match &claimed.template_id {
                Some(id) => {
                    self.inner
                        .templates
                        .code(&self.inner.queue, id, &path.via.name)
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
                    self.finish(&path, &message, attempt, Err(error), &results)
                        .await
                }
                Ok(_) if !self.can_carry(&path, &message) => {
                    let wait = self
                        .inner
                        .circuits
                        .opens_in(&path.own.name)
                        .max(HOLD_AT_LEAST);
                    let outcome = Outcome::Release {
                        at_ms: now_ms().saturating_add(millis(wait)),
                    };
                    tracing::debug!(provider = %path.own.name, via = %path.via.name, id = %message.id, "the fallback cannot send this message: it waits for its own provider");
                    settle(attempt, outcome, None, &results);
                }
                Ok(_) => {
                    messages.push(message);
                    slots.push(attempt);
                }
            }
        }
        let (messages, slots) = self
            .settle_known(&path.own, messages, slots, &results)
            .await;
        if messages.is_empty() {
            return;
        }
        let route = &path.via;
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
            // The requests were made: they may have reached the provider.
            Err(_) => {
                let error = provider::Error::Unknown {
                    reason: format!("no answer within {} ms", timeout.as_millis()),
                };
                messages.iter().map(|_| Err(error.clone())).collect()
            }
        };
        if let Some(verdict) = Verdict::of(&answers) {
            self.inner.circuits.record(&route.name, verdict, probe);
        }
        for ((message, attempt), answer) in messages.iter().zip(slots).zip(answers) {
            self.finish(&path, message, attempt, answer, &results).await;
        }
    }

    /// Asks about the messages whose earlier attempt had an unknown outcome, all at
    /// once within the send timeout. Those a provider says it has are settled as
    /// sent by it (no attempt counted); the rest are returned, to be sent.
    async fn settle_known(
        &self,
        own: &Route,
        messages: Vec<Message>,
        slots: Vec<Attempt>,
        results: &mpsc::UnboundedSender<Done>,
    ) -> (Vec<Message>, Vec<Attempt>) {
        if slots.iter().all(|a| a.unknown_since_ms.is_none()) {
            return (messages, slots);
        }
        let asked = futures_util::future::join_all(messages.iter().zip(&slots).map(
            |(message, attempt)| async move {
                let since = attempt.unknown_since_ms?;
                Some(self.look_up(own, message, since).await)
            },
        ))
        .await;
        let mut to_send = (Vec::new(), Vec::new());
        for ((message, attempt), lookup) in messages.into_iter().zip(slots).zip(asked) {
            match lookup {
                Some((
                    Lookup::Sent {
                        provider_message_id,
                    },
                    by,
                )) => {
                    tracing::info!(provider = %own.name, by = %by.name, id = %message.id, "the provider has the message whose outcome was unknown: not sent again");
                    let sent_by = (by.name != own.name).then(|| by.name.clone());
                    let outcome = Outcome::Confirmed {
                        provider_message_id,
                    };
                    settle(attempt, outcome, sent_by, results);
                }
                other => {
                    if let Some((Lookup::CannotTell(why), by)) = &other {
                        tracing::debug!(provider = %own.name, by = %by.name, id = %message.id, why = %why, "cannot tell whether an attempt whose outcome was unknown arrived: sending again");
                    }
                    to_send.0.push(message);
                    to_send.1.push(attempt);
                }
            }
        }
        to_send
    }

    /// Asks every provider that may have made the unknown attempt at `message`
    /// made at `since_ms` or later — its own provider `own` and those its channel
    /// fails over to from it, as the attempt may have gone through any of them —
    /// at once, each within the send timeout. Answers the first that has it, else
    /// the first that cannot tell, else `NotSent` from `own`.
    async fn look_up<'a>(
        &'a self,
        own: &'a Route,
        message: &Message,
        since_ms: i64,
    ) -> (Lookup, &'a Route) {
        let fallbacks = self.inner.fallbacks.get(&own.name).into_iter().flatten();
        let asked: Vec<&Route> = std::iter::once(own)
            .chain(fallbacks.filter(|via| {
                self.inner
                    .registry
                    .fails_over(message.channel, &own.name, &via.name)
            }))
            .collect();
        let answers = futures_util::future::join_all(asked.iter().map(|route| {
            let query = route.provider.query(message, since_ms);
            async move {
                tokio::time::timeout(self.inner.send_timeout, query)
                    .await
                    .unwrap_or_else(|_| Lookup::CannotTell("the status query timed out".into()))
            }
        }))
        .await;
        let mut found = (Lookup::NotSent, own);
        for (route, lookup) in asked.into_iter().zip(answers) {
            match lookup {
                Lookup::Sent { .. } => return (lookup, route),
                Lookup::CannotTell(_) if found.0 == Lookup::NotSent => found = (lookup, route),
                _ => {}
            }
        }
        found
    }

    /// Turns one attempt's answer into the message's outcome (suppressing an
    /// undeliverable recipient) and hands it to the settler.
    async fn finish(
        &self,
        path: &Path,
        message: &Message,
        attempt: Attempt,
        answer: Result<Receipt, provider::Error>,
        results: &mpsc::UnboundedSender<Done>,
    ) {
        let route = &path.via;
        let failed_over = (path.own.name != route.name).then_some(path.own.name.as_str());
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
                let verdict = match outcome {
                    Outcome::Failed { .. } => "failed",
                    Outcome::Unknown { .. } => "outcome unknown; will ask the provider, then retry",
                    Outcome::Release { .. } => "waits for the recipient's cap",
                    _ => "will retry",
                };
                tracing::warn!(provider = %route.name, failed_over_from = failed_over, id = %message.id, attempt = attempt.number, error = %error, verdict, "send failed");
                match (failed_over, outcome) {
                    (Some(_), Outcome::Retry { at_ms, error }) => Outcome::Retry {
                        at_ms,
                        error: format!("via {}: {error}", route.name),
                    },
                    (Some(_), Outcome::Failed { error }) => Outcome::Failed {
                        error: format!("via {}: {error}", route.name),
                    },
                    (Some(_), Outcome::Unknown { at_ms, error }) => Outcome::Unknown {
                        at_ms,
                        error: format!("via {}: {error}", route.name),
                    },
                    (_, outcome) => outcome,
                }
            }
        };
        let took = Duration::from_millis(now_ms().saturating_sub(attempt.sent_ms).unsigned_abs());
        self.inner
            .metrics
            .attempted(&route.name, message.channel, &outcome, took);
        let sent_by = failed_over.map(|_| route.name.clone());
        settle(attempt, outcome, sent_by, results);
    }
}

/// Hands one attempt's outcome to the settler.
fn settle(
    attempt: Attempt,
    outcome: Outcome,
    sent_by: Option<String>,
    results: &mpsc::UnboundedSender<Done>,
) {
    let settlement = Settlement {
        lease: attempt.lease,
        outcome,
        sent_by,
    };
    // The settler outlives every send it can receive from; if it is gone the
    // process is past its grace period and the lease brings the message back.
    let _ = results.send((settlement, attempt.permit));
}

/// Whose messages a send carries, and which provider it goes through: the same
/// one, or a fallback while the own provider's circuit is open.
struct Path {
    own: Route,
    via: Route,
}

/// Where a claimer's messages go this time round.
enum Choice<'a> {
    /// Through `via`, holding its circuit's probe when it is half-open.
    Send {
        via: &'a Route,
        probe: Option<Probe>,
    },
    /// Every circuit on the way is open: look again after this long.
    Wait(Duration),
}

/// A duration in ms, as the store counts time.
fn millis(d: Duration) -> i64 {
    crate::domain::millis(d)
}

/// One claimed message's attempt: its number, its lease, and its in-flight slot.
struct Attempt {
    number: u32,
    lease: crate::queue::Lease,
    permit: OwnedSemaphorePermit,
    /// When it was handed to the provider (ms).
    sent_ms: i64,
    /// When an earlier attempt's outcome became unknown, if one did (ms).
    unknown_since_ms: Option<i64>,
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
mod tests;
