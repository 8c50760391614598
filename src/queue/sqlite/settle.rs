//! The embedded engine's settlements: what becomes of each claimed message once
//! its worker knows how its send went.

use rusqlite::{Connection, params};

use super::connection::{light_transaction, unavailable};
use super::receipts::apply_held_receipts;
use super::record::{ended_cancelled, record_message_events};
use super::schema::REQUEUED_STATE;
use crate::domain::now_ms;
use crate::queue::{AppliedReceipt, EventKind, Outcome, Result, Settlement};

/// A message's charge after an attempt that did not reach the provider or that it
/// refused: none (the `messages_refund` trigger gives it back), unless an earlier
/// attempt's outcome was unknown — that request may have been billed.
const REFUND: &str = "CASE WHEN unknown_since IS NULL THEN NULL ELSE charge END";

/// Settles each claimed message still under its lease as its outcome says; a
/// settlement whose lease has lapsed changes nothing. Held receipts of the messages
/// just sent with a provider id are applied, and answered.
pub(super) fn settle(
    conn: &mut Connection,
    settlements: Vec<Settlement>,
) -> Result<Vec<AppliedReceipt>> {
    let now = now_ms();
    let tx = light_transaction(conn)?;
    let mut identified = Vec::new();
    let (mut sent_rows, mut failed_rows, mut requeued_rows) = (Vec::new(), Vec::new(), Vec::new());
    // Cancelled as their recipients opted out, by reason: each event's code.
    let mut suppressed: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
    {
        let mut sent = tx
            .prepare_cached(
                "UPDATE messages SET state = 'sent', attempts = attempts + ?5, provider_message_id = ?3,
                     last_error = NULL, sent_at = ?4, updated_at = ?4, lease = NULL, lease_until = NULL,
                     unknown_since = NULL, provider = COALESCE(?6, provider)
                 WHERE id = ?1 AND lease = ?2 AND state = 'sending'",
            )
            .map_err(unavailable)?;
        let mut retry = tx
            .prepare_cached(&format!(
                "UPDATE messages SET state = {REQUEUED_STATE}, attempts = attempts + ?5, available_at = ?3,
                     last_error = COALESCE(?6, last_error), updated_at = ?4, lease = NULL, lease_until = NULL,
                     charge = {REFUND}
                 WHERE id = ?1 AND lease = ?2 AND state = 'sending'"
            ))
            .map_err(unavailable)?;
        let mut unknown = tx
            .prepare_cached(
                "UPDATE messages SET state = 'unknown', attempts = attempts + 1, available_at = ?3,
                     last_error = ?5, unknown_since = COALESCE(unknown_since, ?4), updated_at = ?4,
                     lease = NULL, lease_until = NULL
                 WHERE id = ?1 AND lease = ?2 AND state = 'sending'",
            )
            .map_err(unavailable)?;
        let mut failed = tx
            .prepare_cached(&format!(
                "UPDATE messages SET state = 'failed', attempts = attempts + 1, last_error = ?3,
                     updated_at = ?4, lease = NULL, lease_until = NULL, charge = {REFUND}
                 WHERE id = ?1 AND lease = ?2 AND state = 'sending'"
            ))
            .map_err(unavailable)?;
        let mut cancelled = tx
            .prepare_cached(&format!(
                "UPDATE messages SET state = 'cancelled', last_error = ?3, updated_at = ?4,
                     lease = NULL, lease_until = NULL, charge = {REFUND}
                 WHERE id = ?1 AND lease = ?2 AND state = 'sending'"
            ))
            .map_err(unavailable)?;
        let mut segment = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO message_segments (provider, segment_id, message)
                 SELECT provider, ?2, id FROM messages WHERE id = ?1",
            )
            .map_err(unavailable)?;
        for Settlement {
            lease,
            outcome,
            sent_by,
        } in &settlements
        {
            let (row, token) = (lease.row, lease.token);
            let changed = match outcome {
                Outcome::Sent {
                    provider_message_id,
                    segment_ids,
                } => sent
                    .execute(params![row, token, provider_message_id, now, 1, sent_by])
                    .and_then(|changed| {
                        if changed > 0 {
                            for id in segment_ids {
                                segment.execute(params![row, id])?;
                            }
                        }
                        Ok(changed)
                    }),
                Outcome::Confirmed {
                    provider_message_id,
                } => sent.execute(params![row, token, provider_message_id, now, 0, sent_by]),
                Outcome::Retry { at_ms, error } => {
                    retry.execute(params![row, token, at_ms, now, 1, error])
                }
                Outcome::Release { at_ms, error } => {
                    retry.execute(params![row, token, at_ms, now, 0, error])
                }
                Outcome::Unknown { at_ms, error } => {
                    unknown.execute(params![row, token, at_ms, now, error])
                }
                Outcome::Failed { error } => failed.execute(params![row, token, error, now]),
                Outcome::Cancelled { error } => cancelled.execute(params![row, token, error, now]),
            }
            .map_err(unavailable)?;
            if changed > 0 {
                match outcome {
                    Outcome::Sent { .. } | Outcome::Confirmed { .. } => sent_rows.push(row),
                    Outcome::Failed { .. } => failed_rows.push(row),
                    Outcome::Retry { .. } | Outcome::Release { .. } => requeued_rows.push(row),
                    Outcome::Cancelled { error } => {
                        suppressed.entry(error.as_str()).or_default().push(row);
                    }
                    Outcome::Unknown { .. } => {}
                }
            }
            if changed > 0
                && matches!(
                    outcome,
                    Outcome::Sent {
                        provider_message_id: Some(_),
                        ..
                    } | Outcome::Confirmed {
                        provider_message_id: Some(_)
                    }
                )
            {
                identified.push(row);
            }
        }
    }
    record_message_events(&tx, &sent_rows, EventKind::Sent, None, now)?;
    record_message_events(&tx, &failed_rows, EventKind::Failed, None, now)?;
    // A message requeued into a cancelled batch ends there.
    let cancelled = ended_cancelled(&tx, &requeued_rows)?;
    record_message_events(&tx, &cancelled, EventKind::Cancelled, None, now)?;
    for (reason, rows) in suppressed {
        record_message_events(&tx, &rows, EventKind::Cancelled, Some(reason), now)?;
    }
    let applied = apply_held_receipts(&tx, &identified, now)?;
    tx.commit().map_err(unavailable)?;
    Ok(applied)
}
