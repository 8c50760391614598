//! What becomes of a claimed message after its turn: one pure function from what
//! happened (the attempt's answer, an earlier unknown attempt found, or a fallback
//! that cannot carry it), the attempts so far, the [`RetryPolicy`] and the
//! routing, to the [`Decision`] the send path carries out.

use std::time::Duration;

use crate::domain::millis;
use crate::provider::{self, Receipt};
use crate::queue::Outcome;

use super::RetryPolicy;

/// The longest a message over a recipient's frequency cap at the provider waits
/// (the caps' windows end by the next midnight).
const CAPPED_WAIT_MAX: Duration = Duration::from_secs(24 * 3600);

/// The least a failed-over message the fallback cannot carry waits for its own
/// provider, so that it is not claimed again and again while a probe is out.
const HOLD_AT_LEAST: Duration = Duration::from_secs(1);

/// What happened in one claimed message's turn.
#[derive(Debug)]
pub(super) enum Turn {
    /// An attempt was made through the routing's `via` provider and answered
    /// this (an error made before the request, such as a store that could not
    /// give the template's code, counts as its answer).
    Attempted(Result<Receipt, provider::Error>),
    /// An earlier attempt whose outcome was unknown reached provider `by`, which
    /// says so: the message is sent, without a new attempt.
    Found {
        by: String,
        provider_message_id: Option<String>,
    },
    /// The fallback provider cannot carry the message (not on its channel's list,
    /// or without the template's code there): it waits for its own provider, whose
    /// circuit lets a probe through `opens_in` from now.
    NotCarried { opens_in: Duration },
}

/// Everything else the decision depends on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Context<'a> {
    /// This attempt's number: the attempts so far, this one included.
    pub(super) attempt: u32,
    /// When to try again and when to give up.
    pub(super) policy: &'a RetryPolicy,
    /// The message's own provider.
    pub(super) own: &'a str,
    /// The provider the turn went through: `own`, or a fallback while `own`'s
    /// circuit is open.
    pub(super) via: &'a str,
    /// Now, in ms since the epoch.
    pub(super) now_ms: i64,
    /// Where in the backoff's jitter range the retry falls, in `[0, 1]`.
    pub(super) jitter: f64,
    /// The attempt was a probe of the own provider's half-open circuit, and a
    /// fallback can carry the message now: a failure is the provider's, so the
    /// message retries at once (through the fallback, as the failed probe opened
    /// the circuit again) instead of waiting out a backoff, which would let the
    /// next probe take it again, and again.
    pub(super) fallback_ready: bool,
}

/// What the send path does with a message after its turn.
#[derive(Debug, Clone)]
pub(super) struct Decision {
    /// What the ledger records: sent or confirmed, retry at, unknown (ask the
    /// providers before the next attempt), failed, or released without spending
    /// an attempt.
    pub(super) outcome: Outcome,
    /// The provider that carried the message, when it failed over from its own.
    pub(super) sent_by: Option<String>,
    /// The provider throttled this process: `via` is paced.
    pub(super) pace: bool,
    /// The recipient cannot receive messages: its address is suppressed, with
    /// this reason.
    pub(super) suppress: Option<String>,
}

/// Decides what becomes of a message after `turn`. An error's text goes to the
/// ledger as the error displays (`throttled: …`), prefixed `via {provider}: `
/// when the message failed over. A recipient's frequency cap and a message the
/// fallback cannot carry are released: nothing was sent, no attempt is spent. A
/// throttle is released too, however many times it comes, with its answer kept
/// as the last error and `Retry-After` (or the backoff) saying when it is due
/// again, and paces `via`: waiting for the pace never fails a message. What
/// bounds the wait is the batch's deadline, which the store keeps.
pub(super) fn decide(turn: Turn, cx: Context<'_>) -> Decision {
    let failed_over = cx.own != cx.via;
    let mut decision = Decision {
        outcome: Outcome::Release {
            at_ms: cx.now_ms,
            error: None,
        },
        sent_by: failed_over.then(|| cx.via.to_string()),
        pace: false,
        suppress: None,
    };
    let at = |wait: Duration| cx.now_ms.saturating_add(millis(wait));
    let error = match turn {
        Turn::Found {
            by,
            provider_message_id,
        } => {
            decision.sent_by = (by != cx.own).then_some(by);
            decision.outcome = Outcome::Confirmed {
                provider_message_id,
            };
            return decision;
        }
        Turn::NotCarried { opens_in } => {
            decision.sent_by = None;
            decision.outcome = Outcome::Release {
                at_ms: at(opens_in.max(HOLD_AT_LEAST)),
                error: None,
            };
            return decision;
        }
        Turn::Attempted(Ok(receipt)) => {
            decision.outcome = Outcome::Sent {
                provider_message_id: receipt.provider_message_id,
                segment_ids: receipt.segment_ids,
            };
            return decision;
        }
        Turn::Attempted(Err(error)) => error,
    };
    let n = cx.attempt;
    let last = n >= cx.policy.max_attempts;
    // When to try again after an error that allows it: after the backoff (or the
    // provider's `Retry-After`), or at once through a ready fallback.
    let again = |retry_after: Option<Duration>| {
        if cx.fallback_ready {
            cx.now_ms
        } else {
            at(cx.policy.delay(n, retry_after, cx.jitter))
        }
    };
    let text = if failed_over {
        format!("via {}: {error}", cx.via)
    } else {
        error.to_string()
    };
    decision.outcome = match &error {
        provider::Error::RecipientCapped { wait, .. } => Outcome::Release {
            at_ms: at((*wait).min(CAPPED_WAIT_MAX)),
            error: None,
        },
        provider::Error::Throttled { retry_after, .. } => Outcome::Release {
            at_ms: at(cx.policy.delay(n, *retry_after, cx.jitter)),
            error: Some(text),
        },
        provider::Error::Unknown { .. } if last => Outcome::Failed {
            error: format!(
                "{text} (gave up after {n} attempts; whether the last reached the provider is unknown)"
            ),
        },
        provider::Error::Unknown { .. } => Outcome::Unknown {
            at_ms: again(None),
            error: text,
        },
        provider::Error::Permanent { .. } | provider::Error::Undeliverable { .. } => {
            Outcome::Failed { error: text }
        }
        provider::Error::Transient { .. } if last => Outcome::Failed {
            error: format!("{text} (gave up after {n} attempts)"),
        },
        provider::Error::Transient { retry_after, .. } => Outcome::Retry {
            at_ms: again(*retry_after),
            error: text,
        },
    };
    decision.pace = error.is_throttle();
    if let provider::Error::Undeliverable { reason } = error {
        decision.suppress = Some(format!("{}: {reason}", cx.via));
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::retry::tests::policy;

    fn cx(policy: &RetryPolicy, attempt: u32) -> Context<'_> {
        Context {
            attempt,
            policy,
            own: "a",
            via: "a",
            now_ms: 1_000,
            jitter: 1.0,
            fallback_ready: false,
        }
    }

    #[test]
    fn a_failed_probe_with_a_ready_fallback_retries_at_once_without_one_after_the_backoff() {
        let p = policy();
        let probe = Context {
            fallback_ready: true,
            ..cx(&p, 2)
        };
        let d = after(transient("HTTP 503", Some(Duration::from_secs(9))), probe);
        assert!(
            matches!(&d.outcome, Outcome::Retry { at_ms: 1_000, error } if error == "HTTP 503"),
            "{d:?}"
        );
        let d = after(
            provider::Error::Unknown {
                reason: "no answer".into(),
            },
            probe,
        );
        assert!(
            matches!(d.outcome, Outcome::Unknown { at_ms: 1_000, .. }),
            "{d:?}"
        );
        // Its last attempt still fails it; without a fallback the backoff holds.
        let last = Context {
            fallback_ready: true,
            ..cx(&p, p.max_attempts)
        };
        assert!(matches!(
            after(transient("HTTP 503", None), last).outcome,
            Outcome::Failed { .. }
        ));
        let alone = after(transient("HTTP 503", None), cx(&p, 2)).outcome;
        assert!(
            matches!(alone, Outcome::Retry { at_ms, .. } if at_ms > 1_000),
            "{alone:?}"
        );
    }

    fn after(error: provider::Error, cx: Context<'_>) -> Decision {
        decide(Turn::Attempted(Err(error)), cx)
    }

    fn transient(reason: &str, retry_after: Option<Duration>) -> provider::Error {
        provider::Error::Transient {
            reason: reason.into(),
            retry_after,
        }
    }

    #[test]
    fn transient_errors_retry_until_the_last_attempt_permanent_ones_fail_at_once() {
        let p = policy();
        let hinted = transient("HTTP 503", Some(Duration::from_secs(2)));
        let first = after(hinted.clone(), cx(&p, 1)).outcome;
        assert!(
            matches!(&first, Outcome::Retry { at_ms: 3_000, error } if error == "HTTP 503"),
            "{first:?}"
        );
        let third = after(transient("HTTP 503", None), cx(&p, 3)).outcome;
        assert!(
            matches!(third, Outcome::Retry { at_ms: 5_000, .. }),
            "{third:?}"
        );
        match after(hinted, cx(&p, 4)).outcome {
            Outcome::Failed { error } => assert_eq!(error, "HTTP 503 (gave up after 4 attempts)"),
            other => panic!("{other:?}"),
        }
        let permanent = provider::Error::Permanent {
            reason: "HTTP 400".into(),
        };
        let d = after(permanent, cx(&p, 1));
        assert!(
            matches!(&d.outcome, Outcome::Failed { error } if error == "HTTP 400"),
            "{d:?}"
        );
        assert_eq!((d.pace, d.suppress), (false, None));
    }

    #[test]
    fn a_throttle_paces_the_provider_and_waits_without_spending_an_attempt_even_at_the_last() {
        let p = policy();
        let throttle = provider::Error::throttled("HTTP 429", Some(Duration::from_secs(3)));
        // At the first attempt, at the last, and long after: never failed.
        for attempt in [1, 4, 40] {
            let d = after(throttle.clone(), cx(&p, attempt));
            assert!(d.pace);
            assert!(
                matches!(&d.outcome, Outcome::Release { at_ms: 4_000, error: Some(error) } if error == "throttled: HTTP 429"),
                "attempt {attempt}: {d:?}"
            );
        }
        // Without Retry-After it waits as the backoff says, and a failed-over
        // throttle names the provider that throttled.
        let bare = provider::Error::throttled("HTTP 429", None);
        let via_b = Context {
            via: "b",
            ..cx(&p, 3)
        };
        let d = after(bare, via_b);
        assert!(
            matches!(&d.outcome, Outcome::Release { at_ms: 5_000, error: Some(error) } if error == "via b: throttled: HTTP 429"),
            "{d:?}"
        );
    }

    #[test]
    fn a_recipients_frequency_cap_waits_its_whole_window_without_counting_an_attempt() {
        let p = policy();
        let day = Duration::from_secs(12 * 3600);
        let capped =
            provider::Error::recipient_capped("tencent LimitExceeded.PhoneNumberDailyLimit", day);
        // Even at the last attempt, and past retry.max_delay_ms (10 s here).
        for attempt in [1, 4] {
            let d = after(capped.clone(), cx(&p, attempt));
            assert!(
                matches!(d.outcome, Outcome::Release { at_ms, error: None } if at_ms == 1_000 + 12 * 3_600_000),
                "{d:?}"
            );
            assert!(!d.pace);
        }
        let week = provider::Error::recipient_capped("cap", Duration::from_secs(7 * 86_400));
        let d = after(week, cx(&p, 1));
        assert!(
            matches!(d.outcome, Outcome::Release { at_ms, error: None } if at_ms == 1_000 + 86_400_000),
            "{d:?}"
        );
    }

    #[test]
    fn an_unknown_outcome_waits_as_unknown_until_the_last_attempt_fails_it() {
        let p = policy();
        let unknown = provider::Error::Unknown {
            reason: "no answer within 30000 ms".into(),
        };
        let half = Context {
            jitter: 0.0,
            ..cx(&p, 1)
        };
        let d = after(unknown.clone(), half);
        assert!(
            matches!(&d.outcome, Outcome::Unknown { at_ms: 1_500, error } if error == "no answer within 30000 ms"),
            "{d:?}"
        );
        match after(unknown, cx(&p, 4)).outcome {
            Outcome::Failed { error } => assert!(error.contains("unknown"), "{error}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_undeliverable_recipient_fails_and_is_suppressed_with_the_providers_reason() {
        let p = policy();
        let d = after(
            provider::Error::Undeliverable {
                reason: "21211 invalid number".into(),
            },
            cx(&p, 1),
        );
        assert!(
            matches!(&d.outcome, Outcome::Failed { error } if error == "21211 invalid number"),
            "{d:?}"
        );
        assert_eq!(d.suppress.as_deref(), Some("a: 21211 invalid number"));
    }

    #[test]
    fn a_failed_over_message_names_the_fallback_in_its_error_and_as_its_sender() {
        let p = policy();
        let via_b = Context {
            via: "b",
            ..cx(&p, 1)
        };
        let d = after(transient("HTTP 503", None), via_b);
        assert_eq!(d.sent_by.as_deref(), Some("b"));
        assert!(
            matches!(&d.outcome, Outcome::Retry { error, .. } if error == "via b: HTTP 503"),
            "{d:?}"
        );
        let sent = decide(Turn::Attempted(Ok(Receipt::default())), via_b);
        assert_eq!(sent.sent_by.as_deref(), Some("b"));
        let own = decide(Turn::Attempted(Ok(Receipt::default())), cx(&p, 1));
        assert_eq!(own.sent_by, None);
    }

    #[test]
    fn a_message_the_fallback_cannot_carry_waits_for_its_own_circuit_unattempted() {
        let p = policy();
        let via_b = Context {
            via: "b",
            ..cx(&p, 1)
        };
        let soon = decide(
            Turn::NotCarried {
                opens_in: Duration::ZERO,
            },
            via_b,
        );
        assert!(
            matches!(
                soon.outcome,
                Outcome::Release {
                    at_ms: 2_000,
                    error: None
                }
            ),
            "{soon:?}"
        );
        assert_eq!(soon.sent_by, None);
        let later = decide(
            Turn::NotCarried {
                opens_in: Duration::from_secs(30),
            },
            via_b,
        );
        assert!(
            matches!(
                later.outcome,
                Outcome::Release {
                    at_ms: 31_000,
                    error: None
                }
            ),
            "{later:?}"
        );
    }

    #[test]
    fn an_unknown_attempt_found_at_a_provider_is_confirmed_as_sent_by_it() {
        let p = policy();
        let found = |by: &str| {
            decide(
                Turn::Found {
                    by: by.into(),
                    provider_message_id: Some("SM1".into()),
                },
                cx(&p, 2),
            )
        };
        let own = found("a");
        assert!(
            matches!(&own.outcome, Outcome::Confirmed { provider_message_id: Some(id) } if id == "SM1"),
            "{own:?}"
        );
        assert_eq!(own.sent_by, None);
        assert_eq!(found("b").sent_by.as_deref(), Some("b"));
    }
}
