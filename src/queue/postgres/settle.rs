//! Settling leased messages in bulk, and applying the receipts held for the ones
//! now sent (answered, for the suppression rules).

use crate::domain::{DeliveryReport, now_ms};
use crate::queue::{AppliedReceipt, Outcome, Result, Settlement};

use super::{Postgres, db};

/// Settles leased messages (`confirmed` is `sent` without an attempt) and returns the
/// provider and id of each message now sent with one, for held receipts. A message
/// sent by another provider than its own (`sent_by`, failover) records that one,
/// which `RETURNING` then names.
/// Records the events of the settled messages: `sent`, `failed`, and `cancelled` for
/// one requeued into a cancelled batch or cancelled as its recipient is suppressed; each row says last which batch may have
/// finished.
pub(super) const SETTLE: &str = "
WITH settled AS (
UPDATE {s}.messages m SET
    state = CASE s.kind WHEN 'sent' THEN 'sent' WHEN 'confirmed' THEN 'sent' WHEN 'failed' THEN 'failed'
        WHEN 'unknown' THEN 'unknown' WHEN 'cancelled' THEN 'cancelled' ELSE {requeued} END,
    attempts = m.attempts + CASE s.kind WHEN 'release' THEN 0 WHEN 'confirmed' THEN 0
        WHEN 'cancelled' THEN 0 ELSE 1 END,
    available_at = COALESCE(s.at, m.available_at),
    last_error = CASE WHEN s.kind IN ('sent', 'confirmed') THEN NULL ELSE COALESCE(s.error, m.last_error) END,
    provider_message_id = CASE WHEN s.kind IN ('sent', 'confirmed') THEN s.provider_message_id
        ELSE m.provider_message_id END,
    sent_at = CASE WHEN s.kind IN ('sent', 'confirmed') THEN $7 ELSE m.sent_at END,
    unknown_since = CASE WHEN s.kind IN ('sent', 'confirmed') THEN NULL
        WHEN s.kind = 'unknown' THEN COALESCE(m.unknown_since, $7) ELSE m.unknown_since END,
    provider = CASE WHEN s.kind IN ('sent', 'confirmed') THEN COALESCE(s.sent_by, m.provider)
        ELSE m.provider END,
    charge = CASE WHEN s.kind IN ('retry', 'release', 'failed', 'cancelled')
        AND m.unknown_since IS NULL THEN NULL ELSE m.charge END,
    lease = NULL, lease_until = NULL, updated_at = $7
FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $8::text[])
     AS s(id, token, kind, at, error, provider_message_id, sent_by)
WHERE m.id = s.id AND m.lease = s.token AND m.state = 'sending'
RETURNING m.id, m.state, m.last_error, s.kind AS settled,
    CASE WHEN s.kind IN ('sent', 'confirmed') THEN m.provider END AS provider, s.provider_message_id
), changed AS (
    SELECT id, CASE state WHEN 'sent' THEN 'message.sent' WHEN 'failed' THEN 'message.failed'
                          WHEN 'cancelled' THEN 'message.cancelled' END AS kind,
           CASE WHEN state = 'failed' OR settled = 'cancelled' THEN last_error END AS code,
           $7::bigint AS at
    FROM settled
), {record}
SELECT st.provider, st.provider_message_id, f.seq, st.id
FROM settled st LEFT JOIN finishing f ON f.seq = st.id >> 32";

/// Records the segment ids `$2` of the messages `$3` just sent by the providers
/// `$1` (see `message_segments`).
pub(super) const RECORD_SEGMENTS: &str = "
INSERT INTO {s}.message_segments (provider, segment_id, message)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
ON CONFLICT DO NOTHING";

impl Postgres {
    /// [`Engine::settle`](crate::queue::Engine::settle).
    pub(super) async fn settle_leases(
        &self,
        settlements: Vec<Settlement>,
    ) -> Result<Vec<AppliedReceipt>> {
        let n = settlements.len();
        let (mut ids, mut tokens, mut kinds, mut at, mut errors, mut provider_ids) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut sent_by = Vec::with_capacity(n);
        for Settlement {
            lease,
            outcome,
            sent_by: by,
        } in &settlements
        {
            sent_by.push(by.as_deref());
            ids.push(lease.row);
            tokens.push(lease.token);
            let (kind, when, error, provider_id) = match outcome {
                Outcome::Sent {
                    provider_message_id,
                    ..
                } => ("sent", None, None, provider_message_id.as_deref()),
                Outcome::Confirmed {
                    provider_message_id,
                } => ("confirmed", None, None, provider_message_id.as_deref()),
                Outcome::Retry { at_ms, error } => {
                    ("retry", Some(*at_ms), Some(error.as_str()), None)
                }
                Outcome::Unknown { at_ms, error } => {
                    ("unknown", Some(*at_ms), Some(error.as_str()), None)
                }
                Outcome::Failed { error } => ("failed", None, Some(error.as_str()), None),
                Outcome::Cancelled { error } => ("cancelled", None, Some(error.as_str()), None),
                Outcome::Release { at_ms, error } => {
                    ("release", Some(*at_ms), error.as_deref(), None)
                }
            };
            kinds.push(kind);
            at.push(when);
            errors.push(error);
            provider_ids.push(provider_id);
        }
        let now = now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let lock = tx
            .prepare_cached(&self.sql.lock_receipts_shared)
            .await
            .map_err(db)?;
        let settle = tx.prepare_cached(&self.sql.settle).await.map_err(db)?;
        tx.execute(&lock, &[]).await.map_err(db)?;
        let rows = tx
            .query(
                &settle,
                &[
                    &ids,
                    &tokens,
                    &kinds,
                    &at,
                    &errors,
                    &provider_ids,
                    &now,
                    &sent_by,
                ],
            )
            .await
            .map_err(db)?;
        let mut finishing: Vec<i64> = rows.iter().filter_map(|r| r.get(2)).collect();
        finishing.sort_unstable();
        finishing.dedup();
        self.finish(&tx, &finishing, now).await?;
        let (mut providers, mut sent_ids): (Vec<&str>, Vec<&str>) = rows
            .iter()
            .filter_map(|r| Some((r.get::<_, Option<&str>>(0)?, r.get::<_, Option<&str>>(1)?)))
            .unzip();
        let segments = sent_segments(&settlements, &rows);
        if !segments.is_empty() {
            let (by, ids): (Vec<&str>, Vec<&str>) =
                segments.iter().map(|(by, id, _)| (*by, *id)).unzip();
            let messages: Vec<i64> = segments.iter().map(|s| s.2).collect();
            let record = tx
                .prepare_cached(&self.sql.record_segments)
                .await
                .map_err(db)?;
            tx.execute(&record, &[&by, &ids, &messages])
                .await
                .map_err(db)?;
            providers.extend(by);
            sent_ids.extend(ids);
        }
        let mut applied = Vec::new();
        if !providers.is_empty() {
            let held = tx
                .prepare_cached(&self.sql.held_receipts)
                .await
                .map_err(db)?;
            let forget = tx
                .prepare_cached(&self.sql.forget_receipt)
                .await
                .map_err(db)?;
            for row in tx
                .query(&held, &[&providers, &sent_ids])
                .await
                .map_err(db)?
            {
                let report = DeliveryReport {
                    provider_message_id: row.get(2),
                    to: row.get(3),
                    delivered: row.get(4),
                    code: row.get(5),
                    at_ms: row.get(6),
                };
                let provider: String = row.get(1);
                let Some(effect) = self.apply_receipt(&tx, &provider, &report, now).await? else {
                    continue;
                };
                tx.execute(&forget, &[&row.get::<_, i64>(0)])
                    .await
                    .map_err(db)?;
                applied.extend(effect.applied(provider, report));
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(applied)
    }
}

/// The segment ids of the messages `rows` (as [`SETTLE`] answers them) says were
/// just sent with a provider, each with that provider and its message.
fn sent_segments<'a>(
    settlements: &'a [Settlement],
    rows: &'a [tokio_postgres::Row],
) -> Vec<(&'a str, &'a str, i64)> {
    let of: std::collections::HashMap<i64, &[String]> = settlements
        .iter()
        .filter_map(|s| match &s.outcome {
            Outcome::Sent { segment_ids, .. } if !segment_ids.is_empty() => {
                Some((s.lease.row, segment_ids.as_slice()))
            }
            _ => None,
        })
        .collect();
    if of.is_empty() {
        return Vec::new();
    }
    rows.iter()
        .filter_map(|r| {
            let provider: &str = r.get::<_, Option<&str>>(0)?;
            let message: i64 = r.get(3);
            Some((provider, *of.get(&message)?, message))
        })
        .flat_map(|(provider, ids, message)| {
            ids.iter().map(move |id| (provider, id.as_str(), message))
        })
        .collect()
}
