//! When a failed send is tried again: the retry policy's waits and attempts.

use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::config::RetryConfig;

/// When to try a failed send again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// The attempts a message gets before it fails.
    pub max_attempts: u32,
    /// The waits between attempts: `first` doubling up to `cap`, with equal
    /// jitter. `cap` also bounds a provider's `retry_after`.
    pub backoff: Backoff,
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(c: &RetryConfig) -> Self {
        RetryPolicy {
            max_attempts: c.max_attempts,
            backoff: Backoff {
                first: Duration::from_millis(c.base_delay_ms),
                cap: Duration::from_millis(c.max_delay_ms),
                jitter: Jitter::Equal,
            },
        }
    }
}

impl RetryPolicy {
    /// The delay before the next attempt, after `attempts` attempts have failed:
    /// the provider's `retry_after` when it gave one, else the backoff's step
    /// after `attempts - 1` doublings, `first · 2^(attempts-1)`, with equal jitter
    /// (between half and all of it); never more than the backoff's `cap`.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        if let Some(hint) = retry_after {
            return hint.min(self.backoff.cap);
        }
        self.backoff.delay(attempts.saturating_sub(1), jitter)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Four attempts, 1 s doubling up to 10 s: the policy the worker's tests use.
    pub(in crate::worker) fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            backoff: Backoff {
                first: Duration::from_secs(1),
                cap: Duration::from_secs(10),
                jitter: Jitter::Equal,
            },
        }
    }

    #[test]
    fn delays_double_with_jitter_and_stop_at_the_maximum() {
        let p = policy();
        assert_eq!(p.delay(1, None, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(1, None, 0.0), Duration::from_millis(500));
        assert_eq!(p.delay(3, None, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(20, None, 1.0), Duration::from_secs(10));
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3)), 0.0),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(99)), 0.0),
            Duration::from_secs(10)
        );
    }
}
