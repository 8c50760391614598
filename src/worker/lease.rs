//! The leases of this process's sends in progress, and their renewal: every third
//! of a lease, one engine call extends all of them, so a send that takes longer
//! than a lease keeps its message, and a dead process's messages come back within
//! one lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::queue::{Lease, Queue};

/// The leases held from claim until their outcome is committed, each marked once
/// its request is handed to the provider; cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Held(Arc<Mutex<Leases>>);

#[derive(Default)]
struct Leases {
    /// Each lease held, and whether its message's request has started.
    held: HashMap<Lease, bool>,
    /// Shut down: no request may start any more.
    closed: bool,
}

impl Held {
    pub(super) fn hold(&self, leases: impl IntoIterator<Item = Lease>) {
        self.set()
            .held
            .extend(leases.into_iter().map(|l| (l, false)));
    }

    /// Marks `leases` as about to be written to the provider, unless the pool has
    /// shut down and given them back ([`Held::close`]): then answers false, and
    /// the request must not be made.
    pub(super) fn start(&self, leases: impl IntoIterator<Item = Lease>) -> bool {
        let mut set = self.set();
        if set.closed {
            return false;
        }
        for lease in leases {
            set.held.insert(lease, true);
        }
        true
    }

    pub(super) fn let_go(&self, leases: impl IntoIterator<Item = Lease>) {
        let mut set = self.set();
        for lease in leases {
            set.held.remove(&lease);
        }
    }

    /// Lets no further request start, and answers (and lets go of) the leases
    /// whose request never started: their messages were never near the provider.
    pub(super) fn close(&self) -> Vec<Lease> {
        let mut set = self.set();
        set.closed = true;
        let unstarted: Vec<Lease> = set
            .held
            .iter()
            .filter(|(_, started)| !**started)
            .map(|(lease, _)| *lease)
            .collect();
        for lease in &unstarted {
            set.held.remove(lease);
        }
        unstarted
    }

    fn all(&self) -> Vec<Lease> {
        self.set().held.keys().copied().collect()
    }

    fn set(&self) -> std::sync::MutexGuard<'_, Leases> {
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
