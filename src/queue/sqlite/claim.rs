//! The embedded engine's claims: the claimed rows, the rate buckets stored per
//! provider, per-recipient caps, and the template a claimed batch renders from.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{OptionalExtension, Transaction, params};

use super::connection::unavailable;
use crate::queue::{BatchTemplate, Error, Result};
use crate::ratelimit::{Bucket, Candidate, Cap, longest_window, pick};

/// A claimed message as the claim statements return it.
pub(super) struct ClaimedRow {
    pub(super) row: i64,
    pub(super) batch: i64,
    pub(super) to: String,
    pub(super) reference: Option<String>,
    pub(super) subject: Option<String>,
    pub(super) body: String,
    pub(super) attempts: u32,
    pub(super) segments: u32,
    pub(super) template: Option<String>,
    pub(super) vars: Option<String>,
    pub(super) unknown_since: Option<i64>,
}

pub(super) fn claimed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimedRow> {
    Ok(ClaimedRow {
        row: r.get(0)?,
        batch: r.get(1)?,
        to: r.get(2)?,
        reference: r.get(3)?,
        subject: r.get(4)?,
        body: r.get(5)?,
        attempts: r.get(6)?,
        segments: r.get(7)?,
        template: r.get(8)?,
        vars: r.get(9)?,
        unknown_since: r.get(10)?,
    })
}

/// The template batch `seq` was stored with, if any: what the handle renders
/// each claimed message's body from. Read once per batch and kept in `known`.
pub(super) fn template_of(
    tx: &Transaction<'_>,
    known: &mut HashMap<i64, Option<Arc<BatchTemplate>>>,
    seq: i64,
) -> Result<Option<Arc<BatchTemplate>>> {
    if let Some(template) = known.get(&seq) {
        return Ok(template.clone());
    }
    let source: Option<String> = tx
        .prepare_cached("SELECT template_source FROM batches WHERE seq = ?1")
        .and_then(|mut s| s.query_row([seq], |row| row.get(0)))
        .map_err(unavailable)?;
    let template = source
        .map(|source| {
            serde_json::from_str::<BatchTemplate>(&source)
                .map(Arc::new)
                .map_err(|e| Error::Corrupt(format!("a batch's template is not readable: {e}")))
        })
        .transpose()?;
    known.insert(seq, template.clone());
    Ok(template)
}

/// The bucket stored under `key`, if there is one yet.
pub(super) fn stored_bucket(tx: &Transaction<'_>, key: &str) -> Result<Option<Bucket>> {
    tx.prepare_cached("SELECT tokens, at FROM rate_buckets WHERE provider = ?1")
        .and_then(|mut s| {
            s.query_row([key], |r| {
                Ok(Bucket {
                    tokens: r.get(0)?,
                    at_ms: r.get(1)?,
                })
            })
            .optional()
        })
        .map_err(unavailable)
}

pub(super) fn store_bucket(tx: &Transaction<'_>, key: &str, bucket: Bucket) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO rate_buckets (provider, tokens, at) VALUES (?1, ?2, ?3)
         ON CONFLICT (provider) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
    )
    .and_then(|mut s| s.execute(params![key, bucket.tokens, bucket.at_ms]))
    .map_err(unavailable)?;
    Ok(())
}

/// The segments of up to `limit` due messages of `provider`, in due order: what a
/// claim of them would cost under a segment rate.
pub(super) fn due_segments(
    tx: &Transaction<'_>,
    provider: &str,
    limit: usize,
    now: i64,
) -> Result<Vec<u32>> {
    tx.prepare_cached(
        "SELECT segments FROM messages
         WHERE state = 'pending' AND provider = ?1 AND available_at <= ?2
         ORDER BY priority DESC, available_at, id LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(params![provider, now, limit as i64], |r| r.get(0))?
            .collect()
    })
    .map_err(unavailable)
}

/// The rows of up to `limit` due messages of `provider` that their recipients' caps
/// at `owner` allow (see [`Limits::owner`]), in due order. Defers the others to when
/// their caps allow and records a send to each chosen recipient. The caller's write
/// transaction makes capped claims take turns.
pub(super) fn pick_capped(
    tx: &Transaction<'_>,
    provider: &str,
    owner: &str,
    caps: &[Cap],
    limit: usize,
    now: i64,
) -> Result<Vec<i64>> {
    let candidates = tx
        .prepare_cached(
            "SELECT id, to_addr FROM messages
             WHERE state = 'pending' AND provider = ?1 AND available_at <= ?2
             ORDER BY priority DESC, available_at, id LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![provider, now, limit as i64], |r| {
                Ok(Candidate {
                    key: r.get::<_, i64>(0)?,
                    to: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(unavailable)?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let since = now - longest_window(caps);
    let tos = serde_json::to_string(&candidates.iter().map(|c| &c.to).collect::<Vec<_>>())
        .map_err(|e| Error::Corrupt(e.to_string()))?;
    let mut recent: HashMap<String, Vec<i64>> = HashMap::new();
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT to_addr, at FROM recipient_sends
                 WHERE provider = ?1 AND at > ?2 AND to_addr IN (SELECT value FROM json_each(?3))",
            )
            .map_err(unavailable)?;
        let rows = stmt
            .query_map(params![owner, since, tos], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(unavailable)?;
        for row in rows {
            let (to, at) = row.map_err(unavailable)?;
            recent.entry(to).or_default().push(at);
        }
    }
    let picked = pick(caps, candidates, recent, now);
    {
        let mut defer = tx
            .prepare_cached("UPDATE messages SET available_at = ?2, updated_at = ?3 WHERE id = ?1")
            .map_err(unavailable)?;
        for (id, at) in &picked.defer {
            defer.execute(params![id, at, now]).map_err(unavailable)?;
        }
        let mut record = tx
            .prepare_cached(
                "INSERT INTO recipient_sends (provider, to_addr, at) VALUES (?1, ?2, ?3)",
            )
            .map_err(unavailable)?;
        for chosen in &picked.claim {
            record
                .execute(params![owner, chosen.to, now])
                .map_err(unavailable)?;
        }
    }
    tx.prepare_cached(
        "DELETE FROM recipient_sends WHERE rowid IN (
             SELECT rowid FROM recipient_sends WHERE provider = ?1 AND at <= ?2 LIMIT 1000)",
    )
    .and_then(|mut s| s.execute(params![owner, since]))
    .map_err(unavailable)?;
    Ok(picked.claim.into_iter().map(|c| c.key).collect())
}
