//! The claim loop: one per provider, taking slots, pacing and claiming due
//! messages, and spawning their sends.

use tokio::sync::mpsc;
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
            self.pace(&via.name, |pace| pace.refund(asked - claimed.len()));
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
            if idle {
                tokio::select! {
                    () = &mut work => {}
                    () = tokio::time::sleep(self.inner.poll) => {}
                    () = shutdown.cancelled() => return,
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
                    pace.accepted(1, now);
                }
                None
            }
        });
        if let Some(Some(rate)) = paced {
            tracing::info!(provider = %via, rate_per_sec = rate, "the provider throttles: sending at the rate it accepts");
        }
    }
}
