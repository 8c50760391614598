//! When a post that failed is tried again: each delivery waits along its own
//! [`Backoff`] (doubling from a second, with jitter), at least as long as the
//! receiver's `Retry-After`, and never past the end of its retry window, where
//! one last attempt is made; a failure after the window is the end.

use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::domain::millis;
use crate::queue::DeliveryOutcome;

/// The waits between attempts at one delivery.
pub const BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(1),
    cap: Duration::from_secs(600),
    jitter: Jitter::Equal,
};

/// What a post came to, for the deliveries it carried.
#[derive(Debug, Clone, PartialEq)]
pub enum Posted {
    /// A 2xx answer.
    Taken,
    /// Anything else: another status, a timeout, no connection. `retry_after`
    /// is the receiver's `Retry-After`, when it gave one.
    Refused {
        error: String,
        retry_after: Option<Duration>,
    },
}

/// How long deliveries are tried, and how they wait between tries.
#[derive(Debug, Clone, Copy)]
pub struct RetryRule {
    /// The window, from when a delivery was recorded (or replayed).
    pub retry_for: Duration,
    pub backoff: Backoff,
}

impl RetryRule {
    /// What becomes of a delivery recorded at `first_at_ms` and tried `attempts`
    /// times before this post, which came to `posted` at `now_ms`; `roll` is the
    /// jitter's roll in [0, 1].
    pub fn outcome(
        &self,
        posted: &Posted,
        attempts: u32,
        first_at_ms: i64,
        now_ms: i64,
        roll: f64,
    ) -> DeliveryOutcome {
        let (error, retry_after) = match posted {
            Posted::Taken => return DeliveryOutcome::Posted,
            Posted::Refused { error, retry_after } => (error, *retry_after),
        };
        let window_end = first_at_ms.saturating_add(millis(self.retry_for));
        if now_ms >= window_end {
            return DeliveryOutcome::Failed {
                error: error.clone(),
            };
        }
        let wait = self
            .backoff
            .delay(attempts, roll)
            .max(retry_after.unwrap_or_default());
        DeliveryOutcome::Retry {
            at_ms: now_ms.saturating_add(millis(wait)).min(window_end),
            error: error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: RetryRule = RetryRule {
        retry_for: Duration::from_secs(3600),
        backoff: BACKOFF,
    };

    fn refused(retry_after: Option<Duration>) -> Posted {
        Posted::Refused {
            error: "HTTP 503".into(),
            retry_after,
        }
    }

    #[test]
    fn a_taken_post_is_posted_whatever_the_attempts() {
        let outcome = RULE.outcome(&Posted::Taken, 40, 0, i64::MAX / 2, 0.5);
        assert_eq!(outcome, DeliveryOutcome::Posted);
    }

    #[test]
    fn a_refused_post_waits_longer_after_each_attempt_with_jitter() {
        let at = |attempts, roll| match RULE.outcome(&refused(None), attempts, 0, 1_000, roll) {
            DeliveryOutcome::Retry { at_ms, error } => {
                assert_eq!(error, "HTTP 503");
                at_ms - 1_000
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(at(0, 1.0), 1_000);
        assert_eq!(at(0, 0.0), 500);
        assert_eq!(at(3, 1.0), 8_000);
        assert_eq!(at(30, 1.0), 600_000, "the cap");
    }

    #[test]
    fn retry_after_lengthens_the_wait_but_never_past_the_window() {
        let hour = Some(Duration::from_secs(7200));
        match RULE.outcome(&refused(Some(Duration::from_secs(30))), 0, 0, 1_000, 1.0) {
            DeliveryOutcome::Retry { at_ms, .. } => assert_eq!(at_ms, 31_000),
            other => panic!("{other:?}"),
        }
        match RULE.outcome(&refused(hour), 0, 0, 1_000, 1.0) {
            DeliveryOutcome::Retry { at_ms, .. } => assert_eq!(at_ms, 3_600_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refusal_at_or_after_the_window_ends_fails_with_the_last_error() {
        for now in [3_600_000, 3_600_001, 9_000_000] {
            assert_eq!(
                RULE.outcome(&refused(None), 7, 0, now, 0.3),
                DeliveryOutcome::Failed {
                    error: "HTTP 503".into()
                }
            );
        }
    }
}
