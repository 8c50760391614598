//! Walking and deleting keys a bounded step at a time: a `SCAN MATCH` walk page by
//! page, and `UNLINK` in chunks, so that no command holds the server for long.

use redis::RedisResult;
use redis::aio::ConnectionLike;

/// Keys per `UNLINK`, and about how many keys a `SCAN` step looks at.
const STEP: usize = 1_000;

/// `text` as a `SCAN MATCH` pattern that matches only itself.
pub(super) fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A walk over the keys that match a `SCAN MATCH` pattern, a page at a time. It
/// ends after one pass over the keyspace: a key added or removed meanwhile may or
/// may not be seen.
pub(super) struct Scan {
    pattern: String,
    /// `None` once the walk is over.
    cursor: Option<u64>,
}

impl Scan {
    pub(super) fn new(pattern: String) -> Scan {
        Scan {
            pattern,
            cursor: Some(0),
        }
    }

    /// The next page of keys (perhaps empty), or `None` when the walk is over.
    pub(super) async fn next_page<C: ConnectionLike>(
        &mut self,
        conn: &mut C,
    ) -> RedisResult<Option<Vec<String>>> {
        let Some(cursor) = self.cursor else {
            return Ok(None);
        };
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(STEP)
            .query_async(conn)
            .await?;
        self.cursor = (next != 0).then_some(next);
        Ok(Some(keys))
    }
}

/// Deletes `keys`, a bounded number per command.
pub(super) async fn unlink<C: ConnectionLike>(conn: &mut C, keys: &[String]) -> RedisResult<()> {
    for chunk in keys.chunks(STEP) {
        redis::cmd("UNLINK")
            .arg(chunk)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(())
}
