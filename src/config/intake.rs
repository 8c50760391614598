//! What a batch may bring in: its size (`[limits]`) and how its recipients'
//! addresses are read (`[recipients]`).

use std::time::Duration;

use serde::Deserialize;

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
