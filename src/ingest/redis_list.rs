//! A Redis list as an ingest source, consumed as the classic worker's `rPop` loop
//! did, but without losing or doubling an item.
//!
//! **Keys.** Producers `LPUSH` onto `key`. `BLMOVE key processing RIGHT LEFT`
//! takes the oldest item atomically into the processing list (`{key}:processing`
//! unless configured). A script then gives it a fresh number, a UUID written in
//! front of it (`{uuid}:{item}`), moving it, in the same step, to
//! `{processing}:numbered`. Its batch is stored under the idempotency key
//! `ingest:{name}:{uuid}`, and only then is the numbered item removed (`LREM`).
//! An item that can never become a batch is pushed onto the dead-letter list
//! (`{key}:dead`) with the reason and removed from the numbered list in one
//! `MULTI`.
//!
//! **Why a number.** A key derived from the item alone would merge two identical
//! jobs pushed on purpose (the same text to the same numbers twice) into one batch.
//! The number is given once, atomically with the move to the numbered list, so an
//! item the crash of a Herald left there keeps it: taken again on the next start,
//! it is submitted under the same key and answered with the batch already stored.
//! An item a crash left in the processing list, not yet numbered, has no batch
//! yet: it is numbered then.

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, Script};
use tokio_util::sync::CancellationToken;

use super::{Disposition, Handler, RETRY, dead_letter_entry, pause};
use crate::backoff::Streak;

/// How long one `BLMOVE` waits for an item: how soon a shutdown is noticed when
/// the list is empty.
const BLOCK_SECS: f64 = 1.0;

/// Moves the oldest item of the processing list (`KEYS[1]`) to the numbered list
/// (`KEYS[2]`), prefixed by its number (`ARGV[1]`) and `:`; answers the numbered
/// item, or nil when the processing list is empty.
const NUMBER: &str = r"
local item = redis.call('RPOP', KEYS[1])
if not item then return false end
local numbered = ARGV[1] .. ':' .. item
redis.call('LPUSH', KEYS[2], numbered)
return numbered
";

/// One `kind = "redis-list"` source.
pub(super) struct RedisList {
    handler: Handler,
    client: redis::Client,
    key: String,
    processing: String,
    numbered: String,
    dead: String,
    number: Script,
}

impl RedisList {
    /// Checks the URL; nothing connects until [`RedisList::run`].
    pub(super) fn new(
        handler: Handler,
        url: &str,
        key: &str,
        processing: Option<&str>,
        dead: Option<&str>,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("url: {e}"))?;
        if key.is_empty() {
            return Err("key must not be empty".into());
        }
        let processing = processing.map_or_else(|| format!("{key}:processing"), String::from);
        let dead = dead.map_or_else(|| format!("{key}:dead"), String::from);
        if [&processing, &dead].contains(&&key.to_string()) || processing == dead {
            return Err("key, processing_key and dead_letter_key must all differ".into());
        }
        Ok(RedisList {
            handler,
            client,
            key: key.to_string(),
            numbered: format!("{processing}:numbered"),
            processing,
            dead,
            number: Script::new(NUMBER),
        })
    }

    /// Consumes the list until `shutdown`, reconnecting with backoff whenever Redis
    /// cannot be reached.
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Streak::new(RETRY);
        tracing::info!(source = %self.handler.source, key = %self.key, "ingesting from a Redis list");
        while !shutdown.is_cancelled() {
            let result = match self.connect().await {
                Ok(mut conn) => self.consume(&mut conn, &shutdown, &mut backoff).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(source = %self.handler.source, error = %e, "Redis ingest interrupted; reconnecting");
                    if !pause(&mut backoff, &shutdown).await {
                        break;
                    }
                }
            }
        }
        tracing::info!(source = %self.handler.source, "Redis ingest stopped");
    }

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        // This connection is the source's own: `BLMOVE` blocks it while it waits.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
            .set_response_timeout(Some(std::time::Duration::from_secs(10)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Takes what a crash left behind, then new items, until `shutdown` (`Ok`) or
    /// a Redis error.
    async fn consume(
        &self,
        conn: &mut MultiplexedConnection,
        shutdown: &CancellationToken,
        backoff: &mut Streak,
    ) -> Result<(), RedisError> {
        // Numbered items first, oldest first (the right end), then the processing
        // list's; on a first start both are empty.
        let left: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&self.numbered)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await?;
        backoff.reset();
        if !left.is_empty() {
            tracing::info!(source = %self.handler.source, items = left.len(), "taking again the items a stop left in processing");
        }
        for numbered in left.into_iter().rev() {
            if !self.process(conn, numbered, shutdown).await? {
                return Ok(());
            }
        }
        loop {
            while let Some(numbered) = self.next_numbered(conn).await? {
                if !self.process(conn, numbered, shutdown).await? {
                    return Ok(());
                }
            }
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let _moved: Option<Vec<u8>> = redis::cmd("BLMOVE")
                .arg(&self.key)
                .arg(&self.processing)
                .arg("RIGHT")
                .arg("LEFT")
                .arg(BLOCK_SECS)
                .query_async(conn)
                .await?;
        }
    }

    /// Numbers the oldest item of the processing list; `None` when it is empty.
    async fn next_numbered(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Option<Vec<u8>>, RedisError> {
        self.number
            .key(&self.processing)
            .key(&self.numbered)
            .arg(uuid::Uuid::now_v7().to_string())
            .invoke_async(conn)
            .await
    }

    /// Turns one numbered item into a batch (retrying while the store is down)
    /// and removes it; `Ok(false)` when `shutdown` came first, the item left in
    /// place for the next start.
    async fn process(
        &self,
        conn: &mut MultiplexedConnection,
        numbered: Vec<u8>,
        shutdown: &CancellationToken,
    ) -> Result<bool, RedisError> {
        let Some(colon) = numbered.iter().position(|&b| b == b':') else {
            // Only the script writes this list; an entry without a number was put
            // there by hand: it cannot be known whether it has a batch.
            let reason = "an entry of the numbered list without its number";
            self.dead_letter(conn, &numbered, &numbered, reason).await?;
            self.handler.dead_lettered(reason, false);
            return Ok(true);
        };
        let (number, item) = (&numbered[..colon], &numbered[colon + 1..]);
        let key = format!(
            "{}:{}",
            self.handler.source,
            String::from_utf8_lossy(number)
        );
        let mut backoff = Streak::new(RETRY);
        let disposition = loop {
            match self.handler.handle(item, &key).await {
                Ok(disposition) => break disposition,
                Err(e) => {
                    tracing::warn!(source = %self.handler.source, error = %e, "the store failed; the item stays in processing and is tried again");
                    if !pause(&mut backoff, shutdown).await {
                        return Ok(false);
                    }
                }
            }
        };
        match disposition {
            Disposition::Stored { batch_id, replayed } => {
                let _: i64 = redis::cmd("LREM")
                    .arg(&self.numbered)
                    .arg(1)
                    .arg(&numbered)
                    .query_async(conn)
                    .await?;
                self.handler.stored(&batch_id, replayed);
            }
            Disposition::Dead { reason, rejected } => {
                self.dead_letter(conn, &numbered, item, &reason).await?;
                self.handler.dead_lettered(&reason, rejected);
            }
        }
        Ok(!shutdown.is_cancelled())
    }

    /// Pushes `item` with `reason` onto the dead-letter list and removes `numbered`
    /// from the numbered list, both or neither.
    async fn dead_letter(
        &self,
        conn: &mut MultiplexedConnection,
        numbered: &[u8],
        item: &[u8],
        reason: &str,
    ) -> Result<(), RedisError> {
        redis::pipe()
            .atomic()
            .cmd("LPUSH")
            .arg(&self.dead)
            .arg(dead_letter_entry(&self.handler.source, reason, item))
            .ignore()
            .cmd("LREM")
            .arg(&self.numbered)
            .arg(1)
            .arg(numbered)
            .ignore()
            .query_async::<()>(conn)
            .await
    }
}
