//! Metrics in Prometheus's text format, for `GET /metrics`: per provider and
//! channel, messages accepted, sent, failed, retried and throttled and a histogram of send
//! latency, counted by this process; the queue depth per provider, read from the
//! store at each scrape; and any [`Section`] added by the wiring (other parts'
//! gauges and counters), written after them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::domain::{Channel, now_ms};
use crate::queue::{Outcome, Queue};

mod rate;

/// The upper bounds of the send latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A scrape counts a provider's queue no further than this, so that it costs the
/// store a bounded read however long the queue is.
pub const DEPTH_CAP: u64 = 1_000_000;

/// More metrics written into every scrape, after Herald's own: e.g. the state of
/// each provider's circuit breaker.
pub trait Section: Send + Sync {
    /// Appends complete metric families (`# HELP`, `# TYPE` and samples) in
    /// Prometheus's text format to `out`.
    fn write(&self, out: &mut String);
}

/// This process's metrics; cheap to clone, and safe to share between the API and
/// the workers.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Provider names, for the queue depth; every (provider, channel) pair it
    /// serves starts at zero.
    providers: Vec<String>,
    /// By (provider, channel name), so that scrapes list them in a stable order.
    series: Mutex<BTreeMap<(String, &'static str), Series>>,
    /// Events posted per webhook endpoint.
    webhooks_posted: Mutex<BTreeMap<String, u64>>,
    /// Per provider, the messages sent through it lately, per second.
    recent: Mutex<BTreeMap<String, rate::Recent>>,
    sections: RwLock<Vec<Arc<dyn Section>>>,
}

/// The counters of one provider and channel.
#[derive(Debug, Default, Clone)]
struct Series {
    accepted: u64,
    sent: u64,
    failed: u64,
    retried: u64,
    /// Attempts the provider throttled: the message waits for the pace, with no
    /// attempt spent.
    throttled: u64,
    /// Attempts per latency bucket (not cumulative), the last one past every bound.
    latency: [u64; LATENCY_BUCKETS.len() + 1],
    latency_sum: f64,
}

impl Metrics {
    /// Metrics for `providers`, each with the channels it serves, all at zero.
    pub fn new<'a>(providers: impl IntoIterator<Item = (&'a str, &'a [Channel])>) -> Metrics {
        let mut names = Vec::new();
        let mut series = BTreeMap::new();
        for (name, channels) in providers {
            names.push(name.to_owned());
            for channel in channels {
                series.insert((name.to_owned(), channel.as_str()), Series::default());
            }
        }
        Metrics {
            inner: Arc::new(Inner {
                providers: names,
                series: Mutex::new(series),
                webhooks_posted: Mutex::default(),
                recent: Mutex::default(),
                sections: RwLock::default(),
            }),
        }
    }

    /// Adds `section` to every later scrape.
    pub fn add_section(&self, section: Arc<dyn Section>) {
        self.inner
            .sections
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(section);
    }

    /// Counts `n` messages stored for `provider` on `channel`.
    pub fn accepted(&self, provider: &str, channel: Channel, n: u64) {
        self.update(provider, channel, |s| s.accepted += n);
    }

    /// Counts one delivery attempt's outcome and how long the provider took.
    /// Messages released unattempted count nowhere; a throttled one (released
    /// with the throttle's error) counts as throttled.
    pub fn attempted(&self, provider: &str, channel: Channel, outcome: &Outcome, took: Duration) {
        if matches!(outcome, Outcome::Sent { .. } | Outcome::Confirmed { .. }) {
            self.inner
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(provider.to_owned())
                .or_default()
                .add(now_ms().div_euclid(1000), 1);
        }
        self.update(provider, channel, |s| {
            match outcome {
                Outcome::Sent { .. } => s.sent += 1,
                // An earlier attempt, of unknown outcome, reached the provider: sent
                // now, with no send made this time and so no latency to count.
                Outcome::Confirmed { .. } => {
                    s.sent += 1;
                    return;
                }
                Outcome::Failed { .. } => s.failed += 1,
                // An unknown outcome is tried again (after asking the provider).
                Outcome::Retry { .. } | Outcome::Unknown { .. } => s.retried += 1,
                Outcome::Release { error: Some(_), .. } => s.throttled += 1,
                Outcome::Release { error: None, .. } | Outcome::Cancelled { .. } => return,
            }
            let seconds = took.as_secs_f64();
            let bucket = LATENCY_BUCKETS
                .iter()
                .position(|&bound| seconds <= bound)
                .unwrap_or(LATENCY_BUCKETS.len());
            s.latency[bucket] += 1;
            s.latency_sum += seconds;
        });
    }

    /// The messages a second this process sent through `provider` over the last
    /// minute (from the first second of it that sent any); `None` when it sent none.
    pub fn sending_rate(&self, provider: &str) -> Option<f64> {
        let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.get(provider)?.per_sec(now_ms().div_euclid(1000))
    }

    /// Shows the webhook `endpoints` in every scrape, at zero until they have
    /// events.
    pub fn webhook_endpoints<'a>(&self, endpoints: impl IntoIterator<Item = &'a str>) {
        let mut posted = self
            .inner
            .webhooks_posted
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for endpoint in endpoints {
            posted.entry(endpoint.to_owned()).or_default();
        }
    }

    /// Counts `n` events posted to the webhook `endpoint`.
    pub fn webhook_posted(&self, endpoint: &str, n: u64) {
        *self
            .inner
            .webhooks_posted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(endpoint.to_owned())
            .or_default() += n;
    }

    fn update(&self, provider: &str, channel: Channel, f: impl FnOnce(&mut Series)) {
        let mut series = self.inner.series.lock().unwrap_or_else(|p| p.into_inner());
        f(series
            .entry((provider.to_owned(), channel.as_str()))
            .or_default());
    }

    /// Every metric in Prometheus's text format (version 0.0.4). The queue depth
    /// is read from `queue`, one bounded count per provider; a provider whose count
    /// fails is left out and the failure logged.
    pub async fn render(&self, queue: &Queue) -> String {
        let mut depths = Vec::with_capacity(self.inner.providers.len());
        for provider in &self.inner.providers {
            match queue.pending(provider, DEPTH_CAP).await {
                Ok(depth) => depths.push((provider, depth)),
                Err(e) => {
                    tracing::warn!(provider = %provider, error = %e, "cannot read the queue depth for metrics")
                }
            }
        }
        let series = self
            .inner
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = String::new();
        let counters: [Counter; 5] = [
            ("accepted", "Messages stored for sending.", |s| s.accepted),
            ("sent", "Messages the provider took.", |s| s.sent),
            (
                "failed",
                "Messages given up on (permanent errors, attempts used up).",
                |s| s.failed,
            ),
            (
                "retried",
                "Attempts that failed and will be tried again.",
                |s| s.retried,
            ),
            (
                "throttled",
                "Attempts the provider throttled: the message waits for the pace, no attempt spent.",
                |s| s.throttled,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP herald_messages_{name}_total {help} By this process."
            );
            let _ = writeln!(out, "# TYPE herald_messages_{name}_total counter");
            for ((provider, channel), s) in &series {
                let _ = writeln!(
                    out,
                    "herald_messages_{name}_total{{{}}} {}",
                    labels(provider, channel),
                    value(s)
                );
            }
        }
        out.push_str("# HELP herald_send_duration_seconds How long one delivery attempt took, from handing it to the provider to its answer.\n");
        out.push_str("# TYPE herald_send_duration_seconds histogram\n");
        for ((provider, channel), s) in &series {
            let labels = labels(provider, channel);
            let mut cumulative = 0;
            for (i, count) in s.latency.iter().enumerate() {
                cumulative += count;
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), f64::to_string);
                let _ = writeln!(
                    out,
                    "herald_send_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "herald_send_duration_seconds_sum{{{labels}}} {}",
                s.latency_sum
            );
            let _ = writeln!(
                out,
                "herald_send_duration_seconds_count{{{labels}}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP herald_queue_depth Messages waiting for the provider (pending, due now or later), counted up to {DEPTH_CAP}."
        );
        out.push_str("# TYPE herald_queue_depth gauge\n");
        for (provider, depth) in depths {
            let _ = writeln!(
                out,
                "herald_queue_depth{{provider=\"{}\"}} {depth}",
                escape(provider)
            );
        }
        self.write_webhooks(queue, &mut out).await;
        for section in self
            .inner
            .sections
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            section.write(&mut out);
        }
        out
    }
}

impl Metrics {
    /// The webhooks' families: events posted by this process (a counter), and
    /// events pending and failed per endpoint, read from the store (gauges; left
    /// out, and the failure logged, when the read fails).
    async fn write_webhooks(&self, queue: &Queue, out: &mut String) {
        let posted = self
            .inner
            .webhooks_posted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        out.push_str("# HELP herald_webhook_events_posted_total Events a webhook endpoint took (2xx), by this process.\n");
        out.push_str("# TYPE herald_webhook_events_posted_total counter\n");
        for (endpoint, n) in &posted {
            let _ = writeln!(
                out,
                "herald_webhook_events_posted_total{{endpoint=\"{}\"}} {n}",
                escape(endpoint)
            );
        }
        let counts = match queue.delivery_counts().await {
            Ok(mut counts) => {
                for endpoint in posted.keys() {
                    if !counts.iter().any(|(e, ..)| e == endpoint) {
                        counts.push((endpoint.clone(), 0, 0));
                    }
                }
                counts.sort();
                counts
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook deliveries for metrics");
                return;
            }
        };
        // (endpoint, pending, failed)
        type Gauge = (&'static str, &'static str, fn(&(String, u64, u64)) -> u64);
        let gauges: [Gauge; 2] = [
            (
                "pending",
                "Events waiting to be posted (due now or later).",
                |c| c.1,
            ),
            (
                "failed",
                "Events given up on after their retry window, kept to be replayed.",
                |c| c.2,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP herald_webhook_events_{name} {help}");
            let _ = writeln!(out, "# TYPE herald_webhook_events_{name} gauge");
            for count in &counts {
                let _ = writeln!(
                    out,
                    "herald_webhook_events_{name}{{endpoint=\"{}\"}} {}",
                    escape(&count.0),
                    value(count)
                );
            }
        }
    }
}

/// A counter family: its name's middle part, its help text and its value in a series.
type Counter = (&'static str, &'static str, fn(&Series) -> u64);

fn labels(provider: &str, channel: &str) -> String {
    format!("provider=\"{}\",channel=\"{channel}\"", escape(provider))
}

/// A label value as the text format writes it: `\`, `"` and line feeds escaped.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_count_by_provider_and_channel_and_latency_falls_in_its_bucket() {
        let metrics = Metrics::new([("hook", &[Channel::Sms, Channel::Email][..])]);
        metrics.accepted("hook", Channel::Sms, 3);
        let sent = Outcome::Sent {
            provider_message_id: None,
            segment_ids: Vec::new(),
        };
        metrics.attempted("hook", Channel::Sms, &sent, Duration::from_millis(30));
        let retry = Outcome::Retry {
            at_ms: 0,
            error: "x".into(),
        };
        metrics.attempted("hook", Channel::Sms, &retry, Duration::from_secs(60));
        let release = Outcome::Release {
            at_ms: 0,
            error: None,
        };
        metrics.attempted("hook", Channel::Sms, &release, Duration::ZERO);
        let throttled = Outcome::Release {
            at_ms: 0,
            error: Some("throttled: HTTP 429".into()),
        };
        metrics.attempted("hook", Channel::Sms, &throttled, Duration::ZERO);
        let series = metrics.inner.series.lock().unwrap().clone();
        let sms = &series[&("hook".to_owned(), "sms")];
        assert_eq!(
            (
                sms.accepted,
                sms.sent,
                sms.retried,
                sms.failed,
                sms.throttled
            ),
            (3, 1, 1, 0, 1)
        );
        // 30 ms is in the 0.05 s bucket; a minute past every bound; the throttle
        // answered at once.
        assert_eq!(sms.latency[0], 1);
        assert_eq!(sms.latency[3], 1);
        assert_eq!(sms.latency[LATENCY_BUCKETS.len()], 1);
        assert!(series.contains_key(&("hook".to_owned(), "email")));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
