//! The leases of this process's sends in progress, and their renewal: every third
//! of a lease, one engine call extends all of them, so a send that takes longer
//! than a lease keeps its message, and a dead process's messages come back within
//! one lease.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::queue::{Lease, Queue};

/// The leases held from claim until their outcome is committed; cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Held(Arc<Mutex<HashSet<Lease>>>);

impl Held {
    pub(super) fn hold(&self, leases: impl IntoIterator<Item = Lease>) {
        self.set().extend(leases);
    }

    pub(super) fn let_go(&self, leases: impl IntoIterator<Item = Lease>) {
        let mut set = self.set();
        for lease in leases {
            set.remove(&lease);
        }
    }

    fn all(&self) -> Vec<Lease> {
        self.set().iter().copied().collect()
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<Lease>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Renews every lease in `held` to `lease` from now, every third of `lease`, until
/// `stop`. A failed renewal is logged and tried at the next tick; two missed
/// ticks in a row leave the leases a third of a lease to run.
pub(super) async fn renew_loop(queue: Queue, held: Held, lease: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let leases = held.all();
        let asked = leases.len();
        match queue.renew(leases, lease).await {
            Ok(renewed) if renewed < asked => {
                // Settled meanwhile, mostly; or lost to another claim after the
                // store was out of reach for longer than a lease.
                tracing::debug!(asked, renewed, "some leases were not renewed");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, leases = asked, "renewing leases failed; will try again")
            }
        }
    }
}
