//! What every handler shares: the intake, the queue, the limits, the tokens,
//! the metrics and the shutdown signal.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::inbound::Replying;

use crate::audit::Audit;
use crate::auth::Tokens;
use crate::config::{Config, WebhookConfig};
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::provider::Registry;
use crate::queue::Queue;
use crate::webhook::Subscribers;

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub intake: Intake,
    pub queue: Queue,
    /// The largest JSON body read whole into memory; a bigger one is spooled to
    /// a temporary file.
    pub max_body_bytes: usize,
    /// The largest upload of any kind.
    pub max_upload_bytes: u64,
    /// The API tokens accepted; none asked for when empty.
    pub tokens: Tokens,
    /// Where operator actions are recorded.
    pub audit: Audit,
    /// What replies do: keywords and auto-replies.
    pub replying: Arc<Replying>,
    /// What `/metrics` shows; shared with the workers.
    pub metrics: Metrics,
    /// The configured status webhooks (`[[webhooks]]`).
    pub webhooks: std::sync::Arc<[WebhookConfig]>,
    /// Whether batches' own `callback_url`s are signed, so taken.
    pub signs_callbacks: bool,
    /// Cancelled when the server shuts down: long-lived responses (event streams)
    /// end then, so that they do not hold the shutdown up.
    pub stop: CancellationToken,
}

impl AppState {
    /// The state of an API over `queue`, sending through `registry`, as `config`
    /// says, counting in `metrics`, until `stop`.
    pub fn new(
        queue: Queue,
        registry: Registry,
        config: &Config,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> AppState {
        AppState {
            intake: Intake::new(
                queue.clone(),
                registry,
                config.limits.max_recipients,
                config.recipients.rules(),
                config.recipients.recent_window(),
                config.valid_for.clone(),
                metrics.clone(),
            )
            .with_subscribers(Subscribers::new(&config.webhooks, &config.webhook))
            .with_windows(config.windows.clone()),
            metrics,
            audit: Audit::new(queue.clone()),
            queue,
            max_body_bytes: config.limits.max_body_bytes,
            max_upload_bytes: config.limits.max_upload_bytes,
            tokens: Tokens::new(&config.auth.tokens),
            replying: Arc::new(Replying::new(&config.replies.sms)),
            webhooks: config.webhooks.clone().into(),
            signs_callbacks: config.webhook.callback_secret.is_some(),
            stop,
        }
    }
}
