//! Ledgers as CSV (`?format=csv` on a batch's messages and on a search): UTF-8
//! with a byte-order mark, so that spreadsheet programs read Chinese and other
//! non-ASCII text right, a header row, then one row per message. The body is
//! streamed a page of the store at a time: however many messages, a response
//! holds one page of them.

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::state::AppState;
use crate::domain::{BatchId, MessageState, format_ms};
use crate::queue::{MessageQuery, MessageRecord, SearchQuery};

/// Messages read from the store per page of the stream.
const PAGE: u32 = 1_000;

/// The columns, in order.
pub const HEADER: [&str; 16] = [
    "id",
    "batch_id",
    "index",
    "to",
    "ref",
    "state",
    "provider",
    "provider_message_id",
    "attempts",
    "created_at",
    "sent_at",
    "delivered_at",
    "cost",
    "currency",
    "receipt_code",
    "last_error",
];

/// What a CSV export reads, page by page.
pub(super) enum Source {
    /// A batch's messages in index order.
    Batch {
        id: BatchId,
        state: Option<MessageState>,
        /// Only indices after this one.
        after: Option<u32>,
    },
    /// A search's messages, newest first.
    Search(SearchQuery),
}

/// Where the stream is: the next page's cursor, or done.
enum Cursor {
    Batch(Option<u32>),
    Search(Option<i64>),
    Done,
}

/// The response: `filename`'s CSV, streamed from `source`.
pub(super) fn respond(state: AppState, source: Source, filename: &str) -> Response {
    let start = match source {
        Source::Batch { after, .. } => Cursor::Batch(after),
        Source::Search(_) => Cursor::Search(None),
    };
    let mut head = "\u{feff}".as_bytes().to_vec();
    head.extend(row(HEADER.iter().copied()));
    let first = futures_util::stream::once(async move { Ok(Bytes::from(head)) });
    let pages = futures_util::stream::unfold(
        (state, source, start),
        |(state, source, cursor)| async move {
            let (messages, next) = match next_page(&state, &source, cursor).await {
                Ok(Some(page)) => page,
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!(error = %e, "a CSV export stopped: the store failed");
                    return Some((Err(std::io::Error::other(e)), (state, source, Cursor::Done)));
                }
            };
            let mut bytes = Vec::with_capacity(messages.len() * 160);
            for (batch, m) in &messages {
                bytes.extend(message_row(&state, *batch, m));
            }
            Some((Ok(Bytes::from(bytes)), (state, source, next)))
        },
    );
    let body = Body::from_stream(futures_util::StreamExt::chain(first, pages));
    (
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The next page and the cursor after it; `None` when there is none.
async fn next_page(
    state: &AppState,
    source: &Source,
    cursor: Cursor,
) -> crate::queue::Result<Option<(Vec<(BatchId, MessageRecord)>, Cursor)>> {
    match (source, cursor) {
        (_, Cursor::Done) => Ok(None),
        (
            Source::Batch {
                id, state: only, ..
            },
            Cursor::Batch(after),
        ) => {
            let query = MessageQuery {
                state: *only,
                after,
                limit: PAGE,
            };
            let page = state.queue.messages(*id, query).await?;
            let next = match page.last() {
                Some(last) if page.len() == PAGE as usize => Cursor::Batch(Some(last.index)),
                _ => Cursor::Done,
            };
            if page.is_empty() {
                return Ok(None);
            }
            Ok(Some((page.into_iter().map(|m| (*id, m)).collect(), next)))
        }
        (Source::Search(query), Cursor::Search(before)) => {
            let query = SearchQuery {
                before: before.or(query.before),
                limit: PAGE,
                ..query.clone()
            };
            let page = state.queue.search(query).await?;
            let next = match page.last() {
                Some(last) if page.len() == PAGE as usize => Cursor::Search(Some(last.position)),
                _ => Cursor::Done,
            };
            if page.is_empty() {
                return Ok(None);
            }
            Ok(Some((
                page.into_iter().map(|f| (f.batch_id, f.message)).collect(),
                next,
            )))
        }
        (_, _) => Ok(None),
    }
}

/// One message's row: times in RFC 3339 UTC; the cost by its provider's
/// configured price when it was sent and the price is known.
fn message_row(state: &AppState, batch: BatchId, m: &MessageRecord) -> Vec<u8> {
    let was_sent = matches!(
        m.state,
        MessageState::Sent | MessageState::Delivered | MessageState::Undelivered
    );
    let price = state
        .intake
        .registry()
        .route(&m.provider)
        .and_then(|r| r.price.as_ref())
        .filter(|_| was_sent);
    let cost = price
        .map(|p| format!("{}", p.cost(1, m.segments as usize)))
        .unwrap_or_default();
    let currency = price.and_then(|p| p.currency.clone()).unwrap_or_default();
    let delivered_at = m
        .receipt_at_ms
        .filter(|_| m.state == MessageState::Delivered)
        .map(format_ms)
        .unwrap_or_default();
    row([
        m.id.as_str(),
        &batch.to_string(),
        &m.index.to_string(),
        &m.to,
        m.reference.as_deref().unwrap_or(""),
        m.state.as_str(),
        &m.provider,
        m.provider_message_id.as_deref().unwrap_or(""),
        &m.attempts.to_string(),
        &format_ms(m.created_at_ms),
        &m.sent_at_ms.map(format_ms).unwrap_or_default(),
        &delivered_at,
        &cost,
        &currency,
        m.receipt_code.as_deref().unwrap_or(""),
        m.last_error.as_deref().unwrap_or(""),
    ])
}

/// `fields` as one CSV record, quoted where they need it, ending in CRLF.
fn row<'a>(fields: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer
        .write_record(fields)
        .expect("writing to memory cannot fail");
    writer.into_inner().expect("flushing to memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_commas_quotes_and_line_breaks_are_quoted_and_chinese_is_kept() {
        let line = row(["a,b", "say \"hi\"", "two\nlines", "张三", ""]);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",张三,\r\n"
        );
    }
}
