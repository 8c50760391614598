//! The embedded engine's delivery receipts: applying one to the message it names,
//! and the receipts held until their message's send is recorded.

use rusqlite::{Connection, Transaction, params};

use super::connection::{unavailable, write_transaction};
use super::record::record_message_events;
use super::schema::{parse_channel, parse_state};
use crate::domain::{DeliveryReport, MessageState};
use crate::queue::{
    AppliedReceipt, EARLY_RECEIPT_TTL_MS, EARLY_RECEIPTS_MAX, EventKind, ReceiptEffect,
    ReceiptTarget, Result, receipt_state, receipt_target,
};

/// Applies one delivery report to the message it names, by its provider id or
/// one of its segments' ids; `None` when it names none (yet).
fn apply_receipt(
    tx: &Transaction<'_>,
    provider: &str,
    report: &DeliveryReport,
    now: i64,
) -> Result<Option<ReceiptEffect>> {
    let candidates: Vec<(i64, String, String, String)> = tx
        .prepare_cached(
            "SELECT m.id, m.state, m.to_addr, b.channel FROM messages m JOIN batches b ON b.seq = m.batch
             WHERE m.provider = ?1 AND m.provider_message_id = ?2
             UNION ALL
             SELECT m.id, m.state, m.to_addr, b.channel FROM message_segments s
             JOIN messages m ON m.id = s.message JOIN batches b ON b.seq = m.batch
             WHERE s.provider = ?1 AND s.segment_id = ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![provider, report.provider_message_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .map_err(unavailable)?;
    let (id, state, to, channel) = match receipt_target(
        candidates.iter().map(|c| c.2.as_str()),
        report.to.as_deref(),
    ) {
        ReceiptTarget::None => return Ok(None),
        ReceiptTarget::Ambiguous => return Ok(Some(ReceiptEffect::Ambiguous)),
        ReceiptTarget::One(i) => &candidates[i],
    };
    let Some(next) = receipt_state(parse_state(state)?, report.delivered) else {
        return Ok(Some(ReceiptEffect::Unchanged));
    };
    tx.prepare_cached(
        "UPDATE messages SET state = ?2, receipt_code = ?3, receipt_at = ?4, updated_at = ?5
         WHERE id = ?1 AND state = ?6",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            next.as_str(),
            report.code,
            report.at_ms.unwrap_or(now),
            now,
            state
        ])
    })
    .map_err(unavailable)?;
    let kind = match next {
        MessageState::Delivered => EventKind::Delivered,
        _ => EventKind::Undelivered,
    };
    record_message_events(tx, &[*id], kind, None, now)?;
    Ok(Some(ReceiptEffect::Applied {
        to: to.clone(),
        channel: parse_channel(channel.clone())?,
    }))
}

/// Applies the held delivery reports that name the just-sent messages `rows` by
/// their provider id or a segment's id, and forgets them; those that still match nothing stay held.
/// Answers those that moved a message, in order.
pub(super) fn apply_held_receipts(
    tx: &Transaction<'_>,
    rows: &[i64],
    now: i64,
) -> Result<Vec<AppliedReceipt>> {
    let any: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM early_receipts)")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(unavailable)?;
    let mut applied = Vec::new();
    if !any || rows.is_empty() {
        return Ok(applied);
    }
    for row in rows {
        let held: Vec<(i64, String, DeliveryReport)> = tx
            .prepare_cached(
                "SELECT e.rowid, e.provider, e.provider_message_id, e.to_addr, e.delivered, e.code, e.at
                 FROM early_receipts e JOIN (
                     SELECT provider, provider_message_id AS id FROM messages WHERE id = ?1
                     UNION ALL
                     SELECT provider, segment_id FROM message_segments WHERE message = ?1
                 ) k ON e.provider = k.provider AND e.provider_message_id = k.id
                 ORDER BY e.received_at",
            )
            .and_then(|mut s| {
                s.query_map([row], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        DeliveryReport {
                            provider_message_id: r.get(2)?,
                            to: r.get(3)?,
                            delivered: r.get(4)?,
                            code: r.get(5)?,
                            at_ms: r.get(6)?,
                        },
                    ))
                })?
                .collect()
            })
            .map_err(unavailable)?;
        for (rowid, provider, report) in held {
            let Some(effect) = apply_receipt(tx, &provider, &report, now)? else {
                continue;
            };
            tx.execute("DELETE FROM early_receipts WHERE rowid = ?1", [rowid])
                .map_err(unavailable)?;
            applied.extend(effect.applied(provider, report));
        }
    }
    Ok(applied)
}

/// Applies `reports` of `provider`, in order, as [`Engine::apply_receipts`]
/// describes: one effect per report; those that name no message yet are held.
pub(super) fn apply_receipts(
    conn: &mut Connection,
    provider: String,
    reports: Vec<DeliveryReport>,
    now: i64,
) -> Result<Vec<ReceiptEffect>> {
    let tx = write_transaction(conn)?;
    let mut effects = Vec::with_capacity(reports.len());
    let mut held = false;
    for report in &reports {
        let effect = match apply_receipt(&tx, &provider, report, now)? {
            Some(effect) => effect,
            None => {
                tx.prepare_cached(
                    "INSERT INTO early_receipts (provider, provider_message_id, to_addr, delivered, code, at, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        provider,
                        report.provider_message_id,
                        report.to,
                        report.delivered,
                        report.code,
                        report.at_ms,
                        now
                    ])
                })
                .map_err(unavailable)?;
                held = true;
                ReceiptEffect::Held
            }
        };
        effects.push(effect);
    }
    if held {
        tx.execute(
            "DELETE FROM early_receipts WHERE received_at < ?1",
            [now - EARLY_RECEIPT_TTL_MS],
        )
        .and_then(|_| {
            tx.execute(
                "DELETE FROM early_receipts WHERE rowid IN (
                     SELECT rowid FROM early_receipts ORDER BY received_at DESC LIMIT -1 OFFSET ?1)",
                [EARLY_RECEIPTS_MAX],
            )
        })
        .map_err(unavailable)?;
    }
    tx.commit().map_err(unavailable)?;
    Ok(effects)
}
