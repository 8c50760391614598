//! The recent calls a circuit judges its provider by: a sliding window of the
//! last so many calls, none older than so long, with its failure count kept as
//! calls come and go.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The outcomes of a provider's recent calls, oldest first.
#[derive(Debug)]
pub(super) struct Window {
    calls: VecDeque<(Instant, bool)>,
    failures: usize,
    most: usize,
    age: Duration,
}

impl Window {
    /// A window of at most `most` calls (at least 1), each for at most `age`.
    pub(super) fn new(most: usize, age: Duration) -> Window {
        Window {
            calls: VecDeque::with_capacity(most.max(1)),
            failures: 0,
            most: most.max(1),
            age,
        }
    }

    /// Adds a call made at `now`, failed or not, dropping those it pushes out.
    pub(super) fn push(&mut self, now: Instant, failed: bool) {
        if self.calls.len() == self.most {
            self.pop();
        }
        self.calls.push_back((now, failed));
        self.failures += usize::from(failed);
        self.expire(now);
    }

    /// Drops the calls older than the window's age at `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        while self
            .calls
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > self.age)
        {
            self.pop();
        }
    }

    /// Forgets every call.
    pub(super) fn clear(&mut self) {
        self.calls.clear();
        self.failures = 0;
    }

    /// The calls in the window.
    pub(super) fn calls(&self) -> usize {
        self.calls.len()
    }

    /// The share of the window's calls that failed: 0 for an empty window.
    pub(super) fn failure_rate(&self) -> f64 {
        if self.calls.is_empty() {
            0.0
        } else {
            self.failures as f64 / self.calls.len() as f64
        }
    }

    fn pop(&mut self) {
        if let Some((_, failed)) = self.calls.pop_front() {
            self.failures -= usize::from(failed);
        }
    }
}
