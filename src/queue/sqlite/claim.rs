//! The embedded engine's claims: the claimed rows, the rate buckets stored per
//! provider, per-recipient caps, and the template a claimed batch renders from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::connection::{light_transaction, unavailable};
use super::ledger::{BatchRef, batch_by_seq};
use super::schema::REQUEUED_STATE;
use crate::domain::{message_id, now_ms};
use crate::queue::{BatchTemplate, Claim, Claimed, Error, EventKind, Lease, Result};
use crate::ratelimit::{Bucket, Candidate, Cap, Limits, longest_window, pick, segment_bucket_key};

/// What one claim asks for: up to `limit` due messages of `provider` under a lease
/// of `lease`, within `limits`, whose buckets and caps are `owner`'s.
pub(super) struct Request {
    pub(super) provider: String,
    pub(super) owner: String,
    pub(super) limit: usize,
    pub(super) lease: Duration,
    pub(super) limits: Limits,
}

/// What claims remember of stored batches; none of it changes once stored, so
/// every handle on the store may keep its own.
#[derive(Clone, Default)]
pub(super) struct Known {
    /// Batch row → what claims need of it.
    batches: Arc<Mutex<HashMap<i64, BatchRef>>>,
    /// Batch row → the template its messages are rendered from at claim, compiled
    /// (`None`: the batch stores each body).
    templates: Arc<Mutex<HashMap<i64, Option<Arc<BatchTemplate>>>>>,
}

/// The lease a claim puts its messages under, and when it is taken.
#[derive(Clone, Copy)]
struct Leasing {
    token: i64,
    until: i64,
    now: i64,
}

/// How many messages a claim may take within its rates, and the buckets it pays
/// for what it takes.
struct Budget {
    limit: usize,
    bucket: Option<Bucket>,
    segment_key: String,
    segment_bucket: Option<Bucket>,
}

/// Claims as [`Engine::claim`](crate::queue::Engine::claim) describes, in one write
/// transaction: requeues what is due again, takes what the rates allow, leases the
/// due messages (within the recipients' caps), and pays the buckets.
pub(super) fn claim(conn: &mut Connection, request: &Request, known: &Known) -> Result<Claim> {
    let now = now_ms();
    let leasing = Leasing {
        token: fastrand::i64(..),
        until: now.saturating_add(crate::domain::millis(request.lease)),
        now,
    };
    let tx = light_transaction(conn)?;
    requeue_due(&tx, now)?;
    super::expiry::expire_pending(&tx, &request.provider, now)?;
    let budget = match budget(&tx, request, now)? {
        Ok(budget) => budget,
        Err(wait) => {
            // The requeue above stands.
            tx.commit().map_err(unavailable)?;
            return Ok(Claim::Wait(wait));
        }
    };
    let rows = lease_rows(&tx, request, budget.limit, leasing)?;
    let claimed = to_claimed(&tx, rows, &request.provider, leasing.token, known)?;
    budget.pay(&tx, &request.owner, &claimed)?;
    tx.commit().map_err(unavailable)?;
    Ok(Claim::Messages(claimed))
}

/// Returns to the queue the messages whose lease has lapsed and the unknown
/// outcomes whose time has come. A lapsed lease's request may have reached the
/// provider: its message comes back as an unknown outcome since its claim
/// (`updated_at`; renewals leave it). Those requeued into a cancelled batch end
/// `cancelled`, and are told so.
fn requeue_due(tx: &Transaction<'_>, now: i64) -> Result<()> {
    let mut cancelled = Vec::new();
    for sql in [
        format!(
            "UPDATE messages SET state = {REQUEUED_STATE}, lease = NULL, lease_until = NULL, updated_at = ?1,
                 unknown_since = COALESCE(unknown_since, updated_at)
             WHERE state = 'sending' AND lease_until <= ?1
             RETURNING id, state = 'cancelled'"
        ),
        // Unknown outcomes whose time has come are due again, like a lapsed lease.
        format!(
            "UPDATE messages SET state = {REQUEUED_STATE}, updated_at = ?1
             WHERE state = 'unknown' AND available_at <= ?1
             RETURNING id, state = 'cancelled'"
        ),
    ] {
        let mut stmt = tx.prepare_cached(&sql).map_err(unavailable)?;
        let rows = stmt
            .query_map([now], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?)))
            .map_err(unavailable)?;
        for row in rows {
            let (id, ended) = row.map_err(unavailable)?;
            if ended {
                cancelled.push(id);
            }
        }
    }
    super::record::record_message_events(tx, &cancelled, EventKind::Cancelled, None, now)
}

/// What the owner's message rate and segment rate let the claim take, or how long
/// to wait when one of them allows nothing.
fn budget(
    tx: &Transaction<'_>,
    request: &Request,
    now: i64,
) -> Result<std::result::Result<Budget, Duration>> {
    let Request {
        provider,
        owner,
        limit,
        limits,
        ..
    } = request;
    let (limit, bucket) = match &limits.rate {
        None => (*limit, None),
        Some(rate) => match rate.take(stored_bucket(tx, owner)?, now, *limit) {
            Ok((n, bucket)) => (n, Some(bucket)),
            Err(wait) => return Ok(Err(wait)),
        },
    };
    let segment_key = segment_bucket_key(owner);
    let (limit, segment_bucket) = match &limits.segments {
        None => (limit, None),
        Some(rate) => {
            let bucket = rate.refill(stored_bucket(tx, &segment_key)?, now);
            match rate.fit(&bucket, &due_segments(tx, provider, limit, now)?) {
                Ok(n) => (n, Some(bucket)),
                Err(wait) => return Ok(Err(wait)),
            }
        }
    };
    Ok(Ok(Budget {
        limit,
        bucket,
        segment_key,
        segment_bucket,
    }))
}

impl Budget {
    /// Pays `owner`'s buckets for the `claimed` messages and their segments.
    fn pay(self, tx: &Transaction<'_>, owner: &str, claimed: &[Claimed]) -> Result<()> {
        if let Some(bucket) = self.bucket {
            store_bucket(tx, owner, bucket.spend(claimed.len()))?;
        }
        if let Some(bucket) = self.segment_bucket {
            let segments = claimed.iter().map(|c| c.segments as usize).sum();
            store_bucket(tx, &self.segment_key, bucket.spend(segments))?;
        }
        Ok(())
    }
}

/// Leases up to `limit` due messages of the request's provider, in due order:
/// the first due ones, or, under per-recipient caps, those the caps allow.
fn lease_rows(
    tx: &Transaction<'_>,
    request: &Request,
    limit: usize,
    leasing: Leasing,
) -> Result<Vec<ClaimedRow>> {
    let Request {
        provider,
        owner,
        limits,
        ..
    } = request;
    let Leasing { token, until, now } = leasing;
    if limits.per_recipient.is_empty() {
        let mut stmt = tx
            .prepare_cached(
                "UPDATE messages SET state = 'sending', lease = ?1, lease_until = ?2, updated_at = ?3
                 WHERE id IN (
                     SELECT id FROM messages
                     WHERE state = 'pending' AND provider = ?4 AND available_at <= ?3
                     ORDER BY priority DESC, available_at, id LIMIT ?5)
                 RETURNING id, batch, to_addr, ref, subject, body, attempts, segments, template, vars, unknown_since,
                     charge IS NOT NULL",
            )
            .map_err(unavailable)?;
        let rows = stmt
            .query_map(
                params![token, until, now, provider, limit as i64],
                claimed_row,
            )
            .map_err(unavailable)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(unavailable)
    } else {
        let ids = pick_capped(tx, provider, owner, &limits.per_recipient, limit, now)?;
        let order: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut stmt = tx
            .prepare_cached(
                "UPDATE messages SET state = 'sending', lease = ?1, lease_until = ?2, updated_at = ?3
                 WHERE id IN (SELECT value FROM json_each(?4))
                 RETURNING id, batch, to_addr, ref, subject, body, attempts, segments, template, vars, unknown_since,
                     charge IS NOT NULL",
            )
            .map_err(unavailable)?;
        let ids = serde_json::to_string(&ids).map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut rows = stmt
            .query_map(params![token, until, now, ids], claimed_row)
            .map_err(unavailable)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(unavailable)?;
        rows.sort_unstable_by_key(|r| order.get(&r.row).copied());
        Ok(rows)
    }
}

/// The claimed messages of `rows`, leased under `token`, with what their batches
/// say of them (read once per batch and kept in `known`).
fn to_claimed(
    tx: &Transaction<'_>,
    rows: Vec<ClaimedRow>,
    provider: &str,
    token: i64,
    known: &Known,
) -> Result<Vec<Claimed>> {
    let mut claimed = Vec::with_capacity(rows.len());
    let mut cache = known.batches.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() > 10_000 {
        cache.clear();
    }
    let mut templates = known.templates.lock().unwrap_or_else(|p| p.into_inner());
    if templates.len() > 256 {
        templates.clear();
    }
    for r in rows {
        let known = match cache.get(&r.batch) {
            Some(known) => *known,
            None => {
                let known = batch_by_seq(tx, r.batch)?;
                cache.insert(r.batch, known);
                known
            }
        };
        claimed.push(Claimed {
            lease: Lease { row: r.row, token },
            id: message_id(known.id, known.index_of(r.row)),
            batch_id: known.id,
            channel: known.channel,
            provider: provider.to_owned(),
            to: r.to,
            reference: r.reference,
            subject: r.subject,
            body: r.body,
            segments: r.segments,
            vars: r.vars,
            template_id: r.template,
            attempts: r.attempts,
            unknown_since_ms: r.unknown_since,
            template: template_of(tx, &mut templates, r.batch)?,
            charged: r.charged,
            capped: known.capped,
        });
    }
    Ok(claimed)
}

/// A claimed message as the claim statements return it.
struct ClaimedRow {
    row: i64,
    batch: i64,
    to: String,
    reference: Option<String>,
    subject: Option<String>,
    body: String,
    attempts: u32,
    segments: u32,
    template: Option<String>,
    vars: Option<String>,
    unknown_since: Option<i64>,
    charged: bool,
}

fn claimed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimedRow> {
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
        charged: r.get(11)?,
    })
}

/// The template batch `seq` was stored with, if any: what the handle renders
/// each claimed message's body from. Read once per batch and kept in `known`.
fn template_of(
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
        .map(|source| BatchTemplate::from_stored(&source))
        .transpose()?;
    known.insert(seq, template.clone());
    Ok(template)
}

/// The bucket stored under `key`, if there is one yet.
fn stored_bucket(tx: &Transaction<'_>, key: &str) -> Result<Option<Bucket>> {
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

fn store_bucket(tx: &Transaction<'_>, key: &str, bucket: Bucket) -> Result<()> {
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
fn due_segments(tx: &Transaction<'_>, provider: &str, limit: usize, now: i64) -> Result<Vec<u32>> {
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

/// The times of the sends after `since` that `owner`'s caps count for each of
/// `tos`, for those that had any.
pub(super) fn recent_sends(
    conn: &Connection,
    owner: &str,
    since: i64,
    tos: &[&str],
) -> Result<HashMap<String, Vec<i64>>> {
    let tos = serde_json::to_string(tos).map_err(|e| Error::Corrupt(e.to_string()))?;
    let mut recent: HashMap<String, Vec<i64>> = HashMap::new();
    let mut stmt = conn
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
    Ok(recent)
}

/// The rows of up to `limit` due messages of `provider` that their recipients' caps
/// at `owner` allow (see [`Limits::owner`]), in due order. Defers the others to when
/// their caps allow and records a send to each chosen recipient. The caller's write
/// transaction makes capped claims take turns.
fn pick_capped(
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
    let tos: Vec<&str> = candidates.iter().map(|c| c.to.as_str()).collect();
    let recent = recent_sends(tx, owner, since, &tos)?;
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
