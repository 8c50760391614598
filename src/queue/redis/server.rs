//! What opening a store checks on the server: the key layout's version, the
//! batch index, the durability settings; and what a failed command tells the
//! operator to check.

use redis::RedisError;

use super::Redis;
use super::keyspace::{Scan, glob_escape};
use crate::domain::BatchId;
use crate::queue::search::recipient_key;
use crate::queue::{Error, Result};

/// The key layout this build reads and writes.
const LAYOUT_VERSION: &str = "6";

/// The layouts this one extends: a store of one is upgraded in place when opened
/// (version 2 stores a template batch's template once and its messages' vars
/// without their bodies, which a build of version 1 would send empty; version 3
/// adds batch deadlines and the `expired` state, which older builds cannot read;
/// version 4 adds batch subscriptions, whose events older builds would not record;
/// version 5 adds spend caps and charges, and the `held` state, which older builds
/// would neither refund nor read; version 6 adds the search indexes `to:` and `ref:`, which older builds would
/// not fill, so their messages could not be found nor erased).
const PREVIOUS_LAYOUT_VERSIONS: [&str; 5] = ["1", "2", "3", "4", "5"];

impl Redis {
    pub(super) async fn check_layout(&self) -> Result<()> {
        let key = self.key("version");
        let version = self.set_once(&key, LAYOUT_VERSION).await?;
        match version.as_deref() {
            Some(LAYOUT_VERSION) => Ok(()),
            Some(old) if PREVIOUS_LAYOUT_VERSIONS.contains(&old) => {
                // Nothing stored changes meaning: only new batches use the new fields.
                let () = redis::cmd("SET")
                    .arg(&key)
                    .arg(LAYOUT_VERSION)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok(())
            }
            other => Err(Error::Corrupt(format!(
                "the redis store at {} (prefix `{}`) has layout version {}, this herald knows {LAYOUT_VERSION}: \
                 upgrade herald or use another prefix",
                self.place,
                self.prefix.trim_end_matches(':'),
                other.unwrap_or("none"),
            ))),
        }
    }

    /// Adds the batches stored before the `batches` index existed to it, once per
    /// store: their hashes are found by `SCAN`. Batches committed meanwhile add
    /// themselves.
    pub(super) async fn index_batches(&self) -> Result<()> {
        let marker = self.key("batches-indexed");
        if self.marked(&marker).await? {
            return Ok(());
        }
        let head = self.key("b:");
        let mut conn = self.conn();
        let mut scan = Scan::new(format!("{}*", glob_escape(&head)));
        while let Some(keys) = scan.next_page(&mut conn).await.map_err(|e| self.fail(e))? {
            let ids: Vec<&str> = keys
                .iter()
                .filter_map(|k| k.strip_prefix(&head))
                .filter(|id| BatchId::parse(id).is_some())
                .collect();
            if !ids.is_empty() {
                let mut zadd = redis::cmd("ZADD");
                zadd.arg(self.key("batches"));
                for id in ids {
                    zadd.arg(0).arg(id);
                }
                zadd.query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| self.fail(e))?;
            }
        }
        self.mark(&marker).await
    }

    /// Adds the messages stored before the search indexes existed (layout 6) to
    /// `to:{address}` and `ref:{ref}`, once per store: their hashes are found by
    /// `SCAN`, a page at a time. Messages staged meanwhile add themselves.
    pub(super) async fn index_messages(&self) -> Result<()> {
        let marker = self.key("messages-indexed");
        if self.marked(&marker).await? {
            return Ok(());
        }
        let head = self.key("m:");
        let mut conn = self.conn();
        let mut scan = Scan::new(format!("{}*", glob_escape(&head)));
        while let Some(keys) = scan.next_page(&mut conn).await.map_err(|e| self.fail(e))? {
            if keys.is_empty() {
                continue;
            }
            let mut read = redis::pipe();
            for key in &keys {
                read.cmd("HMGET").arg(key).arg("to").arg("ref");
            }
            let fields: Vec<(Option<String>, Option<String>)> = read
                .query_async(&mut conn)
                .await
                .map_err(|e| self.fail(e))?;
            let mut write = redis::pipe();
            let mut added = 0;
            for (key, (to, reference)) in keys.iter().zip(fields) {
                let Some(member) = key.strip_prefix(&head) else {
                    continue;
                };
                if let Some(to) = to {
                    let index = self.key(&format!("to:{}", recipient_key(&to)));
                    write.cmd("ZADD").arg(index).arg(0).arg(member).ignore();
                    added += 1;
                }
                if let Some(reference) = reference {
                    let index = self.key(&format!("ref:{reference}"));
                    write.cmd("ZADD").arg(index).arg(0).arg(member).ignore();
                    added += 1;
                }
            }
            if added == 0 {
                continue;
            }
            write
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.fail(e))?;
        }
        self.mark(&marker).await
    }

    /// The value of `key`, set to `value` first when it had none: of processes
    /// racing to set it, the first wins and all read its value.
    pub(super) async fn set_once(&self, key: &str, value: &str) -> Result<Option<String>> {
        let (stored,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(key)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(stored)
    }

    /// Whether the once-per-store step `marker` names was done.
    async fn marked(&self, marker: &str) -> Result<bool> {
        redis::cmd("EXISTS")
            .arg(marker)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    /// Records that the once-per-store step `marker` names was done.
    async fn mark(&self, marker: &str) -> Result<()> {
        redis::cmd("SET")
            .arg(marker)
            .arg(1)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    /// Warns, saying what to set, when the server would lose acknowledged writes.
    pub(super) async fn check_durability(&self) {
        let mut settings = std::collections::HashMap::new();
        for name in ["appendonly", "appendfsync", "maxmemory-policy"] {
            let answer: redis::RedisResult<std::collections::HashMap<String, String>> =
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async(&mut self.conn())
                    .await;
            match answer {
                Ok(values) => settings.extend(values),
                Err(e) => {
                    tracing::warn!(
                        store = %self.place, error = %e,
                        "cannot read the Redis durability settings (CONFIG GET is refused); make sure the server runs \
                         with `appendonly yes`, `appendfsync always` and `maxmemory-policy noeviction`, \
                         or accepted messages can be lost"
                    );
                    return;
                }
            }
        }
        for warning in durability_warnings(&settings) {
            tracing::warn!(store = %self.place, "{warning}");
        }
    }
}

pub(super) fn failure(place: &str, e: RedisError) -> Error {
    let hint = if e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
    {
        "check the user name and password in the store URL"
    } else if e.code() == Some("READONLY") {
        "the URL points at a read-only replica: use the primary"
    } else if e.code() == Some("OOM") {
        "the server reached maxmemory: give it more memory (with maxmemory-policy noeviction)"
    } else if e.code() == Some("LOADING") {
        "the server is loading its data: try again shortly"
    } else if e.is_timeout() {
        "the server did not answer in time: check that it is not overloaded or blocked"
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        "check that the server is running and reachable at that address"
    } else {
        "check the server's log"
    };
    Error::Unavailable(format!("redis at {place}: {e}; {hint}"))
}

/// What to tell the operator about the server's settings, from `CONFIG GET`.
pub(super) fn durability_warnings(
    settings: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    let get = |name: &str| settings.get(name).map(String::as_str);
    let mut warnings = Vec::new();
    match (get("appendonly"), get("appendfsync")) {
        (Some("yes"), Some("always")) => {}
        (Some("yes"), Some("everysec")) => warnings.push(
            "Redis fsyncs its append-only file once a second (`appendfsync everysec`): a crash or power loss \
             can lose up to ~1 s of accepted batches and delivery outcomes; set `appendfsync always` for no loss"
                .to_owned(),
        ),
        (Some("yes"), other) => warnings.push(format!(
            "Redis leaves fsync to the OS (`appendfsync {}`): a crash or power loss can lose accepted batches \
             and delivery outcomes; set `appendfsync always`",
            other.unwrap_or("?")
        )),
        _ => warnings.push(
            "Redis does not log writes to disk (`appendonly no`): accepted batches and delivery outcomes are \
             lost if the server stops; set `appendonly yes` and `appendfsync always` \
             (redis.conf, or CONFIG SET then CONFIG REWRITE)"
                .to_owned(),
        ),
    }
    if let Some(policy) = get("maxmemory-policy")
        && policy.starts_with("allkeys")
    {
        warnings.push(format!(
            "Redis may evict queue keys when full (`maxmemory-policy {policy}`): set `maxmemory-policy noeviction`"
        ));
    }
    warnings
}
