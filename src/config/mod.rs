//! Configuration: one tree of serde structs with defaults, so `herald serve` runs
//! with no file at all. Layers, later wins: defaults → `herald.toml` (or
//! `--config FILE`) → environment variables `HERALD_…` (`__` separates levels, e.g.
//! `HERALD_WORKER__MAX_IN_FLIGHT=64`; `HERALD_PROVIDERS` takes an inline array).
//!
//! This file holds the tree's root, its loading and its checks; `delivery`,
//! `intake`, `ingest`, `replies`, `retention` and `webhook` hold the sections; `[[providers]]` entries are
//! [`crate::provider::ProviderConfig`], read beside the providers.

mod delivery;
mod ingest;
mod intake;
mod replies;
mod retention;
mod unknown;
mod webhook;
mod window;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

pub use self::delivery::{CircuitConfig, RetryConfig, WorkerConfig};
pub use self::ingest::{IngestConfig, IngestKind};
pub use self::intake::{IntakeLimits, RecipientsConfig, ValidForConfig};
pub use self::replies::{RepliesConfig, ReplyRules};
pub use self::retention::{AuditConfig, RetentionConfig};
pub use self::unknown::UnknownKey;
pub use self::webhook::{MAX_BATCH_SIZE, WebhookConfig, WebhookSettings};
pub use self::window::WindowsConfig;
use crate::auth::ApiToken;
use crate::domain::{Channel, StoreUrl};
use crate::provider::ProviderConfig;

/// The shortest `worker.lease_ms` allowed, in ms.
pub const MIN_LEASE_MS: u64 = 1_000;

/// What starts the name of every environment variable the configuration reads,
/// and what separates its levels (`HERALD_WORKER__MAX_IN_FLIGHT`).
const ENV_PREFIX: &str = "HERALD_";
const ENV_SPLIT: &str = "__";

/// The file read when `--config` is not given; it is fine for it not to exist.
pub const DEFAULT_FILE: &str = "herald.toml";

/// The whole configuration: every section, each with its defaults. Every table
/// refuses a key it does not read (see [`Error::Unknown`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// The store: a directory (or `sqlite://DIR`) for the embedded SQLite engine,
    /// `postgres://…` or `redis://…` for a server. Parsed when the configuration
    /// is read, so a malformed URL stops Herald at start.
    pub store: StoreUrl,
    /// The delivery workers (`[worker]`).
    pub worker: WorkerConfig,
    /// When failed messages are tried again (`[retry]`).
    pub retry: RetryConfig,
    /// How big a batch may be (`[limits]`).
    pub limits: IntakeLimits,
    /// How recipient addresses are read (`[recipients]`).
    pub recipients: RecipientsConfig,
    /// How long a batch's messages may wait to be sent when it gives no deadline
    /// (`[valid_for]`).
    pub valid_for: ValidForConfig,
    /// Quiet hours: the sending window in each recipient's local time a batch gets
    /// when it gives none (`[windows]`).
    pub windows: WindowsConfig,
    /// The provider each channel uses when a batch names none.
    pub defaults: HashMap<Channel, String>,
    /// Per channel, providers in order of preference: the first is the channel's
    /// default, and a provider whose circuit is open hands its messages to the next
    /// one of the list whose circuit is closed.
    pub failover: HashMap<Channel, Vec<String>>,
    /// When a provider's circuit opens and how it closes again.
    pub circuit: CircuitConfig,
    /// The providers (`[[providers]]`); the `log` provider is added when none is
    /// named so.
    pub providers: Vec<ProviderConfig>,
    /// Queues of an existing application that Herald takes jobs from (`[[ingest]]`).
    pub ingest: Vec<IngestConfig>,
    /// Who may call the API (`[auth]`).
    pub auth: AuthConfig,
    /// What replies do: keywords and auto-replies (`[replies.sms]`).
    pub replies: RepliesConfig,
    /// The application's endpoints told of batches' events (`[[webhooks]]`).
    pub webhooks: Vec<WebhookConfig>,
    /// How events are posted (`[webhook]`).
    pub webhook: WebhookSettings,
    /// How long the ledger is kept (`[retention]`).
    pub retention: RetentionConfig,
    /// How long the audit trail is kept (`[audit]`).
    pub audit: AuditConfig,
}

/// Who may call the API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The API tokens accepted, each a hash (`sha256:<hex>`, printed by
    /// `herald token`) or a table `{ name, hash }` naming its holder for the
    /// audit trail (`herald token --name`). When there are any, every `/v1/…` route (but the providers'
    /// `/v1/receipts/{provider}`, checked by their signatures), `/send-sms` and
    /// `/metrics` need `Authorization: Bearer <token>`; when there are none, Herald
    /// asks for no token and listens on loopback addresses only.
    pub tokens: Vec<ApiToken>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: StoreUrl::Sqlite("herald-data".into()),
            worker: WorkerConfig::default(),
            retry: RetryConfig::default(),
            limits: IntakeLimits::default(),
            recipients: RecipientsConfig::default(),
            valid_for: ValidForConfig::default(),
            windows: WindowsConfig::default(),
            defaults: HashMap::new(),
            failover: HashMap::new(),
            circuit: CircuitConfig::default(),
            providers: Vec::new(),
            ingest: Vec::new(),
            auth: AuthConfig::default(),
            replies: RepliesConfig::default(),
            webhooks: Vec::new(),
            webhook: WebhookSettings::default(),
            retention: RetentionConfig::default(),
            audit: AuditConfig::default(),
        }
    }
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
    /// A key no table reads: a misspelling, or a key in the wrong table, which
    /// would otherwise leave its setting at the default without a word.
    #[error("{0}")]
    Unknown(UnknownKey),
    /// A key Herald took once and no longer does.
    #[error("{key} is no longer a setting: it was replaced by {by}")]
    Replaced { key: &'static str, by: &'static str },
}

impl Error {
    /// `e`, met reading `figment`: an unknown key said helpfully, else as figment says it.
    fn reading(e: figment::Error, figment: &Figment) -> Self {
        match e
            .clone()
            .into_iter()
            .find_map(|e| UnknownKey::from_figment(&e, figment))
        {
            Some(unknown) => Error::Unknown(unknown),
            None => Error::Invalid(Box::new(e)),
        }
    }
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
        Self::extract(Self::figment(toml))
    }

    /// Parses a TOML document, then the environment over it.
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        Self::extract(Self::figment(Toml::string(text)))
    }

    /// The configuration in `figment`, refusing a key that was replaced with what
    /// replaced it (an unknown key would be refused anyway, but not so helpfully).
    fn extract(figment: Figment) -> Result<Config, Error> {
        for (key, by) in CircuitConfig::REPLACED {
            if figment.contains(key) {
                return Err(Error::Replaced { key, by });
            }
        }
        figment.extract().map_err(|e| Error::reading(e, &figment))
    }

    fn figment(toml: figment::providers::Data<Toml>) -> Figment {
        Figment::new().merge(toml).merge(
            Env::prefixed(ENV_PREFIX)
                .split(ENV_SPLIT)
                // The client's, the logs' and the command line's own variables,
                // and the test suite's stores: none is a configuration key.
                .ignore(&[
                    "server",
                    "token",
                    "log",
                    "log_format",
                    "config",
                    "test_postgres",
                    "test_redis",
                ]),
        )
    }

    /// How long a claimed message stays reserved for its worker.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.worker.lease_ms)
    }

    /// The longest one delivery attempt may take.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.worker.send_timeout_ms)
    }

    /// Checks relations between settings that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.worker.max_in_flight == 0 {
            return Err("worker.max_in_flight must be at least 1".into());
        }
        if self.worker.lease_ms < MIN_LEASE_MS {
            return Err(format!(
                "worker.lease_ms ({}) must be at least {MIN_LEASE_MS}: leases are renewed every third of it, and a renewal must land before the lease runs out",
                self.worker.lease_ms
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err("retry.max_attempts must be at least 1".into());
        }
        if self.limits.max_recipients == 0 {
            return Err("limits.max_recipients must be at least 1".into());
        }
        self.circuit.validate()?;
        crate::auth::check_tokens(&self.auth.tokens)?;
        self.replies.sms.validate("replies.sms")?;
        self.webhook.validate(&self.webhooks)?;
        let names = self
            .providers
            .iter()
            .map(|p| p.name.as_str())
            .chain(["log"]);
        self.valid_for.validate(names.clone())?;
        self.windows.validate(names)?;
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
mod tests;
