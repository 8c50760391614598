//! What goes in and out of the queue: a batch to store, the messages claimed
//! from it, their outcomes, and the ledger's rows.

use std::time::Duration;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::{BatchControl, BatchId, Channel, Counts, MessageState};

/// A batch ready to be stored: every message already rendered and checked.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub id: BatchId,
    pub channel: Channel,
    /// Where the batch came from: `api`, `send-sms`, …
    pub source: String,
    /// Higher goes first.
    pub priority: i32,
    /// Not before this time (ms since the epoch).
    pub send_at_ms: i64,
    /// The deadline (ms since the epoch): a message not sent by then is
    /// `expired`, never sent after it. `None`: no deadline.
    pub expires_at_ms: Option<i64>,
    pub idempotency: Option<Idempotency>,
    /// The accept report, stored so an idempotent replay answers the same.
    pub report: serde_json::Value,
    /// The stored template the batch was rendered from, if any: providers that only
    /// send their own pre-approved templates look up their code in it.
    pub template_id: Option<String>,
    /// The template the messages were rendered from (`None` for a literal body).
    /// Every engine stores it with the batch, and each message's variables rather
    /// than its body: the body is rendered again when the message is claimed, so
    /// a message's `body` may be left empty.
    pub template: Option<BatchTemplate>,
    /// Where the batch's own events go (endpoint [`CALLBACK`](super::CALLBACK)), if
    /// anywhere: an http(s) URL, checked at intake.
    pub callback_url: Option<String>,
    /// The endpoints the batch's events are recorded for, and the kinds each
    /// wants (see [`outbox`](super::outbox)); none: nothing is recorded.
    pub subscriptions: Vec<super::Subscription>,
    /// The batch's sending window, if it has one: each message is stored due when
    /// it opens (see [`NewMessage::due_ms`]), and one claimed after it closed
    /// again waits for the next opening.
    pub window: Option<crate::window::BatchWindow>,
    /// The most the batch may spend (see [`spend`](super::spend)), if capped: a
    /// message whose charge would pass it is held, with every other waiting one.
    pub max_cost: Option<super::spend::Micros>,
    pub messages: Vec<NewMessage>,
}

/// A template's sources, as a batch was rendered from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
}

impl BatchTemplate {
    /// The text every engine stores the template as: one JSON object.
    pub(crate) fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("string fields serialize")
    }

    /// A template as [`BatchTemplate::to_stored`] wrote it.
    pub(crate) fn from_stored(stored: &str) -> super::Result<Arc<BatchTemplate>> {
        serde_json::from_str(stored)
            .map(Arc::new)
            .map_err(|e| super::Error::Corrupt(format!("a batch's template is not readable: {e}")))
    }
}

/// The sender's idempotency key and a hash of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The recipient's index in the submitted list; part of the message id.
    pub index: u32,
    pub provider: String,
    pub to: String,
    pub reference: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    /// SMS segments of the body (1 for e-mail): what a per-segment rate limit counts.
    pub segments: u32,
    /// The recipient's variables as a JSON object: required when the batch has a
    /// [template](NewBatch::template), which renders the body from them at claim;
    /// `None` otherwise.
    pub vars: Option<String>,
    /// Not before this time (ms since the epoch), when later than the batch's
    /// [`send_at_ms`](NewBatch::send_at_ms): when the recipient's sending window
    /// opens. Every engine stores it as the message's due time.
    pub due_ms: Option<i64>,
}

impl NewMessage {
    /// When the message is first due, in a batch due at `send_at_ms`.
    pub(crate) fn due_at(&self, send_at_ms: i64) -> i64 {
        self.due_ms.map_or(send_at_ms, |due| due.max(send_at_ms))
    }
}

/// The answer to [`Queue::accept`].
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// Stored now.
    New(BatchId),
    /// The idempotency key was seen before with the same request: nothing stored.
    Replayed {
        id: BatchId,
        report: serde_json::Value,
    },
}

/// Identifies one lease on one message; a settlement for a lease that has since
/// expired and been claimed by someone else is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub(crate) row: i64,
    pub(crate) token: i64,
}

/// A message claimed for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub lease: Lease,
    /// Stable across repeats: the idempotency key of every delivery attempt.
    pub id: String,
    pub batch_id: BatchId,
    pub channel: Channel,
    pub provider: String,
    pub to: String,
    pub reference: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    pub segments: u32,
    /// The batch's stored template, and the recipient's variables (JSON) for it.
    pub template_id: Option<String>,
    pub vars: Option<String>,
    /// Delivery attempts made before this claim.
    pub attempts: u32,
    /// When an earlier attempt's outcome became unknown (ms since the epoch; the
    /// first such attempt's), until an outcome settles it: the worker asks the
    /// provider about that attempt before making this one.
    pub unknown_since_ms: Option<i64>,
    /// The batch's template, when the message was stored with its variables
    /// rather than its body: set by the engine, taken by the handle, which renders
    /// the body from it before the claim is answered.
    pub(crate) template: Option<Arc<BatchTemplate>>,
    /// The message carries a charge already (see [`spend`](super::spend)): it is
    /// not charged again.
    pub(crate) charged: bool,
    /// Its batch has a `max_cost`: the message is charged before it is sent.
    pub(crate) capped: bool,
}

/// The answer to a rate-limited claim.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Leased now (possibly none: nothing was due); the provider's bucket paid for them.
    Messages(Vec<Claimed>),
    /// The provider's bucket is short: nothing claimed, ask again after this long.
    Wait(Duration),
}

/// What became of one claimed message.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Accepted by the provider, with its id for the message when it gave one and
    /// the ids of the message's other parts (an SMPP long message's later
    /// segments; empty for the rest): a delivery receipt under any of them is
    /// the message's.
    Sent {
        provider_message_id: Option<String>,
        segment_ids: Vec<String>,
    },
    /// The provider says an earlier attempt, whose outcome was unknown, reached it:
    /// sent, with the id it gave that attempt. No attempt is counted (asking is none).
    Confirmed { provider_message_id: Option<String> },
    /// The request may have reached the provider but no answer came back: the
    /// message is `unknown` until `at_ms`, then due again; this attempt counts.
    Unknown { at_ms: i64, error: String },
    /// Try again at `at_ms`; this attempt counts.
    Retry { at_ms: i64, error: String },
    /// Given up; this attempt counts.
    Failed { error: String },
    /// Not attempted (shutdown, rate limit, a recipient's cap) or throttled: back
    /// to the queue until `at_ms`, no attempt counted. An `error` (a throttle's
    /// answer) is kept as the message's last error, so the ledger says why it
    /// waits; without one the last error stays as it was.
    Release { at_ms: i64, error: Option<String> },
    /// Never to be sent: its recipient was suppressed after it was queued (an
    /// opt-out reply, say). It ends `cancelled` with `error` as its last error; no
    /// attempt is counted.
    Cancelled { error: String },
}

/// One claimed message's outcome, for [`Queue::settle`].
#[derive(Debug, Clone)]
pub struct Settlement {
    pub lease: Lease,
    pub outcome: Outcome,
    /// The provider that made the attempt, when it is not the message's own (the
    /// message failed over to it). A sent message records it as its provider, so
    /// the ledger names the provider that sent it; other outcomes leave the
    /// message with its own provider, whose queue it waits in.
    pub sent_by: Option<String>,
}

/// A batch's row in the ledger.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSummary {
    pub id: BatchId,
    pub channel: Channel,
    pub source: String,
    pub control: BatchControl,
    pub priority: i32,
    pub created_at_ms: i64,
    pub send_at_ms: i64,
    /// The batch's deadline (ms since the epoch), if it has one.
    pub expires_at_ms: Option<i64>,
    pub counts: Counts,
    /// What its messages have been charged (see [`spend`](super::spend)), in the
    /// currency of the providers that carry them.
    pub spent: super::spend::Micros,
    /// Its spend cap, if it has one.
    pub max_cost: Option<super::spend::Micros>,
}

/// One message's row in the ledger.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
    pub id: String,
    pub index: u32,
    pub to: String,
    pub reference: Option<String>,
    pub state: MessageState,
    pub provider: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub sent_at_ms: Option<i64>,
    /// The code of the delivery receipt that set `delivered` / `undelivered`.
    pub receipt_code: Option<String>,
    /// When that receipt says it happened, or when it came (ms since the epoch).
    pub receipt_at_ms: Option<i64>,
    /// SMS segments of the body (1 for e-mail): what a per-segment price counts.
    #[serde(skip)]
    pub segments: u32,
}

/// Which page of a batch's messages to read: indices after `after`, in index order.
#[derive(Debug, Clone, Copy)]
pub struct MessageQuery {
    pub state: Option<MessageState>,
    pub after: Option<u32>,
    pub limit: u32,
}

/// What the sender can do to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchAction {
    Pause,
    Resume,
    Cancel,
    /// Requeue the failed and expired messages, and only those, with a fresh
    /// attempt budget, and give the batch the deadline `expires_at_ms` (ms since
    /// the epoch; `None`: none), which every unsent message of it keeps.
    Retry {
        expires_at_ms: Option<i64>,
    },
}

impl BatchAction {
    /// Why this action cannot apply to a batch under `control` whose messages
    /// are `counts`, or `None` when it can. A cancelled batch can only be
    /// cancelled again; a finished one (see [`Counts::is_finished`]) has nothing
    /// to pause, resume or cancel, and only its failed or expired messages to
    /// retry. A paused batch can always be resumed. Every engine applies this
    /// rule in the same transaction as the action, so history is never rewritten.
    pub fn refusal(self, control: BatchControl, counts: &Counts) -> Option<String> {
        let verb = match self {
            BatchAction::Pause => "pause",
            BatchAction::Resume => "resume",
            BatchAction::Cancel => "cancel",
            BatchAction::Retry { .. } => "retry",
        };
        let finished = || {
            format!(
                "the batch has finished ({} sent, {} failed, {} expired, {} cancelled): \
                 there is nothing to {verb}",
                counts.sent + counts.delivered + counts.undelivered,
                counts.failed,
                counts.expired,
                counts.cancelled,
            )
        };
        match (self, control) {
            (BatchAction::Cancel, BatchControl::Cancelled) => None,
            (_, BatchControl::Cancelled) => Some(format!(
                "the batch is cancelled: there is nothing to {verb}"
            )),
            (BatchAction::Retry { .. }, _) => {
                (counts.is_finished() && counts.failed + counts.expired == 0).then(finished)
            }
            (BatchAction::Resume, _) if counts.held > 0 => Some(format!(
                "the batch is held at its spend cap ({} messages held): resume it with a \
                 higher max_cost",
                counts.held
            )),
            (BatchAction::Resume, BatchControl::Paused) => None,
            _ => counts.is_finished().then(finished),
        }
    }
}
