//! The ledger: batch summaries and their list, a batch's messages page by page,
//! a provider's pending count, and pausing, resuming, cancelling or retrying a batch.

use redis::Value;

use super::Redis;
use super::reply::{number, optional_number, required, text, unexpected};
use crate::domain::{BatchControl, BatchId, Channel, Counts, MessageState, message_id, now_ms};
use crate::queue::{
    BatchAction, BatchSummary, Error, MessageQuery, MessageRecord, Result, parse_batch_id,
};

/// The batch hash fields a summary reads, in this order (scripts use the same list).
pub(super) const SUMMARY_FIELDS: [&str; 20] = [
    "channel",
    "source",
    "control",
    "priority",
    "created_at",
    "send_at",
    "pending",
    "sending",
    "sent",
    "failed",
    "cancelled",
    "paused",
    "delivered",
    "undelivered",
    "unknown",
    "expired",
    "expires_at",
    "held",
    "spent",
    "max_cost",
];

impl Redis {
    pub(super) async fn summary(&self, id: BatchId) -> Result<Option<BatchSummary>> {
        let fields: Vec<Value> = redis::cmd("HMGET")
            .arg(self.key(&format!("b:{id}")))
            .arg(&SUMMARY_FIELDS[..])
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        parse_summary(id, &fields)
    }

    /// [`Engine::window`](crate::queue::Engine::window): the batch hash's `window`.
    pub(super) async fn stored_window(&self, id: BatchId) -> Result<Option<String>> {
        redis::cmd("HGET")
            .arg(self.key(&format!("b:{id}")))
            .arg("window")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    pub(super) async fn summaries(
        &self,
        before: Option<BatchId>,
        limit: u32,
    ) -> Result<Vec<BatchSummary>> {
        let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
            .arg(self.key("batches"))
            .arg(before.map_or_else(|| "+".to_owned(), |b| format!("({b}")))
            .arg("-")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.key(&format!("b:{id}")))
                .arg(&SUMMARY_FIELDS[..]);
        }
        let replies: Vec<Vec<Value>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        let mut summaries = Vec::with_capacity(ids.len());
        for (id, fields) in ids.iter().zip(&replies) {
            summaries.extend(parse_summary(parse_batch_id(id)?, fields)?);
        }
        Ok(summaries)
    }

    /// The priorities `provider`'s pending messages are of: one ready set each.
    pub(super) async fn priorities(&self, provider: &str) -> Result<Vec<String>> {
        redis::cmd("ZRANGE")
            .arg(self.key(&format!("prios:{provider}")))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    pub(super) async fn count_pending(&self, provider: &str, cap: u64) -> Result<u64> {
        // The ready sets hold exactly the pending messages, one per priority: as
        // many commands as priorities in use, whatever their sizes.
        let priorities = self.priorities(provider).await?;
        if priorities.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for priority in &priorities {
            pipe.cmd("ZCARD")
                .arg(self.key(&format!("ready:{priority}:{provider}")));
        }
        let sizes: Vec<u64> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(sizes.iter().sum::<u64>().min(cap))
    }

    pub(super) async fn ledger_page(
        &self,
        id: BatchId,
        query: MessageQuery,
    ) -> Result<Vec<MessageRecord>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let from = query.after.map_or(0, |after| u64::from(after) + 1);
        let reply: Vec<Value> = self
            .scripts
            .messages
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(id.to_string())
            .arg(from)
            .arg(query.limit)
            .arg(query.state.map_or("", MessageState::as_str))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        parse_records(id, &reply)
    }

    pub(super) async fn apply_control(
        &self,
        id: BatchId,
        action: BatchAction,
    ) -> Result<Option<BatchSummary>> {
        let action_name = match action {
            BatchAction::Pause => "pause",
            BatchAction::Resume => "resume",
            BatchAction::Cancel => "cancel",
            BatchAction::Retry { .. } => "retry",
        };
        let deadline = match action {
            BatchAction::Retry {
                expires_at_ms: Some(at),
            } => at.to_string(),
            _ => String::new(),
        };
        let reply: Vec<Value> = self
            .scripts
            .control
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(id.to_string())
            .arg(action_name)
            .arg(deadline)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        match reply.first().map(text).transpose()?.flatten().as_deref() {
            Some("none") => Ok(None),
            Some("conflict") => {
                let before = parse_summary(id, &reply[1..])?
                    .ok_or_else(|| unexpected("a refused batch's summary"))?;
                let why = action.refusal(before.control, &before.counts);
                Err(Error::Conflict(why.unwrap_or_else(|| {
                    "the batch changed while it was being controlled; try again".into()
                })))
            }
            Some("ok") => parse_summary(id, &reply[1..]),
            _ => Err(unexpected("a batch control")),
        }
    }
}

fn parse_summary(id: BatchId, f: &[Value]) -> Result<Option<BatchSummary>> {
    let [
        channel,
        source,
        control,
        priority,
        created,
        send_at,
        pending,
        sending,
        sent,
        failed,
        cancelled,
        paused,
        delivered,
        undelivered,
        unknown,
        expired,
        expires_at,
        held,
        spent,
        max_cost,
    ] = f
    else {
        return Err(unexpected("a batch summary"));
    };
    let Some(channel) = text(channel)? else {
        return Ok(None);
    };
    let control = required(control, "batch control")?;
    let count = |v: &Value, what: &str| -> Result<u64> {
        Ok(optional_number(v, what)?.unwrap_or(0).max(0).unsigned_abs())
    };
    let mut counts = Counts::default();
    counts.add(MessageState::Pending, count(pending, "pending count")?);
    counts.add(MessageState::Sending, count(sending, "sending count")?);
    counts.add(MessageState::Sent, count(sent, "sent count")?);
    counts.add(MessageState::Failed, count(failed, "failed count")?);
    counts.add(
        MessageState::Cancelled,
        count(cancelled, "cancelled count")?,
    );
    counts.add(MessageState::Paused, count(paused, "paused count")?);
    counts.add(
        MessageState::Delivered,
        count(delivered, "delivered count")?,
    );
    counts.add(
        MessageState::Undelivered,
        count(undelivered, "undelivered count")?,
    );
    counts.add(MessageState::Unknown, count(unknown, "unknown count")?);
    counts.add(MessageState::Expired, count(expired, "expired count")?);
    counts.add(MessageState::Held, count(held, "held count")?);
    Ok(Some(BatchSummary {
        id,
        channel: channel.parse::<Channel>().map_err(Error::Corrupt)?,
        source: required(source, "batch source")?,
        control: BatchControl::parse(&control)
            .ok_or_else(|| Error::Corrupt(format!("unknown control `{control}`")))?,
        priority: number(priority, "batch priority")?,
        created_at_ms: number(created, "batch creation time")?,
        send_at_ms: number(send_at, "batch send time")?,
        expires_at_ms: optional_number(expires_at, "batch deadline")?,
        counts,
        spent: optional_number(spent, "batch spend")?.unwrap_or(0),
        max_cost: optional_number(max_cost, "batch spend cap")?,
    }))
}

fn parse_records(id: BatchId, reply: &[Value]) -> Result<Vec<MessageRecord>> {
    if !reply.len().is_multiple_of(14) {
        return Err(unexpected("a ledger page"));
    }
    reply
        .chunks_exact(14)
        .map(|m| parse_record(id, m))
        .collect()
}

/// One message of batch `id` as the ledger's scripts answer it: 14 values (index,
/// to, ref, state, provider, attempts, error, provider message id, created,
/// updated, sent, receipt code, receipt time, segments).
pub(super) fn parse_record(id: BatchId, m: &[Value]) -> Result<MessageRecord> {
    let [
        index,
        to,
        reference,
        state,
        provider,
        attempts,
        error,
        pid,
        created,
        updated,
        sent,
        code,
        at,
        segments,
    ] = m
    else {
        return Err(unexpected("a message of the ledger"));
    };
    let index: u32 = number(index, "message index")?;
    let state = required(state, "message state")?;
    Ok(MessageRecord {
        id: message_id(id, index),
        index,
        to: required(to, "recipient")?,
        reference: text(reference)?,
        state: MessageState::parse(&state)
            .ok_or_else(|| Error::Corrupt(format!("unknown message state `{state}`")))?,
        provider: required(provider, "provider")?,
        attempts: number(attempts, "attempt count")?,
        last_error: text(error)?,
        provider_message_id: text(pid)?,
        created_at_ms: number(created, "message creation time")?,
        updated_at_ms: number(updated, "message update time")?,
        sent_at_ms: optional_number(sent, "message sent time")?,
        receipt_code: text(code)?,
        receipt_at_ms: optional_number(at, "receipt time")?,
        segments: optional_number(segments, "segment count")?
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1),
    })
}
