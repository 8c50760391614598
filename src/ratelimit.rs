//! Per-provider rate limits as token buckets kept in the store, so that every worker
//! process sharing a store draws from the same bucket and a limit holds across all
//! of them. Each engine keeps one bucket per provider (tokens, and when they were
//! counted) and updates it in the same transaction that claims messages: tokens
//! are spent on exactly the messages claimed, so a wait for the limit never holds a
//! lease and never counts as a delivery attempt.
//!
//! Per-recipient caps ("the same number at most once a minute and 10 times a
//! day") are kept the same way: each engine records when each recipient was last
//! claimed for, per provider, and a claim defers a capped recipient's message to
//! the moment the cap allows it (no attempt counted). Claims that check caps take
//! turns per provider, so two processes never both send a recipient's last allowed
//! message.
//!
//! This module is the arithmetic the SQLite and PostgreSQL engines share; the Redis
//! engine's claim script does the same in Lua. `pace` is each process's own
//! pacing of a provider that throttles it, found from what the provider accepts.

mod pace;

use std::collections::HashMap;
use std::time::Duration;

pub use pace::{CUT_EVERY_MS, Pace};

/// Everything that holds a provider's claims back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// A rate in messages.
    pub rate: Option<Rate>,
    /// A rate in SMS segments rather than messages: a 3-segment message costs 3.
    pub segments: Option<Rate>,
    /// Each cap must hold; empty for none.
    pub per_recipient: Vec<Cap>,
    /// The provider these limits are of: a claim pays from its token buckets and
    /// checks and records its per-recipient caps, whichever provider's messages it
    /// claims (another's, when they fail over to this one). `None`: the claiming
    /// provider's own.
    pub owner: Option<String>,
    /// What a message through the owner costs and its daily budget, when it has
    /// prices (see [`crate::queue::spend`]).
    pub tariff: Option<std::sync::Arc<crate::queue::spend::Tariff>>,
}

impl Limits {
    /// Whose buckets and caps a claim of `provider`'s messages uses.
    pub fn owner_or<'a>(&'a self, provider: &'a str) -> &'a str {
        self.owner.as_deref().unwrap_or(provider)
    }
}

/// At most `count` messages to one recipient within any `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// The most messages to one recipient within the window.
    pub count: u32,
    /// The window's length (ms).
    pub window_ms: i64,
}

/// A provider's limit: `per_sec` messages per second on average, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Messages (or segments) per second on average.
    pub per_sec: f64,
    /// The most that may go at once: the bucket's size.
    pub burst: f64,
}

/// A bucket as stored: `tokens` as counted at `at_ms` (the store's clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Tokens left; below zero after a message costing more than the burst.
    pub tokens: f64,
    /// When they were counted (ms, the store's clock).
    pub at_ms: i64,
}

impl Rate {
    /// `per_sec` messages per second. `burst` (default: a twentieth of a second's
    /// worth, at least 1) bounds how many may go at once. A small burst keeps every
    /// one-second window within 5 % of `per_sec`.
    pub fn new(per_sec: f64, burst: Option<u32>) -> Rate {
        let burst = burst.map_or((per_sec / 20.0).ceil(), f64::from).max(1.0);
        Rate { per_sec, burst }
    }

    /// The bucket as it stands at `now_ms`: refilled for the time since it was last
    /// counted, never above `burst`; a provider without a bucket yet starts full. A
    /// clock that went backwards refills nothing until it has caught up.
    pub fn refill(&self, bucket: Option<Bucket>, now_ms: i64) -> Bucket {
        match bucket {
            None => Bucket {
                tokens: self.burst,
                at_ms: now_ms,
            },
            Some(b) => {
                let elapsed = now_ms.saturating_sub(b.at_ms).max(0) as f64 / 1000.0;
                Bucket {
                    tokens: (b.tokens + elapsed * self.per_sec).min(self.burst),
                    at_ms: now_ms.max(b.at_ms),
                }
            }
        }
    }

    /// The stored bucket refilled to `now_ms`, and how many of `want` messages a
    /// claim may take from it (at least 1; spend what is claimed); or, when it holds
    /// too few tokens, how long to wait.
    pub fn take(
        &self,
        stored: Option<Bucket>,
        now_ms: i64,
        want: usize,
    ) -> Result<(usize, Bucket), Duration> {
        let bucket = self.refill(stored, now_ms);
        self.allowance(&bucket, want).map(|n| (n, bucket))
    }

    /// How many of `want` messages a claim may take from `bucket` (already refilled),
    /// or how long to wait. Claims wait until a chunk of up to half the burst is
    /// there, so that workers sharing a slow limit claim a handful at a time rather
    /// than one each per token.
    pub fn allowance(&self, bucket: &Bucket, want: usize) -> Result<usize, Duration> {
        let chunk = (want as f64).min((self.burst / 2.0).ceil()).max(1.0);
        if bucket.tokens >= chunk {
            // `tokens` is at most `burst`, a u32, so the cast is exact.
            Ok((bucket.tokens.floor() as usize).min(want))
        } else {
            let secs = (chunk - bucket.tokens) / self.per_sec;
            Err(Duration::from_secs_f64(secs).max(Duration::from_millis(1)))
        }
    }
}

impl Rate {
    /// How many of the due messages a claim may take from `bucket` (already
    /// refilled) when each costs what `costs` says, in due order (their SMS
    /// segments); or how long to wait. Like [`Rate::allowance`], a claim waits for a
    /// chunk of up to half the burst; then it takes the longest run of messages that
    /// the tokens pay for. A message costing more than the whole burst goes alone,
    /// once the bucket is full, and leaves it in debt, so the average still holds.
    pub fn fit(&self, bucket: &Bucket, costs: &[u32]) -> Result<usize, Duration> {
        let Some(&first) = costs.first() else {
            return Ok(0);
        };
        let total: f64 = costs.iter().map(|&c| f64::from(c)).sum();
        let chunk = total
            .min((self.burst / 2.0).ceil())
            .max(f64::from(first).min(self.burst));
        if bucket.tokens < chunk {
            let secs = (chunk - bucket.tokens) / self.per_sec;
            return Err(Duration::from_secs_f64(secs).max(Duration::from_millis(1)));
        }
        let mut spent = 0.0;
        let fitting = costs
            .iter()
            .take_while(|&&c| {
                spent += f64::from(c);
                spent <= bucket.tokens
            })
            .count();
        Ok(fitting.max(1))
    }
}

impl Bucket {
    /// The bucket after `n` messages were claimed from it.
    pub fn spend(self, n: usize) -> Bucket {
        Bucket {
            tokens: self.tokens - n as f64,
            ..self
        }
    }
}

/// The name under which a provider's segment bucket is stored, beside its message
/// bucket (stored under the provider's name).
pub fn segment_bucket_key(provider: &str) -> String {
    format!("{provider}#segments")
}

/// The longest window of `caps`: sends older than that no longer matter.
pub fn longest_window(caps: &[Cap]) -> i64 {
    caps.iter().map(|c| c.window_ms).max().unwrap_or(0)
}

/// A message that may be claimed, as a capped claim sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<K> {
    /// The message, as the engine names it.
    pub key: K,
    /// Its recipient, as the caps count them.
    pub to: String,
}

/// What a capped claim does with its candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct Picked<K> {
    /// Claim these, in this order; record a send to each one's recipient at `now`.
    pub claim: Vec<Candidate<K>>,
    /// Put these back until the given time (ms), when their recipient's caps allow.
    pub defer: Vec<(K, i64)>,
}

/// Goes through `candidates` in due order: a message whose recipient is within
/// every cap, counting `recent` (each recipient's earlier sends, any order) and the
/// messages picked before it, is claimed; any other is deferred.
pub fn pick<K>(
    caps: &[Cap],
    candidates: Vec<Candidate<K>>,
    mut recent: HashMap<String, Vec<i64>>,
    now_ms: i64,
) -> Picked<K> {
    let mut picked = Picked {
        claim: Vec::with_capacity(candidates.len()),
        defer: Vec::new(),
    };
    for candidate in candidates {
        let sends = recent.entry(candidate.to.clone()).or_default();
        match allowed_at(caps, sends, now_ms) {
            None => {
                sends.push(now_ms);
                picked.claim.push(candidate);
            }
            Some(at) => picked.defer.push((candidate.key, at)),
        }
    }
    picked
}

/// Whether a recipient with earlier sends at `sends` (any order) is at one of
/// `caps` at `now_ms`: a message to it now would wait.
pub fn at_cap(caps: &[Cap], sends: &mut [i64], now_ms: i64) -> bool {
    allowed_at(caps, sends, now_ms).is_some()
}

/// `None` when one more send at `now_ms` keeps every cap; otherwise the earliest
/// time one would.
fn allowed_at(caps: &[Cap], sends: &mut [i64], now_ms: i64) -> Option<i64> {
    sends.sort_unstable_by(|a, b| b.cmp(a));
    caps.iter()
        .filter_map(|cap| {
            let from = now_ms - cap.window_ms;
            let within = sends.iter().take_while(|&&at| at > from).count();
            // The oldest send that must leave the window first.
            (within >= cap.count as usize).then(|| sends[cap.count as usize - 1] + cap.window_ms)
        })
        .max()
        .map(|at| at.max(now_ms + 1))
}

#[cfg(test)]
mod tests;
