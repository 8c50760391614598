//! Recipients at a per-recipient cap now: what the pre-flight report says will
//! wait for their caps, read from the sends every engine records for them.

use super::{Queue, Result};
use crate::domain::now_ms;
use crate::ratelimit::{Limits, at_cap, longest_window};

impl Queue {
    /// How many of `addresses` are at one of `limits`' per-recipient caps (those
    /// of its owner, else `provider`'s) now: a message to one would wait. One read
    /// of the store; none without caps.
    pub async fn at_caps(
        &self,
        provider: &str,
        limits: &Limits,
        addresses: Vec<String>,
    ) -> Result<usize> {
        let caps = &limits.per_recipient;
        if caps.is_empty() || addresses.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let since = now - longest_window(caps);
        let mut recent = self
            .caps
            .recent_sends(limits.owner_or(provider), since, addresses)
            .await?;
        Ok(recent
            .values_mut()
            .map(|sends| at_cap(caps, sends, now))
            .filter(|&capped| capped)
            .count())
    }
}
