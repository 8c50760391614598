//! When a failed send is tried again, and what becomes of it otherwise.

use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::config::RetryConfig;
use crate::domain::millis;
use crate::provider;
use crate::queue::Outcome;

/// The longest a message over a recipient's frequency cap at the provider waits
/// (the caps' windows end by the next midnight).
const CAPPED_WAIT_MAX: Duration = Duration::from_secs(24 * 3600);

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

    /// What becomes of a message whose attempt number `attempts` failed with `error`.
    /// A recipient over the provider's frequency cap waits for the cap's window, and
    /// the attempt does not count: nothing was sent. An unknown outcome waits like a
    /// retry, but as `unknown`: the provider is asked about it before the next
    /// attempt.
    pub fn outcome(&self, attempts: u32, error: &provider::Error, now_ms: i64) -> Outcome {
        match error {
            provider::Error::Transient { retry_after, .. } if error.is_recipient_capped() => {
                let wait = retry_after
                    .unwrap_or(self.backoff.first)
                    .min(CAPPED_WAIT_MAX);
                Outcome::Release {
                    at_ms: now_ms.saturating_add(millis(wait)),
                }
            }
            provider::Error::Unknown { reason } if attempts >= self.max_attempts => {
                Outcome::Failed {
                    error: format!(
                        "{reason} (gave up after {attempts} attempts; whether the last reached the provider is unknown)"
                    ),
                }
            }
            provider::Error::Unknown { reason } => {
                let delay = self.delay(attempts, None, fastrand::f64());
                Outcome::Unknown {
                    at_ms: now_ms.saturating_add(millis(delay)),
                    error: reason.clone(),
                }
            }
            provider::Error::Permanent { reason } | provider::Error::Undeliverable { reason } => {
                Outcome::Failed {
                    error: reason.clone(),
                }
            }
            provider::Error::Transient { reason, .. } if attempts >= self.max_attempts => {
                Outcome::Failed {
                    error: format!("{reason} (gave up after {attempts} attempts)"),
                }
            }
            provider::Error::Transient {
                reason,
                retry_after,
            } => {
                let delay = self.delay(attempts, *retry_after, fastrand::f64());
                Outcome::Retry {
                    at_ms: now_ms.saturating_add(millis(delay)),
                    error: reason.clone(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
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

    #[test]
    fn transient_errors_retry_until_the_last_attempt_permanent_ones_fail_at_once() {
        let p = policy();
        let transient = provider::Error::Transient {
            reason: "HTTP 503".into(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(matches!(
            p.outcome(1, &transient, 1_000),
            Outcome::Retry { at_ms: 3_000, .. }
        ));
        match p.outcome(4, &transient, 0) {
            Outcome::Failed { error } => assert!(error.contains("after 4 attempts"), "{error}"),
            other => panic!("{other:?}"),
        }
        let permanent = provider::Error::Permanent {
            reason: "HTTP 400".into(),
        };
        assert!(matches!(
            p.outcome(1, &permanent, 0),
            Outcome::Failed { .. }
        ));
    }

    #[test]
    fn a_recipients_frequency_cap_waits_its_whole_window_without_counting_an_attempt() {
        let p = policy();
        let day = Duration::from_secs(12 * 3600);
        let capped =
            provider::Error::recipient_capped("tencent LimitExceeded.PhoneNumberDailyLimit", day);
        // Even at the last attempt, and past retry.max_delay_ms (10 s here).
        for attempts in [1, 4] {
            match p.outcome(attempts, &capped, 1_000) {
                Outcome::Release { at_ms } => assert_eq!(at_ms, 1_000 + 12 * 3_600_000),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_unknown_outcome_waits_as_unknown_until_the_last_attempt_fails_it() {
        let p = policy();
        let unknown = provider::Error::Unknown {
            reason: "no answer within 30000 ms".into(),
        };
        match p.outcome(1, &unknown, 1_000) {
            Outcome::Unknown { at_ms, error } => {
                assert!((1_500..=2_000).contains(&at_ms), "{at_ms}");
                assert_eq!(error, "no answer within 30000 ms");
            }
            other => panic!("{other:?}"),
        }
        match p.outcome(4, &unknown, 0) {
            Outcome::Failed { error } => assert!(error.contains("unknown"), "{error}"),
            other => panic!("{other:?}"),
        }
    }
}
