//! Intake: turns a submitted batch into stored messages and a report. Every
//! recipient is checked and rendered before anything is written; the batch is then
//! stored in one transaction, so a batch is stored whole or not at all.
//!
//! - `request`: what a submit says (the API's batch body, recipients, text).
//! - `check`: each recipient checked, rendered and measured, on kept threads;
//!   a batch's `send_at` read.
//! - `plan`: a batch's options and template checked, before any recipient.
//! - `intaking`: a batch being taken in, chunk by chunk, and the batch it makes.
//! - `report`: the pre-flight report a submit answers with.
//! - `auto_reply`: the answer to an opt-out or opt-in reply, as a batch of one.
//! - `window`: quiet hours: each recipient's first due time in its local window.
//! - here: [`Intake`], which plans a batch, takes its chunks and stores it.

use futures_util::{Stream, StreamExt};
use jiff::Timestamp;
use serde_json::Value;

use crate::config::ValidForConfig;
use crate::domain::{BatchId, Channel, Deadline, now_ms};
use crate::metrics::Metrics;
use crate::provider::Registry;
mod auto_reply;
mod check;
mod eta;
mod intaking;
mod plan;
mod report;
mod request;
mod window;

use crate::queue::{self, Accepted, Arrival, BatchTemplate, Begun, Queue};
use crate::recipient::{self, Rules};
use crate::template::Template;
use crate::webhook::Subscribers;
use check::*;
use eta::{Ahead, eta_seconds};
use intaking::*;
pub use report::{Cost, EncodingCount, Group, Preview, Rejection, Report, SmsSummary};
pub use request::{
    BatchRequest, Body, NOT_BLANK, ONE_LINE, RecipientSpec, TemplateSpec, whole_number,
};
pub use window::{Opening, WindowReport, WindowRequest};

/// Priorities run from -100 (last) to 100 (first); 0 is the default.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -100..=100;
/// The longest `ref` kept for a recipient, in bytes.
const MAX_REF_BYTES: usize = 256;
/// Rendered messages a dry run's report shows.
pub const PREVIEW_MESSAGES: usize = 5;

/// Why a batch was not stored. Nothing is stored in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The request is not the JSON it should be; `field` is the path to the first
    /// part that does not fit, when known.
    #[error("{message}")]
    Malformed {
        field: Option<String>,
        message: String,
    },
    #[error("{field}: {message}")]
    TooLarge { field: String, message: String },
    #[error("none of the {} recipients can be sent to", .0.len())]
    NoneAccepted(Vec<Rejection>),
    #[error(transparent)]
    Store(#[from] queue::Error),
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// What a successful submit returns.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub report: Value,
    /// True when an earlier submit with the same idempotency key is answered again.
    pub replayed: bool,
}

/// Checks, renders and stores batches.
#[derive(Clone)]
pub struct Intake {
    queue: Queue,
    registry: Registry,
    max_recipients: usize,
    rules: Rules,
    /// How far back `reject_recent_duplicates` looks; `None`: recent sends are not
    /// remembered.
    recent_window: Option<std::time::Duration>,
    /// Counts the messages of every batch stored.
    metrics: Metrics,
    /// The deadline of a batch that gives none.
    valid_for: ValidForConfig,
    /// Who is told of each batch's events.
    subscribers: Subscribers,
    /// The sending windows of batches that give none.
    windows: crate::config::WindowsConfig,
}

/// A submit's options besides the recipients.
pub struct Envelope<'a> {
    pub channel: Channel,
    pub provider: Option<&'a str>,
    pub priority: Option<i32>,
    pub send_at: Option<&'a str>,
    /// The batch's deadline as a time (RFC 3339) or, `valid_for`, in seconds from
    /// when it is due; at most one. Neither: the configured default.
    pub expires_at: Option<&'a str>,
    pub valid_for: Option<i64>,
    /// Where the batch came from: `api`, `send-sms`, …
    pub source: &'a str,
    /// The sender's `Idempotency-Key` and the raw request it came with.
    pub idempotency: Option<(&'a str, &'a [u8])>,
    /// Check and report only; store nothing.
    pub dry_run: bool,
    /// Reject recipients sent the same message within `recipients.recent_window_secs`.
    pub reject_recent_duplicates: bool,
    /// Where the batch's events are posted besides the configured webhooks.
    pub callback_url: Option<&'a str>,
    /// The batch's sending window, if it gives one (or ignores the configured one).
    pub window: WindowRequest<'a>,
    /// The most the batch may spend, in its provider's currency (see
    /// [`crate::queue::spend`]); `None`: no cap.
    pub max_cost: Option<f64>,
}

impl Intake {
    pub fn new(
        queue: Queue,
        registry: Registry,
        max_recipients: usize,
        rules: Rules,
        recent_window: Option<std::time::Duration>,
        valid_for: ValidForConfig,
        metrics: Metrics,
    ) -> Self {
        Intake {
            queue,
            registry,
            max_recipients,
            rules,
            recent_window,
            metrics,
            valid_for,
            subscribers: Subscribers::default(),
            windows: crate::config::WindowsConfig::default(),
        }
    }

    /// This intake, giving batches that name no window those of `windows`.
    pub fn with_windows(mut self, windows: crate::config::WindowsConfig) -> Self {
        self.windows = windows;
        self
    }

    /// This intake, with each batch's events going to `subscribers`.
    pub fn with_subscribers(mut self, subscribers: Subscribers) -> Self {
        self.subscribers = subscribers;
        self
    }

    /// The deadline of a batch of `channel` through `provider` that gives `asked`
    /// (or none: the configured default), for a request taken at `now_ms` and due
    /// at `due_ms`: a span counts from when it is due. `None`: no deadline.
    pub fn deadline(
        &self,
        channel: Channel,
        provider: &str,
        asked: Option<Deadline>,
        now_ms: i64,
        due_ms: i64,
    ) -> Option<i64> {
        asked
            .or_else(|| {
                self.valid_for
                    .default_for(channel, provider)
                    .map(Deadline::After)
            })
            .map(|d| d.at_ms(due_ms.max(now_ms)))
    }

    /// The store batches go to.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Who is told of batches' events (and of replies: see
    /// [`Subscribers::wanting`]).
    pub fn subscribers(&self) -> &Subscribers {
        &self.subscribers
    }

    /// The configured providers.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Checks and stores a batch request from the API.
    pub async fn submit_request(
        &self,
        mut request: BatchRequest,
        source: &str,
        idempotency: Option<(&str, &[u8])>,
        dry_run: bool,
    ) -> Result<Submitted, Error> {
        let recipients = std::mem::take(&mut request.recipients);
        let (envelope, body) = self
            .envelope(&request, source, idempotency, dry_run)
            .await?;
        self.submit(envelope, body, recipients).await
    }

    /// Checks and stores an uploaded batch: its options in `request` (without
    /// recipients), its recipients from `chunks` (see [`Intake::submit_chunks`]).
    /// `idempotency` hashes the options, not the recipients, which have not
    /// arrived yet: a key names the upload. `at_hand`: the chunks come from memory
    /// or local disk, never waiting on a client (see [`Arrival`]).
    pub async fn submit_upload<S>(
        &self,
        request: BatchRequest,
        source: &str,
        idempotency: Option<(&str, &[u8])>,
        dry_run: bool,
        chunks: S,
        arrival: Arrival,
    ) -> Result<Submitted, Error>
    where
        S: Stream<Item = Result<Vec<RecipientSpec>, Error>> + Send + Unpin,
    {
        let (envelope, body) = self
            .envelope(&request, source, idempotency, dry_run)
            .await?;
        self.submit_chunks(envelope, body, chunks, arrival).await
    }

    /// A request's options and how its messages are made, with its stored template
    /// read.
    async fn envelope<'a>(
        &self,
        request: &'a BatchRequest,
        source: &'a str,
        idempotency: Option<(&'a str, &'a [u8])>,
        dry_run: bool,
    ) -> Result<(Envelope<'a>, Body), Error> {
        let envelope = Envelope {
            channel: request.channel,
            provider: request.provider.as_deref(),
            priority: request.priority,
            send_at: request.send_at.as_deref(),
            expires_at: request.expires_at.as_deref(),
            valid_for: request.valid_for,
            source,
            idempotency,
            dry_run,
            reject_recent_duplicates: request.reject_recent_duplicates,
            callback_url: request.callback_url.as_deref(),
            window: WindowRequest {
                window: request.window.as_deref(),
                ignore_window: request.ignore_window,
                timezone: request.timezone.as_deref(),
            },
            max_cost: request.max_cost,
        };
        let template = match (request.template.clone(), &request.template_id) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "template_id",
                    "give either template or template_id, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "template",
                    "is required, or name a stored template with template_id",
                ));
            }
            (Some(inline), None) => inline,
            (None, Some(id)) => self
                .stored_template(request.channel, id)
                .await?
                .ok_or_else(|| invalid("template_id", format!("no stored template `{id}`")))?,
        };
        Ok((envelope, Body::Template(template)))
    }

    /// `raw` as a recipient of `channel`, by the same rules as a batch's recipients.
    pub fn normalize(
        &self,
        channel: Channel,
        raw: &str,
    ) -> Result<recipient::Recipient, crate::domain::InvalidAddress> {
        recipient::normalize(channel, raw, &self.rules)
    }

    /// The stored template `id`, as a batch for `channel` uses it; `None` when there is
    /// none by that id, an error when it is for another channel.
    pub async fn stored_template(
        &self,
        channel: Channel,
        id: &str,
    ) -> Result<Option<TemplateSpec>, Error> {
        let Some(stored) = self.queue.records().template(id).await? else {
            return Ok(None);
        };
        if stored.channel != channel {
            return Err(invalid(
                "template_id",
                format!(
                    "template `{id}` is for {}, this batch is {channel}",
                    stored.channel
                ),
            ));
        }
        Ok(Some(TemplateSpec {
            body: stored.body,
            subject: stored.subject,
            stored_id: Some(stored.id),
        }))
    }

    /// The stored SMS template `id`, as a classic SMS job names it: `None` when no
    /// SMS template has that id (an e-mail template's id is, to an SMS job, the
    /// producer's own label like any other).
    pub async fn stored_sms_template(&self, id: &str) -> Result<Option<TemplateSpec>, Error> {
        match self.queue.records().template(id).await? {
            Some(stored) if stored.channel == Channel::Sms => {
                self.stored_template(Channel::Sms, id).await
            }
            _ => Ok(None),
        }
    }

    /// Checks every recipient, renders every message, and stores the batch whole.
    pub async fn submit(
        &self,
        envelope: Envelope<'_>,
        body: Body,
        recipients: Vec<RecipientSpec>,
    ) -> Result<Submitted, Error> {
        let mut intaking = self.plan(&envelope, body)?;
        if recipients.is_empty() {
            return Err(invalid("recipients", "must list at least one recipient"));
        }
        self.store_whole(&envelope, &mut intaking, recipients).await
    }

    /// Checks, renders and stores a batch whose recipients arrive in `chunks`, in
    /// order, holding one chunk at a time: a batch of a single chunk is stored
    /// whole. A bigger one that streams from a client is staged chunk by chunk and
    /// committed at the end, so memory does not grow with the batch (beyond 20
    /// bytes a recipient to find duplicates); one whose chunks are
    /// [`Arrival::AtHand`] is written in one transaction while its next chunk is
    /// checked, where the store can. A chunk that fails (bad input, the store)
    /// discards what was written: nothing of the batch is stored.
    pub async fn submit_chunks<S>(
        &self,
        envelope: Envelope<'_>,
        body: Body,
        mut chunks: S,
        arrival: Arrival,
    ) -> Result<Submitted, Error>
    where
        S: Stream<Item = Result<Vec<RecipientSpec>, Error>> + Send + Unpin,
    {
        let mut intaking = self.plan(&envelope, body)?;
        let first = chunks.next().await.transpose()?.unwrap_or_default();
        if first.is_empty() {
            return Err(invalid("recipients", "must list at least one recipient"));
        }
        let Some(second) = chunks.next().await.transpose()? else {
            return self.store_whole(&envelope, &mut intaking, first).await;
        };
        let id = BatchId::new();
        let mut sink = None;
        if !envelope.dry_run {
            let batch = intaking.batch(id, &envelope, Vec::new());
            match self.queue.begin(batch, arrival).await? {
                Begun::Staging(staging) => sink = Some(staging),
                Begun::Answered(accepted) => return Ok(answered(accepted, Value::Null)),
            }
        }
        let taken = async {
            let mut chunk = Some(first);
            let mut next = Some(second);
            while let Some(recipients) = chunk.take() {
                let started = std::time::Instant::now();
                let messages = intaking.take(self, &envelope, recipients).await?;
                let taken = started.elapsed();
                if let Some(staging) = &mut sink {
                    staging.add(messages).await?;
                }
                let handed = started.elapsed();
                chunk = match next.take() {
                    Some(later) => Some(later),
                    None => chunks.next().await.transpose()?,
                };
                tracing::debug!(?taken, ?handed, waited = ?(started.elapsed() - handed), "chunk taken");
            }
            let ahead = self.ahead(&intaking.route.name).await;
            intaking.report((!envelope.dry_run).then_some(id), &ahead)
        }
        .await;
        let report = match (taken, sink) {
            (Ok(report), kept) => {
                sink = kept;
                report
            }
            (Err(e), Some(staging)) => {
                staging.discard().await;
                return Err(e);
            }
            (Err(e), _) => return Err(e),
        };
        let committing = std::time::Instant::now();
        let Some(staging) = sink else {
            return Ok(answered(Accepted::New(id), report));
        };
        let accepted = self
            .queue
            .commit(staging, report.clone(), intaking.span())
            .await?;
        tracing::debug!(committed = ?committing.elapsed(), "batch stored");
        self.stored(&accepted, &mut intaking);
        Ok(answered(accepted, report))
    }

    /// Checks `recipients` (all of them) and stores them in one transaction.
    async fn store_whole(
        &self,
        envelope: &Envelope<'_>,
        intaking: &mut Intaking,
        recipients: Vec<RecipientSpec>,
    ) -> Result<Submitted, Error> {
        let started = std::time::Instant::now();
        let messages = intaking.take(self, envelope, recipients).await?;
        let id = BatchId::new();
        let ahead = self.ahead(&intaking.route.name).await;
        let report = intaking.report((!envelope.dry_run).then_some(id), &ahead)?;
        let prepared = started.elapsed();
        if envelope.dry_run {
            return Ok(answered(Accepted::New(id), report));
        }
        let mut batch = intaking.batch(id, envelope, messages);
        batch.report = report.clone();
        let accepted = self.queue.accept(batch).await?;
        tracing::debug!(?prepared, stored = ?(started.elapsed() - prepared), "batch submitted");
        self.stored(&accepted, intaking);
        Ok(answered(accepted, report))
    }

    /// After the store answered: a batch stored now (not a replay) is counted, and
    /// what it sends remembered.
    fn stored(&self, accepted: &Accepted, intaking: &mut Intaking) {
        if !matches!(accepted, Accepted::New(_)) {
            return;
        }
        self.metrics.accepted(
            &intaking.route.name,
            intaking.channel,
            intaking.accepted as u64,
        );
        self.remember(intaking.channel, std::mem::take(&mut intaking.remember));
    }

    /// Records what a stored batch sends, for later batches' `recent_duplicate`
    /// checks, after the answer: the batch is stored; these records are a courtesy,
    /// and a crash that loses them only lets a later duplicate through. Records older
    /// than the window are pruned on the way.
    fn remember(&self, channel: Channel, fingerprints: Vec<String>) {
        let Some(window) = self.recent_window else {
            return;
        };
        if fingerprints.is_empty() {
            return;
        }
        let queue = self.queue.clone();
        tokio::spawn(async move {
            let now = now_ms();
            if let Err(e) = queue
                .records()
                .remember_sends(channel, fingerprints, now)
                .await
            {
                tracing::warn!(error = %e, "recording recent sends failed; they will not count as recent");
            }
            let before = now - crate::domain::millis(window);
            if let Err(e) = queue.records().forget_sends_before(before).await {
                tracing::warn!(error = %e, "pruning old recent sends failed; will try again");
            }
        });
    }
}

/// The answer to a submit from what the store said.
fn answered(accepted: Accepted, report: Value) -> Submitted {
    match accepted {
        Accepted::New(_) => Submitted {
            report,
            replayed: false,
        },
        Accepted::Replayed { report, .. } => Submitted {
            report,
            replayed: true,
        },
    }
}

#[cfg(test)]
mod tests;
