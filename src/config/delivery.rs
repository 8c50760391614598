//! How delivery runs: the worker pool (`[worker]`), retries (`[retry]`) and the
//! providers' circuit breakers (`[circuit]`).

use serde::Deserialize;

/// `[worker]`: the delivery workers this process runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Run delivery workers in this process.
    pub enabled: bool,
    /// Messages being sent at once, across all providers.
    pub max_in_flight: usize,
    /// How long a claimed message is reserved for its worker, renewed every third
    /// of it while its send is in progress; a worker that dies leaves its messages
    /// to the others after at most this long. At least 1000.
    pub lease_ms: u64,
    /// The longest one delivery attempt may take.
    pub send_timeout_ms: u64,
    /// How soon an idle worker looks again for due messages (retries, scheduled
    /// sends, expired leases). While nothing is due it reads when the next message
    /// is due and sleeps until then, looking again after this interval, doubling up
    /// to a second (how late it sees another process's work); new batches, resumes
    /// and retries in this process wake it at once.
    pub poll_interval_ms: u64,
    /// On shutdown, how long in-flight sends may take to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            enabled: true,
            max_in_flight: 256,
            lease_ms: 10_000,
            send_timeout_ms: 30_000,
            poll_interval_ms: 250,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// `[retry]`: how often and how late a transiently failed message is tried again.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included; then the message fails.
    pub max_attempts: u32,
    /// The first retry's delay; each further one doubles it, with jitter.
    pub base_delay_ms: u64,
    /// The longest delay between attempts, `Retry-After` included.
    pub max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            base_delay_ms: 1_000,
            max_delay_ms: 600_000,
        }
    }
}

/// `[circuit]`: each worker process keeps a circuit breaker per provider. It
/// opens when at least `failure_rate` of the provider's recent calls failed
/// transiently (the last `window_calls` calls, none older than `window_ms`, and
/// at least `min_calls` of them; throttles and a recipient's frequency cap do not
/// count). An open circuit lets probes through, one message each: after
/// `cooldown_ms` (doubling after each failed probe, up to `max_cooldown_ms`) for a
/// provider with a fallback, every `probe_interval_ms` for one without; `probes`
/// successful probes close it, a failed one opens it again.
///
/// `failures` (so many failures in a row) was replaced by `failure_rate` and
/// `min_calls`: [`crate::config::Config::load`] refuses it, saying so.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitConfig {
    /// The share of the window's calls that failed at which the circuit opens,
    /// above 0 and at most 1.
    pub failure_rate: f64,
    /// The fewest calls in the window for its failure rate to open the circuit;
    /// at least 1.
    pub min_calls: u32,
    /// The most recent calls the window holds; at least `min_calls`.
    pub window_calls: u32,
    /// How old a call in the window may be, in ms; older ones leave it.
    pub window_ms: u64,
    /// Successful probes that close a half-open circuit; at least 1.
    pub probes: u32,
    /// For a provider with no fallback: how often its open circuit lets a probe
    /// through, in ms.
    pub probe_interval_ms: u64,
    /// For a provider with a fallback: how long its circuit first stays open
    /// before probes, in ms.
    pub cooldown_ms: u64,
    /// For a provider with a fallback: the longest its circuit stays open before
    /// probes, in ms.
    pub max_cooldown_ms: u64,
}

impl Default for CircuitConfig {
    /// Half of at least 20 calls: a provider that fails 20 % of requests at random
    /// passes 50 % in a given 20 calls with a chance of 0.26 %, and in 100 calls
    /// about 10⁻¹¹ (binomial tails); one that fails everything opens at its 20th
    /// failure. Probes every 500 ms notice a recovery within a second.
    fn default() -> Self {
        CircuitConfig {
            failure_rate: 0.5,
            min_calls: 20,
            window_calls: 100,
            window_ms: 60_000,
            probes: 3,
            probe_interval_ms: 500,
            cooldown_ms: 30_000,
            max_cooldown_ms: 600_000,
        }
    }
}

impl CircuitConfig {
    /// Keys `[circuit]` no longer takes, each with what replaced it.
    pub(super) const REPLACED: &[(&str, &str)] = &[(
        "circuit.failures",
        "circuit.failure_rate and circuit.min_calls (the circuit opens on the failure rate of the recent calls, not on failures in a row)",
    )];

    /// Checks the settings serde cannot: the first problem, naming its key.
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(format!(
                "circuit.failure_rate must be above 0 and at most 1, not {}",
                self.failure_rate
            ));
        }
        if self.min_calls == 0 || self.window_calls < self.min_calls {
            return Err(format!(
                "circuit.min_calls ({}) must be at least 1 and at most circuit.window_calls ({})",
                self.min_calls, self.window_calls
            ));
        }
        for (key, value) in [
            ("circuit.window_ms", self.window_ms),
            ("circuit.probes", u64::from(self.probes)),
            ("circuit.probe_interval_ms", self.probe_interval_ms),
        ] {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if self.cooldown_ms == 0 || self.max_cooldown_ms < self.cooldown_ms {
            return Err(format!(
                "circuit.cooldown_ms ({}) must be at least 1 and at most circuit.max_cooldown_ms ({})",
                self.cooldown_ms, self.max_cooldown_ms
            ));
        }
        Ok(())
    }
}
