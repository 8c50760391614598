//! Configuration: one tree of serde structs with defaults, so `herald serve` runs
//! with no file at all. Layers, later wins: defaults → `herald.toml` (or
//! `--config FILE`) → environment variables `HERALD_…` (`__` separates levels, e.g.
//! `HERALD_WORKER__MAX_IN_FLIGHT=64`; `HERALD_PROVIDERS` takes an inline array).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

use crate::auth::TokenHash;
use crate::domain::{Channel, Secret};
use crate::provider::ProviderConfig;
use crate::recipient::{EmailRules, PhoneRules, Region, Rules};

/// The file read when `--config` is not given; it is fine for it not to exist.
pub const DEFAULT_FILE: &str = "herald.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// The store: a directory for the embedded SQLite engine, or `sqlite://DIR`.
    pub store: String,
    pub worker: WorkerConfig,
    pub retry: RetryConfig,
    pub limits: IntakeLimits,
    pub recipients: RecipientsConfig,
    /// The provider each channel uses when a batch names none.
    pub defaults: HashMap<Channel, String>,
    /// Per channel, providers in order of preference: the first is the channel's
    /// default, and a provider whose circuit is open hands its messages to the next
    /// one of the list whose circuit is closed.
    pub failover: HashMap<Channel, Vec<String>>,
    /// When a provider's circuit opens and how it closes again.
    pub circuit: CircuitConfig,
    pub providers: Vec<ProviderConfig>,
    /// Queues of an existing application that Herald takes jobs from (`[[ingest]]`).
    pub ingest: Vec<IngestConfig>,
    /// Who may call the API (`[auth]`).
    pub auth: AuthConfig,
}

/// Who may call the API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The hashes of the API tokens accepted (`sha256:<hex>`, printed by
    /// `herald token`). When there are any, every `/v1/…` route (but the providers'
    /// `/v1/receipts/{provider}`, checked by their signatures), `/send-sms` and
    /// `/metrics` need `Authorization: Bearer <token>`; when there are none, Herald
    /// asks for no token and listens on loopback addresses only.
    pub tokens: Vec<TokenHash>,
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

/// How recipient addresses are read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecipientsConfig {
    /// The country of phone numbers written without a country code, e.g. `CN`
    /// (`13800138000` → `+8613800138000`). Without it, numbers need `+` and a
    /// country code.
    pub default_region: Option<Region>,
    /// Accept e-mail domains without a dot or under names reserved for local use
    /// (`localhost`, `.local`, `.test`, …), for in-house mail servers.
    pub allow_local_email: bool,
    /// How long what each recipient was sent is remembered, for batches that ask to
    /// `reject_recent_duplicates`; 0 (the default) remembers nothing, sparing every
    /// submit the extra writes.
    pub recent_window_secs: u64,
}

impl RecipientsConfig {
    /// `None` when recent sends are not remembered.
    pub fn recent_window(&self) -> Option<Duration> {
        (self.recent_window_secs > 0).then(|| Duration::from_secs(self.recent_window_secs))
    }

    pub fn rules(&self) -> Rules {
        Rules {
            phone: PhoneRules {
                default_region: self.default_region,
            },
            email: EmailRules {
                allow_local_domains: self.allow_local_email,
            },
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: "herald-data".into(),
            worker: WorkerConfig::default(),
            retry: RetryConfig::default(),
            limits: IntakeLimits::default(),
            recipients: RecipientsConfig::default(),
            defaults: HashMap::new(),
            failover: HashMap::new(),
            circuit: CircuitConfig::default(),
            providers: Vec::new(),
            ingest: Vec::new(),
            auth: AuthConfig::default(),
        }
    }
}

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

/// `[limits]`: how much one batch may bring in through the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeLimits {
    /// The most recipients one batch may have.
    pub max_recipients: usize,
    /// The largest request body the API reads into memory, in bytes. A bigger
    /// batch JSON is spooled to a temporary file and read from there.
    pub max_body_bytes: usize,
    /// The largest batch upload (JSON, NDJSON or CSV), in bytes.
    pub max_upload_bytes: u64,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        IntakeLimits {
            max_recipients: 1_000_000,
            max_body_bytes: 64 * 1024 * 1024,
            max_upload_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// One `[[ingest]]` block: a queue that an existing application pushes jobs onto,
/// which Herald consumes in place of the application's old worker.
#[derive(Debug, Clone, Deserialize)]
pub struct IngestConfig {
    /// Names the source: its batches show `ingest:{name}` as their source.
    pub name: String,
    #[serde(flatten)]
    pub kind: IngestKind,
    /// The channel the queue carries: its classic jobs are read as this channel's,
    /// and batches of another channel are dead-lettered. Absent: told apart by
    /// their fields (`mobiles` SMS, `to_email` e-mail).
    #[serde(default)]
    pub channel: Option<Channel>,
    /// The provider for jobs that name none; default the channel's default.
    #[serde(default)]
    pub provider: Option<String>,
    /// A stored template for jobs that name none, rendered with the job's
    /// `content` (and for e-mail `title`) as variables.
    #[serde(default)]
    pub template_id: Option<String>,
}

/// Where an ingest source's jobs come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum IngestKind {
    /// A Redis list producers `LPUSH` onto (`kind = "redis-list"`).
    RedisList {
        /// `redis://[:password@]host:port/db`.
        url: Secret,
        /// The list, e.g. `sms_queue`.
        key: String,
        /// Where items are held while they become a batch; default `{key}:processing`.
        #[serde(default)]
        processing_key: Option<String>,
        /// Where items that cannot become a batch go, with the reason; default `{key}:dead`.
        #[serde(default)]
        dead_letter_key: Option<String>,
    },
    /// An AMQP 0-9-1 queue, as RabbitMQ serves it (`kind = "amqp"`).
    Amqp {
        /// `amqp://user:password@host:port/vhost`.
        url: Secret,
        queue: String,
        /// Where items that cannot become a batch are published, with the reason
        /// in the header `x-herald-reason`; default `{queue}.dead`, declared durable.
        #[serde(default)]
        dead_letter_queue: Option<String>,
        /// Messages the broker sends ahead, unacknowledged (basic.qos); 1 to 1000.
        #[serde(default = "default_prefetch")]
        prefetch: u16,
    },
}

fn default_prefetch() -> u16 {
    16
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config file {0} does not exist")]
    MissingFile(std::path::PathBuf),
    /// A value of the wrong type, an unknown field, a file that is not TOML; the
    /// message names the key and where it came from (file or environment).
    #[error(transparent)]
    Invalid(Box<figment::Error>),
}

impl From<figment::Error> for Error {
    fn from(e: figment::Error) -> Self {
        Error::Invalid(Box::new(e))
    }
}

impl Config {
    /// Loads defaults, then `file` (which must exist when given, else `herald.toml`
    /// if present), then `HERALD_…` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, Error> {
        let toml = match file {
            Some(path) => {
                if !path.exists() {
                    return Err(Error::MissingFile(path.to_path_buf()));
                }
                Toml::file_exact(path)
            }
            None => Toml::file(DEFAULT_FILE),
        };
        Ok(Self::figment(toml).extract()?)
    }

    /// Parses a TOML document, then the environment over it.
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        Ok(Self::figment(Toml::string(text)).extract()?)
    }

    fn figment(toml: figment::providers::Data<Toml>) -> Figment {
        Figment::new().merge(toml).merge(
            Env::prefixed("HERALD_")
                .split("__")
                .ignore(&["server", "log", "token"]),
        )
    }

    /// The store's URL as logs and messages show it: a password in it replaced by
    /// `***`.
    pub fn store_for_display(&self) -> String {
        let Some((scheme, rest)) = self.store.split_once("://") else {
            return self.store.clone();
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        match authority.rsplit_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}{path}")
            }
            _ => self.store.clone(),
        }
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.worker.lease_ms)
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.worker.send_timeout_ms)
    }

    /// Checks relations between settings that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.worker.max_in_flight == 0 {
            return Err("worker.max_in_flight must be at least 1".into());
        }
        if self.worker.lease_ms <= self.worker.send_timeout_ms {
            return Err(format!(
                "worker.lease_ms ({}) must be longer than worker.send_timeout_ms ({}), or a slow send could be claimed twice",
                self.worker.lease_ms, self.worker.send_timeout_ms
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err("retry.max_attempts must be at least 1".into());
        }
        if self.limits.max_recipients == 0 {
            return Err("limits.max_recipients must be at least 1".into());
        }
        if self.circuit.failures == 0 {
            return Err("circuit.failures must be at least 1".into());
        }
        if self.circuit.cooldown_ms == 0 || self.circuit.max_cooldown_ms < self.circuit.cooldown_ms
        {
            return Err(format!(
                "circuit.cooldown_ms ({}) must be at least 1 and at most circuit.max_cooldown_ms ({})",
                self.circuit.cooldown_ms, self.circuit.max_cooldown_ms
            ));
        }
        let mut names = std::collections::HashSet::new();
        for ingest in &self.ingest {
            if ingest.name.is_empty() || !names.insert(ingest.name.as_str()) {
                return Err(format!(
                    "ingest names must be unique and not empty: `{}`",
                    ingest.name
                ));
            }
            if let IngestKind::Amqp { prefetch, .. } = ingest.kind
                && !(1..=1000).contains(&prefetch)
            {
                return Err(format!(
                    "ingest `{}`: prefetch must be between 1 and 1000, not {prefetch}",
                    ingest.name
                ));
            }
        }
        Ok(())
    }

    /// Checks that the API may listen on `listen`: without API tokens, only on a
    /// loopback address, which no other machine can reach.
    pub fn check_listen(&self) -> Result<(), String> {
        if self.auth.tokens.is_empty() && !self.listen.ip().is_loopback() {
            return Err(format!(
                "refusing to listen on {} without API tokens: anyone who can reach it could send messages. \
                 Add [auth] tokens (make one with `herald token`), or listen on 127.0.0.1",
                self.listen
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderKind;
    use crate::ratelimit::Cap;

    /// Parses `text` inside figment's jail: the environment is read under a global
    /// lock, so a test that sets `HERALD_…` variables cannot leak into another.
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn parse(text: &str) -> Config {
        let mut parsed = None;
        figment::Jail::expect_with(|_| {
            parsed = Some(Config::from_toml(text).expect("valid config"));
            Ok(())
        });
        parsed.expect("the jail ran")
    }

    #[test]
    fn no_file_gives_working_defaults() {
        let c = parse("");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.providers.is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn providers_and_defaults_come_from_toml() {
        let c = parse(
            r#"
            [defaults]
            sms = "hook"
            [[providers]]
            name = "hook"
            kind = "webhook"
            url = "http://127.0.0.1:9190/sms"
            channels = ["sms"]
            rate_per_sec = 500
            secret = "s3cret"
            per_recipient = { per_minute = 1, per_day = 10 }
            "#,
        );
        assert_eq!(c.defaults[&Channel::Sms], "hook");
        let p = &c.providers[0];
        assert_eq!(p.rate_per_sec, Some(500.0));
        assert_eq!(
            p.per_recipient.caps(),
            [
                Cap {
                    count: 1,
                    window_ms: 60_000
                },
                Cap {
                    count: 10,
                    window_ms: 86_400_000
                }
            ]
        );
        match &p.kind {
            ProviderKind::Webhook { url, secret } => {
                assert_eq!(url, "http://127.0.0.1:9190/sms");
                assert_eq!(secret.as_ref().map(Secret::expose), Some("s3cret"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the secret leaked into Debug"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_WORKER__MAX_IN_FLIGHT", "7");
            jail.set_env(
                "HERALD_PROVIDERS",
                r#"[{name="hook", kind="webhook", url="http://127.0.0.1:1/x"}]"#,
            );
            let c = Config::from_toml("[worker]\nmax_in_flight = 3").unwrap();
            assert_eq!(c.worker.max_in_flight, 7);
            assert_eq!(c.providers[0].name, "hook");
            Ok(())
        });
    }

    #[test]
    fn a_public_address_without_tokens_is_refused_and_with_one_allowed() {
        let c = parse("listen = \"0.0.0.0:8080\"");
        c.validate().unwrap();
        let err = c.check_listen().unwrap_err();
        assert!(
            err.contains("0.0.0.0:8080") && err.contains("herald token"),
            "{err}"
        );
        let hash = crate::auth::TokenHash::of("t").to_string();
        let c = parse(&format!(
            "listen = \"0.0.0.0:8080\"\n[auth]\ntokens = [\"{hash}\"]"
        ));
        c.check_listen().unwrap();
        assert_eq!(c.auth.tokens[0].to_string(), hash);
        parse("listen = \"[::1]:8080\"").check_listen().unwrap();
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn a_malformed_token_hash_is_refused_naming_the_key() {
        let mut err = None;
        figment::Jail::expect_with(|_| {
            err = Config::from_toml("[auth]\ntokens = [\"abc\"]").err();
            Ok(())
        });
        let err = err.expect("refused").to_string();
        assert!(
            err.contains("auth.tokens") && err.contains("sha256:"),
            "{err}"
        );
    }

    #[test]
    fn a_store_password_is_hidden_when_the_store_is_shown() {
        let shown = |store: &str| {
            Config {
                store: store.into(),
                ..Config::default()
            }
            .store_for_display()
        };
        assert_eq!(
            shown("postgres://herald:pa:ss@db.example:5432/herald?sslmode=disable"),
            "postgres://herald:***@db.example:5432/herald?sslmode=disable"
        );
        assert_eq!(
            shown("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(shown("postgres://herald@db/x"), "postgres://herald@db/x");
        assert_eq!(shown("herald-data"), "herald-data");
    }

    #[test]
    fn failover_lists_and_circuit_settings_come_from_toml() {
        let c = parse(
            r#"
            [failover]
            sms = ["ali", "tc"]
            [circuit]
            failures = 3
            cooldown_ms = 1000
            "#,
        );
        assert_eq!(c.failover[&Channel::Sms], ["ali", "tc"]);
        assert_eq!(
            (
                c.circuit.failures,
                c.circuit.cooldown_ms,
                c.circuit.max_cooldown_ms
            ),
            (3, 1_000, 600_000)
        );
        c.validate().unwrap();
        let e = parse("[circuit]\nfailures = 0").validate().unwrap_err();
        assert!(e.contains("circuit.failures"), "{e}");
        let e = parse("[circuit]\ncooldown_ms = 700000")
            .validate()
            .unwrap_err();
        assert!(e.contains("max_cooldown_ms"), "{e}");
    }

    #[test]
    fn ingest_sources_are_read_with_their_kind_and_defaults() {
        let c = parse(
            r#"
            [[ingest]]
            name = "legacy"
            kind = "redis-list"
            url = "redis://:pw@127.0.0.1:6379/0"
            key = "sms_queue"
            channel = "sms"
            provider = "ali"
            [[ingest]]
            name = "mq"
            kind = "amqp"
            url = "amqp://guest:guest@127.0.0.1:5672/%2f"
            queue = "sms_queue"
            "#,
        );
        c.validate().unwrap();
        let legacy = &c.ingest[0];
        assert_eq!(legacy.channel, Some(Channel::Sms));
        assert_eq!(legacy.provider.as_deref(), Some("ali"));
        match &legacy.kind {
            IngestKind::RedisList {
                key,
                processing_key,
                ..
            } => {
                assert_eq!(key, "sms_queue");
                assert_eq!(processing_key, &None);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(c.ingest[1].kind, IngestKind::Amqp { prefetch: 16, .. }),
            "{:?}",
            c.ingest[1]
        );
        assert!(
            !format!("{c:?}").contains("pw@"),
            "the URL leaked into Debug"
        );
    }

    #[test]
    fn an_ingest_prefetch_of_zero_and_a_repeated_name_are_refused() {
        let c = parse(
            "[[ingest]]\nname = \"mq\"\nkind = \"amqp\"\nurl = \"amqp://h\"\nqueue = \"q\"\nprefetch = 0",
        );
        assert!(c.validate().unwrap_err().contains("prefetch"));
        let source =
            "[[ingest]]\nname = \"a\"\nkind = \"redis-list\"\nurl = \"redis://h\"\nkey = \"k\"\n";
        let c = parse(&format!("{source}{source}"));
        assert!(c.validate().unwrap_err().contains("unique"));
    }

    #[test]
    fn a_lease_shorter_than_the_send_timeout_is_refused() {
        let c = parse("[worker]\nlease_ms = 1000\nsend_timeout_ms = 2000");
        assert!(c.validate().unwrap_err().contains("lease_ms"));
    }
}
