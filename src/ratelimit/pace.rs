//! One process's pace for a provider that throttles it (HTTP 429, `Throttling`,
//! SMTP 421), found from the rate the provider accepts rather than guessed from
//! the rate that was attempted.

use std::collections::VecDeque;
use std::time::Duration;

use super::{Bucket, Rate};

/// How fast one process sends through a provider that has throttled it.
/// Unthrottled, a provider gets what its configured limits allow. At a throttle
/// the pace becomes the rate the provider *accepted* over the last second (the
/// answers that were not throttles): what it takes, measured, rather than half of
/// what was tried. It is cut at most once per [`CUT_EVERY_MS`], and only by a send
/// made since the last cut, as one burst brings many throttles. While the pace
/// holds sending back it grows by [`GROWTH`] a second, probing for more; the next
/// throttle cuts it back to the accepted rate. It lifts once it reaches the
/// configured rate (or, without one, [`LIFT_AT`] times the rate of the last cut).
/// So a limit set too high, or none, settles at what the provider takes within a
/// few seconds of the first throttle and stays there.
#[derive(Debug, Clone)]
pub struct Pace {
    /// The configured rate, if any: the pace never exceeds it and lifts at it.
    ceiling: Option<f64>,
    /// `None` while unthrottled.
    paced: Option<Paced>,
    /// The provider's accepting answers of the last [`WINDOW_MS`]: (ms, how
    /// many), oldest first, one entry per millisecond at most.
    accepted: VecDeque<(i64, u32)>,
    /// Since when answers have come without a quiet [`WINDOW_MS`], and the last
    /// (ms): the accepted rate is measured over no more than that.
    answering: Option<(i64, i64)>,
    last_cut_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct Paced {
    rate: Rate,
    /// The rate the last throttle cut the pace to.
    cut: f64,
    bucket: Bucket,
    /// When the rate last grew (ms).
    grown_ms: i64,
    /// A claim since then was held back by the pace: only then does it grow, so a
    /// provider with little to send does not grow a pace it never used.
    pressed: bool,
}

/// The shortest time between two cuts of a pace (ms).
pub const CUT_EVERY_MS: i64 = 1_000;
/// How far back the accepted rate is measured (ms).
const WINDOW_MS: i64 = 1_000;
/// Accepted answers are counted over at least this long (ms), so that the burst a
/// provider takes at once, before its first throttle, is not read as its rate.
const SHORTEST_SPAN_MS: i64 = 100;
/// How much a pace that holds sending back grows each second (compounded).
pub const GROWTH: f64 = 0.05;
/// Without a configured rate, the pace lifts at this many times its last cut.
pub const LIFT_AT: f64 = 4.0;

impl Pace {
    /// An unthrottled pace under the configured rate `ceiling`, if any.
    pub fn new(ceiling: Option<f64>) -> Pace {
        Pace {
            ceiling,
            paced: None,
            accepted: VecDeque::new(),
            answering: None,
            last_cut_ms: None,
        }
    }

    /// The paced rate now, if the provider has throttled this process.
    pub fn rate(&self) -> Option<f64> {
        self.paced.map(|p| p.rate.per_sec)
    }

    /// The provider accepted `n` messages sent at `sent_ms`, answering at `now_ms`.
    /// Answers to sends made before the last cut that come within a second of it
    /// raise the pace to the accepted rate they make: answers come back in any
    /// order, and a throttle read before the acceptances of the same burst would
    /// otherwise cut the pace to nothing.
    pub fn accepted(&mut self, n: usize, sent_ms: i64, now_ms: i64) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.answer(now_ms);
        match self.accepted.back_mut() {
            Some((at, count)) if *at == now_ms => *count = count.saturating_add(n),
            _ => self.accepted.push_back((now_ms, n)),
        }
        self.forget_before(now_ms);
        let Some(cut_ms) = self.last_cut_ms else {
            return;
        };
        if sent_ms >= cut_ms || now_ms.saturating_sub(cut_ms) >= CUT_EVERY_MS {
            return;
        }
        let rate = self.cut_rate(now_ms);
        if let Some(paced) = &mut self.paced
            && rate > paced.rate.per_sec
        {
            paced.rate = Rate::new(rate, None);
            paced.cut = rate;
        }
    }

    /// The provider throttled a send made at `sent_ms`: pace at the rate it
    /// accepted over the last second. A send made before the last cut tells
    /// nothing of the pace since.
    pub fn throttled(&mut self, sent_ms: i64, now_ms: i64) {
        self.answer(now_ms);
        if self
            .last_cut_ms
            .is_some_and(|at| sent_ms < at || now_ms.saturating_sub(at) < CUT_EVERY_MS)
        {
            return;
        }
        self.forget_before(now_ms);
        let per_sec = self.cut_rate(now_ms);
        let rate = Rate::new(per_sec, None);
        let tokens = self.paced.map_or(0.0, |p| p.bucket.tokens.min(rate.burst));
        self.paced = Some(Paced {
            rate,
            cut: per_sec,
            bucket: Bucket {
                tokens,
                at_ms: now_ms,
            },
            grown_ms: now_ms,
            pressed: false,
        });
        self.last_cut_ms = Some(now_ms);
    }

    /// How many of `want` messages may be claimed now (spent at once), or how
    /// long to wait.
    pub fn take(&mut self, want: usize, now_ms: i64) -> Result<usize, Duration> {
        self.grow(now_ms);
        let Some(paced) = &mut self.paced else {
            return Ok(want);
        };
        match paced.rate.take(Some(paced.bucket), now_ms, want) {
            Ok((n, bucket)) => {
                paced.bucket = bucket.spend(n);
                paced.pressed |= n < want;
                Ok(n)
            }
            Err(wait) => {
                paced.pressed = true;
                Err(wait)
            }
        }
    }

    /// Gives back tokens taken for messages that were not there to claim.
    pub fn refund(&mut self, unused: usize) {
        if let Some(paced) = &mut self.paced {
            paced.bucket.tokens = (paced.bucket.tokens + unused as f64).min(paced.rate.burst);
        }
    }

    /// The rate a cut paces at: the accepted rate, at least 1, at most the
    /// configured rate.
    fn cut_rate(&self, now_ms: i64) -> f64 {
        let per_sec = self.accepted_rate(now_ms).max(1.0);
        self.ceiling.map_or(per_sec, |ceiling| per_sec.min(ceiling))
    }

    /// Accepted answers per second over the last [`WINDOW_MS`], or over the time
    /// answers have been coming when that is shorter (at least
    /// [`SHORTEST_SPAN_MS`]). Not since the oldest acceptance: a provider that
    /// takes a whole second's worth at once and then nothing would read as many
    /// times its rate.
    fn accepted_rate(&self, now_ms: i64) -> f64 {
        let count: f64 = self.accepted.iter().map(|&(_, n)| f64::from(n)).sum();
        let since = self.answering.map_or(now_ms, |(since, _)| since);
        let span = now_ms
            .saturating_sub(since)
            .clamp(SHORTEST_SPAN_MS, WINDOW_MS);
        count * 1000.0 / span as f64
    }

    /// An answer came at `now_ms`.
    fn answer(&mut self, now_ms: i64) {
        self.answering = match self.answering {
            Some((since, last)) if now_ms.saturating_sub(last) < WINDOW_MS => {
                Some((since, now_ms.max(last)))
            }
            _ => Some((now_ms, now_ms)),
        };
    }

    fn forget_before(&mut self, now_ms: i64) {
        while self
            .accepted
            .front()
            .is_some_and(|&(at, _)| at <= now_ms.saturating_sub(WINDOW_MS))
        {
            self.accepted.pop_front();
        }
    }

    fn grow(&mut self, now_ms: i64) {
        let Some(paced) = &mut self.paced else {
            return;
        };
        let elapsed = now_ms.saturating_sub(paced.grown_ms).max(0) as f64 / 1000.0;
        paced.grown_ms = paced.grown_ms.max(now_ms);
        if !std::mem::take(&mut paced.pressed) {
            return;
        }
        let per_sec = paced.rate.per_sec * (1.0 + GROWTH).powf(elapsed);
        if per_sec >= self.ceiling.unwrap_or(paced.cut * LIFT_AT) {
            self.paced = None;
        } else {
            paced.rate = Rate::new(per_sec, None);
        }
    }
}

#[cfg(test)]
mod tests;
