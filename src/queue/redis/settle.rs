//! What becomes of claimed messages: their outcomes settled, and the delivery
//! receipts applied to them.

use redis::Value;

use super::Redis;
use super::reply::{required, text, unexpected};
use super::slot::Slot;
use crate::domain::{DeliveryReport, now_ms};
use crate::queue::{
    AppliedReceipt, EARLY_RECEIPT_TTL_MS, EARLY_RECEIPTS_MAX, Error, Outcome, ReceiptEffect,
    Result, Settlement,
};

impl Redis {
    pub(super) async fn settle_leases(
        &self,
        settlements: Vec<Settlement>,
    ) -> Result<Vec<AppliedReceipt>> {
        let mut call = self.scripts.settle.prepare_invoke();
        call.arg(&self.prefix).arg(now_ms());
        for Settlement {
            lease,
            outcome,
            sent_by,
        } in &settlements
        {
            let Some(slot) = Slot::from_row(lease.row) else {
                continue;
            };
            let mut segments = String::new();
            let (kind, at, text) = match outcome {
                Outcome::Sent {
                    provider_message_id,
                    segment_ids,
                } => {
                    if !segment_ids.is_empty() {
                        segments =
                            serde_json::to_string(segment_ids).expect("a list of strings is JSON");
                    }
                    ("sent", 0, provider_message_id.as_deref())
                }
                Outcome::Confirmed {
                    provider_message_id,
                } => ("confirmed", 0, provider_message_id.as_deref()),
                Outcome::Retry { at_ms, error } => ("retry", *at_ms, Some(error.as_str())),
                Outcome::Unknown { at_ms, error } => ("unknown", *at_ms, Some(error.as_str())),
                Outcome::Release { at_ms, error } => ("release", *at_ms, error.as_deref()),
                Outcome::Failed { error } => ("failed", 0, Some(error.as_str())),
                Outcome::Cancelled { error } => ("cancelled", 0, Some(error.as_str())),
            };
            call.arg(slot.member())
                .arg(lease.token)
                .arg(kind)
                .arg(at)
                .arg(if text.is_some() { "1" } else { "0" })
                .arg(text.unwrap_or(""))
                .arg(sent_by.as_deref().unwrap_or(""))
                .arg(segments);
        }
        let reply: Vec<Value> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if !reply.len().is_multiple_of(5) {
            return Err(unexpected("settling"));
        }
        reply
            .chunks_exact(5)
            .map(|r| {
                Ok(AppliedReceipt {
                    provider: required(&r[0], "receipt's provider")?,
                    to: required(&r[1], "recipient")?,
                    channel: required(&r[2], "batch channel")?
                        .parse()
                        .map_err(Error::Corrupt)?,
                    delivered: required(&r[3], "receipt's outcome")? == "1",
                    code: text(&r[4])?.filter(|code| !code.is_empty()),
                })
            })
            .collect()
    }

    pub(super) async fn apply_reports(
        &self,
        provider: &str,
        reports: Vec<DeliveryReport>,
        now: i64,
    ) -> Result<Vec<ReceiptEffect>> {
        let mut call = self.scripts.apply_receipts.prepare_invoke();
        call.arg(&self.prefix)
            .arg(now)
            .arg(provider)
            .arg(EARLY_RECEIPT_TTL_MS)
            .arg(EARLY_RECEIPTS_MAX);
        for r in &reports {
            call.arg(&r.provider_message_id)
                .arg(r.to.as_deref().unwrap_or(""))
                .arg(if r.delivered { "1" } else { "0" })
                .arg(r.code.as_deref().unwrap_or(""))
                .arg(r.at_ms.map(|at| at.to_string()).unwrap_or_default());
        }
        let reply: Vec<Value> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if reply.len() != 3 * reports.len() {
            return Err(unexpected("applying receipts"));
        }
        reply
            .chunks_exact(3)
            .map(|r| {
                Ok(match required(&r[0], "receipt effect")?.as_str() {
                    "applied" => ReceiptEffect::Applied {
                        to: required(&r[1], "recipient")?,
                        channel: required(&r[2], "batch channel")?
                            .parse()
                            .map_err(Error::Corrupt)?,
                    },
                    "same" => ReceiptEffect::Unchanged,
                    "ambiguous" => ReceiptEffect::Ambiguous,
                    "held" => ReceiptEffect::Held,
                    _ => return Err(unexpected("applying receipts")),
                })
            })
            .collect()
    }
}
