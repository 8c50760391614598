//! Deadlines: the unsent messages of batches whose deadline has passed become
//! `expired`, keeping their last error. Claims expire a provider's ready ones as
//! they meet them (and a message going back to the queue after its batch's
//! deadline goes to `expired` instead); the sweep here ends the rest, walking the
//! batches of `deadlines` whose time has come.

use super::Redis;
use crate::queue::Result;

impl Redis {
    /// [`Engine::expire`](crate::queue::Engine::expire): a batch at a time, so it
    /// may expire a whole batch past `limit` once it has started on it.
    pub(super) async fn sweep_expired(&self, now: i64, limit: u64) -> Result<u64> {
        self.scripts
            .expire
            .arg(&self.prefix)
            .arg(now)
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }
}
