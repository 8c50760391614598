//! The pre-flight report's `eta_seconds`: how long until the batch's messages are
//! through, counting the messages already queued on the same provider ahead of
//! them, at the provider's configured rates or, without one, at the rate this
//! process measured it sending lately.

use super::Intake;
use crate::ratelimit::Limits;

/// The most queued messages counted ahead of a batch, so that the count costs the
/// store a bounded read however long the queue is.
pub(super) const AHEAD_CAP: u64 = 100_000;

/// What a batch waits behind on its provider.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Ahead {
    /// Messages queued for the provider before the batch (at most [`AHEAD_CAP`]).
    pub(crate) messages: u64,
    /// The messages a second this process sent through the provider over the last
    /// minute, if it sent any.
    pub(crate) measured_per_sec: Option<f64>,
}

impl Intake {
    /// What a batch for `provider` waits behind. A failed count is logged and
    /// counts nothing: an estimate is no reason to refuse a batch.
    pub(super) async fn ahead(&self, provider: &str) -> Ahead {
        let messages = match self.queue.pending(provider, AHEAD_CAP).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(provider, error = %e, "counting the messages queued ahead failed");
                0
            }
        };
        Ahead {
            messages,
            measured_per_sec: self.metrics.sending_rate(provider),
        }
    }
}

/// How long the provider takes to let the `ahead` messages and then `messages`
/// messages of `segments` SMS segments through (to a tenth of a second): at the
/// slower of its configured message and segment rates (the messages ahead taken
/// to have the batch's segments per message), or without either at the measured
/// rate; `None` with neither.
pub(crate) fn eta_seconds(
    limits: &Limits,
    messages: usize,
    segments: usize,
    ahead: &Ahead,
) -> Option<f64> {
    let queued = ahead.messages as f64;
    let all = messages as f64 + queued;
    let per_message = if messages == 0 {
        0.0
    } else {
        segments as f64 / messages as f64
    };
    let by_messages = limits.rate.map(|r| all / r.per_sec);
    let by_segments = limits
        .segments
        .map(|r| (segments as f64 + queued * per_message) / r.per_sec);
    let slowest = match (by_messages, by_segments) {
        (Some(a), Some(b)) => a.max(b),
        (None, None) => all / ahead.measured_per_sec.filter(|r| *r > 0.0)?,
        (a, b) => a.or(b)?,
    };
    Some((slowest * 10.0).round() / 10.0)
}
