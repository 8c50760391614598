//! Finding messages across batches: every message to one address, or with one
//! `ref`, newest first, a page at a time. Every engine reads it through an index
//! of its own (SQLite and PostgreSQL: indexes on the recipient's address and on
//! `ref`; Redis: a sorted set per address and per ref), never by walking the
//! ledger, and implements the crate-private [`SearchStore`].
//!
//! A message's *position* orders the search: its batch's arrival number in the
//! high 32 bits and its index in the low ones on PostgreSQL and Redis, its row on
//! SQLite; either way a later batch's messages come after an earlier one's. The
//! API hands the last position of a full page back as the next page's cursor.

use async_trait::async_trait;

use super::{MessageRecord, Queue, Result};
use crate::domain::{BatchId, MessageState};

/// Which messages to find: those to `to` and/or with `reference` (at least one),
/// then narrowed by the rest; newest first, up to `limit`.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// The recipient's address as intake normalises it (E.164; an e-mail address
    /// without its display name), or the `erased:…` form an erasure left.
    pub to: Option<String>,
    pub reference: Option<String>,
    pub state: Option<MessageState>,
    /// Only messages created at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only messages created before this time (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Only messages at positions below this one: a page's [`Found::position`].
    pub before: Option<i64>,
    pub limit: u32,
}

/// A message a search found, with its batch and its place in the search's order.
#[derive(Debug, Clone)]
pub struct Found {
    pub batch_id: BatchId,
    /// Where the message is in the order of searches (see the module's docs):
    /// pass the last one of a page as [`SearchQuery::before`] for the next page.
    pub position: i64,
    pub message: MessageRecord,
}

/// The search seam every engine implements.
#[async_trait]
pub(crate) trait SearchStore: Send + Sync + 'static {
    /// Up to `query.limit` committed messages that `query` selects, in descending
    /// position. A batch still being staged is not searched. An index entry whose
    /// message is gone (pruned, or its staging discarded) is skipped, and removed
    /// where the engine keeps entries apart from the messages (Redis).
    async fn search(&self, query: SearchQuery) -> Result<Vec<Found>>;
}

impl Queue {
    /// Up to `query.limit` messages to an address or with a ref, across batches,
    /// newest first (see [`SearchStore::search`]); none when it names neither.
    pub async fn search(&self, query: SearchQuery) -> Result<Vec<Found>> {
        if query.limit == 0 || (query.to.is_none() && query.reference.is_none()) {
            return Ok(Vec::new());
        }
        self.searcher.search(query).await
    }
}

/// A message's recipient as searches and erasure compare it: `to` itself, or for
/// a mailbox with a display name (`Name <a@example.com>`) the address in its last
/// angle brackets. The SQL engines index the same expression.
pub(crate) fn recipient_key(to: &str) -> &str {
    match to.strip_suffix('>').and_then(|rest| rest.rsplit_once('<')) {
        Some((_, address)) => address,
        None => to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_is_keyed_by_its_address_and_anything_else_by_itself() {
        assert_eq!(
            recipient_key("Zhang San <zs@example.com>"),
            "zs@example.com"
        );
        assert_eq!(recipient_key("\"a <b>\" <c@example.com>"), "c@example.com");
        assert_eq!(recipient_key("zs@example.com"), "zs@example.com");
        assert_eq!(recipient_key("+8613800138000"), "+8613800138000");
        assert_eq!(recipient_key("odd>"), "odd>");
    }
}
