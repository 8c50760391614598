//! Circuit breakers: one per provider, kept by each worker process.
//!
//! A provider's circuit is closed while it answers. After `failures` transient
//! failures in a row (timeouts, refused connections, 5xx; not throttles, which
//! pace the provider instead, nor a recipient's frequency cap) it opens: the
//! workers stop sending through it and hand its messages to the next provider of
//! the channel's failover list. After a cool-down one probe message goes through
//! it (half-open): an answer closes the circuit, a failure opens it again for
//! twice as long, up to a ceiling. [`Circuits`] is the cheap-to-clone handle the
//! workers and anything reporting on them share.

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::{Backoff, Jitter, Streak};
use crate::config::CircuitConfig;
use crate::domain::millis;
use crate::metrics::{self, Section};
use crate::provider;

/// Where a provider's circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Messages go through the provider.
    Closed,
    /// The provider failed repeatedly: its messages go to another provider, or wait.
    Open,
    /// The cool-down is over: one probe message may go through the provider.
    HalfOpen,
}

impl CircuitState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one send through a provider says about the provider's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered (a refusal of a message or a throttle is an answer too).
    Up,
    /// It failed in a way that trying again may cure: it may be down.
    Down,
}

impl Verdict {
    /// The verdict on one request's answers: up when any message got an answer
    /// from the provider, down when every one failed transiently or got no answer
    /// at all (an unknown outcome: a timeout, a connection lost mid-way — the
    /// provider failed to answer, whatever became of the message); throttles and
    /// recipients' frequency caps count as answers. `None` for no answers.
    pub fn of(answers: &[Result<provider::Receipt, provider::Error>]) -> Option<Verdict> {
        let down = |a: &Result<_, provider::Error>| match a {
            Err(provider::Error::Transient { .. } | provider::Error::Unknown { .. }) => true,
            Ok(_)
            | Err(
                provider::Error::Throttled { .. }
                | provider::Error::RecipientCapped { .. }
                | provider::Error::Permanent { .. }
                | provider::Error::Undeliverable { .. },
            ) => false,
        };
        match answers {
            [] => None,
            all if all.iter().all(down) => Some(Verdict::Down),
            _ => Some(Verdict::Up),
        }
    }
}

/// The answer to [`Circuits::admit`].
#[derive(Debug)]
pub enum Admission {
    /// The circuit is closed: send as many as the limits allow.
    Closed,
    /// The circuit is half-open and this caller holds its one probe: send one
    /// message and hand the probe back with its verdict to [`Circuits::record`].
    Probe(Probe),
    /// The circuit is open (or its probe is out): send nothing through it. `until`
    /// is when it lets a probe through, if known.
    Refused { until: Option<Instant> },
}

/// The right to send the one probe message of a half-open circuit. Dropped
/// without a verdict (nothing was sent after all), it lets the next caller probe.
#[derive(Debug)]
pub struct Probe {
    circuits: Circuits,
    provider: String,
    settled: bool,
}

impl Probe {
    /// The provider being probed.
    pub fn provider(&self) -> &str {
        &self.provider
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if !self.settled {
            self.circuits.with(&self.provider, |b, _| {
                if matches!(b.state, State::HalfOpen { probing: true }) {
                    b.state = State::HalfOpen { probing: false };
                }
            });
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// One provider's breaker.
#[derive(Debug)]
struct Breaker {
    state: State,
    /// Transient failures in a row while closed.
    failures: u32,
    /// The openings since the circuit was last closed: each one lasts twice as
    /// long as the one before, up to the ceiling.
    openings: Streak,
}

/// The circuit breakers of every provider of this process; cheap to clone.
#[derive(Debug, Clone)]
pub struct Circuits {
    breakers: Arc<HashMap<String, Mutex<Breaker>>>,
    failures: u32,
}

impl Circuits {
    /// A closed circuit for each of `providers`.
    pub fn new<I, S>(providers: I, config: &CircuitConfig) -> Circuits
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let cooldown = Duration::from_millis(config.cooldown_ms);
        let backoff = Backoff {
            first: cooldown,
            cap: Duration::from_millis(config.max_cooldown_ms).max(cooldown),
            jitter: Jitter::None,
        };
        let breakers = providers
            .into_iter()
            .map(|name| {
                let breaker = Breaker {
                    state: State::Closed,
                    failures: 0,
                    openings: Streak::new(backoff),
                };
                (name.into(), Mutex::new(breaker))
            })
            .collect();
        Circuits {
            breakers: Arc::new(breakers),
            failures: config.failures.max(1),
        }
    }

    /// Every provider's circuit state, by provider name. An open circuit whose
    /// cool-down is over shows as half-open, though it turns so only when a worker
    /// next asks to send through it.
    pub fn states(&self) -> Vec<(String, CircuitState)> {
        let now = Instant::now();
        let mut states: Vec<_> = self
            .breakers
            .iter()
            .map(|(name, breaker)| {
                let state = match lock(breaker).state {
                    State::Closed => CircuitState::Closed,
                    State::Open { until } if until <= now => CircuitState::HalfOpen,
                    State::Open { .. } => CircuitState::Open,
                    State::HalfOpen { .. } => CircuitState::HalfOpen,
                };
                (name.clone(), state)
            })
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    /// Whether a worker may send through `provider` now, and how much. An open
    /// circuit whose cool-down is over turns half-open here, handing out its probe.
    /// A provider without a breaker is always closed.
    pub fn admit(&self, provider: &str) -> Admission {
        let now = Instant::now();
        self.with(provider, |b, _| match b.state {
            State::Closed => Admission::Closed,
            State::Open { until } if now < until => Admission::Refused { until: Some(until) },
            State::Open { .. } | State::HalfOpen { probing: false } => {
                if matches!(b.state, State::Open { .. }) {
                    tracing::info!(
                        provider,
                        "circuit half-open: probing the provider with one message"
                    );
                }
                b.state = State::HalfOpen { probing: true };
                Admission::Probe(Probe {
                    circuits: self.clone(),
                    provider: provider.to_owned(),
                    settled: false,
                })
            }
            State::HalfOpen { probing: true } => Admission::Refused { until: None },
        })
        .unwrap_or(Admission::Closed)
    }

    /// Counts one send through `provider`. With the circuit's `probe`, the verdict
    /// closes the circuit (up) or opens it again for twice as long (down). Without
    /// one, a closed circuit counts failures in a row and opens at the threshold;
    /// answers to sends made before a circuit opened change nothing.
    pub fn record(&self, provider: &str, verdict: Verdict, probe: Option<Probe>) {
        let now = Instant::now();
        // Another provider's probe is not this one's verdict: dropped, it is freed.
        let probed = match probe {
            Some(mut p) if p.provider == provider => {
                p.settled = true;
                true
            }
            _ => false,
        };
        self.with(provider, |b, this| match (b.state, verdict, probed) {
            (State::HalfOpen { .. }, Verdict::Up, true) => {
                b.state = State::Closed;
                b.failures = 0;
                b.openings.reset();
                tracing::info!(provider, "circuit closed: the probe message went through");
            }
            (State::HalfOpen { .. }, Verdict::Down, true) => {
                let cooldown = b.openings.failed();
                b.state = State::Open {
                    until: now + cooldown,
                };
                tracing::warn!(
                    provider,
                    cooldown_ms = millis(cooldown),
                    "circuit open again: the probe message failed"
                );
            }
            (State::Closed, Verdict::Up, _) => b.failures = 0,
            (State::Closed, Verdict::Down, _) => {
                b.failures += 1;
                if b.failures >= this.failures {
                    b.openings.reset();
                    let cooldown = b.openings.failed();
                    b.state = State::Open {
                        until: now + cooldown,
                    };
                    tracing::warn!(
                        provider,
                        failures = b.failures,
                        cooldown_ms = millis(cooldown),
                        "circuit open: the provider failed repeatedly; its messages go to the next provider of their channel's failover list, or wait"
                    );
                }
            }
            _ => {}
        });
    }

    /// How long until `provider`'s circuit lets a probe through: zero when it is
    /// closed or half-open.
    pub fn opens_in(&self, provider: &str) -> Duration {
        let now = Instant::now();
        self.with(provider, |b, _| match b.state {
            State::Open { until } => until.saturating_duration_since(now),
            State::Closed | State::HalfOpen { .. } => Duration::ZERO,
        })
        .unwrap_or(Duration::ZERO)
    }

    fn with<T>(&self, provider: &str, f: impl FnOnce(&mut Breaker, &Circuits) -> T) -> Option<T> {
        let breaker = self.breakers.get(provider)?;
        Some(f(&mut lock(breaker), self))
    }
}

fn lock(breaker: &Mutex<Breaker>) -> std::sync::MutexGuard<'_, Breaker> {
    breaker.lock().unwrap_or_else(|p| p.into_inner())
}

/// The circuits in a scrape of `/metrics`, one series per provider and state:
/// `herald_provider_circuit_state{provider="…",state="closed|open|half_open"}`,
/// 1 for the state the circuit is in and 0 for the other two, so that a query
/// for `state="open"` finds every provider, open or not.
impl Section for Circuits {
    fn write(&self, out: &mut String) {
        out.push_str(
            "# HELP herald_provider_circuit_state The state of each provider's circuit breaker in this process's workers (1 for the current state).\n\
             # TYPE herald_provider_circuit_state gauge\n",
        );
        for (provider, current) in self.states() {
            let provider = metrics::escape(&provider);
            for state in [
                CircuitState::Closed,
                CircuitState::Open,
                CircuitState::HalfOpen,
            ] {
                let _ = writeln!(
                    out,
                    "herald_provider_circuit_state{{provider=\"{provider}\",state=\"{state}\"}} {}",
                    u8::from(state == current)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuits() -> Circuits {
        let config = CircuitConfig {
            failures: 3,
            cooldown_ms: 1_000,
            max_cooldown_ms: 3_000,
        };
        Circuits::new(["a", "b"], &config)
    }

    fn state(c: &Circuits, name: &str) -> CircuitState {
        c.states()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .expect("a known provider")
    }

    fn probe(c: &Circuits, name: &str) -> Probe {
        match c.admit(name) {
            Admission::Probe(p) => p,
            other => panic!("expected a probe, got {other:?}"),
        }
    }

    fn down(c: &Circuits, name: &str, times: usize) {
        for _ in 0..times {
            c.record(name, Verdict::Down, None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_circuit_opens_after_the_configured_failures_in_a_row_and_an_answer_resets_the_count()
    {
        let c = circuits();
        down(&c, "a", 2);
        c.record("a", Verdict::Up, None);
        down(&c, "a", 2);
        assert_eq!(state(&c, "a"), CircuitState::Closed);
        assert!(matches!(c.admit("a"), Admission::Closed));
        down(&c, "a", 1);
        assert_eq!(state(&c, "a"), CircuitState::Open);
        assert!(matches!(
            c.admit("a"),
            Admission::Refused { until: Some(_) }
        ));
        assert_eq!(c.opens_in("a"), Duration::from_secs(1));
        // One provider's failures leave another's circuit alone.
        assert_eq!(state(&c, "b"), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_cooldown_one_probe_goes_and_its_success_closes_the_circuit() {
        let c = circuits();
        down(&c, "a", 3);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(matches!(c.admit("a"), Admission::Refused { .. }));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(state(&c, "a"), CircuitState::HalfOpen);
        let p = probe(&c, "a");
        // Only one probe at a time.
        assert!(matches!(c.admit("a"), Admission::Refused { until: None }));
        // Late answers of sends made before the circuit opened change nothing.
        c.record("a", Verdict::Up, None);
        assert_eq!(state(&c, "a"), CircuitState::HalfOpen);
        c.record("a", Verdict::Up, Some(p));
        assert_eq!(state(&c, "a"), CircuitState::Closed);
        assert!(matches!(c.admit("a"), Admission::Closed));
        // Closed again, it takes the full count of failures to open.
        down(&c, "a", 2);
        assert_eq!(state(&c, "a"), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_the_circuit_for_twice_as_long_up_to_the_ceiling() {
        let c = circuits();
        down(&c, "a", 3);
        let mut waits = Vec::new();
        for _ in 0..3 {
            tokio::time::advance(c.opens_in("a")).await;
            let p = probe(&c, "a");
            c.record("a", Verdict::Down, Some(p));
            assert_eq!(state(&c, "a"), CircuitState::Open);
            waits.push(c.opens_in("a"));
        }
        assert_eq!(
            waits,
            [2_000, 3_000, 3_000].map(Duration::from_millis),
            "doubled, then held at max_cooldown_ms"
        );
        tokio::time::advance(c.opens_in("a")).await;
        let p = probe(&c, "a");
        c.record("a", Verdict::Up, Some(p));
        // Closed resets the cool-down: the next opening lasts the first one again.
        down(&c, "a", 3);
        assert_eq!(c.opens_in("a"), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_unsent_lets_the_next_caller_probe() {
        let c = circuits();
        down(&c, "a", 3);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(probe(&c, "a"));
        assert_eq!(state(&c, "a"), CircuitState::HalfOpen);
        let p = probe(&c, "a");
        c.record("a", Verdict::Down, Some(p));
        assert_eq!(state(&c, "a"), CircuitState::Open);
    }

    #[test]
    fn throttles_and_recipient_caps_are_answers_failures_and_timeouts_are_not() {
        let transient = |reason: &str| provider::Error::Transient {
            reason: reason.into(),
            retry_after: None,
        };
        let ok = || Ok(provider::Receipt::default());
        assert_eq!(Verdict::of(&[]), None);
        assert_eq!(
            Verdict::of(&[Err(transient("HTTP 503")), Err(transient("timed out"))]),
            Some(Verdict::Down)
        );
        assert_eq!(
            Verdict::of(&[Err(transient("HTTP 503")), ok()]),
            Some(Verdict::Up)
        );
        let unknown = || {
            Err(provider::Error::Unknown {
                reason: "no answer within 30000 ms".into(),
            })
        };
        assert_eq!(
            Verdict::of(&[unknown(), Err(transient("HTTP 503"))]),
            Some(Verdict::Down)
        );
        assert_eq!(Verdict::of(&[unknown(), ok()]), Some(Verdict::Up));
        assert_eq!(
            Verdict::of(&[Err(provider::Error::throttled("HTTP 429", None))]),
            Some(Verdict::Up)
        );
        assert_eq!(
            Verdict::of(&[Err(provider::Error::recipient_capped(
                "daily limit",
                Duration::from_secs(60)
            ))]),
            Some(Verdict::Up)
        );
        assert_eq!(
            Verdict::of(&[Err(provider::Error::Permanent {
                reason: "HTTP 400".into()
            })]),
            Some(Verdict::Up)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_show_each_providers_circuit_as_one_series_per_state() {
        let c = circuits();
        down(&c, "a", 3);
        let mut text = String::new();
        c.write(&mut text);
        assert!(
            text.starts_with("# HELP herald_provider_circuit_state "),
            "{text}"
        );
        assert!(text.contains("# TYPE herald_provider_circuit_state gauge\n"));
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                r#"herald_provider_circuit_state{provider="a",state="closed"} 0"#,
                r#"herald_provider_circuit_state{provider="a",state="open"} 1"#,
                r#"herald_provider_circuit_state{provider="a",state="half_open"} 0"#,
                r#"herald_provider_circuit_state{provider="b",state="closed"} 1"#,
                r#"herald_provider_circuit_state{provider="b",state="open"} 0"#,
                r#"herald_provider_circuit_state{provider="b",state="half_open"} 0"#,
            ]
        );
        tokio::time::advance(Duration::from_millis(1_000)).await;
        text.clear();
        c.write(&mut text);
        assert!(
            text.contains(r#"herald_provider_circuit_state{provider="a",state="half_open"} 1"#),
            "{text}"
        );
    }
}
