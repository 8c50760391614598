//! Delivery receipts: applied to the message they name, or held until its send
//! is recorded, within a bounded time and number.

use deadpool_postgres::Transaction;

use super::{Postgres, db, parse_channel, parse_state};
use crate::domain::DeliveryReport;
use crate::queue::{
    EARLY_RECEIPT_TTL_MS, EARLY_RECEIPTS_MAX, ReceiptEffect, ReceiptTarget, Result, receipt_state,
    receipt_target,
};

/// Receipts and settlements that record provider ids take turns on this lock (the
/// receipts alone, settlements shared), so that a receipt that finds no message is
/// held before a settlement looks for held receipts, or sees its id.
pub(super) const LOCK_RECEIPTS: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended({schema} || ':receipts', 0))";

pub(super) const LOCK_RECEIPTS_SHARED: &str =
    "SELECT pg_advisory_xact_lock_shared(hashtextextended({schema} || ':receipts', 0))";

/// The messages of provider `$1` with the provider id `$2`, or a segment of that
/// id, with their batch's channel.
pub(super) const RECEIPT_CANDIDATES: &str = "
SELECT m.id, m.state, m.to_addr, b.channel FROM (
    SELECT id FROM {s}.messages WHERE provider = $1 AND provider_message_id = $2
    UNION ALL
    SELECT message FROM {s}.message_segments WHERE provider = $1 AND segment_id = $2
) k
JOIN {s}.messages m ON m.id = k.id
CROSS JOIN LATERAL (SELECT channel FROM {s}.batches WHERE seq = m.id >> 32 LIMIT 1) b";

/// Moves message `$1` from state `$6` to `$2` with the receipt's code and time, and
/// records its event.
pub(super) const APPLY_RECEIPT: &str = "
WITH applied AS (
    UPDATE {s}.messages SET state = $2, receipt_code = $3, receipt_at = $4, updated_at = $5
    WHERE id = $1 AND state = $6
    RETURNING id, state, receipt_code
), changed AS (
    SELECT id, CASE state WHEN 'delivered' THEN 'message.delivered' ELSE 'message.undelivered' END AS kind,
           receipt_code AS code, $5::bigint AS at
    FROM applied
), {record}
SELECT COUNT(*) FROM applied";

pub(super) const HOLD_RECEIPT: &str = "
INSERT INTO {s}.early_receipts (provider, provider_message_id, to_addr, delivered, code, at, received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Held receipts past their time (`$1`), and all but the newest `$2`.
pub(super) const EXPIRE_RECEIPTS: &str = "
DELETE FROM {s}.early_receipts WHERE received_at < $1 OR id = ANY(ARRAY(
    SELECT id FROM {s}.early_receipts ORDER BY received_at DESC OFFSET $2))";

/// The held receipts of the (provider, id) pairs `$1`, `$2`, oldest first.
pub(super) const HELD_RECEIPTS: &str = "
SELECT e.id, e.provider, e.provider_message_id, e.to_addr, e.delivered, e.code, e.at
FROM {s}.early_receipts e
JOIN UNNEST($1::text[], $2::text[]) AS k(provider, provider_message_id)
  ON e.provider = k.provider AND e.provider_message_id = k.provider_message_id
ORDER BY e.received_at, e.id";

pub(super) const FORGET_RECEIPT: &str = "DELETE FROM {s}.early_receipts WHERE id = $1";

impl Postgres {
    /// Applies one delivery report to the message it names; `None` when it names
    /// none (yet).
    pub(super) async fn apply_receipt(
        &self,
        tx: &Transaction<'_>,
        provider: &str,
        report: &DeliveryReport,
        now: i64,
    ) -> Result<Option<ReceiptEffect>> {
        let candidates = tx
            .prepare_cached(&self.sql.receipt_candidates)
            .await
            .map_err(db)?;
        let rows = tx
            .query(&candidates, &[&provider, &report.provider_message_id])
            .await
            .map_err(db)?;
        let row = match receipt_target(
            rows.iter().map(|r| r.get::<_, &str>(2)),
            report.to.as_deref(),
        ) {
            ReceiptTarget::None => return Ok(None),
            ReceiptTarget::Ambiguous => return Ok(Some(ReceiptEffect::Ambiguous)),
            ReceiptTarget::One(i) => &rows[i],
        };
        let state: &str = row.get(1);
        let Some(next) = receipt_state(parse_state(state)?, report.delivered) else {
            return Ok(Some(ReceiptEffect::Unchanged));
        };
        let apply = tx
            .prepare_cached(&self.sql.apply_receipt)
            .await
            .map_err(db)?;
        tx.execute(
            &apply,
            &[
                &row.get::<_, i64>(0),
                &next.as_str(),
                &report.code,
                &report.at_ms.unwrap_or(now),
                &now,
                &state,
            ],
        )
        .await
        .map_err(db)?;
        Ok(Some(ReceiptEffect::Applied {
            to: row.get(2),
            channel: parse_channel(row.get(3))?,
        }))
    }

    /// [`Engine::apply_receipts`](crate::queue::Engine::apply_receipts).
    pub(super) async fn apply_reports(
        &self,
        provider: &str,
        reports: Vec<DeliveryReport>,
        now: i64,
    ) -> Result<Vec<ReceiptEffect>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let lock = tx
            .prepare_cached(&self.sql.lock_receipts)
            .await
            .map_err(db)?;
        tx.execute(&lock, &[]).await.map_err(db)?;
        let hold = tx
            .prepare_cached(&self.sql.hold_receipt)
            .await
            .map_err(db)?;
        let mut effects = Vec::with_capacity(reports.len());
        let mut held = false;
        for report in &reports {
            let effect = match self.apply_receipt(&tx, provider, report, now).await? {
                Some(effect) => effect,
                None => {
                    tx.execute(
                        &hold,
                        &[
                            &provider,
                            &report.provider_message_id,
                            &report.to,
                            &report.delivered,
                            &report.code,
                            &report.at_ms,
                            &now,
                        ],
                    )
                    .await
                    .map_err(db)?;
                    held = true;
                    ReceiptEffect::Held
                }
            };
            effects.push(effect);
        }
        if held {
            let expire = tx
                .prepare_cached(&self.sql.expire_receipts)
                .await
                .map_err(db)?;
            tx.execute(
                &expire,
                &[&(now - EARLY_RECEIPT_TTL_MS), &EARLY_RECEIPTS_MAX],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(effects)
    }
}
