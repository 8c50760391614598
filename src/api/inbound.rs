//! `POST /v1/inbound/{provider}`: replies people send to the providers' numbers.
//! The provider, by its configured name, checks and reads its own request as it
//! does its receipts (Twilio's signed incoming-message webhook, Aliyun's `SmsUp`
//! push, Tencent Cloud's reply callback, the webhook's signed replies); each reply
//! is recorded once in the replies ledger, its keyword applied in the same
//! transaction, and an opt-out or opt-in is answered with the configured
//! auto-reply, stored before the provider is answered.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::error::Error;
use super::receipts::{self, fixed_answer};
use super::request::body_bytes;
use super::state::AppState;
use crate::config::ReplyRules;
use crate::provider::{InboundReply, Keyword, Keywords, ReceiptAnswer, ReceiptRequest, reply_id};
use crate::queue::{EventKind, NewReply, Recorded};

/// What replies do: the keywords and the auto-replies to them.
pub struct Replying {
    keywords: Keywords,
    opt_out_reply: Option<String>,
    opt_in_reply: Option<String>,
}

impl Replying {
    /// The SMS channel's rules, as configured.
    pub fn new(rules: &ReplyRules) -> Replying {
        Replying {
            keywords: rules.keywords(),
            opt_out_reply: rules.opt_out_reply.clone(),
            opt_in_reply: rules.opt_in_reply.clone(),
        }
    }

    fn auto_reply(&self, keyword: Keyword) -> Option<&str> {
        match keyword {
            Keyword::OptOut => self.opt_out_reply.as_deref(),
            Keyword::OptIn => self.opt_in_reply.as_deref(),
        }
    }
}

/// What became of a webhook request's replies, in counts.
#[derive(Debug, Default, serde::Serialize, schemars::JsonSchema)]
#[schemars(rename = "ReplyTally")]
pub(super) struct Tally {
    received: usize,
    /// New to the ledger.
    recorded: usize,
    /// Recorded before (the same id posted again): nothing changed.
    repeated: usize,
}

/// Records the replies of the request that provider `name` made.
pub(super) async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = body_bytes(body)?;
    let inbound = receipts::read(&state, &name, "replies", |provider| {
        provider.read_inbound(&ReceiptRequest {
            headers: &headers,
            body: &body,
        })
    })?;
    let recorded = record(&state, &name, inbound.replies).await?;
    let tally = Tally {
        received: recorded.len(),
        recorded: recorded.iter().filter(|r| r.new).count(),
        repeated: recorded.iter().filter(|r| !r.new).count(),
    };
    tracing::debug!(provider = %name, received = tally.received, recorded = tally.recorded, "replies");
    Ok(match inbound.answer {
        ReceiptAnswer::Tally => axum::Json(tally).into_response(),
        answer => fixed_answer(answer),
    })
}

/// Records provider `name`'s `replies` once each, their keywords applied, and
/// stores the auto-reply to an opt-out or opt-in.
pub(super) async fn record(
    state: &AppState,
    name: &str,
    replies: Vec<InboundReply>,
) -> Result<Vec<Recorded>, Error> {
    let replies: Vec<NewReply> = replies
        .into_iter()
        .map(|r| NewReply {
            id: reply_id(name, &r.key),
            provider: name.to_string(),
            keyword: state.replying.keywords.of(&r.from, &r.body),
            from: r.from,
            to: r.to,
            body: r.body,
            sent_at_ms: r.at_ms,
        })
        .collect();
    let recorded = state
        .queue
        .record_replies(replies, reply_endpoints(state))
        .await?;
    // Before the answer, repeats included: a crash between the reply and its
    // auto-reply makes the provider post the reply again, which stores it now.
    for Recorded { reply, .. } in &recorded {
        let Some(text) = reply.keyword.and_then(|k| state.replying.auto_reply(k)) else {
            continue;
        };
        let stored = state
            .intake
            .auto_reply(name, &reply.from, text, &reply.id)
            .await?;
        if stored.is_none() {
            tracing::warn!(provider = %name, reply = %reply.id, "no auto-reply: the provider sends only its approved templates");
        }
    }
    Ok(recorded)
}

/// The configured webhooks that want `reply` events, besides the subscriptions of
/// the batch a reply answers.
fn reply_endpoints(state: &AppState) -> Vec<String> {
    state
        .intake
        .subscribers()
        .wanting(EventKind::Reply)
        .map(str::to_owned)
        .collect()
}
