//! The deadline sweep: every second, the unsent messages whose batch's deadline
//! has passed become `expired`. Claims expire their own provider's pending ones
//! before leasing; this ends the others — a paused batch's, those of unknown
//! outcome, those of a provider that claims nothing (its circuit open, no fallback).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::queue::Queue;

/// How often the sweep runs.
pub(super) const EVERY: Duration = Duration::from_secs(1);

/// The most messages one store call expires, so that no call holds the store for
/// long; a run makes calls until fewer come back, at most [`STEPS`] of them.
const STEP: u64 = 10_000;
const STEPS: usize = 100;

/// Sweeps `queue` every `every` until `shutdown`.
pub(super) async fn expiry_loop(queue: Queue, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let mut expired = 0;
        for _ in 0..STEPS {
            match queue.expire(STEP).await {
                Ok(n) => {
                    expired += n;
                    if n < STEP {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expiring messages past their deadline failed; will try again");
                    break;
                }
            }
        }
        if expired > 0 {
            tracing::info!(
                messages = expired,
                "messages not sent by their batch's deadline expired"
            );
        }
    }
}
