//! What a batch may bring in: its size (`[limits]`), how its recipients'
//! addresses are read (`[recipients]`), and how long its messages may wait to be
//! sent when it gives no deadline (`[valid_for]`).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::Channel;
use crate::recipient::{EmailRules, PhoneRules, Region, Rules};

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

    /// The rules recipient addresses are read by.
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

/// `[valid_for]`: the deadline a batch gets when it gives none (no `expires_at`
/// nor `valid_for`), in seconds from when it is accepted: its provider's, else its
/// channel's, else none. Batches from `/send-sms` and ingest sources always get it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidForConfig {
    /// For SMS batches.
    pub sms: Option<u64>,
    /// For e-mail batches.
    pub email: Option<u64>,
    /// Per provider name, winning over its channel's.
    pub providers: HashMap<String, u64>,
}

impl ValidForConfig {
    /// How long a batch of `channel` sent through `provider` may wait, when it
    /// says nothing itself; `None`: no deadline.
    pub fn default_for(&self, channel: Channel, provider: &str) -> Option<Duration> {
        let channel_default = match channel {
            Channel::Sms => self.sms,
            Channel::Email => self.email,
        };
        self.providers
            .get(provider)
            .copied()
            .or(channel_default)
            .map(Duration::from_secs)
    }

    /// Every span is positive and every provider named is one of `providers`.
    pub(super) fn validate<'a>(
        &self,
        providers: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<(), String> {
        let spans = [("valid_for.sms", self.sms), ("valid_for.email", self.email)];
        for (key, secs) in spans {
            if secs == Some(0) {
                return Err(format!("{key} must be at least 1 second"));
            }
        }
        for (name, secs) in &self.providers {
            if *secs == 0 {
                return Err(format!(
                    "valid_for.providers.{name} must be at least 1 second"
                ));
            }
            if !providers.clone().any(|p| p == name) {
                return Err(format!(
                    "valid_for.providers names `{name}`, which is not a configured provider"
                ));
            }
        }
        Ok(())
    }
}
