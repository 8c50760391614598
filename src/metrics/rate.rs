//! Each provider's measured sending rate: the messages this process sent through
//! it over the last minute, counted per second, for estimates where no rate is
//! configured (the pre-flight report's `eta_seconds`).

/// How many seconds the measured rate looks back.
pub(super) const WINDOW_SECS: usize = 60;

/// Sends counted per second, for the last [`WINDOW_SECS`] seconds.
#[derive(Debug, Clone)]
pub(super) struct Recent {
    /// Per slot (second modulo the window): which second it counts, and how many.
    slots: [(i64, u64); WINDOW_SECS],
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            slots: [(i64::MIN, 0); WINDOW_SECS],
        }
    }
}

impl Recent {
    /// Counts `n` sends in second `now_s`.
    pub(super) fn add(&mut self, now_s: i64, n: u64) {
        let slot = &mut self.slots[slot_of(now_s)];
        if slot.0 != now_s {
            *slot = (now_s, 0);
        }
        slot.1 += n;
    }

    /// Messages a second over the window up to `now_s`, from the first second that
    /// counted a send in it; `None` when none did.
    pub(super) fn per_sec(&self, now_s: i64) -> Option<f64> {
        let since = now_s - WINDOW_SECS as i64 + 1;
        let counted = self
            .slots
            .iter()
            .filter(|(s, n)| (since..=now_s).contains(s) && *n > 0);
        let (first, total) = counted.fold((now_s, 0), |(first, total), (s, n)| {
            (first.min(*s), total + n)
        });
        (total > 0).then(|| total as f64 / (now_s - first + 1) as f64)
    }
}

fn slot_of(second: i64) -> usize {
    usize::try_from(second.rem_euclid(WINDOW_SECS as i64)).expect("within the window")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_rate_spans_from_the_first_counted_second_and_forgets_after_a_minute() {
        let mut recent = Recent::default();
        assert_eq!(recent.per_sec(1000), None);
        recent.add(1000, 30);
        recent.add(1001, 50);
        assert_eq!(recent.per_sec(1001), Some(40.0));
        assert_eq!(recent.per_sec(1003), Some(20.0));
        // A second reused a minute later starts from zero.
        recent.add(1060, 10);
        assert_eq!(recent.per_sec(1060), Some(60.0 / 60.0));
        assert_eq!(recent.per_sec(1200), None);
    }
}
