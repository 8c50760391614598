//! Intake: turns a submitted batch into stored messages and a report. Every
//! recipient is checked and rendered before anything is written; the batch is then
//! stored in one transaction, so a batch is stored whole or not at all.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::{Arc, LazyLock, Mutex};

use futures_util::{Stream, StreamExt};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::{BatchId, Channel, now_ms};
use crate::metrics::Metrics;
use crate::provider::{Registry, Route};
pub use crate::queue::Arrival;
use crate::queue::{
    self, Accepted, BatchTemplate, Begun, Idempotency, NewBatch, NewMessage, Queue,
};
use crate::ratelimit::Limits;
use crate::recipient::{self, Rules};
use crate::sms::{self, Encoding, Segments};
use crate::template::{RenderError, Template, Vars};

/// Priorities run from -100 (last) to 100 (first); 0 is the default.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -100..=100;
/// The longest `ref` kept for a recipient, in bytes.
const MAX_REF_BYTES: usize = 256;
/// Rendered messages a dry run's report shows.
pub const PREVIEW_MESSAGES: usize = 5;

/// A batch as the API takes it.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub channel: Channel,
    /// The text, inline; or name a stored template with `template_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(description = "Instead of `template`: a stored template.")]
    pub template_id: Option<String>,
    /// Absent in an upload's options, whose recipients come apart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<RecipientSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = *PRIORITY_RANGE.start(), max = *PRIORITY_RANGE.end()))]
    pub priority: Option<i32>,
    /// RFC 3339, e.g. `2026-12-01T08:00:00+08:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub send_at: Option<String>,
    /// Reject recipients who were sent the same message (same subject and body)
    /// within `recipients.recent_window_secs`, as `recent_duplicate`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reject_recent_duplicates: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The stored template this is, when it is one: its id is kept with the batch
    /// and each recipient's vars with its message, for providers that render it.
    #[serde(skip)]
    pub stored_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientSpec {
    #[schemars(description = "A phone number or an e-mail address.")]
    pub to: String,
    #[serde(default, skip_serializing_if = "Vars::is_empty")]
    #[schemars(description = "The template's variables.")]
    pub vars: Vars,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    #[schemars(description = "Yours: shown in the ledger, sent to the provider.")]
    pub reference: Option<String>,
}

/// How each recipient's message text is made.
pub enum Body {
    /// Rendered per recipient.
    Template(TemplateSpec),
    /// The same text for everyone, sent as is (the classic jobs' `content`, and
    /// for e-mail their `title` as the subject).
    Literal {
        subject: Option<String>,
        body: String,
    },
}

/// One recipient that will not be sent to, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rejection {
    pub index: usize,
    pub to: String,
    /// `invalid_address`, `invalid_ref`, `missing_variable`, `render_failed`,
    /// `duplicate`, `suppressed` or `recent_duplicate`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// For a `duplicate`: the index of the recipient's first occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_index: Option<usize>,
    pub detail: String,
}

/// The answer to a submit: what was (or, on a dry run, would be) stored and what not.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Report {
    /// Absent on a dry run: nothing was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uuid"))]
    pub batch_id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    pub accepted: usize,
    pub rejected: Vec<Rejection>,
    /// The rejections by reason: how many, and which indices.
    pub rejections: BTreeMap<String, Group>,
    /// The provider the accepted messages go to.
    pub provider: String,
    /// For SMS: the segments the accepted messages cost, by encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsSummary>,
    /// The estimated cost, when the provider has prices configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// How long sending the accepted messages takes at the provider's rate limit;
    /// absent when the provider has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// On a dry run: the first [`PREVIEW_MESSAGES`] accepted messages as they
    /// would be sent. Absent from a stored batch's report, which would otherwise
    /// keep message bodies in every idempotent replay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview: Vec<Preview>,
}

/// One accepted message as it would be sent, for a dry run's preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Preview {
    /// The recipient's index in the batch.
    pub index: usize,
    /// The normalized address.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
    /// For SMS: `gsm7` or `ucs2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// For SMS: the segments the message is billed as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<usize>,
}

/// The SMS segments of a batch's accepted messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SmsSummary {
    pub segments: usize,
    pub gsm7: EncodingCount,
    pub ucs2: EncodingCount,
}

/// Messages of one encoding and the segments they take.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EncodingCount {
    pub messages: usize,
    pub segments: usize,
}

impl SmsSummary {
    fn add(&mut self, s: Segments) {
        self.segments += s.segments;
        let count = match s.encoding {
            Encoding::Gsm7 => &mut self.gsm7,
            Encoding::Ucs2 => &mut self.ucs2,
        };
        count.messages += 1;
        count.segments += s.segments;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Cost {
    pub amount: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// The recipients rejected for one reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Group {
    pub count: usize,
    pub indices: Vec<usize>,
}

impl Report {
    fn new(
        batch_id: Option<BatchId>,
        route: &Route,
        accepted: usize,
        sms: Option<SmsSummary>,
        rejected: Vec<Rejection>,
        preview: Vec<Preview>,
    ) -> Report {
        let mut rejections: BTreeMap<String, Group> = BTreeMap::new();
        for r in &rejected {
            let group = rejections.entry(r.reason.clone()).or_default();
            group.count += 1;
            group.indices.push(r.index);
        }
        let segments = sms.as_ref().map_or(0, |s| s.segments);
        Report {
            batch_id: batch_id.map(|id| id.to_string()),
            dry_run: batch_id.is_none(),
            accepted,
            rejected,
            rejections,
            provider: route.name.clone(),
            cost: route.price.as_ref().map(|p| Cost {
                // Rounded to a millionth: prices are given to a few decimals.
                amount: (p.cost(accepted, segments) * 1e6).round() / 1e6,
                currency: p.currency.clone(),
            }),
            eta_seconds: eta_seconds(&route.limits, accepted, segments),
            sms,
            preview: if batch_id.is_none() {
                preview
            } else {
                Vec::new()
            },
        }
    }
}

/// How long the provider's rates take to let `messages` messages of `segments`
/// SMS segments through (to a tenth of a second); `None` without a rate.
fn eta_seconds(limits: &Limits, messages: usize, segments: usize) -> Option<f64> {
    let by_messages = limits.rate.map(|r| messages as f64 / r.per_sec);
    let by_segments = limits.segments.map(|r| segments as f64 / r.per_sec);
    let slowest = match (by_messages, by_segments) {
        (Some(a), Some(b)) => a.max(b),
        (a, b) => a.or(b)?,
    };
    Some((slowest * 10.0).round() / 10.0)
}

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
}

/// A submit's options besides the recipients.
pub struct Envelope<'a> {
    pub channel: Channel,
    pub provider: Option<&'a str>,
    pub priority: Option<i32>,
    pub send_at: Option<&'a str>,
    /// Where the batch came from: `api`, `send-sms`, …
    pub source: &'a str,
    /// The sender's `Idempotency-Key` and the raw request it came with.
    pub idempotency: Option<(&'a str, &'a [u8])>,
    /// Check and report only; store nothing.
    pub dry_run: bool,
    /// Reject recipients sent the same message within `recipients.recent_window_secs`.
    pub reject_recent_duplicates: bool,
}

impl Intake {
    pub fn new(
        queue: Queue,
        registry: Registry,
        max_recipients: usize,
        rules: Rules,
        recent_window: Option<std::time::Duration>,
        metrics: Metrics,
    ) -> Self {
        Intake {
            queue,
            registry,
            max_recipients,
            rules,
            recent_window,
            metrics,
        }
    }

    /// The store batches go to.
    pub fn queue(&self) -> &Queue {
        &self.queue
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
            source,
            idempotency,
            dry_run,
            reject_recent_duplicates: request.reject_recent_duplicates,
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
        let Some(stored) = self.queue.template(id).await? else {
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
            intaking.report((!envelope.dry_run).then_some(id))
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
        let report = intaking.report((!envelope.dry_run).then_some(id))?;
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
            if let Err(e) = queue.remember_sends(channel, fingerprints, now).await {
                tracing::warn!(error = %e, "recording recent sends failed; they will not count as recent");
            }
            let before = now - crate::domain::millis(window);
            if let Err(e) = queue.forget_sends_before(before).await {
                tracing::warn!(error = %e, "pruning old recent sends failed; will try again");
            }
        });
    }

    /// Checks a batch's options and template, before any recipient.
    fn plan(&self, envelope: &Envelope<'_>, body: Body) -> Result<Intaking, Error> {
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
        let send_at_ms = match envelope.send_at {
            None => now_ms(),
            Some(s) => s
                .parse::<Timestamp>()
                .map_err(|e| {
                    invalid(
                        "send_at",
                        format!("`{s}` is not an RFC 3339 time with an offset: {e}"),
                    )
                })?
                .as_millisecond(),
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
                    // renders the body again at claim.
                    keep_vars: true,
                    // A dry run shows bodies, and recent sends are told apart by them.
                    keep_body: true,
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
            template_id,
            stored_template,
            route: route.clone(),
            priority,
            send_at_ms,
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
        })
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

/// A batch being taken in: its plan, and what its recipients so far add up to.
struct Intaking {
    channel: Channel,
    template_id: Option<String>,
    /// The template, for an engine that renders at claim.
    stored_template: Option<BatchTemplate>,
    route: Route,
    priority: i32,
    send_at_ms: i64,
    renderer: Arc<Renderer>,
    max_recipients: usize,
    /// Recipients taken so far: the next one's index.
    seen: usize,
    /// Each recipient key's first index: later ones are duplicates.
    first: FirstSeen,
    rejected: Vec<Rejection>,
    accepted: usize,
    last_index: Option<u32>,
    sms: Option<SmsSummary>,
    /// Fingerprints of what the accepted messages send, when recent sends are
    /// remembered.
    remember: Vec<String>,
    /// The first accepted messages, for a dry run's report.
    preview: Vec<Preview>,
}

/// The first index of each recipient key, found by a hash of the key rather than
/// the key (16 bytes a recipient, so a million take about 32 MB): 64 bits of it
/// address the map and 32 more must match too; keys whose first 64 bits collide
/// with another's (about one pair in 10^7 batches of a million) are told apart by
/// all 128 bits in a side map.
#[derive(Default)]
struct FirstSeen {
    /// Keyed by 64 bits of the seeded hash itself, which need no hashing again.
    main: HashMap<u64, (u32, u32), BuildHasherDefault<Prehashed>>,
    collided: HashMap<u128, u32>,
}

/// The hasher of keys that are seeded hashes already: it passes them through.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys come here (`write_u64`); anything else still hashes.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl FirstSeen {
    /// The index of the first recipient with `key`; `None` when this is the first,
    /// and `index` is recorded as it.
    #[cfg(test)]
    fn first(&mut self, key: &str, index: u32) -> Option<u32> {
        self.first_of_hash(key_hash(key), index)
    }

    fn first_of_hash(&mut self, hash: u128, index: u32) -> Option<u32> {
        let (high, low) = ((hash >> 64) as u64, hash as u32);
        match self.main.entry(high) {
            Entry::Vacant(slot) => {
                slot.insert((low, index));
                None
            }
            Entry::Occupied(seen) if seen.get().0 == low => Some(seen.get().1),
            Entry::Occupied(_) => match self.collided.entry(hash) {
                Entry::Vacant(slot) => {
                    slot.insert(index);
                    None
                }
                Entry::Occupied(seen) => Some(*seen.get()),
            },
        }
    }
}

/// A 128-bit hash of a recipient key, for finding duplicates.
fn key_hash(key: &str) -> u128 {
    use std::hash::{BuildHasher, Hasher};
    static SEEDS: std::sync::LazyLock<(std::hash::RandomState, std::hash::RandomState)> =
        std::sync::LazyLock::new(|| (std::hash::RandomState::new(), std::hash::RandomState::new()));
    let half = |state: &std::hash::RandomState| {
        let mut h = state.build_hasher();
        h.write(key.as_bytes());
        h.finish()
    };
    (u128::from(half(&SEEDS.0)) << 64) | u128::from(half(&SEEDS.1))
}

impl Intaking {
    /// Checks and renders the next `recipients`, rejects duplicates (of these and
    /// all before), suppressed addresses and recent duplicates, measures the rest
    /// and answers them as messages to store.
    async fn take(
        &mut self,
        intake: &Intake,
        envelope: &Envelope<'_>,
        recipients: Vec<RecipientSpec>,
    ) -> Result<Vec<NewMessage>, Error> {
        let offset = self.seen;
        self.seen += recipients.len();
        if self.seen > self.max_recipients {
            return Err(Error::TooLarge {
                field: "recipients".into(),
                message: format!(
                    "has more than {} recipients, the limit per batch: split the batch",
                    self.max_recipients
                ),
            });
        }
        let mut messages = Vec::with_capacity(recipients.len());
        let mut keys = Vec::with_capacity(recipients.len());
        let mut measures = Vec::with_capacity(recipients.len());
        let checked = check_all(&self.renderer, self.channel, intake.rules, recipients);
        let mut rejected = Vec::new();
        for (index, checked) in (offset..).zip(checked) {
            let index32 = u32::try_from(index).expect("max_recipients keeps indices small");
            let checked = checked.and_then(|c| match self.first.first_of_hash(c.hash, index32) {
                None => Ok(c),
                Some(first) => Err(Rejection {
                    index,
                    detail: format!("`{}` is also recipient {first}", c.to),
                    first_index: Some(first as usize),
                    to: c.to,
                    reason: "duplicate".into(),
                    variable: None,
                }),
            });
            match checked {
                Ok(c) => {
                    keys.push(c.key);
                    measures.push(c.segments);
                    messages.push(NewMessage {
                        index: index32,
                        provider: self.route.name.clone(),
                        to: c.to,
                        reference: c.reference,
                        subject: c.subject,
                        body: c.body,
                        segments: c
                            .segments
                            .map_or(1, |m| u32::try_from(m.segments).unwrap_or(u32::MAX)),
                        vars: c.vars,
                    });
                }
                Err(r) => rejected.push(Rejection { index, ..r }),
            }
        }
        // A message's key is its address, but where a mailbox's display name sets
        // the two apart.
        let lookup: Vec<&str> = messages
            .iter()
            .zip(&keys)
            .map(|(m, key)| key.as_deref().unwrap_or(&m.to))
            .collect();
        let fingerprints: Vec<String> = if intake.recent_window.is_some() {
            messages
                .iter()
                .zip(&lookup)
                .map(|(m, key)| fingerprint(key, m))
                .collect()
        } else {
            Vec::new()
        };
        let suppressed = intake.queue.suppressed(self.channel, &lookup).await?;
        let recent = match intake.recent_window {
            Some(window) if envelope.reject_recent_duplicates => {
                let since = now_ms() - crate::domain::millis(window);
                intake
                    .queue
                    .recently_sent(self.channel, fingerprints.clone(), since)
                    .await?
            }
            _ => HashSet::new(),
        };
        let mut kept = Vec::with_capacity(messages.len());
        let mut fingerprints = fingerprints.into_iter();
        for ((message, key), measured) in messages.into_iter().zip(keys).zip(measures) {
            let fingerprint = fingerprints.next();
            let key = key.as_deref().unwrap_or(&message.to);
            let refusal = if suppressed.contains(key) {
                Some((
                    "suppressed",
                    format!("`{key}` is on the {} suppression list", self.channel),
                ))
            } else if fingerprint.as_ref().is_some_and(|f| recent.contains(f)) {
                Some((
                    "recent_duplicate",
                    format!("`{key}` was sent the same message within the last window"),
                ))
            } else {
                None
            };
            if let Some((reason, detail)) = refusal {
                rejected.push(Rejection {
                    index: message.index as usize,
                    detail,
                    to: message.to,
                    reason: reason.into(),
                    variable: None,
                    first_index: None,
                });
                continue;
            }
            if let (Some(summary), Some(measured)) = (&mut self.sms, measured) {
                summary.add(measured);
            }
            if envelope.dry_run && self.preview.len() < PREVIEW_MESSAGES {
                self.preview.push(Preview {
                    index: message.index as usize,
                    to: message.to.clone(),
                    subject: message.subject.clone(),
                    body: message.body.clone(),
                    encoding: measured.map(|m| m.encoding),
                    segments: measured.map(|m| m.segments),
                });
            }
            self.remember.extend(fingerprint);
            self.last_index = Some(message.index);
            kept.push(message);
        }
        rejected.sort_unstable_by_key(|r| r.index);
        self.rejected.extend(rejected);
        self.accepted += kept.len();
        Ok(kept)
    }

    /// One more than the highest index of an accepted message.
    fn span(&self) -> u32 {
        self.last_index.map_or(0, |i| i + 1)
    }

    /// The report of everything taken, as JSON; an error when nothing was accepted.
    fn report(&mut self, id: Option<BatchId>) -> Result<Value, Error> {
        let rejected = std::mem::take(&mut self.rejected);
        if self.accepted == 0 {
            return Err(Error::NoneAccepted(rejected));
        }
        let preview = std::mem::take(&mut self.preview);
        let report = Report::new(
            id,
            &self.route,
            self.accepted,
            self.sms.clone(),
            rejected,
            preview,
        );
        Ok(serde_json::to_value(&report).expect("a report always serializes"))
    }

    /// The batch to store, with `messages` (none when they are staged).
    fn batch(&self, id: BatchId, envelope: &Envelope<'_>, messages: Vec<NewMessage>) -> NewBatch {
        NewBatch {
            id,
            channel: self.channel,
            source: envelope.source.to_string(),
            priority: self.priority,
            send_at_ms: self.send_at_ms,
            idempotency: envelope.idempotency.map(|(key, request)| Idempotency {
                key: key.to_string(),
                request_hash: hex::encode(Sha256::digest(request)),
            }),
            report: Value::Null,
            template_id: self.template_id.clone(),
            template: self.stored_template.clone(),
            messages,
        }
    }
}

/// Who got what: the recipient key, subject and body, hashed (128 bits of SHA-256).
fn fingerprint(key: &str, message: &NewMessage) -> String {
    let mut hash = Sha256::new();
    for part in [key, message.subject.as_deref().unwrap_or(""), &message.body] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..16])
}

enum Renderer {
    Template {
        template: Box<Template>,
        /// Keep each recipient's vars with its message: for a stored template,
        /// which some providers render on their side, and for an engine that
        /// renders at claim.
        keep_vars: bool,
        /// Keep each rendered body with its message; without it, a body is
        /// rendered only to be checked and measured.
        keep_body: bool,
    },
    Literal {
        subject: Option<String>,
        body: String,
    },
}

/// A recipient ready to store.
struct Checked {
    to: String,
    /// Who it reaches, for duplicates and suppressions, where that is not `to`.
    key: Option<String>,
    /// [`key_hash`] of the key (`key`, else `to`).
    hash: u128,
    /// The SMS body's encoding and segments (`None` for e-mail).
    segments: Option<Segments>,
    reference: Option<String>,
    subject: Option<String>,
    body: String,
    vars: Option<String>,
}

/// Below this many recipients, checking on one thread is faster than splitting.
const PARALLEL_FROM: usize = 2_000;

/// Checks and renders every recipient, in order; large batches are split across
/// the machine's cores (rendering is most of the work): one part is checked on
/// the calling thread, the others by [`checkers`].
fn check_all(
    renderer: &Arc<Renderer>,
    channel: Channel,
    rules: Rules,
    recipients: Vec<RecipientSpec>,
) -> Vec<Result<Checked, Rejection>> {
    let check_part = move |renderer: &Renderer, part: Vec<RecipientSpec>| {
        part.into_iter()
            .map(|r| check(renderer, channel, &rules, r))
            .collect::<Vec<_>>()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = checkers();
    if recipients.len() < PARALLEL_FROM || threads < 2 || pool.is_none() {
        return check_part(renderer, recipients);
    }
    let chunk = recipients.len().div_ceil(threads);
    let mut recipients = recipients.into_iter();
    let mine: Vec<RecipientSpec> = recipients.by_ref().take(chunk).collect();
    let handed: Vec<_> = (1..threads)
        .map(|_| {
            let part: Vec<RecipientSpec> = recipients.by_ref().take(chunk).collect();
            let (done, answer) = std::sync::mpsc::sync_channel(1);
            let renderer = renderer.clone();
            let job: CheckJob = Box::new(move || {
                let _ = done.send(check_part(&renderer, part));
            });
            let refused = pool.and_then(|pool| {
                let jobs = pool.lock().unwrap_or_else(|p| p.into_inner());
                jobs.send(job).err()
            });
            (answer, refused)
        })
        .collect();
    let mut checked = check_part(renderer, mine);
    for (answer, refused) in handed {
        if let Some(std::sync::mpsc::SendError(job)) = refused {
            // No checker is left to take it: check it here.
            job();
        }
        checked.extend(answer.recv().expect("checking recipients does not panic"));
    }
    checked
}

type CheckJob = Box<dyn FnOnce() + Send>;

/// Threads that check parts of big batches, started at the first and kept: a
/// thread made per part paid for a new stack and allocator heap each time, and
/// for freeing from other threads what it had allocated. `None` when they cannot
/// be started; batches are then checked on their caller's thread.
fn checkers() -> Option<&'static Mutex<std::sync::mpsc::Sender<CheckJob>>> {
    static CHECKERS: LazyLock<Option<Mutex<std::sync::mpsc::Sender<CheckJob>>>> =
        LazyLock::new(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let (jobs, queue) = std::sync::mpsc::channel::<CheckJob>();
            let queue = Arc::new(Mutex::new(queue));
            let mut started = 0;
            for n in 1..threads {
                let queue = queue.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("herald-check-{n}"))
                    .spawn(move || {
                        loop {
                            let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            match job {
                                Ok(job) => job(),
                                Err(_) => return,
                            }
                        }
                    });
                started += usize::from(spawned.is_ok());
            }
            (started > 0).then(|| Mutex::new(jobs))
        });
    CHECKERS.as_ref()
}

/// Checks one recipient. A rejection's `index` is filled in by the caller.
fn check(
    renderer: &Renderer,
    channel: Channel,
    rules: &Rules,
    recipient: RecipientSpec,
) -> Result<Checked, Rejection> {
    let refuse = |reason: &str, variable: Option<String>, detail: String| Rejection {
        index: 0,
        to: recipient.to.clone(),
        reason: reason.into(),
        variable,
        first_index: None,
        detail,
    };
    let (to, key) = recipient::normalize_to(channel, &recipient.to, rules)
        .map_err(|e| refuse("invalid_address", None, e.0))?;
    if let Some(r) = &recipient.reference
        && r.len() > MAX_REF_BYTES
    {
        let detail = format!("ref is {} bytes, the limit is {MAX_REF_BYTES}", r.len());
        return Err(refuse("invalid_ref", None, detail));
    }
    let measure = |body: &str| (channel == Channel::Sms).then(|| sms::measure(body));
    let (subject, body, segments) = match renderer {
        Renderer::Literal { subject, body } => (subject.clone(), body.clone(), measure(body)),
        Renderer::Template {
            template,
            keep_body,
            ..
        } => {
            thread_local! {
                /// Bodies rendered only to be checked, one after another.
                static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
            }
            let rendered = if *keep_body {
                template
                    .render(&recipient.vars)
                    .map(|r| (r.subject, measure(&r.body), r.body))
            } else {
                SCRATCH.with_borrow_mut(|scratch| {
                    let subject = template.render_into(&recipient.vars, scratch)?;
                    Ok((subject, measure(scratch), String::new()))
                })
            };
            match rendered {
                Ok((subject, segments, body)) => (subject, body, segments),
                Err(RenderError::MissingVariable(name)) => {
                    let detail = format!(
                        "the template uses `{name}`, which this recipient's vars do not set"
                    );
                    return Err(refuse("missing_variable", Some(name), detail));
                }
                Err(RenderError::Failed(detail)) => {
                    return Err(refuse("render_failed", None, detail));
                }
            }
        }
    };
    let vars = matches!(
        renderer,
        Renderer::Template {
            keep_vars: true,
            ..
        }
    )
    .then(|| recipient.vars.into_json());
    Ok(Checked {
        segments,
        hash: key_hash(key.as_deref().unwrap_or(&to)),
        to,
        key,
        reference: recipient.reference,
        subject,
        body,
        vars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::Rate;

    #[test]
    fn duplicates_are_found_by_hash_and_colliding_hashes_told_apart() {
        let mut seen = FirstSeen::default();
        assert_eq!(seen.first("+8613800000000", 0), None);
        assert_eq!(seen.first("+8613800000001", 1), None);
        assert_eq!(seen.first("+8613800000000", 2), Some(0));
        // Two hashes alike in their first 64 bits, different after.
        let a = (7u128 << 64) | 1;
        let b = (7u128 << 64) | 2;
        assert_eq!(seen.first_of_hash(a, 10), None);
        assert_eq!(seen.first_of_hash(b, 11), None);
        assert_eq!(seen.first_of_hash(b, 12), Some(11));
        assert_eq!(seen.first_of_hash(a, 13), Some(10));
    }

    #[test]
    fn the_eta_is_the_slower_of_the_message_and_segment_rates() {
        let messages = Limits {
            rate: Some(Rate::new(100.0, None)),
            ..Limits::default()
        };
        let segments = Limits {
            segments: Some(Rate::new(50.0, None)),
            ..Limits::default()
        };
        let both = Limits {
            rate: Some(Rate::new(100.0, None)),
            segments: Some(Rate::new(50.0, None)),
            ..Limits::default()
        };
        assert_eq!(eta_seconds(&messages, 1000, 3000), Some(10.0));
        assert_eq!(eta_seconds(&segments, 1000, 3000), Some(60.0));
        assert_eq!(eta_seconds(&both, 1000, 3000), Some(60.0));
        assert_eq!(eta_seconds(&both, 1000, 1000), Some(20.0));
        assert_eq!(eta_seconds(&Limits::default(), 1000, 3000), None);
    }
}
