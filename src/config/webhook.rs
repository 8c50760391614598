//! Status webhooks: the application's endpoints (`[[webhooks]]`) and how events
//! are posted to them and to batches' own `callback_url`s (`[webhook]`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::domain::{Channel, HttpUrl, SigningSecret};
use crate::queue::{CALLBACK, Kinds};

/// `[[webhooks]]`: one endpoint of the application, told of the events of every
/// batch its filters match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique, not empty and not `callback`; the API names the endpoint by it.
    pub name: String,
    /// Where the events are posted, as JSON arrays.
    pub url: HttpUrl,
    /// The Standard Webhooks secret the posts are signed with: `whsec_` and the
    /// base64 of at least 24 random bytes.
    pub secret: SigningSecret,
    /// The kinds of events wanted (`message.sent`, `message.delivered`,
    /// `message.undelivered`, `message.failed`, `message.expired`,
    /// `message.cancelled`, `reply`, `batch.finished`); absent: all of them.
    #[serde(default = "Kinds::all")]
    pub events: Kinds,
    /// Only batches of these channels; absent: every channel.
    #[serde(default)]
    pub channels: Option<Vec<Channel>>,
    /// Only batches from these sources (`api`, `send-sms`, an ingest's name, …);
    /// absent: every source.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
}

/// `[webhook]`: how events are posted, to every endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// How long an event is tried again after it was recorded before it is kept
    /// as failed: `24h`, `90m`, `1h 30m`, or a number of seconds.
    #[serde(deserialize_with = "span")]
    pub retry_for: Duration,
    /// The most events one POST carries.
    pub batch_size: u32,
    /// The longest one POST may take, from connect to the answer's last byte.
    #[serde(deserialize_with = "span")]
    pub timeout: Duration,
    /// Signs the posts to batches' own `callback_url`s; a batch that gives one is
    /// refused while this is not set.
    pub callback_secret: Option<SigningSecret>,
    /// How long a posted event's record is kept, to be listed and replayed.
    #[serde(deserialize_with = "span")]
    pub keep_posted: Duration,
    /// Posts in flight at once, across endpoints.
    pub concurrency: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            retry_for: Duration::from_secs(24 * 3600),
            batch_size: 100,
            timeout: Duration::from_secs(10),
            callback_secret: None,
            keep_posted: Duration::from_secs(24 * 3600),
            concurrency: 16,
        }
    }
}

/// The most events a POST may carry.
pub const MAX_BATCH_SIZE: u32 = 1000;

impl WebhookSettings {
    /// Checks the settings and the endpoints beside them.
    pub(super) fn validate(&self, endpoints: &[WebhookConfig]) -> Result<(), String> {
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(format!(
                "webhook.batch_size must be between 1 and {MAX_BATCH_SIZE}, not {}",
                self.batch_size
            ));
        }
        for (key, span) in [
            ("retry_for", self.retry_for),
            ("timeout", self.timeout),
            ("keep_posted", self.keep_posted),
        ] {
            if span < Duration::from_secs(1) {
                return Err(format!("webhook.{key} must be at least 1 second"));
            }
        }
        if self.concurrency == 0 {
            return Err("webhook.concurrency must be at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        for endpoint in endpoints {
            let name = endpoint.name.as_str();
            if name.is_empty() || name == CALLBACK || !names.insert(name) {
                return Err(format!(
                    "webhooks names must be unique, not empty and not `{CALLBACK}` (a batch's own callback_url): `{name}`"
                ));
            }
        }
        Ok(())
    }
}

/// A span of time: a number of seconds, or text such as `24h`, `90s`, `1h 30m`
/// (or ISO 8601's `PT24H`).
fn span<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Seconds(u64),
        Text(String),
    }
    match Given::deserialize(d)? {
        Given::Seconds(secs) => Ok(Duration::from_secs(secs)),
        Given::Text(text) => text
            .parse::<jiff::SignedDuration>()
            .ok()
            .and_then(|span| Duration::try_from(span).ok())
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a span of time: write e.g. `24h`, `90s`, `1h 30m`, or a number of seconds"
                ))
            }),
    }
}
