//! `GET /v1/replies`: the replies ledger, oldest first, each with the message it
//! answers (its batch, message id and `ref`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::Error;
use super::request::{DEFAULT_PAGE, MAX_PAGE, next_cursor, page_limit, query_params};
use super::state::AppState;
use crate::queue::{ReplyQuery, ReplyView};

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
    let next_after = next_cursor(&page, limit, |r| r.seq);
    Ok(Json(Page {
        replies: page.into_iter().map(ReplyView::from).collect(),
        next_after,
    }))
}
