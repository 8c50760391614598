//! `GET /v1/batches/{id}/events`: a batch's progress as server-sent events.
//!
//! The stream reads the batch's summary from the store every 250 ms to 1 s (slower
//! when the read itself is slow, so a huge batch costs the store no more than a
//! tenth of its time), and sends `event: progress` whenever what it would say
//! changed, so never more than four a second. When nothing is left pending, sending
//! or paused it sends the final `event: progress` (unless the last one said the
//! same), then `event: end`, and closes: a finished batch's stream is one
//! `progress` and `end`. Each event's data is one line of JSON:
//! the batch as `GET /v1/batches/{id}` shows it, plus `rate_per_sec` and
//! `eta_seconds`. A `: keep-alive` comment goes every 15 s, and the stream closes
//! without `end` when the server shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::batch::{BatchView, batch_id, not_found};
use super::error::Error;
use super::state::AppState;
use crate::domain::{BatchId, Counts};
use crate::queue::{BatchSummary, Queue};

/// The quickest and the slowest the store is read for one stream.
const FASTEST: Duration = Duration::from_millis(250);
const SLOWEST: Duration = Duration::from_secs(1);
/// How long the rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// A comment at least this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event's data: the batch, how fast its messages are settling and when the
/// rest should be.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Progress {
    #[serde(flatten)]
    pub batch: BatchView,
    /// Messages settled (sent, delivered, undelivered, failed or cancelled) per
    /// second over the last few seconds, to one decimal.
    pub rate_per_sec: f64,
    /// Seconds until nothing is left pending, sending or of unknown outcome at that
    /// rate; `null` when the batch is paused or nothing has settled lately.
    pub eta_seconds: Option<f64>,
}

pub(super) async fn batch_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    let id = batch_id(&id)?;
    let first = state.queue.batch(id).await?.ok_or_else(|| not_found(id))?;
    let watch = Watch {
        queue: state.queue.clone(),
        id,
        stop: state.stop.clone(),
        first: Some(first),
        rate: Rate::default(),
        last: None,
        interval: FASTEST,
        end: None,
        ended: false,
    };
    let events = futures_util::stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await?;
        Some((Ok(event), watch))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text(" keep-alive")))
}

/// One stream's view of its batch.
struct Watch {
    queue: Queue,
    id: BatchId,
    stop: CancellationToken,
    /// The summary read before the stream started, sent at once.
    first: Option<BatchSummary>,
    rate: Rate,
    /// The data of the last event sent.
    last: Option<String>,
    interval: Duration,
    /// The final data, sent as `end` right after the `progress` that carried it.
    end: Option<String>,
    ended: bool,
}

impl Watch {
    /// The next event; `None` once `end` was sent, or the server is stopping.
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        if let Some(data) = self.end.take() {
            self.ended = true;
            return Some(Event::default().event("end").data(data));
        }
        loop {
            let summary = match self.first.take() {
                Some(summary) => summary,
                None => {
                    tokio::select! {
                        () = tokio::time::sleep(self.interval) => {}
                        () = self.stop.cancelled() => return None,
                    }
                    match self.read().await {
                        Some(summary) => summary,
                        None if self.ended => return None,
                        None => continue,
                    }
                }
            };
            let finished = summary.counts.is_finished();
            let progress = self.rate.progress(Instant::now(), summary);
            let data = serde_json::to_string(&progress).expect("strings and numbers serialize");
            if finished && self.last.as_deref() == Some(data.as_str()) {
                self.ended = true;
                return Some(Event::default().event("end").data(data));
            }
            if finished {
                self.end = Some(data.clone());
            }
            if self.last.as_deref() != Some(data.as_str()) {
                self.last = Some(data.clone());
                return Some(Event::default().event("progress").data(data));
            }
        }
    }

    /// The batch's summary now, pacing the next read by how long this one took.
    /// `None` when the store did not answer (the next tick tries again).
    async fn read(&mut self) -> Option<BatchSummary> {
        let started = Instant::now();
        let read = self.queue.batch(self.id).await;
        self.interval = (started.elapsed() * 10).clamp(FASTEST, SLOWEST);
        match read {
            Ok(Some(summary)) => Some(summary),
            // Batches are never deleted; a store that lost one is not worth a retry.
            Ok(None) => {
                tracing::warn!(batch = %self.id, "a watched batch is gone from the store");
                self.ended = true;
                None
            }
            Err(e) => {
                tracing::warn!(batch = %self.id, error = %e, "cannot read a watched batch; trying again");
                None
            }
        }
    }
}

/// Messages settled per second, from what was settled at each read of the last
/// [`RATE_WINDOW`].
#[derive(Debug, Default)]
struct Rate {
    /// (when, messages settled then), oldest first; the first may be older than
    /// the window, so that the rate spans all of it.
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    /// Records `summary` as read `at`; the event data for it.
    fn progress(&mut self, at: Instant, summary: BatchSummary) -> Progress {
        let counts = summary.counts;
        let paused = matches!(summary.control, crate::domain::BatchControl::Paused);
        let rate = self.observe(at, settled(&counts));
        let left = counts.pending + counts.sending + counts.unknown;
        let eta_seconds = match left {
            0 => Some(0.0),
            _ if paused || rate <= 0.0 => None,
            _ => Some((left as f64 / rate).ceil()),
        };
        Progress {
            batch: summary.into(),
            rate_per_sec: (rate * 10.0).round() / 10.0,
            eta_seconds,
        }
    }

    /// Adds a sample; the rate over the window up to it.
    fn observe(&mut self, at: Instant, settled: u64) -> f64 {
        while self
            .samples
            .get(1)
            .is_some_and(|&(then, _)| at.saturating_duration_since(then) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.push_back((at, settled));
        let (then, before) = self.samples[0];
        let elapsed = at.saturating_duration_since(then).as_secs_f64();
        if elapsed <= 0.0 {
            return 0.0;
        }
        // A retry puts failed messages back: fewer settled than before is no rate.
        settled.saturating_sub(before) as f64 / elapsed
    }
}

/// Messages that will not change again unless the sender acts (delivery receipts
/// aside). A message of unknown outcome is not settled: it is asked about and sent
/// again.
fn settled(counts: &Counts) -> u64 {
    counts
        .total
        .saturating_sub(counts.pending + counts.sending + counts.paused + counts.unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BatchControl, Channel, MessageState};

    fn summary(pending: u64, sent: u64, control: BatchControl) -> BatchSummary {
        let mut counts = Counts::default();
        counts.add(MessageState::Pending, pending);
        counts.add(MessageState::Sent, sent);
        BatchSummary {
            id: BatchId::new(),
            channel: Channel::Sms,
            source: "api".into(),
            control,
            priority: 0,
            created_at_ms: 0,
            send_at_ms: 0,
            expires_at_ms: None,
            counts,
            spent: 0,
            max_cost: None,
        }
    }

    #[test]
    fn the_rate_is_what_settled_over_the_last_seconds_and_the_eta_what_is_left_at_it() {
        let start = Instant::now();
        let mut rate = Rate::default();
        let first = rate.progress(start, summary(100, 0, BatchControl::Active));
        assert_eq!((first.rate_per_sec, first.eta_seconds), (0.0, None));
        let at = |ms| start + Duration::from_millis(ms);
        let p = rate.progress(at(1_000), summary(90, 10, BatchControl::Active));
        assert_eq!((p.rate_per_sec, p.eta_seconds), (10.0, Some(9.0)));
        // Ten seconds later, only the last five count: 20 in 5 s.
        rate.progress(at(6_000), summary(60, 40, BatchControl::Active));
        let p = rate.progress(at(11_000), summary(40, 60, BatchControl::Active));
        assert_eq!((p.rate_per_sec, p.eta_seconds), (4.0, Some(10.0)));
        let paused = rate.progress(at(11_500), summary(40, 60, BatchControl::Paused));
        assert_eq!(paused.eta_seconds, None);
        let done = rate.progress(at(12_000), summary(0, 100, BatchControl::Active));
        assert_eq!(done.eta_seconds, Some(0.0));
        assert_eq!(done.batch.state, "done");
    }

    #[test]
    fn unknown_outcomes_are_left_to_settle_and_receipts_settle_nothing_more() {
        let start = Instant::now();
        let mut rate = Rate::default();
        rate.progress(start, summary(10, 0, BatchControl::Active));
        let mut later = summary(0, 4, BatchControl::Active);
        later.counts.add(MessageState::Delivered, 4);
        later.counts.add(MessageState::Unknown, 2);
        let p = rate.progress(start + Duration::from_secs(1), later);
        // Eight settled in a second; the two unknown ones are still to go.
        assert_eq!((p.rate_per_sec, p.eta_seconds), (8.0, Some(1.0)));
        assert_eq!(p.batch.state, "sending");
    }

    #[test]
    fn the_samples_kept_stay_within_the_window_plus_one() {
        let start = Instant::now();
        let mut rate = Rate::default();
        for tick in 0..1_000u64 {
            rate.observe(start + FASTEST * tick as u32, tick);
        }
        let most = (RATE_WINDOW.as_millis() / FASTEST.as_millis()) as usize + 1;
        assert!(rate.samples.len() <= most, "{}", rate.samples.len());
        assert_eq!(rate.observe(start + FASTEST * 1_000, 1_000), 4.0);
    }

    #[test]
    fn fewer_settled_than_before_is_a_rate_of_nothing() {
        let start = Instant::now();
        let mut rate = Rate::default();
        rate.observe(start, 50);
        assert_eq!(rate.observe(start + Duration::from_secs(1), 10), 0.0);
    }
}
