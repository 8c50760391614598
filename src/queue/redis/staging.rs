//! A batch staged chunk by chunk ([`RedisStaging`]), and the sweep that removes
//! the message hashes of a staging whose writer stopped before committing.

use std::sync::atomic::Ordering;

use async_trait::async_trait;

use super::Redis;
use super::accept::{Layout, STAGING_DEADLINE_MS};
use super::keyspace::unlink;
use super::slot::Slot;
use crate::domain::now_ms;
use crate::queue::{Accepted, Arrival, Begun, Error, NewBatch, NewMessage, Result, Stage, Staging};

/// How often `accept` also sweeps abandoned staging.
const SWEEP_EVERY_MS: i64 = 60 * 1000;

impl Redis {
    /// Deletes the message hashes of batches whose staging was abandoned (the process
    /// writing them stopped before committing).
    pub(super) async fn sweep_staging(&self) -> Result<()> {
        let now = now_ms();
        self.next_sweep_ms
            .store(now + SWEEP_EVERY_MS, Ordering::Relaxed);
        let staging = self.key("staging");
        let abandoned: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&staging)
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(100)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        for entry in abandoned {
            let parsed = entry.split_once(':').and_then(|(seq, span)| {
                Some((seq.parse::<u32>().ok()?, span.parse::<u32>().ok()?))
            });
            match parsed {
                Some((seq, span)) => self.discard_staged(seq, span).await?,
                None => {
                    redis::cmd("ZREM")
                        .arg(&staging)
                        .arg(&entry)
                        .query_async::<()>(&mut self.conn())
                        .await
                        .map_err(|e| self.fail(e))?;
                }
            }
        }
        Ok(())
    }

    /// Deletes a staged batch's message hashes, unless its commit got there first:
    /// whoever removes the staging entry owns the keys.
    pub(super) async fn discard_staged(&self, seq: u32, span: u32) -> Result<()> {
        let removed: i64 = redis::cmd("ZREM")
            .arg(self.key("staging"))
            .arg(format!("{seq:010}:{span}"))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if removed == 0 {
            return Ok(());
        }
        let keys: Vec<String> = (0..span)
            .map(|index| self.key(&format!("m:{}", Slot { seq, index }.member())))
            .collect();
        unlink(&mut self.conn(), &keys)
            .await
            .map_err(|e| self.fail(e))
    }

    pub(super) async fn begin_staging(&self, batch: NewBatch, arrival: Arrival) -> Result<Begun> {
        if arrival == Arrival::AtHand {
            // Gathered and stored by one accept, as fast as the chunks are made.
            return Ok(Begun::Staging(Staging::gather(batch)));
        }
        if let Some(replayed) = self.prepare_accept(&batch).await? {
            return Ok(Begun::Answered(replayed));
        }
        let layout = Layout {
            seq: self.reserve(0).await?,
            ..Layout::default()
        };
        Ok(Begun::Staging(Staging::new(Box::new(RedisStaging {
            redis: self.clone(),
            batch,
            layout,
        }))))
    }
}

/// nothing refers to, recorded in the staging set so an abandoned one is swept,
/// and the commit script publishes them all at once.
struct RedisStaging {
    redis: Redis,
    batch: NewBatch,
    layout: Layout,
}

impl Redis {
    pub(super) async fn discard_or_leave(&self, layout: &Layout) {
        if let Err(e) = self.discard_staged(layout.seq, layout.reserved).await {
            tracing::warn!(error = %e, "cannot discard a staged batch now; a later sweep will");
        }
    }
}

#[async_trait]
impl Stage for RedisStaging {
    async fn add(&mut self, messages: Vec<NewMessage>) -> Result<()> {
        let Some(last) = messages.last() else {
            return Ok(());
        };
        let span = last.index + 1;
        // The staging entry covers the new messages before they are written.
        let extended: i64 = self
            .redis
            .scripts
            .extend
            .arg(&self.redis.prefix)
            .arg(now_ms())
            .arg(format!("{:010}", self.layout.seq))
            .arg(self.layout.reserved)
            .arg(span)
            .arg(now_ms() + STAGING_DEADLINE_MS)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.fail(e))?;
        if extended == 0 {
            return Err(Error::Unavailable(format!(
                "redis at {}: storing the batch took longer than {} minutes and was abandoned; submit it again",
                self.redis.place,
                STAGING_DEADLINE_MS / 60_000
            )));
        }
        self.layout.reserved = span;
        self.redis
            .stage(&self.batch, &messages, self.layout.seq, now_ms())
            .await?;
        for m in &messages {
            self.layout.add(m, self.batch.send_at_ms);
        }
        Ok(())
    }

    async fn commit(self: Box<Self>, report: serde_json::Value, _span: u32) -> Result<Accepted> {
        let stored = self
            .redis
            .commit(&self.batch, &self.layout, &report.to_string())
            .await;
        if !matches!(stored, Ok(Accepted::New(_))) {
            self.redis.discard_or_leave(&self.layout).await;
        }
        stored
    }

    async fn discard(self: Box<Self>) {
        self.redis.discard_or_leave(&self.layout).await;
    }
}
