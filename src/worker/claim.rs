//! The claim loop: one per provider, taking slots, pacing and claiming due
//! messages, and spawning their sends. Claims of a process take turns, and a
//! provider that takes many messages a request claims whole requests: with more
//! due than one claim took, it waits (briefly) for the slots of a full request.

use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::now_ms;
use crate::provider::Route;
use crate::queue::{Claim, Outcome};

use super::Pool;
use super::decide::Decision;
use super::failover::{Choice, Routing};
use super::settle::{Done, STORE_RETRY};

/// Most messages claimed in one transaction.
const CLAIM_CHUNK: usize = 512;
/// The longest a claim for a provider that takes many messages a request waits
/// for the slots of a full request while sends elsewhere finish.
const GATHER_MAX: Duration = Duration::from_millis(500);

impl Pool {
    pub(super) async fn claim_loop(
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
            let most = if probe.is_some() {
                1
            } else {
                self.claim_size(via.provider.batch_limit())
            };
            // A provider that throttled this process is paced first.
            let allowed = match self.pace(&via.name, |pace| pace.take(most, now_ms())) {
                Some(Err(wait)) => {
                    drop(first);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
                Some(Ok(allowed)) => allowed,
                None => most,
            };
            let (claim, permits) = {
                // Claims take turns, so that a claim finding nothing never holds
                // the slots another provider's claim could use.
                let _turn = self.inner.claiming.lock().await;
                let gathering = probe.is_none() && via.provider.batch_limit() > 1;
                self.claim(&route, via, first, allowed, gathering).await
            };
            let claimed = match claim {
                Ok(Claim::Messages(claimed)) => claimed,
                Ok(Claim::Wait(wait)) => {
                    drop(permits);
                    self.pace(&via.name, |pace| pace.refund(allowed));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
                Err(e) => {
                    tracing::error!(provider = %route.name, error = %e, "claiming messages failed");
                    drop(permits);
                    self.pace(&via.name, |pace| pace.refund(allowed));
                    tokio::select! {
                        () = tokio::time::sleep(STORE_RETRY) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
            };
            let mut permits = permits;
            permits.truncate(claimed.len());
            self.pace(&via.name, |pace| pace.refund(allowed - claimed.len()));
            let idle = claimed.is_empty();
            // One task per message, or per request for providers that take many
            // messages in one (`batch_limit`).
            let per_task = via.provider.batch_limit().max(1);
            let mut claimed = claimed.into_iter().zip(permits).peekable();
            while claimed.peek().is_some() {
                let group: Vec<_> = claimed.by_ref().take(per_task).collect();
                let routing = Routing {
                    own: route.clone(),
                    via: via.clone(),
                };
                sends.spawn(
                    self.clone()
                        .send(routing, probe.take(), group, results.clone()),
                );
            }
            // Nothing was due: wait for the next due time without claiming, and
            // without holding a probe that was not used.
            if idle {
                drop(probe);
                if !self.until_due(&route.name, work.as_mut(), &shutdown).await {
                    return;
                }
            }
        }
    }
}

impl Pool {
    /// Tells the pace of provider `via` how it answered a send made at `sent_ms`:
    /// accepted (sent), or throttled, which paces it at the rate it accepted.
    pub(super) fn answered(&self, via: &str, decision: &Decision, sent_ms: i64) {
        let now = now_ms();
        let paced = self.pace(via, |pace| {
            if decision.pace {
                let before = pace.rate();
                pace.throttled(sent_ms, now);
                (before != pace.rate()).then(|| pace.rate()).flatten()
            } else {
                if matches!(decision.outcome, Outcome::Sent { .. }) {
                    pace.accepted(1, sent_ms, now);
                }
                None
            }
        });
        if let Some(Some(rate)) = paced {
            tracing::info!(provider = %via, rate_per_sec = rate, "the provider throttles: sending at the rate it accepts");
        }
    }
}

impl Pool {
    /// How many messages a claim asks for, for a provider taking `batch_limit`
    /// messages a request: as many whole requests as the in-flight slots hold (or
    /// as many slots as there are, when a request is larger).
    fn claim_size(&self, batch_limit: usize) -> usize {
        let room = self.inner.max_in_flight.clamp(1, CLAIM_CHUNK);
        if batch_limit <= 1 || batch_limit > room {
            return room;
        }
        room - room % batch_limit
    }

    /// Claims up to `most` of `route`'s messages through `via`, with the slots
    /// free now (`first` among them), one slot per message. When `gathering` (a
    /// provider that takes many messages a request) and the claim took all it
    /// asked for yet less than `most`, it asks the store how many more wait, waits
    /// for their slots as sends elsewhere free them (up to [`GATHER_MAX`]), and
    /// claims those too: one claim, full requests.
    async fn claim(
        &self,
        route: &Route,
        via: &Route,
        first: OwnedSemaphorePermit,
        most: usize,
        gathering: bool,
    ) -> (crate::queue::Result<Claim>, Vec<OwnedSemaphorePermit>) {
        let queue = &self.inner.queue;
        let (lease, limits) = (self.inner.lease, &via.limits);
        let mut held = first;
        self.take_free(&mut held, most);
        let asked = held.num_permits();
        let claim = queue.claim_within(&route.name, asked, lease, limits).await;
        let mut claimed = match claim {
            Ok(Claim::Messages(claimed)) => claimed,
            other => return (other, vec![held]),
        };
        if gathering && claimed.len() == asked && asked < most {
            let more = match queue.pending(&route.name, (most - asked) as u64).await {
                Ok(more) => usize::try_from(more)
                    .unwrap_or(usize::MAX)
                    .min(most - asked),
                Err(e) => {
                    tracing::warn!(provider = %route.name, error = %e, "counting the messages due failed");
                    0
                }
            };
            if more > 0 {
                let want = u32::try_from(more).expect("a claim is at most CLAIM_CHUNK");
                let slots = self.inner.slots.clone();
                match tokio::time::timeout(GATHER_MAX, slots.acquire_many_owned(want)).await {
                    Ok(more) => held.merge(more.expect("the semaphore is never closed")),
                    Err(_) => self.take_free(&mut held, asked + more),
                }
                let extra = held.num_permits() - asked;
                match queue.claim_within(&route.name, extra, lease, limits).await {
                    Ok(Claim::Messages(more)) => claimed.extend(more),
                    Ok(Claim::Wait(_)) => {}
                    Err(e) => {
                        tracing::error!(provider = %route.name, error = %e, "claiming messages failed");
                    }
                }
            }
        }
        let mut permits = Vec::with_capacity(held.num_permits());
        while held.num_permits() > 1 {
            permits.push(held.split(1).expect("more than one is held"));
        }
        permits.push(held);
        (Ok(Claim::Messages(claimed)), permits)
    }

    /// Adds the slots free now to `held`, up to `most` in all.
    fn take_free(&self, held: &mut OwnedSemaphorePermit, most: usize) {
        let slots = &self.inner.slots;
        let free = slots
            .available_permits()
            .min(most.saturating_sub(held.num_permits()));
        let free = u32::try_from(free).expect("a claim is at most CLAIM_CHUNK");
        if let Ok(more) = slots.clone().try_acquire_many_owned(free) {
            held.merge(more);
        }
    }
}
