//! Provider settings: one `[[providers]]` entry as the configuration file
//! writes it — the provider's kind with its own keys, the channels it serves, its
//! rate limits, per-recipient caps and prices.

use serde::Deserialize;

use super::TwilioConfig;
use crate::domain::{Channel, Secret};
use crate::ratelimit::Cap;

/// One `[[providers]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderConfig {
    /// The name batches and `[defaults]` use to pick it; unique.
    pub name: String,
    /// `kind = …` and that kind's own keys.
    #[serde(flatten)]
    pub kind: ProviderKind,
    /// The channels it sends; default every channel.
    #[serde(default = "all_channels")]
    pub channels: Vec<Channel>,
    /// Messages per second; unlimited when absent.
    #[serde(default)]
    pub rate_per_sec: Option<f64>,
    /// The most messages sent at once under the rate; default a twentieth of a second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
    /// SMS segments per second (a 3-segment message counts 3), on top of
    /// `rate_per_sec`; unlimited when absent.
    #[serde(default)]
    pub segments_per_sec: Option<f64>,
    /// The most segments sent at once; default a twentieth of a second's worth.
    #[serde(default)]
    pub segment_burst: Option<u32>,
    /// Caps on how often one recipient gets a message through this provider.
    #[serde(default)]
    pub per_recipient: PerRecipient,
    /// What one message costs, for the pre-flight report's estimate.
    #[serde(default)]
    pub price_per_message: Option<f64>,
    /// What one SMS segment costs (a long SMS is billed per segment).
    #[serde(default)]
    pub price_per_segment: Option<f64>,
    /// The prices' currency, e.g. `CNY`; shown with the estimate.
    #[serde(default)]
    pub currency: Option<String>,
    /// The most it may be charged in one local day (see `budget_time_zone`), in
    /// its currency: past it, its sending pauses until the next day. Needs prices.
    #[serde(default)]
    pub daily_budget: Option<f64>,
    /// The IANA time zone whose days `daily_budget` counts; default UTC.
    #[serde(default)]
    pub budget_time_zone: Option<String>,
}

/// `per_recipient = { per_minute = 1, per_day = 10 }`: each given cap must hold.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PerRecipient {
    /// Messages per recipient in any minute.
    pub per_minute: Option<u32>,
    /// Messages per recipient in any hour.
    pub per_hour: Option<u32>,
    /// Messages per recipient in any day.
    pub per_day: Option<u32>,
}

impl PerRecipient {
    /// The caps, as the store enforces them.
    pub fn caps(&self) -> Vec<Cap> {
        [
            (self.per_minute, 60_000),
            (self.per_hour, 3_600_000),
            (self.per_day, 86_400_000),
        ]
        .into_iter()
        .filter_map(|(count, window_ms)| {
            Some(Cap {
                count: count?,
                window_ms,
            })
        })
        .collect()
    }
}

impl ProviderConfig {
    /// The built-in log provider, serving every channel without a limit.
    pub fn log() -> Self {
        ProviderConfig {
            name: "log".into(),
            kind: ProviderKind::Log {},
            channels: all_channels(),
            rate_per_sec: None,
            burst: None,
            segments_per_sec: None,
            segment_burst: None,
            per_recipient: PerRecipient::default(),
            price_per_message: None,
            price_per_segment: None,
            currency: None,
            daily_budget: None,
            budget_time_zone: None,
        }
    }
}

fn all_channels() -> Vec<Channel> {
    Channel::ALL.to_vec()
}

/// A provider's kind (`kind = "…"`), with the keys that kind reads: a key that
/// neither the kind nor [`ProviderConfig`] reads is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderKind {
    /// Writes each message to the log (`kind = "log"`). Braced, as it reads no
    /// key of its own: so that, as every kind does, it refuses one it does not read.
    Log {},
    /// POSTs each message as JSON (`kind = "webhook"`).
    Webhook {
        /// Where each message is POSTed.
        url: String,
        /// Signs each body with HMAC-SHA256 when set.
        #[serde(default)]
        secret: Option<Secret>,
    },
    /// Twilio's Messages API; its keys are in [`TwilioConfig`].
    Twilio(TwilioConfig),
    /// An SMTP server; its keys are in [`crate::provider::SmtpConfig`].
    Smtp(crate::provider::SmtpConfig),
    /// Aliyun SMS (Dysmsapi): provider-approved templates.
    Aliyun(crate::provider::AliyunConfig),
    /// Tencent Cloud SMS: provider-approved templates.
    Tencent(crate::provider::TencentConfig),
    /// An SMSC over SMPP 3.4; its keys are in [`crate::provider::SmppConfig`].
    Smpp(crate::provider::SmppConfig),
}
