//! Intake: turns a submitted batch into stored messages and a report. Every
//! recipient is checked and rendered before anything is written; the batch is then
//! stored in one transaction, so a batch is stored whole or not at all.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::domain::{Address, BatchId, Channel, now_ms};
use crate::provider::Registry;
use crate::queue::{self, Accepted, Idempotency, NewBatch, NewMessage, Queue};
use crate::template::{RenderError, Template};

/// Priorities run from -100 (last) to 100 (first); 0 is the default.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -100..=100;
/// The longest `ref` kept for a recipient, in bytes.
const MAX_REF_BYTES: usize = 256;

/// A batch as the API takes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub channel: Channel,
    pub template: TemplateSpec,
    pub recipients: Vec<RecipientSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// RFC 3339, e.g. `2026-12-01T08:00:00+08:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientSpec {
    pub to: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub vars: Map<String, Value>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// How each recipient's message text is made.
pub enum Body {
    /// Rendered per recipient.
    Template(TemplateSpec),
    /// The same text for everyone, sent as is (the seed's `/send-sms` `content`).
    Literal(String),
}

/// One recipient that will not be sent to, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub index: usize,
    pub to: String,
    /// `invalid_address`, `invalid_ref`, `missing_variable` or `render_failed`.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    pub detail: String,
}

/// The answer to a submit: what was stored and what was not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub batch_id: String,
    pub accepted: usize,
    pub rejected: Vec<Rejection>,
}

/// Why a batch was not stored. Nothing is stored in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
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
}

impl Intake {
    pub fn new(queue: Queue, registry: Registry, max_recipients: usize) -> Self {
        Intake {
            queue,
            registry,
            max_recipients,
        }
    }

    /// Checks and stores a batch request from the API.
    pub async fn submit_request(
        &self,
        request: BatchRequest,
        source: &str,
        idempotency: Option<(&str, &[u8])>,
    ) -> Result<Submitted, Error> {
        let envelope = Envelope {
            channel: request.channel,
            provider: request.provider.as_deref(),
            priority: request.priority,
            send_at: request.send_at.as_deref(),
            source,
            idempotency,
        };
        self.submit(
            envelope,
            Body::Template(request.template),
            request.recipients,
        )
        .await
    }

    /// Checks every recipient, renders every message, and stores the batch whole.
    pub async fn submit(
        &self,
        envelope: Envelope<'_>,
        body: Body,
        recipients: Vec<RecipientSpec>,
    ) -> Result<Submitted, Error> {
        let started = std::time::Instant::now();
        let batch = self.prepare(&envelope, body, recipients)?;
        let prepared = started.elapsed();
        let report = batch.report.clone();
        let accepted = self.queue.accept(batch).await?;
        tracing::debug!(?prepared, stored = ?(started.elapsed() - prepared), "batch submitted");
        match accepted {
            Accepted::New(_) => Ok(Submitted {
                report,
                replayed: false,
            }),
            Accepted::Replayed { report, .. } => Ok(Submitted {
                report,
                replayed: true,
            }),
        }
    }

    fn prepare(
        &self,
        envelope: &Envelope<'_>,
        body: Body,
        recipients: Vec<RecipientSpec>,
    ) -> Result<NewBatch, Error> {
        let channel = envelope.channel;
        if recipients.is_empty() {
            return Err(invalid("recipients", "must list at least one recipient"));
        }
        if recipients.len() > self.max_recipients {
            return Err(Error::TooLarge {
                field: "recipients".into(),
                message: format!(
                    "has {} recipients, the limit is {} per batch: split the batch",
                    recipients.len(),
                    self.max_recipients
                ),
            });
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
                Renderer::Template(Box::new(template))
            }
            Body::Literal(text) if text.trim().is_empty() => {
                return Err(invalid("content", "must not be empty"));
            }
            Body::Literal(text) => Renderer::Literal(text),
        };

        let id = BatchId::new();
        let mut messages = Vec::with_capacity(recipients.len());
        let mut rejected = Vec::new();
        for (index, checked) in check_all(&renderer, channel, recipients)
            .into_iter()
            .enumerate()
        {
            match checked {
                Ok(c) => messages.push(NewMessage {
                    index: u32::try_from(index).expect("max_recipients keeps indices small"),
                    provider: route.name.clone(),
                    to: c.to,
                    reference: c.reference,
                    subject: c.subject,
                    body: c.body,
                }),
                Err(r) => rejected.push(Rejection { index, ..r }),
            }
        }
        if messages.is_empty() {
            return Err(Error::NoneAccepted(rejected));
        }
        let report = Report {
            batch_id: id.to_string(),
            accepted: messages.len(),
            rejected,
        };
        Ok(NewBatch {
            id,
            channel,
            source: envelope.source.to_string(),
            priority,
            send_at_ms,
            idempotency: envelope.idempotency.map(|(key, request)| Idempotency {
                key: key.to_string(),
                request_hash: hex::encode(Sha256::digest(request)),
            }),
            report: serde_json::to_value(&report).expect("a report always serializes"),
            messages,
        })
    }
}

enum Renderer {
    Template(Box<Template>),
    Literal(String),
}

/// A recipient ready to store.
struct Checked {
    to: String,
    reference: Option<String>,
    subject: Option<String>,
    body: String,
}

/// Below this many recipients, checking on one thread is faster than splitting.
const PARALLEL_FROM: usize = 2_000;

/// Checks and renders every recipient, in order; large batches are split across
/// the machine's cores (rendering is most of the work).
fn check_all(
    renderer: &Renderer,
    channel: Channel,
    recipients: Vec<RecipientSpec>,
) -> Vec<Result<Checked, Rejection>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if recipients.len() < PARALLEL_FROM || threads < 2 {
        return recipients
            .into_iter()
            .map(|r| check(renderer, channel, r))
            .collect();
    }
    let chunk = recipients.len().div_ceil(threads);
    let mut recipients = recipients.into_iter();
    let chunks: Vec<Vec<RecipientSpec>> = (0..threads)
        .map(|_| recipients.by_ref().take(chunk).collect())
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|part| {
                scope.spawn(move || {
                    part.into_iter()
                        .map(|r| check(renderer, channel, r))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("checking recipients does not panic"))
            .collect()
    })
}

/// Checks one recipient. A rejection's `index` is filled in by the caller.
fn check(
    renderer: &Renderer,
    channel: Channel,
    recipient: RecipientSpec,
) -> Result<Checked, Rejection> {
    let refuse = |reason: &str, variable: Option<String>, detail: String| Rejection {
        index: 0,
        to: recipient.to.clone(),
        reason: reason.into(),
        variable,
        detail,
    };
    let to =
        Address::parse(channel, &recipient.to).map_err(|e| refuse("invalid_address", None, e.0))?;
    if let Some(r) = &recipient.reference
        && r.len() > MAX_REF_BYTES
    {
        let detail = format!("ref is {} bytes, the limit is {MAX_REF_BYTES}", r.len());
        return Err(refuse("invalid_ref", None, detail));
    }
    let (subject, body) = match renderer {
        Renderer::Literal(text) => (None, text.clone()),
        Renderer::Template(template) => match template.render(&recipient.vars) {
            Ok(r) => (r.subject, r.body),
            Err(RenderError::MissingVariable(name)) => {
                let detail =
                    format!("the template uses `{name}`, which this recipient's vars do not set");
                return Err(refuse("missing_variable", Some(name), detail));
            }
            Err(RenderError::Failed(detail)) => return Err(refuse("render_failed", None, detail)),
        },
    };
    Ok(Checked {
        to: to.into_string(),
        reference: recipient.reference,
        subject,
        body,
    })
}
