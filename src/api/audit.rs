//! The audit trail in the API: who the caller is ([`Actor`], which the token
//! check puts on every request it lets through), recording an action's outcome
//! ([`audited`]), and `GET /v1/audit`, newest first with a cursor.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::Error;
use super::request::{DEFAULT_PAGE, MAX_PAGE, next_cursor, page_limit, query_params};
use super::state::AppState;
use crate::audit::{Actor, AuditAction, AuditEntry, AuditQuery, Outcome};
use crate::domain::format_ms;

/// The caller as the token check found it: the token's name, or `anonymous`
/// when the server asks for none.
impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Actor, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Actor>()
            .cloned()
            .unwrap_or_else(Actor::anonymous))
    }
}

/// Records that `actor` did `action` to `target`, ending as `result` says (`ok`
/// or its error's status), right after the action; hands `result` back.
pub(super) async fn audited<T>(
    state: &AppState,
    actor: &Actor,
    action: AuditAction,
    target: &str,
    result: Result<T, Error>,
) -> Result<T, Error> {
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Status(e.status().as_u16()),
    };
    state.audit.record(actor, action, target, outcome).await;
    result
}

/// How many addresses an entry's target names before it counts the rest.
const NAMED_ADDRESSES: usize = 10;

/// The target of an action on `addresses`: the first few, then how many more.
pub(super) fn addresses_target<S: AsRef<str>>(addresses: &[S]) -> String {
    let mut named: Vec<&str> = addresses
        .iter()
        .take(NAMED_ADDRESSES)
        .map(AsRef::as_ref)
        .collect();
    let more = addresses.len().saturating_sub(NAMED_ADDRESSES);
    let more = format!("and {more} more");
    if addresses.len() > NAMED_ADDRESSES {
        named.push(&more);
    }
    named.join(", ")
}

/// `?action=&actor=&before=&limit=`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct Params {
    /// Only this action: `submit`, `pause`, `resume`, `cancel`, `retry`,
    /// `template.create`, `template.update`, `template.delete`,
    /// `suppression.add`, `suppression.remove`, `erase`, `webhook.replay`,
    /// `token.rejected`.
    #[schemars(with = "Option<AuditAction>")]
    action: Option<String>,
    /// Only this actor: a token's name, `anonymous` or `unknown`.
    actor: Option<String>,
    /// A page's `next_before`: the entries recorded before that one.
    before: Option<i64>,
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    limit: Option<u32>,
}

/// One recorded action.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "AuditEntry")]
pub(super) struct EntryView {
    /// Its place in the trail: later entries have higher ones.
    seq: i64,
    #[schemars(extend("format" = "date-time"))]
    at: String,
    /// The token's name, `anonymous` (no tokens configured), `cli` (the command
    /// line on the store) or `unknown` (a token that was refused).
    actor: String,
    action: String,
    /// What it acted on: a batch id, a template id, addresses, a webhook
    /// endpoint, or the path a refused token asked for.
    target: String,
    /// `ok`, or the HTTP status the action was refused with.
    result: String,
}

impl From<AuditEntry> for EntryView {
    fn from(e: AuditEntry) -> Self {
        EntryView {
            seq: e.seq,
            at: format_ms(e.at_ms),
            actor: e.actor,
            action: e.action,
            target: e.target,
            result: e.result,
        }
    }
}

/// A page of the audit trail.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "AuditPage")]
pub(super) struct Page {
    entries: Vec<EntryView>,
    /// Pass as `before` for the next (older) page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<i64>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Page>, Error> {
    let query = query_params(query)?;
    let limit = page_limit(query.limit)?;
    let action = query
        .action
        .map(|name| {
            AuditAction::parse(&name).ok_or_else(|| Error::Invalid {
                field: "action".into(),
                message: format!(
                    "`{name}` is not an action: use one of {}",
                    AuditAction::ALL.map(AuditAction::as_str).join(", ")
                ),
            })
        })
        .transpose()?;
    let page = state
        .audit
        .list(AuditQuery {
            action,
            actor: query.actor,
            before: query.before,
            limit,
        })
        .await?;
    let next_before = next_cursor(&page, limit, |e| e.seq);
    Ok(Json(Page {
        entries: page.into_iter().map(EntryView::from).collect(),
        next_before,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_of_addresses_names_ten_and_counts_the_rest() {
        let few = ["+8613800000001", "+8613800000002"];
        assert_eq!(addresses_target(&few), "+8613800000001, +8613800000002");
        let many: Vec<String> = (0..12).map(|i| format!("a{i}@example.com")).collect();
        let target = addresses_target(&many);
        assert!(target.starts_with("a0@example.com, "), "{target}");
        assert!(target.ends_with("a9@example.com, and 2 more"), "{target}");
    }
}
