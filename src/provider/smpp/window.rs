//! One bound connection's outstanding requests ([`Link`]): each gets a sequence
//! number and waits for the answer that carries it, within a deadline; submits
//! also take one of the window's slots, so that at most `window` are unanswered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rusmpp::{Command, CommandStatus, Pdu};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unanswered {
    /// It never left Herald: no slot in the window came free in time, or the
    /// connection was gone.
    #[error("{0}")]
    NotSent(String),
    /// It was handed to the connection, and no answer came: the SMSC may have it.
    #[error("{0}")]
    NoAnswer(String),
}

/// A bound connection, as the senders see it.
#[derive(Debug)]
pub(crate) struct Link {
    /// Commands to write, in order.
    out: mpsc::UnboundedSender<Command>,
    pending: Mutex<HashMap<u32, oneshot::Sender<Command>>>,
    next: AtomicU32,
    window: Semaphore,
    /// Cancelled when the connection is lost or closed.
    pub closed: CancellationToken,
}

impl Link {
    /// A link writing to `out`, with `window` slots for submits.
    pub fn new(out: mpsc::UnboundedSender<Command>, window: usize) -> Link {
        Link {
            out,
            pending: Mutex::new(HashMap::new()),
            // 1 was the bind's.
            next: AtomicU32::new(2),
            window: Semaphore::new(window),
            closed: CancellationToken::new(),
        }
    }

    /// Sends `pdu` and waits for its answer until `timeout` has passed; a
    /// submit (`windowed`) first waits for a slot within the same time.
    pub async fn request(
        &self,
        pdu: impl Into<Pdu>,
        timeout: Duration,
        windowed: bool,
    ) -> Result<Command, Unanswered> {
        let deadline = Instant::now() + timeout;
        let _slot = if windowed {
            match tokio::time::timeout_at(deadline, self.window.acquire()).await {
                Ok(Ok(slot)) => Some(slot),
                Ok(Err(_)) => return Err(Unanswered::NotSent("the bind was lost".into())),
                Err(_) => {
                    return Err(Unanswered::NotSent(format!(
                        "no slot of the window came free within {timeout:?}"
                    )));
                }
            }
        } else {
            None
        };
        let sequence = self.sequence();
        let (tx, rx) = oneshot::channel();
        self.pending_map().insert(sequence, tx);
        let command = Command::new(CommandStatus::EsmeRok, sequence, pdu);
        if self.closed.is_cancelled() || self.out.send(command).is_err() {
            self.pending_map().remove(&sequence);
            return Err(Unanswered::NotSent("the bind was lost".into()));
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Unanswered::NoAnswer(
                "the bind was lost before the SMSC answered".into(),
            )),
            Err(_) => {
                self.pending_map().remove(&sequence);
                Err(Unanswered::NoAnswer(format!(
                    "the SMSC did not answer within {timeout:?}"
                )))
            }
        }
    }

    /// Writes `command` as it is (an answer to the SMSC's own request).
    pub fn answer(&self, command: Command) {
        // A closed channel means the connection is going: nothing to answer on.
        let _ = self.out.send(command);
    }

    /// Hands an answer from the SMSC to the request waiting for it; `false`
    /// when none is (it came too late, or the SMSC made up its number).
    pub fn answered(&self, command: Command) -> bool {
        let waiting = self.pending_map().remove(&command.sequence_number());
        waiting.is_some_and(|tx| tx.send(command).is_ok())
    }

    /// Closes the link: requests still waiting learn that no answer will come.
    pub fn close(&self) {
        self.closed.cancel();
        self.window.close();
        self.pending_map().clear();
    }

    /// Sequence numbers run from 1 to 0x7FFFFFFF and wrap.
    fn sequence(&self) -> u32 {
        let n = self.next.fetch_add(1, Ordering::Relaxed) & 0x7FFF_FFFF;
        n.max(1)
    }

    fn pending_map(&self) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<Command>>> {
        // A panic while holding it leaves the map whole: each use is one call.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_window_makes_the_next_submit_wait_and_then_give_up_unsent() {
        let (out, mut written) = mpsc::unbounded_channel();
        let link = std::sync::Arc::new(Link::new(out, 1));
        let first = tokio::spawn({
            let link = link.clone();
            async move {
                link.request(Pdu::EnquireLink, Duration::from_secs(5), true)
                    .await
            }
        });
        let sent = written.recv().await.expect("the first is written");
        let second = link
            .request(Pdu::EnquireLink, Duration::from_secs(1), true)
            .await;
        assert!(matches!(second, Err(Unanswered::NotSent(_))), "{second:?}");
        assert!(link.answered(Command::new(
            CommandStatus::EsmeRok,
            sent.sequence_number(),
            Pdu::EnquireLinkResp
        )));
        assert!(first.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_written_request_without_an_answer_ends_as_no_answer() {
        let (out, _written) = mpsc::unbounded_channel();
        let link = Link::new(out, 10);
        let answer = link
            .request(Pdu::EnquireLink, Duration::from_secs(2), true)
            .await;
        assert!(matches!(answer, Err(Unanswered::NoAnswer(_))), "{answer:?}");
        assert!(
            link.pending_map().is_empty(),
            "the late answer finds nothing"
        );
    }
}
