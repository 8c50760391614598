//! `GET /v1/replies`: the replies ledger, oldest first, each with the message it
//! answers (its batch, message id and `ref`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::Error;
use super::request::{DEFAULT_PAGE, MAX_PAGE, page_limit, query_params};
use super::state::AppState;
use crate::domain::format_ms;
use crate::provider::Keyword;
use crate::queue::{Answered, Reply, ReplyQuery};

/// `?from=&after=&limit=`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct Params {
    /// Only the replies of this sender (E.164, `+` written `%2B`).
    from: Option<String>,
    /// A page's `next_after`: the replies recorded after that one.
    after: Option<i64>,
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    limit: Option<u32>,
}

/// One reply.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ReplyView {
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
            answers: r.answers.map(|a: Answered| AnsweredView {
                batch_id: a.batch_id.to_string(),
                message_id: a.message_id,
                reference: a.reference,
            }),
        }
    }
}

/// A page of replies.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "ReplyPage")]
pub(super) struct Page {
    replies: Vec<ReplyView>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<i64>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Page>, Error> {
    let query = query_params(query)?;
    let limit = page_limit(query.limit)?;
    let page = state
        .queue
        .replies(ReplyQuery {
            from: query.from,
            after: query.after,
            limit,
        })
        .await?;
    let next_after = (page.len() == limit as usize)
        .then(|| page.last().map(|r| r.seq))
        .flatten();
    Ok(Json(Page {
        replies: page.into_iter().map(ReplyView::from).collect(),
        next_after,
    }))
}
