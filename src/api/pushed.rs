//! Receipts and replies that providers push on connections of their own (SMPP's
//! `deliver_sm`), stored as `POST /v1/receipts/{provider}` and
//! `POST /v1/inbound/{provider}` store theirs. Each is acknowledged to the
//! provider only once stored, so that one lost in a crash comes again.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::state::AppState;
use super::{inbound, receipts};
use crate::provider::{Push, Pushed, Pushes};

/// Pushes stored in one go.
const BATCH: usize = 256;

/// The tasks storing every provider's pushes.
pub struct Pushing {
    state: AppState,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Pushing {
    /// Starts storing the pushes of every provider that has them (which, for
    /// SMPP, binds).
    pub fn start(state: &AppState) -> Pushing {
        let stop = CancellationToken::new();
        let tasks = state
            .intake
            .registry()
            .routes()
            .filter_map(|route| Some((route.name.clone(), route.provider.take_pushes()?)))
            .map(|(name, pushes)| tokio::spawn(store(state.clone(), name, pushes, stop.clone())))
            .collect();
        Pushing {
            state: state.clone(),
            stop,
            tasks,
        }
    }

    /// Closes every provider's own connections (SMPP's `unbind`), then stops
    /// storing: what arrives until the connections close is still stored.
    pub async fn stop(self) {
        for route in self.state.intake.registry().routes() {
            route.provider.close().await;
        }
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Stores provider `name`'s pushes until `stop`.
async fn store(state: AppState, name: String, mut pushes: Pushes, stop: CancellationToken) {
    let mut batch: Vec<Push> = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = pushes.recv_many(&mut batch, BATCH) => if n == 0 { return },
            () = stop.cancelled() => return,
        }
        let (mut reports, mut replies) = (Vec::new(), Vec::new());
        for push in &batch {
            match &push.pushed {
                Pushed::Receipt(report) => reports.push(report.clone()),
                Pushed::Reply(reply) => replies.push(reply.clone()),
            }
        }
        let receipts_stored = reports.is_empty()
            || stored(
                &name,
                "delivery receipts",
                receipts::apply(&state, &name, reports).await,
            );
        let replies_stored = replies.is_empty()
            || stored(
                &name,
                "replies",
                inbound::record(&state, &name, replies).await,
            );
        for push in batch.drain(..) {
            let stored = match push.pushed {
                Pushed::Receipt(_) => receipts_stored,
                Pushed::Reply(_) => replies_stored,
            };
            // The provider gave up waiting: it will push it again.
            let _ = push.stored.send(stored);
        }
    }
}

/// Whether storing provider `name`'s pushed `what` went well; logs why not.
fn stored<T>(name: &str, what: &str, outcome: Result<T, super::Error>) -> bool {
    match outcome {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(provider = %name, "storing pushed {what} failed: {e:?}");
            false
        }
    }
}
