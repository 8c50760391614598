//! Circuit breakers: one per provider, kept by each worker process.
//!
//! A provider's circuit is closed while most of its recent calls get answers. It
//! opens when at least `failure_rate` of the calls in its [`window`] failed
//! transiently (timeouts, refused connections, 5xx; not throttles, which pace the
//! provider instead, nor a recipient's frequency cap), once the window holds
//! `min_calls`: a rate, not failures in a row, so a provider that answers most
//! requests is never stopped. An open circuit lets probes through, one message
//! each. With a fallback, its messages go to the next provider of the channel's
//! failover list, and the probes come after a cool-down that doubles after each
//! failed probe. Without one, its messages have nowhere else to go, so a probe goes
//! every `probe_interval_ms`, alone until one succeeds: a recovery is noticed
//! within about that long. `probes` successful probes close the circuit; a failed
//! one opens it again. [`Circuits`] is the cheap-to-clone handle the workers and
//! anything reporting on them share.

mod window;

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
use crate::provider::{self, Registry};

use self::window::Window;

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
    /// The circuit is half-open and this caller holds one of its probes: send one
    /// message and hand the probe back with its verdict to [`Circuits::record`].
    Probe(Probe),
    /// The circuit is open (or its probes are out): send nothing through it.
    /// `until` is when it lets a probe through, if known.
    Refused { until: Option<Instant> },
}

/// The right to send one probe message through a half-open circuit. Dropped
/// without a verdict (nothing was sent after all), it lets another caller probe.
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
                if let State::HalfOpen { out, .. } = &mut b.state {
                    *out = out.saturating_sub(1);
                }
            });
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// No probe before `until`.
    Open {
        until: Instant,
    },
    /// `out` probes are being sent; `passed` have succeeded since it turned so.
    HalfOpen {
        out: u32,
        passed: u32,
    },
}

impl State {
    /// The state as shown at `now`: open whose wait is over shows as half-open.
    fn public(self, now: Instant) -> CircuitState {
        match self {
            State::Open { until } if until <= now => CircuitState::HalfOpen,
            state => state.kind(),
        }
    }

    fn kind(self) -> CircuitState {
        match self {
            State::Closed => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

/// When an open circuit lets probes through.
#[derive(Debug)]
enum Probing {
    /// The provider has a fallback: after a cool-down that doubles with each
    /// failed probe (the streak), several at once.
    Cooldown(Streak),
    /// It has none: one every this long until one succeeds, then the rest.
    Steady(Duration),
}

/// One provider's breaker.
#[derive(Debug)]
struct Breaker {
    state: State,
    window: Window,
    probing: Probing,
}

impl Breaker {
    /// How long the circuit stays open now that it opens (again).
    fn open_for(&mut self) -> Duration {
        match &mut self.probing {
            Probing::Cooldown(streak) => streak.failed(),
            Probing::Steady(every) => *every,
        }
    }

    /// Whether a half-open circuit with `out` probes out, `passed` of them
    /// successful, hands out another of its `probes`.
    fn may_probe(&self, out: u32, passed: u32, probes: u32) -> bool {
        let lone = matches!(self.probing, Probing::Steady(_)) && passed == 0;
        out + passed < probes && !(lone && out > 0)
    }

    /// Whether a change to `to` is routine, the steady probing of a provider with
    /// no fallback that is still down: logged at debug level, as it comes twice
    /// a second.
    fn routine(&self, to: State) -> bool {
        matches!(self.probing, Probing::Steady(_))
            && !matches!(self.state, State::Closed)
            && !matches!(to, State::Closed)
    }
}

/// The circuit breakers of every provider of this process; cheap to clone.
#[derive(Debug, Clone)]
pub struct Circuits {
    breakers: Arc<HashMap<String, Mutex<Breaker>>>,
    failure_rate: f64,
    min_calls: usize,
    probes: u32,
}

impl Circuits {
    /// A closed circuit for each of `providers`, none of which has a fallback:
    /// open, each probes every `probe_interval_ms`.
    pub fn new<I, S>(providers: I, config: &CircuitConfig) -> Circuits
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::build(providers.into_iter().map(|p| (p, false)), config)
    }

    /// A closed circuit for each provider of `registry`, probing after a
    /// cool-down when the provider has a fallback, steadily when it has none.
    pub fn for_registry(registry: &Registry, config: &CircuitConfig) -> Circuits {
        Self::build(
            registry
                .routes()
                .map(|r| (r.name.clone(), !registry.fallbacks(&r.name).is_empty())),
            config,
        )
    }

    /// A closed circuit for each provider, named with whether it has a fallback.
    pub fn build<I, S>(providers: I, config: &CircuitConfig) -> Circuits
    where
        I: IntoIterator<Item = (S, bool)>,
        S: Into<String>,
    {
        let cooldown = Duration::from_millis(config.cooldown_ms);
        let backoff = Backoff {
            first: cooldown,
            cap: Duration::from_millis(config.max_cooldown_ms).max(cooldown),
            jitter: Jitter::None,
        };
        let every = Duration::from_millis(config.probe_interval_ms.max(1));
        let window_calls = usize::try_from(config.window_calls).unwrap_or(usize::MAX);
        let breakers = providers
            .into_iter()
            .map(|(name, fallback)| {
                let breaker = Breaker {
                    state: State::Closed,
                    window: Window::new(window_calls, Duration::from_millis(config.window_ms)),
                    probing: if fallback {
                        Probing::Cooldown(Streak::new(backoff))
                    } else {
                        Probing::Steady(every)
                    },
                };
                (name.into(), Mutex::new(breaker))
            })
            .collect();
        Circuits {
            breakers: Arc::new(breakers),
            failure_rate: config.failure_rate,
            min_calls: usize::try_from(config.min_calls.max(1)).unwrap_or(usize::MAX),
            probes: config.probes.max(1),
        }
    }

    /// Every provider's circuit state, by provider name. An open circuit whose
    /// wait is over shows as half-open, though it turns so only when a worker
    /// next asks to send through it.
    pub fn states(&self) -> Vec<(String, CircuitState)> {
        let now = Instant::now();
        let mut states: Vec<_> = self
            .breakers
            .iter()
            .map(|(name, breaker)| (name.clone(), lock(breaker).state.public(now)))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    /// Whether a worker may send through `provider` now, and how much. An open
    /// circuit whose wait is over turns half-open here, handing out a probe.
    /// A provider without a breaker is always closed.
    pub fn admit(&self, provider: &str) -> Admission {
        let now = Instant::now();
        self.with(provider, |b, this| match b.state {
            State::Closed => Admission::Closed,
            State::Open { until } if now < until => Admission::Refused { until: Some(until) },
            State::Open { .. } => {
                let to = State::HalfOpen { out: 1, passed: 0 };
                changed(provider, b, to, "circuit half-open: probing the provider");
                Admission::Probe(this.probe(provider))
            }
            State::HalfOpen { out, passed } if b.may_probe(out, passed, this.probes) => {
                b.state = State::HalfOpen {
                    out: out + 1,
                    passed,
                };
                Admission::Probe(this.probe(provider))
            }
            State::HalfOpen { .. } => Admission::Refused { until: None },
        })
        .unwrap_or(Admission::Closed)
    }

    /// Counts one send through `provider`. With one of the circuit's probes, the
    /// verdict counts towards closing it (up) or opens it again (down). Otherwise
    /// a closed circuit adds it to its window and opens when the window's failure
    /// rate reaches the threshold; answers to sends made before a circuit opened
    /// change nothing.
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
        self.with(provider, |b, this| {
            b.window.push(now, verdict == Verdict::Down);
            match (b.state, verdict, probed) {
                (State::HalfOpen { out, passed }, Verdict::Up, true) => {
                    let passed = passed + 1;
                    if passed >= this.probes {
                        changed(provider, b, State::Closed, "circuit closed: the probes went through");
                        b.window.clear();
                        if let Probing::Cooldown(streak) = &mut b.probing {
                            streak.reset();
                        }
                    } else {
                        b.state = State::HalfOpen {
                            out: out.saturating_sub(1),
                            passed,
                        };
                    }
                }
                (State::HalfOpen { .. }, Verdict::Down, true) => {
                    let until = now + b.open_for();
                    changed(provider, b, State::Open { until }, "circuit open again: a probe failed");
                }
                (State::Closed, Verdict::Down, _)
                    if b.window.calls() >= this.min_calls
                        && b.window.failure_rate() >= this.failure_rate =>
                {
                    if let Probing::Cooldown(streak) = &mut b.probing {
                        streak.reset();
                    }
                    let until = now + b.open_for();
                    changed(
                        provider,
                        b,
                        State::Open { until },
                        "circuit open: too many of the provider's recent calls failed; its messages go to the next provider of their channel's failover list, or wait for probes",
                    );
                }
                _ => {}
            }
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

    fn probe(&self, provider: &str) -> Probe {
        Probe {
            circuits: self.clone(),
            provider: provider.to_owned(),
            settled: false,
        }
    }

    fn with<T>(&self, provider: &str, f: impl FnOnce(&mut Breaker, &Circuits) -> T) -> Option<T> {
        let breaker = self.breakers.get(provider)?;
        Some(f(&mut lock(breaker), self))
    }
}

/// Moves `breaker` to `to`, logging the change once with the window it was
/// judged by: at warn level when it opens, debug when it is routine.
fn changed(provider: &str, breaker: &mut Breaker, to: State, why: &str) {
    let now = Instant::now();
    let from = breaker.state.kind();
    let routine = breaker.routine(to);
    breaker.state = to;
    breaker.window.expire(now);
    let failure_rate = (breaker.window.failure_rate() * 1000.0).round() / 1000.0;
    let calls = breaker.window.calls();
    let open_ms = match to {
        State::Open { until } => Some(millis(until.saturating_duration_since(now))),
        _ => None,
    };
    let (from, to) = (from.as_str(), to.kind().as_str());
    if routine {
        tracing::debug!(provider, from, to, failure_rate, calls, open_ms, "{why}");
    } else if open_ms.is_some() {
        tracing::warn!(provider, from, to, failure_rate, calls, open_ms, "{why}");
    } else {
        tracing::info!(provider, from, to, failure_rate, calls, "{why}");
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
mod tests;
