//! The settler: writes outcomes back in bulk and frees their in-flight slots.

use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use crate::provider::Registry;
use crate::queue::suppress::{self, Word};
use crate::queue::{AppliedReceipt, Outcome, Queue, Settlement};

use super::lease::Held;
use super::send::Attempt;

/// Most settlements written in one transaction.
const SETTLE_CHUNK: usize = 4096;
/// Back-off after the store fails, before trying again.
pub(super) const STORE_RETRY: Duration = Duration::from_millis(500);

/// Hands one attempt's outcome to the settler.
pub(super) fn settle(
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

/// Frees the slots of recorded outcomes in one step, so a waiting claimer sees
/// them all at once and claims them in one transaction rather than a few at a time.
fn release(done: &mut Vec<Done>) {
    let mut permits = done.drain(..).map(|(_, permit)| permit);
    if let Some(mut all) = permits.next() {
        permits.for_each(|p| all.merge(p));
    }
}

/// A finished send: its outcome, and the in-flight slot it frees once recorded.
pub(super) type Done = (Settlement, OwnedSemaphorePermit);

/// Writes outcomes back in bulk until stopped, then writes what is left once more.
/// Slots are freed, and leases no longer renewed, only after their outcomes are
/// committed. Delivery reports held for the messages now sent, which the store
/// applies as it settles them, go to the suppression rules of `registry`'s providers.
pub(super) async fn settle_loop(
    queue: Queue,
    registry: Registry,
    mut rx: mpsc::UnboundedReceiver<Done>,
    held: Held,
    stop: CancellationToken,
) {
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
        match queue.settle(settlements).await {
            Ok(applied) => {
                held.let_go(pending.iter().map(|(s, _)| s.lease));
                release(&mut pending);
                suppress_held(&queue, &registry, applied).await;
            }
            Err(e) => {
                tracing::error!(error = %e, count = pending.len(), "recording delivery outcomes failed; will try again");
                tokio::select! {
                    () = tokio::time::sleep(STORE_RETRY) => continue,
                    () = stop.cancelled() => break,
                }
            }
        }
    }
    while let Ok(s) = rx.try_recv() {
        pending.push(s);
    }
    match queue
        .settle(pending.into_iter().map(|(s, _)| s).collect())
        .await
    {
        Ok(applied) => suppress_held(&queue, &registry, applied).await,
        Err(e) => {
            tracing::error!(error = %e, "recording the last outcomes failed; those messages will be sent again after their lease");
        }
    }
}

/// Suppresses the recipients that held delivery reports, applied as their sends
/// were settled, call undeliverable: as if the reports had come after the sends.
async fn suppress_held(queue: &Queue, registry: &Registry, held: Vec<AppliedReceipt>) {
    if held.is_empty() {
        return;
    }
    let words = held.into_iter().map(Word::Receipt);
    suppress::undeliverable(queue.records(), registry, words).await;
}
