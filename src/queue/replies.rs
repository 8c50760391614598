//! The replies ledger: messages people sent back to the providers' numbers, each
//! stored once under its [`crate::provider::reply_id`] and linked to the latest
//! message Herald sent to that number through that provider. A reply that is an
//! opt-out keyword suppresses its number on the SMS channel in the reply's own
//! transaction (the suppression [`super::suppress::opted_out`] decides), and an
//! opt-in keyword lifts a suppression that a reply made. Every engine implements
//! the crate-private [`ReplyStore`].

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Serialize;

use super::{Claimed, EventKind, NewEvent, Outcome, Queue, Result, Settlement};
use crate::domain::{BatchId, Channel, format_ms};
use crate::provider::Keyword;

/// The `source` of the batch of an auto-reply (the answer to an opt-out or opt-in
/// reply): the one batch whose message goes to a suppressed number.
pub const AUTO_REPLY_SOURCE: &str = "auto-reply";

/// A reply to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReply {
    /// [`crate::provider::reply_id`] of its provider and key.
    pub id: String,
    /// The provider's configured name.
    pub provider: String,
    /// The sender, E.164.
    pub from: String,
    /// The number (or extension code) it was sent to, when the provider says.
    pub to: Option<String>,
    pub body: String,
    /// When the provider says it was sent (ms since the epoch), when it does.
    pub sent_at_ms: Option<i64>,
    /// The keyword it is, if it is only one.
    pub keyword: Option<Keyword>,
}

/// A reply as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: String,
    /// Its place in the ledger: later replies have higher ones.
    pub seq: i64,
    pub provider: String,
    pub from: String,
    pub to: Option<String>,
    pub body: String,
    pub sent_at_ms: Option<i64>,
    /// When Herald recorded it (ms since the epoch).
    pub received_at_ms: i64,
    pub keyword: Option<Keyword>,
    /// The latest message sent to `from` through `provider` when the reply came.
    pub answers: Option<Answered>,
}

/// The message a reply is taken to answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answered {
    pub batch_id: BatchId,
    pub message_id: String,
    pub reference: Option<String>,
}

/// What recording a reply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The reply as stored: for one recorded before, as it was then.
    pub reply: Reply,
    /// It was not in the ledger before this request.
    pub new: bool,
}

/// Which replies to list: those after `after` (a [`Reply::seq`]), from `from` when
/// given, oldest first.
#[derive(Debug, Clone, Default)]
pub struct ReplyQuery {
    pub from: Option<String>,
    pub after: Option<i64>,
    pub limit: u32,
}

impl NewReply {
    /// The reply as the ledger keeps it once recorded at `seq`, at `received_at_ms`.
    pub(crate) fn stored(self, seq: i64, received_at_ms: i64, answers: Option<Answered>) -> Reply {
        Reply {
            id: self.id,
            seq,
            provider: self.provider,
            from: self.from,
            to: self.to,
            body: self.body,
            sent_at_ms: self.sent_at_ms,
            received_at_ms,
            keyword: self.keyword,
            answers,
        }
    }
}

impl Reply {
    /// The `reply` event of a reply just recorded, about the message it answers
    /// (its engine row `message_row`, when it answers one): id `reply.{id}`, the
    /// reply as [`ReplyView`] in its payload.
    pub(crate) fn event(&self, message_row: Option<i64>) -> NewEvent {
        NewEvent {
            id: format!("reply.{}", self.id),
            kind: EventKind::Reply,
            at_ms: self.received_at_ms,
            message_row,
            code: None,
            payload: Some(
                serde_json::to_string(&ReplyView::from(self.clone()))
                    .expect("a reply's view serializes"),
            ),
        }
    }
}

/// A stored keyword, as [`Keyword::as_str`] wrote it; another is a corrupt store.
pub(crate) fn stored_keyword(keyword: Option<&str>) -> Result<Option<Keyword>> {
    keyword
        .map(|k| {
            Keyword::parse(k).ok_or_else(|| super::Error::Corrupt(format!("unknown keyword `{k}`")))
        })
        .transpose()
}

/// A stored link: the batch and message ids when the reply has one.
pub(crate) fn stored_answer(
    batch_id: Option<&str>,
    message_id: Option<String>,
    reference: Option<String>,
) -> Result<Option<Answered>> {
    match (batch_id, message_id) {
        (Some(batch), Some(message_id)) => Ok(Some(Answered {
            batch_id: super::parse_batch_id(batch)?,
            message_id,
            reference,
        })),
        _ => Ok(None),
    }
}

/// One reply as the API lists it and a `reply` event carries it (its `data`):
/// times in RFC 3339.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReplyView {
    /// The same whenever the provider posts the reply again.
    id: String,
    /// Its place in the ledger, for `after`.
    seq: i64,
    /// The provider's configured name.
    provider: String,
    /// The sender, E.164.
    from: String,
    /// The number (or extension code) it was sent to, when the provider says.
    to: Option<String>,
    body: String,
    /// `opt_out` or `opt_in` when the reply is only such a keyword.
    keyword: Option<Keyword>,
    /// When the provider says it was sent.
    sent_at: Option<String>,
    /// When Herald recorded it.
    received_at: String,
    /// The latest message sent to `from` through `provider` when the reply came.
    answers: Option<AnsweredView>,
}

/// The message a reply is taken to answer.
#[derive(Debug, Serialize, JsonSchema)]
struct AnsweredView {
    batch_id: String,
    message_id: String,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

impl From<Reply> for ReplyView {
    fn from(r: Reply) -> Self {
        ReplyView {
            id: r.id,
            seq: r.seq,
            provider: r.provider,
            from: r.from,
            to: r.to,
            body: r.body,
            keyword: r.keyword,
            sent_at: r.sent_at_ms.map(format_ms),
            received_at: format_ms(r.received_at_ms),
            answers: r.answers.map(|a| AnsweredView {
                batch_id: a.batch_id.to_string(),
                message_id: a.message_id,
                reference: a.reference,
            }),
        }
    }
}

/// The replies ledger of one engine.
#[async_trait]
pub(crate) trait ReplyStore: Send + Sync + 'static {
    /// Records, in one transaction, each of `replies` whose id is not in the ledger
    /// yet, linked to the latest message sent to its sender through its provider,
    /// with its keyword's effect on the suppression list and its `reply` event (see
    /// [`Reply::event`]) for `endpoints` and the subscriptions of the answered
    /// message's batch that want replies; one already there changes nothing. One
    /// answer per reply, in order.
    async fn record_replies(
        &self,
        replies: Vec<NewReply>,
        endpoints: Vec<String>,
        now_ms: i64,
    ) -> Result<Vec<Recorded>>;
    /// Up to `limit` replies as `query` says, oldest first.
    async fn replies(&self, query: ReplyQuery) -> Result<Vec<Reply>>;
    /// The reasons of those of `addresses` suppressed on `channel`, by address.
    async fn suppression_reasons(
        &self,
        channel: Channel,
        addresses: Vec<String>,
    ) -> Result<HashMap<String, String>>;
}

impl Queue {
    /// Takes out of `claimed` the SMS messages whose recipient is suppressed now,
    /// as one who replied STOP after they were queued is, and answers their
    /// settlements: `cancelled`, with the suppression's reason. An auto-reply's
    /// message is left to go. The common case costs one lookup of the claim's
    /// recipients (one round trip); the batches are read only for a message found
    /// suppressed.
    pub(super) async fn cancel_suppressed(
        &self,
        claimed: &mut Vec<Claimed>,
    ) -> Result<Vec<Settlement>> {
        let numbers: Vec<String> = claimed
            .iter()
            .filter(|c| c.channel == Channel::Sms)
            .map(|c| c.to.clone())
            .collect();
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        // One lookup, reasons included: it runs on every claim of SMS.
        let reasons = self
            .replies
            .suppression_reasons(Channel::Sms, numbers)
            .await?;
        if reasons.is_empty() {
            return Ok(Vec::new());
        }
        let mut exempt = HashSet::new();
        for batch in claimed
            .iter()
            .filter(|c| c.channel == Channel::Sms && reasons.contains_key(&c.to))
            .map(|c| c.batch_id)
            .collect::<HashSet<_>>()
        {
            let summary = self.engine.batch(batch).await?;
            if summary.is_some_and(|b| b.source == AUTO_REPLY_SOURCE) {
                exempt.insert(batch);
            }
        }
        let mut cancelled = Vec::new();
        claimed.retain(|c| {
            let reason = reasons
                .get(&c.to)
                .filter(|_| c.channel == Channel::Sms && !exempt.contains(&c.batch_id));
            let Some(reason) = reason else {
                return true;
            };
            // Not sent again to a number that opted out, but not said to be unsent
            // either when an earlier attempt may have reached it.
            let doubt = if c.unknown_since_ms.is_some() {
                "; an earlier attempt's outcome is unknown: it may have been sent"
            } else {
                ""
            };
            cancelled.push(Settlement {
                lease: c.lease,
                outcome: Outcome::Cancelled {
                    error: format!("suppressed: {reason}{doubt}"),
                },
                sent_by: None,
            });
            false
        });
        Ok(cancelled)
    }
}
