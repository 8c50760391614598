//! A batch's plan: its options (provider, priority, times, deadline, window,
//! callback) and its template checked before any recipient, into the
//! [`Intaking`] that takes its recipients.

use std::sync::Arc;

use super::*;

impl Intake {
    /// Checks a batch's options and template, before any recipient.
    pub(super) fn plan(&self, envelope: &Envelope<'_>, body: Body) -> Result<Intaking, Error> {
        let channel = envelope.channel;
        if envelope.reject_recent_duplicates && self.recent_window.is_none() {
            return Err(invalid(
                "reject_recent_duplicates",
                "needs recipients.recent_window_secs set to how far back to look",
            ));
        }
        let route = self
            .registry
            .resolve(channel, envelope.provider)
            .map_err(|message| invalid("provider", message))?;
        let priority = envelope.priority.unwrap_or(0);
        if !PRIORITY_RANGE.contains(&priority) {
            return Err(invalid(
                "priority",
                format!("must be between -100 and 100, not {priority}"),
            ));
        }
        let callback_url = envelope
            .callback_url
            .map(|url| self.subscribers.check_callback(url))
            .transpose()
            .map_err(|message| invalid("callback_url", message))?;
        let subscriptions =
            self.subscribers
                .of_batch(channel, envelope.source, callback_url.is_some());
        let now = now_ms();
        let send_at_ms = match envelope.send_at {
            None => now,
            Some(s) => send_at(s, now)?,
        };
        let asked = Deadline::parse(envelope.expires_at, envelope.valid_for, now).map_err(|e| {
            Error::Malformed {
                field: Some(e.field.into()),
                message: e.message,
            }
        })?;
        let expires_at_ms = self.deadline(channel, &route.name, asked, now, send_at_ms);
        if let Some(Deadline::At(at)) = asked
            && at <= send_at_ms
        {
            return Err(Error::Malformed {
                field: Some("expires_at".into()),
                message: "must be after send_at: the batch would expire before it is due".into(),
            });
        }
        let quiet = window::plan(
            &self.windows,
            envelope.window,
            channel,
            &route.name,
            send_at_ms,
        )?;
        let max_cost = match envelope.max_cost {
            None => None,
            Some(cost) if !(cost > 0.0 && cost.is_finite()) => {
                return Err(invalid(
                    "max_cost",
                    format!("must be a number above 0, not {cost}"),
                ));
            }
            Some(_) if route.price.is_none() => {
                return Err(invalid(
                    "max_cost",
                    format!(
                        "provider `{}` has no prices configured (price_per_message, \
                         price_per_segment): a spend cap cannot be enforced",
                        route.name
                    ),
                ));
            }
            Some(cost) => Some(crate::queue::spend::to_micros(cost)),
        };
        let template_id = match &body {
            Body::Template(spec) => spec.stored_id.clone(),
            Body::Literal { .. } => None,
        };
        let mut stored_template = None;
        let renderer = match body {
            Body::Template(spec) => {
                if channel == Channel::Email && spec.subject.is_none() {
                    return Err(invalid("template.subject", "is required for e-mail"));
                }
                if spec.body.trim().is_empty() {
                    return Err(invalid("template.body", "must not be empty"));
                }
                let template = Template::compile(&spec.body, spec.subject.as_deref())
                    .map_err(|e| invalid(e.field, e.message))?;
                stored_template = Some(BatchTemplate {
                    subject: spec.subject,
                    body: spec.body,
                });
                Renderer::Template {
                    template: Box::new(template),
                    // The store keeps each message's variables, not its body, and
                    // renders the body again at claim; a dry run shows bodies, and
                    // recent sends are told apart by them.
                    keep_body: envelope.dry_run || self.recent_window.is_some(),
                }
            }
            Body::Literal { body, .. } if body.trim().is_empty() => {
                return Err(invalid("content", "must not be empty"));
            }
            Body::Literal { subject, .. }
                if channel == Channel::Email
                    && subject.as_deref().is_none_or(|s| s.trim().is_empty()) =>
            {
                return Err(invalid("title", "is required for e-mail"));
            }
            Body::Literal { subject, body } => Renderer::Literal { subject, body },
        };
        Ok(Intaking {
            channel,
            callback_url: callback_url.map(|url| url.to_string()),
            subscriptions,
            template_id,
            stored_template,
            route: route.clone(),
            priority,
            send_at_ms,
            expires_at_ms,
            renderer: Arc::new(renderer),
            max_recipients: self.max_recipients,
            seen: 0,
            first: FirstSeen::default(),
            rejected: Vec::new(),
            accepted: 0,
            last_index: None,
            sms: (channel == Channel::Sms).then(SmsSummary::default),
            remember: Vec::new(),
            preview: Vec::new(),
            quiet,
            max_cost,
            held_by_caps: (!route.limits.per_recipient.is_empty()).then_some(0),
        })
    }
}
