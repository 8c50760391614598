//! The outbox's reads and upkeep: claiming due deliveries under a lease, settling
//! them, listing, replaying, counting and pruning them, each one script (see
//! `scripts/outbox.rs` for the keys). Recording them is every changing script's.

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use super::Redis;
use super::reply::{number, optional_number, required, text, unexpected};
use super::scripts::DELIVERY_ROW;
use super::slot::Slot;
use crate::domain::{message_id, millis};
use crate::queue::outbox::StoredDelivery;
use crate::queue::{
    Delivery, DeliveryKey, DeliveryOutcome, DeliveryRecord, DeliveryState, Error, Event, EventKind,
    Outbox, Replay, Result, parse_batch_id,
};

impl Redis {
    /// The deliveries of a reply made of `delivery_row`s, each event completed with
    /// a finished batch's counts read now.
    async fn rows(&self, reply: &[Value], what: &str) -> Result<Vec<StoredDelivery>> {
        if !reply.len().is_multiple_of(DELIVERY_ROW) {
            return Err(unexpected(what));
        }
        let mut rows = Vec::with_capacity(reply.len() / DELIVERY_ROW);
        for r in reply.chunks_exact(DELIVERY_ROW) {
            let kind = EventKind::from_stored(&required(&r[3], "event kind")?)?;
            let batch_id = text(&r[13])?.as_deref().map(parse_batch_id).transpose()?;
            let message = text(&r[14])?;
            let message_id = match (batch_id, message.as_deref()) {
                (Some(batch), Some(member)) => {
                    let slot = Slot::parse_member(member)
                        .ok_or_else(|| Error::Corrupt(format!("bad message `{member}`")))?;
                    Some(message_id(batch, slot.index))
                }
                _ => None,
            };
            let counts = match (kind, batch_id) {
                (EventKind::BatchFinished, Some(id)) => self.summary(id).await?.map(|s| s.counts),
                _ => None,
            };
            rows.push(StoredDelivery {
                seq: number(&r[0], "delivery seq")?,
                endpoint: required(&r[1], "delivery endpoint")?,
                attempts: number(&r[7], "delivery attempts")?,
                first_at_ms: number(&r[8], "delivery time")?,
                state: DeliveryState::from_stored(&required(&r[9], "delivery state")?)?,
                last_error: text(&r[10])?,
                due_at_ms: optional_number(&r[11], "delivery due time")?,
                posted_at_ms: optional_number(&r[12], "delivery post time")?,
                callback_url: text(&r[17])?,
                event: Event {
                    id: required(&r[2], "event id")?,
                    kind,
                    at_ms: number(&r[4], "event time")?,
                    batch_id,
                    message_id,
                    channel: text(&r[15])?
                        .map(|c| c.parse().map_err(Error::Corrupt))
                        .transpose()?,
                    source: text(&r[16])?,
                    to: text(&r[18])?,
                    reference: text(&r[19])?,
                    provider: text(&r[20])?,
                    provider_message_id: text(&r[21])?,
                    code: text(&r[5])?,
                    counts,
                    data: text(&r[6])?
                        .map(|p| serde_json::from_str(&p))
                        .transpose()
                        .map_err(|e| {
                            Error::Corrupt(format!("a delivery's payload is not JSON: {e}"))
                        })?,
                },
            });
        }
        Ok(rows)
    }
}

#[async_trait]
impl Outbox for Redis {
    async fn claim_deliveries(
        &self,
        limit: u32,
        lease: Duration,
        now: i64,
    ) -> Result<Vec<Delivery>> {
        let token = fastrand::i64(..);
        let reply: Vec<Value> = self
            .scripts
            .claim_deliveries
            .arg(&self.prefix)
            .arg(now)
            .arg(limit)
            .arg(now.saturating_add(millis(lease)))
            .arg(token)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(self
            .rows(&reply, "claiming deliveries")
            .await?
            .into_iter()
            .map(|row| row.claimed(token))
            .collect())
    }

    async fn settle_deliveries(
        &self,
        settled: Vec<(DeliveryKey, DeliveryOutcome)>,
        now: i64,
    ) -> Result<()> {
        let mut call = self.scripts.settle_deliveries.prepare_invoke();
        call.arg(&self.prefix).arg(now);
        for (key, outcome) in &settled {
            let settled = outcome.settled(now);
            let name = match settled.state {
                DeliveryState::Pending => "retry",
                state => state.as_str(),
            };
            call.arg(key.row)
                .arg(key.token)
                .arg(name)
                .arg(settled.due_at_ms.unwrap_or(0))
                .arg(settled.error.unwrap_or(""));
        }
        let _: i64 = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn deliveries(
        &self,
        endpoint: Option<&str>,
        state: Option<DeliveryState>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        let reply: Vec<Value> = self
            .scripts
            .list_deliveries
            .arg(&self.prefix)
            .arg(0)
            .arg(endpoint.unwrap_or(""))
            .arg(state.map_or("", DeliveryState::as_str))
            .arg(before.map(|b| b.to_string()).unwrap_or_default())
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(self
            .rows(&reply, "listing deliveries")
            .await?
            .into_iter()
            .map(StoredDelivery::record)
            .collect())
    }

    async fn replay(&self, endpoint: &str, which: Replay, now: i64) -> Result<u64> {
        let event_id = match which {
            Replay::Event(id) => id,
            Replay::Failed => String::new(),
        };
        self.scripts
            .replay_deliveries
            .arg(&self.prefix)
            .arg(now)
            .arg(endpoint)
            .arg(event_id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    async fn delivery_counts(&self) -> Result<Vec<(String, u64, u64)>> {
        let reply: Vec<Value> = self
            .scripts
            .delivery_counts
            .arg(&self.prefix)
            .arg(0)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if !reply.len().is_multiple_of(3) {
            return Err(unexpected("counting deliveries"));
        }
        let mut counts = reply
            .chunks_exact(3)
            .map(|r| {
                Ok((
                    required(&r[0], "delivery endpoint")?,
                    number(&r[1], "pending deliveries")?,
                    number(&r[2], "failed deliveries")?,
                ))
            })
            .filter(|c: &Result<(String, u64, u64)>| {
                c.as_ref()
                    .map_or(true, |(_, pending, failed)| pending + failed > 0)
            })
            .collect::<Result<Vec<_>>>()?;
        counts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(counts)
    }

    async fn prune_deliveries(&self, before_ms: i64, limit: u32) -> Result<u64> {
        self.scripts
            .prune_deliveries
            .arg(&self.prefix)
            .arg(0)
            .arg(before_ms)
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }
}
