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
    /// How long a claimed message is reserved for its worker; after that another
    /// worker may claim it again. Must exceed `send_timeout_ms`.
    pub lease_ms: u64,
    /// The longest one delivery attempt may take.
    pub send_timeout_ms: u64,
    /// How often an idle worker looks for due messages (retries, scheduled sends,
    /// expired leases); new batches wake it at once.
    pub poll_interval_ms: u64,
    /// On shutdown, how long in-flight sends may take to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            enabled: true,
            max_in_flight: 256,
            lease_ms: 60_000,
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

/// `[circuit]`: each worker process keeps a circuit breaker per provider. It opens
/// after `failures` transient failures in a row (throttles and a recipient's
/// frequency cap do not count), stays open `cooldown_ms`, then lets one probe
/// message through: its success closes the circuit, its failure opens it again
/// for twice as long, up to `max_cooldown_ms`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitConfig {
    /// Transient failures in a row that open a provider's circuit; at least 1.
    pub failures: u32,
    /// How long a circuit first stays open before a probe, in ms.
    pub cooldown_ms: u64,
    /// The longest a circuit stays open before a probe, in ms.
    pub max_cooldown_ms: u64,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failures: 5,
            cooldown_ms: 30_000,
            max_cooldown_ms: 600_000,
        }
    }
}
