//! A claimer with nothing due: it reads when its provider's next message is due
//! (an index read, never a write) and sleeps until then or until work arrives in
//! this process (a batch accepted or resumed, a message put back for later). Work
//! another process added is seen by a bounded poll, that reads: one poll interval
//! at first, doubling while nothing is due up to [`IDLE_MAX`]. Waiting messages,
//! however many, cost no claims, no writes and few wake-ups.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio_util::sync::CancellationToken;

use super::Pool;
use crate::domain::now_ms;

/// The longest an idle claimer sleeps without reading the store again (unless the
/// poll interval is longer): how late it may see work another process added.
pub(super) const IDLE_MAX: Duration = Duration::from_secs(1);

impl Pool {
    /// Waits until `provider` may have a message to claim: one is due, `work`
    /// fires, or reading the store failed (the claim then says why). Answers false
    /// when `shutdown` fired first.
    pub(super) async fn until_due(
        &self,
        provider: &str,
        mut work: Pin<&mut Notified<'_>>,
        shutdown: &CancellationToken,
    ) -> bool {
        let most = IDLE_MAX.max(self.inner.poll);
        let mut poll = self.inner.poll;
        loop {
            let wait = match self.inner.queue.next_due(provider).await {
                Ok(Some(due)) => {
                    Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0)).min(poll)
                }
                Ok(None) => poll,
                Err(e) => {
                    tracing::debug!(provider, error = %e, "reading when messages are due failed");
                    return true;
                }
            };
            if wait.is_zero() {
                return true;
            }
            poll = (poll * 2).min(most);
            tokio::select! {
                () = &mut work => return true,
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return false,
            }
        }
    }
}
