//! Accepting a batch: the idempotency lookup, the arrival number, the message
//! hashes written under keys nothing refers to yet, and the commit that
//! publishes them all at once.

use std::sync::atomic::Ordering;

use redis::Value;

use super::Redis;
use super::reply::{batch_id, text, unexpected};
use super::slot::Slot;
use crate::domain::{BatchId, now_ms};
use crate::queue::outbox::subscriptions_to_stored;
use crate::queue::search::recipient_key;
use crate::queue::{Accepted, Error, NewBatch, NewMessage, Result};

/// Message hashes written per pipeline while a batch is staged.
pub(super) const STAGE_CHUNK: usize = 1_000;

/// A staged batch not committed within this time is abandoned and swept.
pub(super) const STAGING_DEADLINE_MS: i64 = 10 * 60 * 1000;

impl Redis {
    pub(super) async fn lookup(
        &self,
        key: &str,
    ) -> Result<Option<(BatchId, Option<String>, String)>> {
        let reply: Vec<Value> = self
            .scripts
            .lookup
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(key)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        match reply.as_slice() {
            [] => Ok(None),
            [id, hash, report] => Ok(Some((
                batch_id(id)?,
                text(hash)?,
                text(report)?.unwrap_or_else(|| "null".into()),
            ))),
            _ => Err(unexpected("an idempotency lookup")),
        }
    }

    /// Writes the batch's message hashes under keys nothing refers to yet. The
    /// chunks go out together on the multiplexed connection, so Redis runs them back
    /// to back instead of waiting a round trip between them.
    pub(super) async fn stage(
        &self,
        batch: &NewBatch,
        messages: &[NewMessage],
        seq: u32,
        now: i64,
    ) -> Result<()> {
        let id = batch.id.to_string();
        let calls = messages.chunks(STAGE_CHUNK).map(|chunk| {
            let mut call = self.scripts.stage.prepare_invoke();
            call.arg(&self.prefix)
                .arg(now)
                .arg(&id)
                .arg(batch.send_at_ms)
                .arg(batch.template_id.as_deref().unwrap_or(""));
            for m in chunk {
                let has = u8::from(m.reference.is_some())
                    + 2 * u8::from(m.subject.is_some())
                    + 4 * u8::from(m.vars.is_some());
                call.arg(
                    Slot {
                        seq,
                        index: m.index,
                    }
                    .member(),
                )
                .arg(&m.provider)
                .arg(&m.to)
                .arg(stored_body(batch, m))
                .arg(m.segments)
                .arg(has)
                .arg(m.reference.as_deref().unwrap_or(""))
                .arg(m.subject.as_deref().unwrap_or(""))
                .arg(m.vars.as_deref().unwrap_or(""))
                .arg(m.due_at(batch.send_at_ms))
                .arg(recipient_key(&m.to));
            }
            let mut conn = self.conn();
            async move { call.invoke_async::<()>(&mut conn).await }
        });
        futures_util::future::try_join_all(calls)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Makes a staged batch visible (the commit script), with `runs` of message
    /// indices per provider, and reads the script's answer.
    pub(super) async fn commit(
        &self,
        batch: &NewBatch,
        staged: &Layout,
        report: &str,
    ) -> Result<Accepted> {
        let (key, hash) = match &batch.idempotency {
            Some(i) => (i.key.as_str(), i.request_hash.as_str()),
            None => ("", ""),
        };
        let mut call = self.scripts.commit.prepare_invoke();
        call.arg(&self.prefix)
            .arg(now_ms())
            .arg(batch.id.to_string())
            .arg(batch.channel.as_str())
            .arg(&batch.source)
            .arg(batch.priority)
            .arg(batch.send_at_ms)
            .arg(report)
            .arg(format!("{:010}", staged.seq))
            .arg(staged.span)
            .arg(staged.total)
            .arg(key)
            .arg(hash)
            .arg(staged.reserved)
            .arg(
                batch
                    .template
                    .as_ref()
                    .map_or_else(String::new, |t| t.to_stored()),
            )
            .arg(
                batch
                    .expires_at_ms
                    .map(|at| at.to_string())
                    .unwrap_or_default(),
            )
            .arg(batch.callback_url.as_deref().unwrap_or(""))
            .arg(subscriptions_to_stored(&batch.subscriptions).unwrap_or_default())
            .arg(if staged.own_due { "1" } else { "0" })
            .arg(
                batch
                    .window
                    .as_ref()
                    .map_or_else(String::new, |w| w.to_stored()),
            )
            .arg(batch.max_cost.map_or_else(String::new, |m| m.to_string()));
        for (provider, runs) in &staged.runs {
            call.arg(provider).arg(runs.len());
            for (from, to) in runs {
                call.arg(from).arg(to);
            }
        }
        let reply: Vec<Value> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        match reply.first().map(text).transpose()?.flatten().as_deref() {
            Some("new") => Ok(Accepted::New(batch.id)),
            Some("seen") => match (reply.get(1), reply.get(2), reply.get(3)) {
                (Some(id), Some(hash), Some(report)) => {
                    let report = text(report)?.unwrap_or_else(|| "null".into());
                    replay(key, batch_id(id)?, text(hash)?, &report, batch)
                }
                _ => Err(unexpected("a batch commit")),
            },
            Some("exists") => Err(Error::Conflict(format!(
                "a batch with id {} is already stored",
                batch.id
            ))),
            Some("expired") => Err(Error::Unavailable(format!(
                "redis at {}: storing the batch took longer than {} minutes and was abandoned; submit it again",
                self.place,
                STAGING_DEADLINE_MS / 60_000
            ))),
            _ => Err(unexpected("a batch commit")),
        }
    }

    /// Allocates a batch's arrival number, recording it as staging up to `span`.
    pub(super) async fn reserve(&self, span: u32) -> Result<u32> {
        let seq: String = self
            .scripts
            .reserve
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(now_ms() + STAGING_DEADLINE_MS)
            .arg(span)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        seq.parse::<u32>()
            .ok()
            .filter(|&s| u64::from(s) <= Slot::MAX_SEQ)
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "the batch sequence of the redis store at {} is exhausted or bad (`{seq}`)",
                    self.place
                ))
            })
    }

    /// Sweeps abandoned staging when it is time, and answers a used idempotency key.
    pub(super) async fn prepare_accept(&self, batch: &NewBatch) -> Result<Option<Accepted>> {
        if now_ms() >= self.next_sweep_ms.load(Ordering::Relaxed)
            && let Err(e) = self.sweep_staging().await
        {
            tracing::warn!(error = %e, "sweeping abandoned batch staging failed; will try again");
        }
        if let Some(idem) = &batch.idempotency
            && let Some((id, hash, report)) = self.lookup(&idem.key).await?
        {
            return replay(&idem.key, id, hash, &report, batch).map(Some);
        }
        Ok(None)
    }

    pub(super) async fn accept_batch(&self, batch: NewBatch) -> Result<Accepted> {
        if let Some(replayed) = self.prepare_accept(&batch).await? {
            return Ok(replayed);
        }
        let mut layout = Layout::default();
        for m in &batch.messages {
            layout.add(m, batch.send_at_ms);
        }
        layout.seq = self.reserve(layout.span).await?;
        layout.reserved = layout.span;
        let stored = async {
            self.stage(&batch, &batch.messages, layout.seq, now_ms())
                .await?;
            self.commit(&batch, &layout, &batch.report.to_string())
                .await
        }
        .await;
        if !matches!(stored, Ok(Accepted::New(_))) {
            // Anything not committed goes; if this fails too, the sweep will do it.
            self.discard_or_leave(&layout).await;
        }
        stored
    }
}

/// span its staging entry records, how many messages, and the runs of consecutive
/// indices of each provider (rejected recipients leave gaps).
#[derive(Debug, Default)]
pub(super) struct Layout {
    pub(super) seq: u32,
    pub(super) span: u32,
    pub(super) reserved: u32,
    pub(super) total: usize,
    pub(super) runs: Vec<(String, Vec<(u32, u32)>)>,
    /// Some message is due later than the batch: see [`NewMessage::due_ms`].
    pub(super) own_due: bool,
}

impl Layout {
    /// Counts `m` in; messages come in index order.
    pub(super) fn add(&mut self, m: &NewMessage, send_at_ms: i64) {
        self.own_due |= m.due_at(send_at_ms) > send_at_ms;
        self.span = m.index + 1;
        self.total += 1;
        let runs = match self.runs.iter_mut().find(|(p, _)| *p == m.provider) {
            Some((_, runs)) => runs,
            None => {
                self.runs.push((m.provider.clone(), Vec::new()));
                &mut self.runs.last_mut().expect("just pushed").1
            }
        };
        match runs.last_mut() {
            Some((_, to)) if *to == m.index => *to += 1,
            _ => runs.push((m.index, m.index + 1)),
        }
    }
}

/// The body a message is stored with: none when its batch is stored with its
/// template, from which the handle renders the body at claim.
fn stored_body<'a>(batch: &NewBatch, m: &'a NewMessage) -> &'a str {
    match batch.template {
        Some(_) if m.vars.is_some() => "",
        _ => &m.body,
    }
}

pub(super) fn replay(
    key: &str,
    id: BatchId,
    hash: Option<String>,
    report: &str,
    batch: &NewBatch,
) -> Result<Accepted> {
    let expected = batch.idempotency.as_ref().map(|i| i.request_hash.as_str());
    if hash.as_deref() != expected {
        return Err(Error::Conflict(format!(
            "the Idempotency-Key `{key}` was used before with a different request"
        )));
    }
    let report = serde_json::from_str(report).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok(Accepted::Replayed { id, report })
}
