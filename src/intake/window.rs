//! Quiet hours at intake: a batch's sending window (its own, else its provider's
//! or channel's from `[windows]`, or none with `ignore_window`), each recipient's
//! first due time — when the window next opens in every zone its number may be
//! in, or in the batch's time zone — and the report of who waits until when.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Error, invalid};
use crate::config::WindowsConfig;
use crate::domain::Channel;
use crate::window::{BatchWindow, Window, ZoneSet, time_zone, zones_of_number};

/// What a submit says of its window: all optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowRequest<'a> {
    /// `08:00-21:00`, optionally after days: overrides the configured window.
    pub window: Option<&'a str>,
    /// Send at any hour (a login code): no window at all.
    pub ignore_window: bool,
    /// The IANA time zone of recipients a number does not place.
    pub timezone: Option<&'a str>,
}

/// A batch's window as intake applies it to each recipient.
pub(super) struct Quiet {
    /// The window and fallback zone, as the batch stores them.
    pub(super) stored: BatchWindow,
    channel: Channel,
    /// When the batch is due: no message goes before it anyway.
    from: Timestamp,
    /// The opening found for each set of zones (none: the batch's zone).
    openings: HashMap<Option<ZoneSet>, i64>,
    /// Messages kept that wait, by when their window opens (ms).
    waiting: BTreeMap<i64, usize>,
}

/// The window part of the pre-flight report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WindowReport {
    /// The window applied, in each recipient's local time.
    pub window: String,
    /// The zone of recipients whose number does not place them.
    pub timezone: String,
    /// How many accepted recipients wait for their window to open.
    pub waiting: usize,
    /// The waiting recipients grouped by when their window opens, earliest first.
    pub opens: Vec<Opening>,
}

/// So many recipients whose window opens at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Opening {
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub at: String,
    pub count: usize,
}

/// The window of a batch of `channel` through `provider` asking `asked`, due at
/// `send_at_ms`; `None` when its messages may go at any hour.
pub(super) fn plan(
    config: &WindowsConfig,
    asked: WindowRequest<'_>,
    channel: Channel,
    provider: &str,
    send_at_ms: i64,
) -> Result<Option<Quiet>, Error> {
    if asked.ignore_window && asked.window.is_some() {
        return Err(invalid(
            "ignore_window",
            "give either window or ignore_window, not both",
        ));
    }
    let fallback_name = asked
        .timezone
        .or(config.timezone.as_deref())
        .unwrap_or("UTC");
    time_zone(fallback_name).map_err(|e| invalid("timezone", e.to_string()))?;
    let window = match asked.window {
        _ if asked.ignore_window => return Ok(None),
        Some(text) => Window::parse(text).map_err(|e| invalid("window", e.to_string()))?,
        None => match config.default_for(channel, provider) {
            Some(window) => window,
            None => return Ok(None),
        },
    };
    let from = Timestamp::from_millisecond(send_at_ms)
        .map_err(|e| invalid("send_at", format!("is out of range: {e}")))?;
    Ok(Some(Quiet {
        stored: BatchWindow {
            window,
            timezone: fallback_name.to_string(),
        },
        channel,
        from,
        openings: HashMap::new(),
        waiting: BTreeMap::new(),
    }))
}

impl Quiet {
    /// When a message to `to` is first due, when its window opens after the batch
    /// is due; `None`: with the batch.
    pub(super) fn due(&mut self, to: &str) -> Option<i64> {
        let zones = match self.channel {
            Channel::Sms => zones_of_number(to),
            Channel::Email => None,
        };
        // Numbers of one set of zones open together: worked out once.
        let opening = *self.openings.entry(zones).or_insert_with(|| {
            self.stored
                .opening_for(self.channel, to, self.from)
                .as_millisecond()
        });
        (opening > self.from.as_millisecond()).then_some(opening)
    }

    /// Counts a kept message due at `due_ms` (see [`Quiet::due`]) in the report.
    pub(super) fn count(&mut self, due_ms: Option<i64>) {
        if let Some(due) = due_ms {
            *self.waiting.entry(due).or_default() += 1;
        }
    }

    /// The report's window part.
    pub(super) fn report(&self) -> WindowReport {
        WindowReport {
            window: self.stored.window.to_string(),
            timezone: self.stored.timezone.clone(),
            waiting: self.waiting.values().sum(),
            opens: self
                .waiting
                .iter()
                .map(|(&at, &count)| Opening {
                    at: crate::domain::format_ms(at),
                    count,
                })
                .collect(),
        }
    }
}
