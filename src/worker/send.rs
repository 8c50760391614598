//! Sending a group of claimed messages through a provider, asking providers about
//! unknown outcomes first, and carrying out what `decide` makes of each turn.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::circuit::{Probe, Verdict};
use crate::domain::{millis, now_ms};
use crate::provider::{self, Lookup, Message, Receipt, Route};
use crate::queue::suppress::{self, Word};
use crate::queue::{Claimed, Outcome};

use super::Pool;
use super::decide::{Context, Turn, decide};
use super::failover::Routing;
use super::settle::{Done, settle};

impl Pool {
    /// `batch_limit`) in one attempt each through `routing.via`, and hands each
    /// outcome to the settler. Messages the fallback cannot carry go back to wait
    /// for their own provider, unattempted. The request's verdict goes to the
    /// circuit of the provider it went through, with the probe if it was one.
    pub(super) async fn send(
        self,
        routing: Routing,
        probe: Option<Probe>,
        group: Vec<(Claimed, OwnedSemaphorePermit)>,
        results: mpsc::UnboundedSender<Done>,
    ) {
        self.inner
            .held
            .hold(group.iter().map(|(claimed, _)| claimed.lease));
        let mut messages = Vec::with_capacity(group.len());
        let mut slots = Vec::with_capacity(group.len());
        for (claimed, permit) in group {
            let attempt = Attempt {
                number: claimed.attempts + 1,
                lease: claimed.lease,
                permit,
                sent_ms: now_ms(),
                unknown_since_ms: claimed.unknown_since_ms,
                probe: probe.is_some(),
            };
            let template = match &claimed.template_id {
                Some(id) => {
                    self.inner
                        .templates
                        .code(&self.inner.queue, id, &routing.via.name)
                        .await
                }
                None => Ok(None),
            };
            let message = Message {
                id: claimed.id,
                batch_id: claimed.batch_id,
                reference: claimed.reference,
                channel: claimed.channel,
                to: claimed.to,
                subject: claimed.subject,
                body: claimed.body,
                vars: claimed.vars.as_deref().and_then(parse_vars),
                template: template.as_ref().ok().cloned().flatten(),
            };
            match template {
                Err(error) => {
                    self.finish(&routing, &message, attempt, Err(error), &results)
                        .await
                }
                Ok(_) if !self.can_carry(&routing, &message) => {
                    let opens_in = self.inner.circuits.opens_in(&routing.own.name);
                    tracing::debug!(provider = %routing.own.name, via = %routing.via.name, id = %message.id, "the fallback cannot send this message: it waits for its own provider");
                    self.carry_out(
                        &routing,
                        &message,
                        attempt,
                        Turn::NotCarried { opens_in },
                        &results,
                    )
                    .await;
                }
                Ok(_) => {
                    messages.push(message);
                    slots.push(attempt);
                }
            }
        }
        let (messages, slots) = self.settle_known(&routing, messages, slots, &results).await;
        if messages.is_empty() {
            return;
        }
        // Past this point the messages may reach the provider; a shutdown that
        // came first has given them back unattempted.
        if !self.inner.held.start(slots.iter().map(|a| a.lease)) {
            return;
        }
        let route = &routing.via;
        let timeout = self.inner.send_timeout;
        let answers = match tokio::time::timeout(timeout, async {
            match messages.as_slice() {
                [one] => vec![route.provider.send(one).await],
                many => route.provider.send_many(many).await,
            }
        })
        .await
        {
            Ok(answers) if answers.len() == messages.len() => answers,
            Ok(answers) => {
                let error = provider::Error::Transient {
                    reason: format!(
                        "the provider answered {} results for {} messages",
                        answers.len(),
                        messages.len()
                    ),
                    retry_after: None,
                };
                messages.iter().map(|_| Err(error.clone())).collect()
            }
            // The requests were made: they may have reached the provider.
            Err(_) => {
                let error = provider::Error::Unknown {
                    reason: format!("no answer within {} ms", millis(timeout)),
                };
                messages.iter().map(|_| Err(error.clone())).collect()
            }
        };
        if let Some(verdict) = Verdict::of(&answers) {
            self.inner.circuits.record(&route.name, verdict, probe);
        }
        for ((message, attempt), answer) in messages.iter().zip(slots).zip(answers) {
            self.finish(&routing, message, attempt, answer, &results)
                .await;
        }
    }

    /// Asks about the messages whose earlier attempt had an unknown outcome, all at
    /// once within the send timeout. Those a provider says it has are settled as
    /// sent by it (no attempt counted); the rest are returned, to be sent.
    async fn settle_known(
        &self,
        routing: &Routing,
        messages: Vec<Message>,
        slots: Vec<Attempt>,
        results: &mpsc::UnboundedSender<Done>,
    ) -> (Vec<Message>, Vec<Attempt>) {
        if slots.iter().all(|a| a.unknown_since_ms.is_none()) {
            return (messages, slots);
        }
        let own = &routing.own;
        let asked = futures_util::future::join_all(messages.iter().zip(&slots).map(
            |(message, attempt)| async move {
                let since = attempt.unknown_since_ms?;
                Some(self.look_up(own, message, since).await)
            },
        ))
        .await;
        let mut to_send = (Vec::new(), Vec::new());
        for ((message, attempt), lookup) in messages.into_iter().zip(slots).zip(asked) {
            match lookup {
                Some((
                    Lookup::Sent {
                        provider_message_id,
                    },
                    by,
                )) => {
                    tracing::info!(provider = %own.name, by = %by.name, id = %message.id, "the provider has the message whose outcome was unknown: not sent again");
                    let turn = Turn::Found {
                        by: by.name.clone(),
                        provider_message_id,
                    };
                    self.carry_out(routing, &message, attempt, turn, results)
                        .await;
                }
                other => {
                    if let Some((Lookup::CannotTell(why), by)) = &other {
                        tracing::debug!(provider = %own.name, by = %by.name, id = %message.id, why = %why, "cannot tell whether an attempt whose outcome was unknown arrived: sending again");
                    }
                    to_send.0.push(message);
                    to_send.1.push(attempt);
                }
            }
        }
        to_send
    }

    /// Asks every provider that may have made the unknown attempt at `message`
    /// made at `since_ms` or later — its own provider `own` and those its channel
    /// fails over to from it, as the attempt may have gone through any of them —
    /// at once, each within the send timeout. Answers the first that has it, else
    /// the first that cannot tell, else `NotSent` from `own`.
    async fn look_up<'a>(
        &'a self,
        own: &'a Route,
        message: &Message,
        since_ms: i64,
    ) -> (Lookup, &'a Route) {
        let fallbacks = self.inner.fallbacks.get(&own.name).into_iter().flatten();
        let asked: Vec<&Route> = std::iter::once(own)
            .chain(fallbacks.filter(|via| {
                self.inner
                    .registry
                    .fails_over(message.channel, &own.name, &via.name)
            }))
            .collect();
        let answers = futures_util::future::join_all(asked.iter().map(|route| {
            let query = route.provider.query(message, since_ms);
            async move {
                tokio::time::timeout(self.inner.send_timeout, query)
                    .await
                    .unwrap_or_else(|_| Lookup::CannotTell("the status query timed out".into()))
            }
        }))
        .await;
        let mut found = (Lookup::NotSent, own);
        for (route, lookup) in asked.into_iter().zip(answers) {
            match lookup {
                Lookup::Sent { .. } => return (lookup, route),
                Lookup::CannotTell(_) if found.0 == Lookup::NotSent => found = (lookup, route),
                _ => {}
            }
        }
        found
    }

    /// Carries out what [`decide`] makes of one attempt's answer, logs a failure
    /// with its verdict, and counts the attempt in the metrics.
    async fn finish(
        &self,
        routing: &Routing,
        message: &Message,
        attempt: Attempt,
        answer: Result<Receipt, provider::Error>,
        results: &mpsc::UnboundedSender<Done>,
    ) {
        let took = Duration::from_millis(now_ms().saturating_sub(attempt.sent_ms).unsigned_abs());
        let number = attempt.number;
        let error = answer.as_ref().err().map(ToString::to_string);
        let outcome = self
            .carry_out(routing, message, attempt, Turn::Attempted(answer), results)
            .await;
        if let Some(error) = error {
            let verdict = match outcome {
                Outcome::Failed { .. } => "failed",
                Outcome::Unknown { .. } => "outcome unknown; will ask the provider, then retry",
                Outcome::Release { error: Some(_), .. } => "throttled; waits for the pace",
                Outcome::Release { .. } => "waits for the recipient's cap",
                _ => "will retry",
            };
            let failed_over =
                (routing.own.name != routing.via.name).then_some(routing.own.name.as_str());
            tracing::warn!(provider = %routing.via.name, failed_over_from = failed_over, id = %message.id, attempt = number, error = %error, verdict, "send failed");
        }
        self.inner
            .metrics
            .attempted(&routing.via.name, message.channel, &outcome, took);
    }

    /// Decides what becomes of `message` after `turn` and does it: paces a
    /// provider that throttled, suppresses an undeliverable recipient, and hands
    /// the outcome to the settler. Answers the outcome.
    async fn carry_out(
        &self,
        routing: &Routing,
        message: &Message,
        attempt: Attempt,
        turn: Turn,
        results: &mpsc::UnboundedSender<Done>,
    ) -> Outcome {
        let via = &routing.via;
        let fallback_ready = attempt.probe
            && routing.own.name == via.name
            && self.fallback_ready(&routing.own, message);
        let decision = decide(
            turn,
            Context {
                attempt: attempt.number,
                policy: &self.inner.policy,
                own: &routing.own.name,
                via: &via.name,
                now_ms: now_ms(),
                jitter: fastrand::f64(),
                fallback_ready,
            },
        );
        self.answered(&via.name, &decision, attempt.sent_ms);
        if let Some(reason) = decision.suppress {
            self.suppress(via, message, reason).await;
        }
        settle(attempt, decision.outcome.clone(), decision.sent_by, results);
        decision.outcome
    }

    /// Adds the recipient of a message the provider called undeliverable to the
    /// channel's suppression list, so later batches reject it as `suppressed`.
    async fn suppress(&self, route: &Route, message: &Message, reason: String) {
        let word = Word::Refused {
            channel: message.channel,
            to: message.to.clone(),
            reason,
        };
        let (records, registry) = (self.inner.queue.records(), &self.inner.registry);
        if suppress::undeliverable(records, registry, [word]).await > 0 {
            tracing::info!(provider = %route.name, id = %message.id, "recipient suppressed: the provider called it undeliverable");
        }
    }
}

/// One claimed message's attempt: its number, its lease, and its in-flight slot.
pub(super) struct Attempt {
    number: u32,
    pub(super) lease: crate::queue::Lease,
    pub(super) permit: OwnedSemaphorePermit,
    /// When it was handed to the provider (ms).
    sent_ms: i64,
    /// When an earlier attempt's outcome became unknown, if one did (ms).
    unknown_since_ms: Option<i64>,
    /// It went as the probe of a half-open circuit.
    probe: bool,
}

/// A recipient's stored vars, as providers that render templates take them.
fn parse_vars(json: &str) -> Option<Arc<serde_json::Map<String, serde_json::Value>>> {
    serde_json::from_str(json).ok().map(Arc::new)
}
