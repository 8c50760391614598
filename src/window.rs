//! Quiet hours: a sending window (`08:00-21:00`, optionally on some days of the
//! week, `mon-fri 09:00-17:00`) held in a recipient's local time, and the next
//! time it opens. Pure: times come in as arguments, zones from jiff's bundled
//! IANA database; `zones` maps a phone number to the zones it may ring in.
//!
//! A window that opens later than it closes runs across midnight (`22:00-06:00`),
//! and belongs to the day it opens on. Local times are civil times, so a window
//! keeps its hours across a change of offset: a start that falls in a gap opens
//! as the gap ends, one that falls twice opens at the first.

mod zones;
// Generated: kept as the script writes it.
#[rustfmt::skip]
mod zones_data;

use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;

pub use zones::{ZoneSet, zones_of_number};

/// Minutes in a day: a window's `24:00`.
const DAY: u16 = 24 * 60;
/// Local days searched for an opening, from the day before the given time: every
/// weekday twice over, so a window open on any day opens within them.
const HORIZON_DAYS: i64 = 15;

/// Why a window or a time zone cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "`{0}` is not a sending window: write `HH:MM-HH:MM`, optionally after days \
         (`mon-fri 08:00-21:00`, `sat,sun 10:00-18:00`)"
    )]
    Malformed(String),
    #[error("`{0}` is not a time of day (00:00 to 24:00)")]
    Time(String),
    #[error(
        "`{0}` is not a day of the week (mon, tue, wed, thu, fri, sat, sun) or a range of them"
    )]
    Day(String),
    #[error("`{0}` opens and closes at the same time: it would never be open")]
    Empty(String),
    #[error("`{0}` is not an IANA time zone name (such as `Europe/London`)")]
    Zone(String),
}

/// Reads an IANA time zone name (`Asia/Shanghai`, `UTC`) from the bundled database.
pub fn time_zone(name: &str) -> Result<TimeZone, Error> {
    TimeZone::get(name).map_err(|_| Error::Zone(name.to_string()))
}

/// A sending window in local time. Its start is inside it, its end is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Minutes after local midnight, `0..DAY`.
    open: u16,
    /// Minutes after local midnight, `1..=DAY`; before `open` across midnight.
    close: u16,
    /// Days it opens on: bit 0 is Monday.
    days: u8,
}

const ALL_DAYS: u8 = 0x7f;
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Window {
    /// Reads `HH:MM-HH:MM` (a hyphen or an en dash between), optionally after a
    /// comma-separated list of days and day ranges (`mon-fri`, `sat,sun`).
    pub fn parse(text: &str) -> Result<Window, Error> {
        let malformed = || Error::Malformed(text.to_string());
        let mut words = text.split_whitespace();
        let (days, hours) = match (words.next(), words.next(), words.next()) {
            (Some(hours), None, None) => (ALL_DAYS, hours),
            (Some(days), Some(hours), None) => (parse_days(days)?, hours),
            _ => return Err(malformed()),
        };
        let (open, close) = hours
            .split_once('-')
            .or_else(|| hours.split_once('–'))
            .ok_or_else(malformed)?;
        let (open, close) = (parse_time(open)?, parse_time(close)?);
        if open == DAY {
            return Err(Error::Time(hours.to_string()));
        }
        if open == close || (open == 0 && close == 0) {
            return Err(Error::Empty(text.to_string()));
        }
        let close = if close == 0 { DAY } else { close };
        Ok(Window { open, close, days })
    }

    /// Whether the window is open at `at` in `zone`.
    pub fn contains(&self, at: Timestamp, zone: &TimeZone) -> bool {
        let local = zone.to_datetime(at);
        let minute =
            u16::from(local.hour().unsigned_abs()) * 60 + local.minute().unsigned_abs() as u16;
        let today = self.opens_on(local.weekday());
        if self.open < self.close {
            today && (self.open..self.close).contains(&minute)
        } else {
            (today && minute >= self.open)
                || (minute < self.close && self.opens_on(local.weekday().previous()))
        }
    }

    /// Whether the window is open at `at` in every one of `zones`.
    pub fn holds(&self, at: Timestamp, zones: &[TimeZone]) -> bool {
        zones.iter().all(|zone| self.contains(at, zone))
    }

    /// The first time at or after `at` when the window is open in every one of
    /// `zones` at once, or `None` when it never is within two weeks (zones too far
    /// apart for the window's hours to overlap).
    pub fn next_opening(&self, at: Timestamp, zones: &[TimeZone]) -> Option<Timestamp> {
        if self.holds(at, zones) {
            return Some(at);
        }
        // Where the windows of several zones overlap, the overlap starts when the
        // last of them opens: the first such start that all hold is the answer.
        let mut starts: Vec<Timestamp> = zones
            .iter()
            .flat_map(|zone| self.starts(at, zone))
            .filter(|start| *start > at)
            .collect();
        starts.sort_unstable();
        starts.into_iter().find(|start| self.holds(*start, zones))
    }

    /// When the window is next open at or after `at` for a recipient in `zones`
    /// (a number's, when known), or, when they are not known or never all hold
    /// at once, in `fallback` (the batch's time zone).
    pub fn opening(&self, at: Timestamp, zones: &[TimeZone], fallback: &TimeZone) -> Timestamp {
        (!zones.is_empty())
            .then(|| self.next_opening(at, zones))
            .flatten()
            .or_else(|| self.next_opening(at, std::slice::from_ref(fallback)))
            .expect("a window opens on some day each week in any one zone")
    }

    /// The instants the window opens in `zone` on the local days around `at`.
    fn starts(&self, at: Timestamp, zone: &TimeZone) -> impl Iterator<Item = Timestamp> + '_ {
        let first: Date = zone.to_datetime(at).date().yesterday().unwrap_or(Date::MIN);
        let zone = zone.clone();
        (0..HORIZON_DAYS)
            .filter_map(move |n| first.checked_add(jiff::Span::new().days(n)).ok())
            .filter(|day| self.opens_on(day.weekday()))
            .filter_map(move |day| {
                let time = jiff::civil::time((self.open / 60) as i8, (self.open % 60) as i8, 0, 0);
                let start = zone.to_ambiguous_timestamp(day.to_datetime(time));
                match start.offset() {
                    // The start was skipped: the window opens as the gap ends.
                    jiff::tz::AmbiguousOffset::Gap { after, .. } => {
                        let before_gap = after.to_timestamp(day.to_datetime(time)).ok()?;
                        zone.following(before_gap).next().map(|t| t.timestamp())
                    }
                    _ => start.compatible().ok(),
                }
            })
    }

    fn opens_on(&self, day: Weekday) -> bool {
        self.days & (1 << day.to_monday_zero_offset()) != 0
    }
}

/// A batch's window as stored with it: the window, and the zone of recipients a
/// number does not place. Workers read it at claim, so that a message still
/// queued when its window closes (a backlog, a retry) waits for the next opening.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchWindow {
    pub window: Window,
    /// An IANA name.
    pub timezone: String,
}

impl BatchWindow {
    /// The text every engine stores it as: one JSON object.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("strings serialize")
    }

    /// A window as [`BatchWindow::to_stored`] wrote it; `None` when unreadable.
    pub fn from_stored(stored: &str) -> Option<BatchWindow> {
        serde_json::from_str(stored).ok()
    }

    /// When a message to `to` on `channel` may go, at or after `at`: `at` itself
    /// when its window is open then.
    pub fn opening_for(
        &self,
        channel: crate::domain::Channel,
        to: &str,
        at: Timestamp,
    ) -> Timestamp {
        let zones = match channel {
            crate::domain::Channel::Sms => zones_of_number(to).map(ZoneSet::zones),
            crate::domain::Channel::Email => None,
        };
        let fallback = time_zone(&self.timezone).unwrap_or(TimeZone::UTC);
        self.window
            .opening(at, zones.as_deref().unwrap_or_default(), &fallback)
    }
}

/// Minutes after midnight of `HH:MM`, up to `24:00`.
fn parse_time(text: &str) -> Result<u16, Error> {
    let bad = || Error::Time(text.to_string());
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    match h * 60 + m {
        minute if h < 24 && m < 60 => Ok(minute),
        DAY if h == 24 && m == 0 => Ok(DAY),
        _ => Err(bad()),
    }
}

/// The days of `mon-fri,sun`, as bits (Monday is bit 0).
fn parse_days(text: &str) -> Result<u8, Error> {
    let day = |name: &str| {
        DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(name))
            .ok_or_else(|| Error::Day(name.to_string()))
    };
    let mut days = 0u8;
    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (day(first)?, day(last)?),
            None => (day(part)?, day(part)?),
        };
        // A range may wrap past Sunday: `fri-mon`.
        let mut d = first;
        loop {
            days |= 1 << d;
            if d == last {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(days)
}

impl fmt::Display for Window {
    /// The window as [`Window::parse`] reads it: days (when not every day) as
    /// ranges, then the hours.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days != ALL_DAYS {
            let mut first = true;
            let mut d = 0;
            while d < 7 {
                if self.days & (1 << d) == 0 {
                    d += 1;
                    continue;
                }
                let start = d;
                while d + 1 < 7 && self.days & (1 << (d + 1)) != 0 {
                    d += 1;
                }
                let sep = if first { "" } else { "," };
                match d - start {
                    0 => write!(f, "{sep}{}", DAY_NAMES[start])?,
                    _ => write!(f, "{sep}{}-{}", DAY_NAMES[start], DAY_NAMES[d])?,
                }
                first = false;
                d += 1;
            }
            f.write_str(" ")?;
        }
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.open), hm(self.close))
    }
}

impl serde::Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Window::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
