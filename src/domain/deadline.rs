//! A batch's deadline, as a request gives it: a time (`expires_at`) or a span
//! from now (`valid_for`), read the same way by a submit and by a retry.

use std::time::Duration;

use jiff::Timestamp;

use super::millis;

/// The longest `valid_for`, in seconds: ten years, as far ahead as a batch may be
/// scheduled. (A span so long that its end is no time at all would be a deadline
/// no answer could show.)
pub const MAX_VALID_FOR_SECS: i64 = 10 * 366 * 24 * 3600;

/// When a batch's unsent messages stop being sent and become `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// At this time (ms since the epoch).
    At(i64),
    /// This long after the request is taken.
    After(Duration),
}

/// Why a request's deadline cannot be used: the field at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDeadline {
    pub field: &'static str,
    pub message: String,
}

impl Deadline {
    /// The deadline of a request's `expires_at` (RFC 3339 with an offset) and
    /// `valid_for` (seconds), which give at most one: `None` when neither is given.
    /// A time at or before `now_ms`, or a span that is not positive, is refused.
    pub fn parse(
        expires_at: Option<&str>,
        valid_for: Option<i64>,
        now_ms: i64,
    ) -> Result<Option<Deadline>, InvalidDeadline> {
        let invalid = |field, message: String| Err(InvalidDeadline { field, message });
        match (expires_at, valid_for) {
            (Some(_), Some(_)) => invalid(
                "valid_for",
                "give either expires_at or valid_for, not both".into(),
            ),
            (None, None) => Ok(None),
            (None, Some(secs)) if secs <= 0 => invalid(
                "valid_for",
                format!("must be a positive number of seconds, not {secs}"),
            ),
            (None, Some(secs)) if secs > MAX_VALID_FOR_SECS => invalid(
                "valid_for",
                format!("must be at most {MAX_VALID_FOR_SECS} seconds (ten years), not {secs}"),
            ),
            (None, Some(secs)) => Ok(Some(Deadline::After(Duration::from_secs(
                secs.unsigned_abs(),
            )))),
            (Some(text), None) => match text.parse::<Timestamp>() {
                Err(e) => invalid(
                    "expires_at",
                    format!("`{text}` is not an RFC 3339 time with an offset: {e}"),
                ),
                Ok(at) if at.as_millisecond() <= now_ms => {
                    invalid("expires_at", format!("`{text}` is in the past"))
                }
                Ok(at) => Ok(Some(Deadline::At(at.as_millisecond()))),
            },
        }
    }

    /// The deadline in ms since the epoch, for a request taken at `now_ms`.
    pub fn at_ms(self, now_ms: i64) -> i64 {
        match self {
            Deadline::At(at) => at,
            Deadline::After(span) => now_ms.saturating_add(millis(span)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn a_deadline_is_a_time_or_a_span_and_never_both() {
        assert_eq!(Deadline::parse(None, None, NOW), Ok(None));
        let span = Deadline::parse(None, Some(600), NOW).unwrap().unwrap();
        assert_eq!(span.at_ms(NOW), NOW + 600_000);
        let at = Deadline::parse(Some("2026-01-01T08:00:00+08:00"), None, NOW - 1)
            .unwrap()
            .unwrap();
        assert_eq!(at.at_ms(0), NOW);
        let both = Deadline::parse(Some("2026-01-02T00:00:00Z"), Some(600), NOW).unwrap_err();
        assert_eq!(both.field, "valid_for");
        assert!(both.message.contains("not both"), "{both:?}");
    }

    #[test]
    fn a_deadline_in_the_past_or_a_span_that_is_not_positive_is_refused() {
        for secs in [0, -5] {
            let e = Deadline::parse(None, Some(secs), NOW).unwrap_err();
            assert_eq!(e.field, "valid_for");
            assert!(e.message.contains("positive"), "{e:?}");
        }
        let past = Deadline::parse(Some("2025-12-31T23:59:59Z"), None, NOW).unwrap_err();
        assert_eq!(past.field, "expires_at");
        assert!(past.message.contains("in the past"), "{past:?}");
        let bad = Deadline::parse(Some("tomorrow"), None, NOW).unwrap_err();
        assert!(bad.message.contains("RFC 3339"), "{bad:?}");
    }

    #[test]
    fn a_span_longer_than_ten_years_is_refused_so_every_deadline_is_a_time() {
        let longest = Deadline::parse(None, Some(MAX_VALID_FOR_SECS), NOW)
            .unwrap()
            .unwrap();
        assert!(!crate::domain::format_ms(longest.at_ms(NOW)).is_empty());
        let e = Deadline::parse(None, Some(6_286_930_450_339_738), NOW).unwrap_err();
        assert_eq!(e.field, "valid_for");
        assert!(e.message.contains("at most"), "{e:?}");
    }
}
