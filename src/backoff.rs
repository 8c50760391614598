//! Exponential backoff: the one schedule of waits after failures in a row that
//! the worker's retries, ingest's reconnects and the circuit breaker's cool-downs
//! share. A [`Backoff`] is pure (the jitter roll is an argument); a [`Streak`]
//! counts failures along one and rolls the jitter itself.

use std::time::Duration;

/// How much of each step a wait takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// The whole step, every time.
    None,
    /// Between half and all of the step ("equal jitter"), so that many waiters
    /// that failed together do not come back together.
    Equal,
}

/// Waits that double after each failure: `first · 2^n` after `n` doublings,
/// never more than `cap`, taken whole or with [`Jitter::Equal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The step before any doubling.
    pub first: Duration,
    /// The longest step.
    pub cap: Duration,
    /// How much of a step a wait takes.
    pub jitter: Jitter,
}

impl Backoff {
    /// The step after `n` doublings: `first · 2^n`, at most `cap`. Doublings past
    /// the thirtieth add nothing (the step is then `first · 2^30`, at most `cap`).
    pub fn step(&self, n: u32) -> Duration {
        self.first.saturating_mul(1 << n.min(30)).min(self.cap)
    }

    /// The wait after `n` doublings, for a jitter roll `roll` in [0, 1] (clamped):
    /// with [`Jitter::Equal`], `step · (½ + ½·roll)`; with [`Jitter::None`] the
    /// step itself, whatever the roll.
    pub fn delay(&self, n: u32, roll: f64) -> Duration {
        let step = self.step(n);
        match self.jitter {
            Jitter::None => step,
            Jitter::Equal => step.mul_f64(0.5 + 0.5 * roll.clamp(0.0, 1.0)),
        }
    }
}

/// Failures in a row along a [`Backoff`]: each [`Streak::failed`] is the wait after
/// one more failure, the first of them `first` (or half to all of it).
#[derive(Debug, Clone)]
pub struct Streak {
    backoff: Backoff,
    failures: u32,
}

impl Streak {
    /// A streak with no failures yet.
    pub fn new(backoff: Backoff) -> Streak {
        Streak {
            backoff,
            failures: 0,
        }
    }

    /// Ends the streak: the next wait is the first step again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Counts one more failure and answers how long to wait after it.
    pub fn failed(&mut self) -> Duration {
        let delay = self.backoff.delay(self.failures, fastrand::f64());
        self.failures = self.failures.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn backoff(first_ms: u64, cap_ms: u64, jitter: Jitter) -> Backoff {
        Backoff {
            first: Duration::from_millis(first_ms),
            cap: Duration::from_millis(cap_ms),
            jitter,
        }
    }

    #[test]
    fn steps_double_from_the_first_and_stop_at_the_cap() {
        let b = backoff(100, 30_000, Jitter::None);
        let steps: Vec<u64> = (0..11).map(|n| b.step(n).as_millis() as u64).collect();
        assert_eq!(
            steps,
            [
                100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000
            ]
        );
        assert_eq!(b.step(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn without_jitter_a_wait_is_the_whole_step_whatever_the_roll() {
        let b = backoff(1_000, 3_000, Jitter::None);
        assert_eq!(b.delay(1, 0.0), Duration::from_secs(2));
        assert_eq!(b.delay(1, 0.7), Duration::from_secs(2));
    }

    #[test]
    fn a_streak_waits_longer_after_each_failure_and_starts_over_when_reset() {
        let mut streak = Streak::new(backoff(1_000, 3_000, Jitter::None));
        let waits: Vec<Duration> = (0..4).map(|_| streak.failed()).collect();
        assert_eq!(
            waits,
            [1_000, 2_000, 3_000, 3_000].map(Duration::from_millis)
        );
        streak.reset();
        assert_eq!(streak.failed(), Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn an_equal_jitter_wait_is_half_to_all_of_its_step_and_never_above_the_cap(
            first_ms in 1u64..3_600_000,
            extra_ms in 0u64..86_400_000,
            n in 0u32..64,
            roll in 0.0f64..=1.0,
        ) {
            let b = backoff(first_ms, first_ms + extra_ms, Jitter::Equal);
            let step = b.step(n);
            let wait = b.delay(n, roll);
            prop_assert!(step <= b.cap);
            prop_assert!(wait >= step / 2, "{wait:?} below half of {step:?}");
            prop_assert!(wait <= step, "{wait:?} above {step:?}");
            if n < 30 {
                prop_assert_eq!(b.step(n + 1), step.saturating_mul(2).min(b.cap));
            }
        }
    }
}
