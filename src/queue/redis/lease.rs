//! Renewing the leases of messages whose sends are in progress.

use std::time::Duration;

use super::Redis;
use super::slot::Slot;
use crate::domain::{millis, now_ms};
use crate::queue::{Lease, Result};

/// Extends the leases still held to `ARGV[3]` (ms): the message's `lease_until`
/// and its score in `leased:{provider}`. A message whose lease token changed
/// (claimed again) or that left `sending` (settled) is not touched; `updated_at`
/// stays the claim's time, which a lapsed lease's message comes back marked with.
/// Returns how many were extended.
/// ARGV: P, now, until, then per lease: member, token.
pub(super) const RENEW: &str = r"
local until_ = ARGV[3]
local renewed = 0
for i = 4, #ARGV, 2 do
  local member, token = ARGV[i], ARGV[i + 1]
  local key = P .. 'm:' .. member
  local m = redis.call('HMGET', key, 'state', 'lease', 'provider')
  if m[1] == 'sending' and m[2] == token then
    redis.call('HSET', key, 'lease_until', until_)
    redis.call('ZADD', P .. 'leased:' .. m[3], until_, member)
    renewed = renewed + 1
  end
end
return renewed
";

impl Redis {
    /// [`Engine::renew`](crate::queue::Engine::renew).
    pub(super) async fn renew_leases(&self, leases: Vec<Lease>, lease: Duration) -> Result<usize> {
        let now = now_ms();
        let mut call = self.scripts.renew.prepare_invoke();
        call.arg(&self.prefix)
            .arg(now)
            .arg(now.saturating_add(millis(lease)));
        for lease in &leases {
            let Some(slot) = Slot::from_row(lease.row) else {
                continue;
            };
            call.arg(slot.member()).arg(lease.token);
        }
        call.invoke_async::<usize>(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }
}
