//! `[windows]`: quiet hours — the sending window a batch gets when it gives none,
//! per channel and per provider, and the time zone of recipients whose number
//! does not place them (e-mail, unknown numbers) when the batch names none.

use std::collections::HashMap;

use serde::Deserialize;

use crate::domain::Channel;
use crate::window::Window;

/// `[windows]`: `sms = "08:00-21:00"`, `email = "mon-fri 08:00-20:00"`,
/// `providers = { aliyun = "09:00-20:00" }` and `timezone = "Asia/Shanghai"`.
/// A provider's window wins over its channel's; a batch's own `window` (or
/// `ignore_window`) wins over both. None set: messages go at any hour.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowsConfig {
    /// For SMS batches.
    pub sms: Option<Window>,
    /// For e-mail batches.
    pub email: Option<Window>,
    /// Per provider name, winning over its channel's.
    pub providers: HashMap<String, Window>,
    /// The IANA time zone of recipients a number does not place, when a batch
    /// names none; default `UTC`.
    pub timezone: Option<String>,
}

impl WindowsConfig {
    /// The window of a batch of `channel` sent through `provider` that gives none
    /// itself; `None`: any hour.
    pub fn default_for(&self, channel: Channel, provider: &str) -> Option<Window> {
        let channel_default = match channel {
            Channel::Sms => self.sms,
            Channel::Email => self.email,
        };
        self.providers.get(provider).copied().or(channel_default)
    }

    /// The time zone is one the bundled database knows, and every provider named
    /// is one of `providers`.
    pub(super) fn validate<'a>(
        &self,
        providers: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<(), String> {
        if let Some(zone) = &self.timezone {
            crate::window::time_zone(zone).map_err(|e| format!("windows.timezone: {e}"))?;
        }
        for name in self.providers.keys() {
            if !providers.clone().any(|p| p == name) {
                return Err(format!(
                    "windows.providers names `{name}`, which is not a configured provider"
                ));
            }
        }
        Ok(())
    }
}
