//! Claiming due messages under a lease, within the provider's rate limits, each
//! with its batch's template when the batch was stored with one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::Redis;
use super::reply::{batch_id, number, optional_number, required, text, unexpected};
use super::slot::Slot;
use crate::domain::{BatchId, message_id, millis, now_ms};
use crate::queue::{BatchTemplate, Claim, Claimed, Error, Lease, Result};
use crate::ratelimit::Limits;

impl Redis {
    pub(super) async fn claim_due(
        &self,
        provider: &str,
        limit: usize,
        lease: Duration,
        limits: &Limits,
    ) -> Result<Claim> {
        let now = now_ms();
        let until = now.saturating_add(millis(lease));
        let token = fastrand::i64(..);
        let (per_sec, burst) = limits.rate.map_or((String::new(), String::new()), |r| {
            (r.per_sec.to_string(), r.burst.to_string())
        });
        let mut call = self.scripts.claim.prepare_invoke();
        call.arg(&self.prefix)
            .arg(now)
            .arg(provider)
            .arg(limit)
            .arg(until)
            .arg(token)
            .arg(per_sec)
            .arg(burst)
            .arg(limits.per_recipient.len());
        for cap in &limits.per_recipient {
            call.arg(cap.count).arg(cap.window_ms);
        }
        match limits.segments {
            Some(rate) => call.arg(rate.per_sec).arg(rate.burst),
            None => call.arg("").arg(""),
        };
        call.arg(limits.owner_or(provider));
        let reply: Vec<Value> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        let Some((wait, rest)) = reply.split_first() else {
            return Err(unexpected("a claim"));
        };
        match (number::<u64>(wait, "rate wait")?, rest) {
            (0, [Value::Array(messages), Value::Array(templates)]) => {
                let templates = parse_templates(templates)?;
                Ok(Claim::Messages(parse_claimed(
                    provider, token, messages, &templates,
                )?))
            }
            (0, _) => Err(unexpected("a claim")),
            (ms, _) => Ok(Claim::Wait(Duration::from_millis(ms))),
        }
    }
}

impl Redis {
    /// [`Engine::recent_sends`](crate::queue::Engine::recent_sends): each
    /// recipient's `sent:{owner}:{to}` after `since`, in one pipeline.
    pub(super) async fn sends_since(
        &self,
        owner: &str,
        since: i64,
        tos: Vec<String>,
    ) -> Result<HashMap<String, Vec<i64>>> {
        let mut pipe = redis::pipe();
        for to in &tos {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(self.key(&format!("sent:{owner}:{to}")))
                .arg(format!("({since}"))
                .arg("+inf")
                .arg("WITHSCORES");
        }
        let sends: Vec<Vec<(String, i64)>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(tos
            .into_iter()
            .zip(sends)
            .filter(|(_, sends)| !sends.is_empty())
            .map(|(to, sends)| (to, sends.into_iter().map(|(_, at)| at).collect()))
            .collect())
    }
}

/// The templates of the claimed messages' batches, from the claim script's pairs of
/// batch id and `template_source`: one `Arc` per batch, shared by its messages.
fn parse_templates(pairs: &[Value]) -> Result<HashMap<BatchId, Arc<BatchTemplate>>> {
    if !pairs.len().is_multiple_of(2) {
        return Err(unexpected("a claim's templates"));
    }
    pairs
        .chunks_exact(2)
        .map(|pair| {
            let source = required(&pair[1], "batch template")?;
            Ok((batch_id(&pair[0])?, BatchTemplate::from_stored(&source)?))
        })
        .collect()
}

fn parse_claimed(
    provider: &str,
    token: i64,
    reply: &[Value],
    templates: &HashMap<BatchId, Arc<BatchTemplate>>,
) -> Result<Vec<Claimed>> {
    if !reply.len().is_multiple_of(14) {
        return Err(unexpected("a claim"));
    }
    reply
        .chunks_exact(14)
        .map(|m| {
            let member = required(&m[0], "message member")?;
            let slot = Slot::parse_member(&member)
                .ok_or_else(|| Error::Corrupt(format!("bad message member `{member}`")))?;
            let batch = batch_id(&m[1])?;
            Ok(Claimed {
                lease: Lease {
                    row: slot.row(),
                    token,
                },
                id: message_id(batch, slot.index),
                batch_id: batch,
                channel: required(&m[2], "batch channel")?
                    .parse()
                    .map_err(Error::Corrupt)?,
                provider: provider.to_owned(),
                to: required(&m[3], "recipient")?,
                reference: text(&m[4])?,
                subject: text(&m[5])?,
                body: required(&m[6], "message body")?,
                attempts: number(&m[7], "attempt count")?,
                // Messages staged before segments were stored count as one.
                segments: optional_number(&m[8], "segment count")?
                    .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX)),
                template_id: text(&m[9])?,
                vars: text(&m[10])?,
                unknown_since_ms: optional_number(&m[11], "unknown outcome time")?,
                template: templates.get(&batch).cloned(),
                charged: number::<u8>(&m[12], "charged")? == 1,
                capped: number::<u8>(&m[13], "capped")? == 1,
            })
        })
        .collect()
}
