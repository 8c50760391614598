//! The worker pool: claim → send → settle.
//!
//! Each provider has a claimer that takes in-flight slots first and then claims up
//! to that many due messages under a lease, within the provider's rate limit (a
//! token bucket in the store, shared by every process), so waiting for a limit
//! never holds a lease or counts as an attempt. Each claimed message is sent
//! on its own task; outcomes go to one settler that writes them back in bulk. A
//! message holds its in-flight slot until its outcome is committed, so at most
//! `max_in_flight` messages are ever claimed and unrecorded: that bounds how many a
//! crash can repeat. Until then its lease is renewed (`lease`: one engine call a
//! third of a lease for all of them), so a slow send never outlives it and a dead
//! process's messages come back within one lease, as unknown outcomes that
//! providers with a lookup are asked about before a new attempt. On shutdown
//! claimers stop, in-flight sends get a grace period, everything finished is
//! written; claimed messages whose request never started go back to the queue at
//! once, and the rest (which may have reached the provider) come back through
//! lease expiry.
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
//!
//! The parts: [`Pool`] here (wiring, the run and its drain); `claim` (each
//! provider's claim loop); `failover` (which provider carries a claimer's messages,
//! and which of them a fallback may carry); `send` (one attempt through a provider,
//! unknown outcomes looked up first, each decision carried out); `decide` (what
//! becomes of a message after its turn: one pure function from the answer, the
//! attempts, the policy and the routing); `expiry` (the sweep of messages past
//! their batch's deadline); `idle` (a claimer with nothing due waits for the next
//! due time, reading, never claiming); `lease` (the leases held and their renewal); `retry`
//! ([`RetryPolicy`]: when to try
//! again); `settle` (the settler writing outcomes back in bulk); `template_code`
//! (stored templates' provider codes, kept briefly).

mod claim;
mod decide;
mod expiry;
mod failover;
mod idle;
mod lease;
mod retry;
mod send;
mod settle;
mod template_code;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::circuit::Circuits;
use crate::config::Config;
use crate::domain::now_ms;
use crate::metrics::Metrics;
use crate::provider::{Registry, Route};
use crate::queue::{Outcome, Queue, Settlement};
use crate::ratelimit::Pace;

use lease::{Held, renew_loop};
pub use retry::RetryPolicy;
use settle::settle_loop;
use template_code::TemplateCodes;

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
    /// The leases of this process's claimed messages whose outcome is not yet
    /// committed, renewed together every third of a lease.
    held: Held,
    send_timeout: Duration,
    poll: Duration,
    grace: Duration,
    slots: Arc<Semaphore>,
    /// How many slots there are (`worker.max_in_flight`).
    max_in_flight: usize,
    /// Held while a claimer gathers slots and claims (see `claim`).
    claiming: tokio::sync::Mutex<()>,
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
            held: Held::default(),
            send_timeout: config.send_timeout(),
            poll: Duration::from_millis(config.worker.poll_interval_ms),
            grace: Duration::from_millis(config.worker.shutdown_grace_ms),
            slots: Arc::new(Semaphore::new(config.worker.max_in_flight)),
            max_in_flight: config.worker.max_in_flight,
            claiming: tokio::sync::Mutex::new(()),
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
            self.inner.registry.clone(),
            rx,
            self.inner.held.clone(),
            stop_settler.clone(),
        ));
        let renewer = tokio::spawn(renew_loop(
            self.inner.queue.clone(),
            self.inner.held.clone(),
            self.inner.lease,
            stop_settler.clone(),
        ));
        let sweeper = tokio::spawn(expiry::expiry_loop(
            self.inner.queue.clone(),
            expiry::EVERY,
            shutdown.clone(),
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
        self.give_back_unstarted().await;
        if let Err(e) = sweeper.await {
            tracing::error!(error = %e, "the expiry sweep failed");
        }
        stop_settler.cancel();
        if let Err(e) = settler.await {
            tracing::error!(error = %e, "the settler task failed");
        }
        if let Err(e) = renewer.await {
            tracing::error!(error = %e, "the lease renewer task failed");
        }
    }

    /// Once sends may no longer start, puts the claimed messages whose request
    /// never started (waiting on a status lookup, say) back in the queue at once,
    /// without spending an attempt: only those whose request may have reached the
    /// provider are left to their lease.
    async fn give_back_unstarted(&self) {
        let unstarted = self.inner.held.close();
        if unstarted.is_empty() {
            return;
        }
        let now = now_ms();
        let count = unstarted.len();
        let released = unstarted
            .into_iter()
            .map(|lease| Settlement {
                lease,
                outcome: Outcome::Release {
                    at_ms: now,
                    error: None,
                },
                sent_by: None,
            })
            .collect();
        match self.inner.queue.settle(released).await {
            Ok(_) => tracing::info!(
                count,
                "claimed messages never sent were put back in the queue"
            ),
            Err(e) => {
                tracing::warn!(error = %e, count, "putting back messages never sent failed; they come back after their lease")
            }
        }
    }

    /// Runs `f` on the pace of provider `name`.
    fn pace<T>(&self, name: &str, f: impl FnOnce(&mut Pace) -> T) -> Option<T> {
        let pace = self.inner.paces.get(name)?;
        Some(f(&mut pace.lock().unwrap_or_else(|p| p.into_inner())))
    }
}

#[cfg(test)]
mod tests;
