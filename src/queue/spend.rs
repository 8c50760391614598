//! Spend caps and daily budgets, the rules every engine charges by.
//!
//! Amounts are kept as whole millionths of a provider's currency ([`Micros`]), so
//! that sums in every store are exact. A claimed message is charged when its body
//! is known (rendered, its segments counted) and the provider it goes through is
//! chosen, before it is sent, in the store: the charge is kept on the message, so
//! a message claimed again (a lapsed lease, a retry) is never charged twice, and it
//! is added to its batch's spend and to the provider's spend for the local day.
//! Messages are charged only when their batch has a `max_cost` or the provider a
//! `daily_budget`: otherwise a claim reads and writes nothing more.
//!
//! A charge is refunded (cleared, and taken off both sums) when the attempt did
//! not reach the provider: released (a rate limit, a cap, a window, a shutdown),
//! retried or failed on the provider's refusal, or cancelled — unless an earlier
//! attempt of the message had an unknown outcome (a lapsed lease, a lost answer),
//! whose request may have been billed. A sent, confirmed or unknown outcome keeps
//! it. Every engine refunds in its settlement's transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::{Claimed, Lease, Outcome, Settlement};
use crate::domain::BatchId;

/// An amount in millionths of a currency unit.
pub type Micros = i64;

/// Millionths in one currency unit.
const MICROS: f64 = 1e6;

/// `amount` (in currency units) as [`Micros`], rounded to the nearest millionth.
pub fn to_micros(amount: f64) -> Micros {
    (amount * MICROS).round() as Micros
}

/// `micros` in currency units.
pub fn from_micros(micros: Micros) -> f64 {
    micros as f64 / MICROS
}

/// `micros` written for people: two decimals, more when they matter, and the
/// currency when known (`5.00 CNY`, `0.045 USD`).
pub fn format_amount(micros: Micros, currency: Option<&str>) -> String {
    let amount = from_micros(micros);
    let mut text = format!("{amount:.2}");
    if to_micros(text.parse().unwrap_or(amount)) != micros {
        text = format!("{amount:.6}").trim_end_matches('0').to_string();
    }
    match currency {
        Some(currency) => format!("{text} {currency}"),
        None => text,
    }
}

/// What sending through one provider costs, and its daily budget if it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Tariff {
    /// The provider whose spend this is (the [`Limits`](crate::ratelimit::Limits)' owner).
    pub provider: String,
    pub per_message: Micros,
    /// Per SMS segment, on top of `per_message`.
    pub per_segment: Micros,
    pub currency: Option<String>,
    pub daily: Option<DailyBudget>,
    /// The provider's messages may fail over to another provider: one over its
    /// budget goes back to the queue at once (for the fallback to carry) rather
    /// than at the next local midnight.
    pub fails_over: bool,
}

/// A provider's most spend in one local day of `zone`.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyBudget {
    pub amount: Micros,
    pub zone: TimeZone,
}

impl Tariff {
    /// The provider's local day at `now`, which its spend is recorded under: in
    /// its budget's time zone, else UTC.
    pub fn day(&self, now: Timestamp) -> String {
        match &self.daily {
            Some(budget) => budget.day(now),
            None => utc_day(now),
        }
    }

    /// What a message of `segments` SMS segments (1 for e-mail) costs.
    pub fn cost(&self, segments: u32) -> Micros {
        self.per_message
            .saturating_add(self.per_segment.saturating_mul(i64::from(segments)))
    }
}

impl DailyBudget {
    /// The local day `now` falls on (`2026-12-06`), which spend is recorded under.
    pub fn day(&self, now: Timestamp) -> String {
        now.to_zoned(self.zone.clone()).date().to_string()
    }

    /// The next local midnight after `now`, when a new day's budget starts.
    pub fn next_day(&self, now: Timestamp) -> Timestamp {
        let zoned = now.to_zoned(self.zone.clone());
        zoned
            .date()
            .tomorrow()
            .and_then(|d| d.to_zoned(self.zone.clone()))
            .map_or_else(
                |_| now + jiff::SignedDuration::from_hours(24),
                |z| z.timestamp(),
            )
    }
}

/// The UTC day `now` falls on.
fn utc_day(now: Timestamp) -> String {
    now.to_zoned(TimeZone::UTC).date().to_string()
}

/// One claimed message to charge, for [`Engine::charge`](super::Engine::charge).
#[derive(Debug, Clone)]
pub struct Charge {
    pub lease: Lease,
    pub batch_id: BatchId,
    pub amount: Micros,
    /// The provider it goes through, whose day's spend it adds to.
    pub provider: String,
    /// The provider's local day.
    pub day: String,
    /// The provider's budget for the day, if it has one.
    pub budget: Option<Micros>,
    /// The provider's currency, for the held messages' reason.
    pub currency: Option<String>,
}

/// What became of one [`Charge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charged {
    /// Charged now, or it carried a charge already: it may be sent.
    Yes,
    /// Its batch's spend would pass the batch's `max_cost`: it and every other
    /// waiting message of the batch are now `held`, with the reason as their
    /// last error, and its lease is gone.
    Held,
    /// The provider's spend for the day would pass its budget: not charged.
    OverBudget,
    /// The lease was lost (the message was settled, or claimed again): nothing done.
    Lost,
}

/// The reason a batch's messages are held, as the ledger shows it.
pub fn held_reason(max_cost: Micros, spent: Micros, currency: Option<&str>) -> String {
    format!(
        "spend cap {} reached (spent {})",
        format_amount(max_cost, currency),
        format_amount(spent, None)
    )
}

/// Why a batch (`cancelled` or not) with cap `cap` that has spent `spent` cannot
/// take the cap `max_cost`, or `None` when it can: every engine's rule.
pub(crate) fn cap_refusal(
    cancelled: bool,
    cap: Option<Micros>,
    spent: Micros,
    max_cost: Micros,
) -> Option<String> {
    if cancelled {
        return Some("the batch is cancelled: there is nothing to resume".into());
    }
    if cap.is_none() {
        return Some("the batch has no max_cost to raise".into());
    }
    (max_cost <= spent).then(|| {
        format!(
            "max_cost {} is not above what the batch has spent ({})",
            format_amount(max_cost, None),
            format_amount(spent, None)
        )
    })
}

/// Whether `outcome` gives a charge back: the attempt did not reach the provider,
/// or the provider refused it, so nothing was billed (when no earlier attempt of
/// the message had an unknown outcome).
pub fn refunds(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Release { .. }
            | Outcome::Retry { .. }
            | Outcome::Failed { .. }
            | Outcome::Cancelled { .. }
    )
}

/// The providers whose day's budget is spent, until when (ms since the epoch), as
/// this process found them: their claimers wait, or fail over, until then.
#[derive(Clone, Default)]
pub struct Pauses(Arc<Mutex<HashMap<String, i64>>>);

impl Pauses {
    /// Until when `provider` is paused at `now_ms`, if it is.
    pub fn until(&self, provider: &str, now_ms: i64) -> Option<i64> {
        self.lock().get(provider).copied().filter(|&u| u > now_ms)
    }

    /// Pauses `provider` until `until_ms`; answers whether it was not paused yet.
    fn pause(&self, provider: &str, until_ms: i64, now_ms: i64) -> bool {
        let mut paused = self.lock();
        let new = paused.get(provider).is_none_or(|&u| u <= now_ms);
        paused.insert(provider.to_owned(), until_ms);
        new
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A provider's spend on its local day.
#[derive(Debug, Clone, PartialEq)]
pub struct Today {
    /// The local day (`2026-12-06`), in its budget's time zone (UTC without one).
    pub day: String,
    pub spent: Micros,
    /// Until when its sending is paused (ms since the epoch): its day's budget is
    /// spent, as this process found or the store says.
    pub paused_until: Option<i64>,
}

impl super::Queue {
    /// What the provider of `tariff` has spent on its local day at `now`, and
    /// whether its sending is paused for its budget.
    pub async fn today(&self, tariff: &Tariff, now: Timestamp) -> super::Result<Today> {
        let day = tariff.day(now);
        let spent = self.spent(&tariff.provider, &day).await?;
        let now_ms = now.as_millisecond();
        let paused_until = self.pauses().until(&tariff.provider, now_ms).or_else(|| {
            let budget = tariff.daily.as_ref()?;
            (spent >= budget.amount).then(|| budget.next_day(now).as_millisecond())
        });
        Ok(Today {
            day,
            spent,
            paused_until,
        })
    }
}

/// The charges `claimed` needs under `tariff` at `now`: one for each message not
/// charged yet whose batch has a cap or whose provider has a budget. Empty (no
/// store call) for any other.
pub(super) fn charges(claimed: &[Claimed], tariff: Option<&Tariff>, now: Timestamp) -> Vec<Charge> {
    let budgeted = tariff.is_some_and(|t| t.daily.is_some());
    let day = tariff.map_or_else(|| utc_day(now), |t| t.day(now));
    claimed
        .iter()
        .filter(|c| !c.charged && (c.capped || budgeted))
        .map(|c| Charge {
            lease: c.lease,
            batch_id: c.batch_id,
            amount: tariff.map_or(0, |t| t.cost(segments(c))),
            provider: tariff.map_or_else(|| c.provider.clone(), |t| t.provider.clone()),
            day: day.clone(),
            budget: tariff.and_then(|t| t.daily.as_ref()).map(|d| d.amount),
            currency: tariff.and_then(|t| t.currency.clone()),
        })
        .collect()
}

/// The segments a claimed message is billed as, counted from its body as sent.
fn segments(claimed: &Claimed) -> u32 {
    match claimed.channel {
        crate::domain::Channel::Sms => {
            u32::try_from(crate::sms::measure(&claimed.body).segments).unwrap_or(u32::MAX)
        }
        _ => 1,
    }
}

/// Takes out of `claimed` the messages the store did not charge, as `answers`
/// (one per charge) say, and answers the settlements of those over a budget: back
/// to the queue, without an attempt, at the next local midnight (or at once, for a
/// provider that fails over). A provider newly over its budget is paused in
/// `pauses` and logged once.
pub(super) fn keep_charged(
    claimed: &mut Vec<Claimed>,
    charges: &[Charge],
    answers: Vec<Charged>,
    tariff: Option<&Tariff>,
    pauses: &Pauses,
    now: Timestamp,
) -> Vec<Settlement> {
    let verdicts: HashMap<Lease, Charged> = charges
        .iter()
        .map(|c| c.lease)
        .zip(answers)
        .filter(|(_, answer)| *answer != Charged::Yes)
        .collect();
    if verdicts.is_empty() {
        return Vec::new();
    }
    let daily = tariff.and_then(|t| t.daily.as_ref().map(|d| (t, d)));
    let mut released = Vec::new();
    claimed.retain(|c| match verdicts.get(&c.lease) {
        None | Some(Charged::Yes) => true,
        Some(Charged::Held | Charged::Lost) => false,
        Some(Charged::OverBudget) => {
            let Some((tariff, budget)) = daily else {
                return true;
            };
            let until = budget.next_day(now).as_millisecond();
            let now_ms = now.as_millisecond();
            if pauses.pause(&tariff.provider, until, now_ms) {
                tracing::warn!(
                    provider = %tariff.provider,
                    budget = %format_amount(budget.amount, tariff.currency.as_deref()),
                    until = %crate::domain::format_ms(until),
                    "the provider's daily budget is spent: its sending pauses until the next day"
                );
            }
            released.push(Settlement {
                lease: c.lease,
                outcome: Outcome::Release {
                    at_ms: if tariff.fails_over { now_ms } else { until },
                    error: Some(format!(
                        "daily budget {} of {} reached",
                        format_amount(budget.amount, tariff.currency.as_deref()),
                        tariff.provider
                    )),
                },
                sent_by: None,
            });
            false
        }
    });
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(zone: &str) -> DailyBudget {
        DailyBudget {
            amount: to_micros(10.0),
            zone: TimeZone::get(zone).expect("a known zone"),
        }
    }

    #[test]
    fn a_day_rolls_over_at_each_providers_local_midnight() {
        // 2026-12-06 15:59:59 UTC: 23:59:59 in Shanghai, 10:59:59 in New York.
        let before: Timestamp = "2026-12-06T15:59:59Z".parse().expect("a time");
        let after: Timestamp = "2026-12-06T16:00:00Z".parse().expect("a time");
        let (shanghai, new_york) = (budget("Asia/Shanghai"), budget("America/New_York"));
        assert_eq!(shanghai.day(before), "2026-12-06");
        assert_eq!(shanghai.day(after), "2026-12-07");
        assert_eq!(new_york.day(before), "2026-12-06");
        assert_eq!(new_york.day(after), "2026-12-06");
        assert_eq!(shanghai.next_day(before), after);
        let ny_midnight: Timestamp = "2026-12-07T05:00:00Z".parse().expect("a time");
        assert_eq!(new_york.next_day(after), ny_midnight);
    }

    #[test]
    fn a_day_across_a_clock_change_still_ends_at_local_midnight() {
        // New York leaves daylight time on 2026-11-01: that day has 25 hours.
        let morning: Timestamp = "2026-11-01T12:00:00Z".parse().expect("a time");
        let midnight: Timestamp = "2026-11-02T05:00:00Z".parse().expect("a time");
        assert_eq!(budget("America/New_York").next_day(morning), midnight);
    }

    #[test]
    fn amounts_are_exact_millionths_and_read_with_their_currency() {
        assert_eq!(to_micros(4.98), 4_980_000);
        assert_eq!(to_micros(0.045), 45_000);
        assert_eq!(format_amount(5_000_000, Some("CNY")), "5.00 CNY");
        assert_eq!(format_amount(45_000, Some("USD")), "0.045 USD");
        assert_eq!(
            held_reason(5_000_000, 4_980_000, Some("CNY")),
            "spend cap 5.00 CNY reached (spent 4.98)"
        );
    }

    #[test]
    fn only_refused_or_unattempted_outcomes_give_the_charge_back() {
        let refunded = [
            Outcome::Release {
                at_ms: 0,
                error: None,
            },
            Outcome::Retry {
                at_ms: 0,
                error: "HTTP 503".into(),
            },
            Outcome::Failed {
                error: "refused".into(),
            },
        ];
        assert!(refunded.iter().all(refunds));
        let kept = [
            Outcome::Sent {
                provider_message_id: None,
                segment_ids: Vec::new(),
            },
            Outcome::Confirmed {
                provider_message_id: None,
            },
            Outcome::Unknown {
                at_ms: 0,
                error: "no answer".into(),
            },
        ];
        assert!(!kept.iter().any(refunds));
    }
}
