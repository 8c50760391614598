//! Which endpoints a batch's events go to, decided once at intake from the
//! configured `[[webhooks]]` filters and the batch's own `callback_url`.

use std::sync::Arc;

use crate::config::{WebhookConfig, WebhookSettings};
use crate::domain::{Channel, HttpUrl};
use crate::queue::{CALLBACK, EventKind, Kinds, Subscription};

/// The configured endpoints' filters, and whether batches may give their own
/// `callback_url`; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Subscribers {
    endpoints: Arc<[Filter]>,
    /// A `callback_url` is taken only when `webhook.callback_secret` signs its posts.
    callbacks_signed: bool,
}

/// One configured endpoint's filters.
#[derive(Debug)]
struct Filter {
    name: String,
    kinds: Kinds,
    channels: Option<Vec<Channel>>,
    sources: Option<Vec<String>>,
}

impl Subscribers {
    /// The subscribers `endpoints` and `settings` configure.
    pub fn new(endpoints: &[WebhookConfig], settings: &WebhookSettings) -> Subscribers {
        Subscribers {
            endpoints: endpoints
                .iter()
                .map(|e| Filter {
                    name: e.name.clone(),
                    kinds: e.events,
                    channels: e.channels.clone(),
                    sources: e.sources.clone(),
                })
                .collect(),
            callbacks_signed: settings.callback_secret.is_some(),
        }
    }

    /// Checks a batch's `callback_url`: an http(s) URL, and a secret configured to
    /// sign its posts. The error is the message for the field `callback_url`.
    pub fn check_callback(&self, url: &str) -> Result<HttpUrl, String> {
        let url = HttpUrl::parse(url)?;
        if !self.callbacks_signed {
            return Err(
                "needs webhook.callback_secret set in Herald's configuration, to sign the posts to it"
                    .into(),
            );
        }
        Ok(url)
    }

    /// The subscriptions of a batch of `channel` from `source`: every configured
    /// endpoint whose filters take it, with the kinds it wants, and `callback`
    /// with every kind when the batch gives a `callback_url`.
    pub fn of_batch(&self, channel: Channel, source: &str, callback: bool) -> Vec<Subscription> {
        let mut subscriptions: Vec<Subscription> = self
            .endpoints
            .iter()
            .filter(|f| f.channels.as_ref().is_none_or(|c| c.contains(&channel)))
            .filter(|f| {
                f.sources
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|s| s == source))
            })
            .filter(|f| f.kinds != Kinds(0))
            .map(|f| Subscription {
                endpoint: f.name.clone(),
                kinds: f.kinds,
            })
            .collect();
        if callback {
            subscriptions.push(Subscription {
                endpoint: CALLBACK.to_string(),
                kinds: Kinds::all(),
            });
        }
        subscriptions
    }

    /// The configured endpoints that want `kind` whatever the batch: e.g. every
    /// `reply`, including those to no batch.
    pub fn wanting(&self, kind: EventKind) -> impl Iterator<Item = &str> {
        self.endpoints
            .iter()
            .filter(move |f| f.kinds.contains(kind))
            .map(|f| f.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn subscribers(toml: &str) -> Subscribers {
        let config = Config::from_toml(toml).expect("a valid configuration");
        Subscribers::new(&config.webhooks, &config.webhook)
    }

    const ENDPOINTS: &str = r#"
        [[webhooks]]
        name = "all"
        url = "http://127.0.0.1:1/all"
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        [[webhooks]]
        name = "sms-api"
        url = "http://127.0.0.1:1/sms"
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        events = ["message.delivered", "batch.finished"]
        channels = ["sms"]
        sources = ["api"]
        "#;

    #[test]
    fn a_batch_is_subscribed_by_the_endpoints_whose_filters_take_it_with_their_kinds() {
        let s = subscribers(ENDPOINTS);
        let of = |channel, source| s.of_batch(channel, source, false);
        let wanted: Kinds = [EventKind::Delivered, EventKind::BatchFinished]
            .into_iter()
            .collect();
        assert_eq!(
            of(Channel::Sms, "api"),
            [
                Subscription {
                    endpoint: "all".into(),
                    kinds: Kinds::all()
                },
                Subscription {
                    endpoint: "sms-api".into(),
                    kinds: wanted
                },
            ]
        );
        let names =
            |subs: Vec<Subscription>| subs.into_iter().map(|s| s.endpoint).collect::<Vec<_>>();
        assert_eq!(names(of(Channel::Email, "api")), ["all"]);
        assert_eq!(names(of(Channel::Sms, "send-sms")), ["all"]);
    }

    #[test]
    fn a_batch_with_a_callback_url_is_subscribed_by_callback_with_every_kind() {
        let s = subscribers("");
        assert!(s.of_batch(Channel::Sms, "api", false).is_empty());
        assert_eq!(
            s.of_batch(Channel::Sms, "api", true),
            [Subscription {
                endpoint: CALLBACK.into(),
                kinds: Kinds::all()
            }]
        );
    }

    #[test]
    fn an_unknown_event_name_is_refused_naming_it() {
        let err = Config::from_toml(
            "[[webhooks]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nevents = [\"message.sen\"]",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("message.sen") && err.contains("events"),
            "{err}"
        );
    }

    #[test]
    fn replies_go_to_the_endpoints_wanting_them() {
        let s = subscribers(ENDPOINTS);
        assert_eq!(s.wanting(EventKind::Reply).collect::<Vec<_>>(), ["all"]);
        assert_eq!(
            s.wanting(EventKind::Delivered).collect::<Vec<_>>(),
            ["all", "sms-api"]
        );
    }
}
