//! Failover choice: which provider carries a provider's messages while its
//! circuit is open (or its day's budget is spent), and which messages a fallback
//! may carry.

use std::time::Duration;

use crate::circuit::{Admission, Probe};
use crate::provider::{Message, Route};

use super::Pool;

impl Pool {
    /// Where `own`'s messages go now: through `own` while its circuit admits
    /// sends, else through the first of its fallbacks whose circuit does; or, when
    /// none does, how long to wait.
    pub(super) fn choose<'a>(&'a self, own: &'a Route) -> Choice<'a> {
        let fallbacks = self
            .inner
            .fallbacks
            .get(&own.name)
            .map_or(&[][..], Vec::as_slice);
        let mut wait = self.inner.poll;
        let now = crate::domain::now_ms();
        for route in std::iter::once(own).chain(fallbacks) {
            // Over its day's budget: skipped until its next day, like an open circuit.
            if let Some(until) = self.inner.queue.pauses().until(&route.name, now) {
                let left = u64::try_from(until - now).unwrap_or(0);
                wait = wait.min(Duration::from_millis(left.max(1)));
                continue;
            }
            match self.inner.circuits.admit(&route.name) {
                Admission::Closed => {
                    return Choice::Send {
                        via: route,
                        probe: None,
                    };
                }
                Admission::Probe(probe) => {
                    return Choice::Send {
                        via: route,
                        probe: Some(probe),
                    };
                }
                Admission::Refused { until } => {
                    if let Some(until) = until {
                        let left = until.saturating_duration_since(tokio::time::Instant::now());
                        wait = wait.min(left.max(Duration::from_millis(1)));
                    }
                }
            }
        }
        Choice::Wait(wait)
    }

    /// Whether a fallback of `own` whose circuit lets sends through now can carry
    /// `message`.
    pub(super) fn fallback_ready(&self, own: &Route, message: &Message) -> bool {
        let fallbacks = self.inner.fallbacks.get(&own.name).into_iter().flatten();
        fallbacks
            .filter(|via| self.inner.circuits.opens_in(&via.name).is_zero())
            .any(|via| {
                self.can_carry(
                    &Routing {
                        own: own.clone(),
                        via: via.clone(),
                    },
                    message,
                )
            })
    }

    /// Whether `message`, of `routing.own`, may go through `routing.via`: always when
    /// that is its own provider; else when both are on its channel's failover list
    /// and the fallback has what it needs (its code for a stored template).
    pub(super) fn can_carry(&self, routing: &Routing, message: &Message) -> bool {
        let Routing { own, via } = routing;
        if own.name == via.name {
            return true;
        }
        let has_code = message.template.as_ref().is_some_and(|t| t.code.is_some());
        via.channels.contains(&message.channel)
            && self
                .inner
                .registry
                .fails_over(message.channel, &own.name, &via.name)
            && (has_code || !via.provider.needs_template_code())
    }
}

/// The routing of one send: whose messages it carries (`own`) and which provider
/// it goes through (`via`): the same one, or a fallback while the own provider's
/// circuit is open.
pub(super) struct Routing {
    pub(super) own: Route,
    pub(super) via: Route,
}

/// Where a claimer's messages go this time round.
pub(super) enum Choice<'a> {
    /// Through `via`, holding its circuit's probe when it is half-open.
    Send {
        via: &'a Route,
        probe: Option<Probe>,
    },
    /// Every circuit on the way is open: look again after this long.
    Wait(Duration),
}
