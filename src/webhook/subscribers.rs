//! Which endpoints a batch's events go to, decided once at intake from the
//! configured `[[webhooks]]` filters and the batch's own `callback_url`.

use std::sync::Arc;

use crate::config::{WebhookConfig, WebhookSettings};
use crate::domain::{Channel, HttpUrl};

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

    /// The names of the configured endpoints whose filters take a batch of
    /// `channel` from `source`.
    pub fn matching<'a>(
        &'a self,
        channel: Channel,
        source: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.endpoints
            .iter()
            .filter(move |f| f.channels.as_ref().is_none_or(|c| c.contains(&channel)))
            .filter(move |f| {
                f.sources
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|s| s == source))
            })
            .map(|f| f.name.as_str())
    }
}
