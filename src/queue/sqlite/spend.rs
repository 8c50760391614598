//! The embedded engine's spend: charging claimed messages against their batch's
//! cap and their provider's day, raising a held batch's cap, and a provider's
//! spend on a day. Refunds are the `messages_refund` trigger's (migration 14).

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::connection::{unavailable, write_transaction};
use super::ledger::batch_by_id;
use super::schema::REQUEUED_STATE;
use crate::domain::{BatchId, now_ms};
use crate::queue::spend::{Charge, Charged, Micros, cap_refusal, held_reason};
use crate::queue::{Error, Result};

/// Charges each of `charges` in order, as
/// [`Engine::charge`](crate::queue::Engine::charge) describes, in one transaction.
pub(super) fn charge(conn: &mut Connection, charges: Vec<Charge>) -> Result<Vec<Charged>> {
    let now = now_ms();
    let tx = write_transaction(conn)?;
    let mut answers = Vec::with_capacity(charges.len());
    for charge in &charges {
        answers.push(charge_one(&tx, charge, now)?);
    }
    tx.commit().map_err(unavailable)?;
    Ok(answers)
}

fn charge_one(tx: &Transaction<'_>, charge: &Charge, now: i64) -> Result<Charged> {
    let (row, token) = (charge.lease.row, charge.lease.token);
    let held: Option<(i64, bool)> = tx
        .prepare_cached(
            "SELECT batch, charge IS NOT NULL FROM messages
             WHERE id = ?1 AND lease = ?2 AND state = 'sending'",
        )
        .and_then(|mut s| {
            s.query_row(params![row, token], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(unavailable)?;
    let Some((batch, charged)) = held else {
        return Ok(Charged::Lost);
    };
    if charged {
        return Ok(Charged::Yes);
    }
    let (spent, max_cost, first, size): (Micros, Option<Micros>, i64, i64) = tx
        .prepare_cached("SELECT spent, max_cost, first_row, size FROM batches WHERE seq = ?1")
        .and_then(|mut s| {
            s.query_row([batch], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
        })
        .map_err(unavailable)?;
    if let Some(max_cost) = max_cost
        && spent.saturating_add(charge.amount) > max_cost
    {
        let reason = held_reason(max_cost, spent, charge.currency.as_deref());
        tx.prepare_cached(
            "UPDATE messages SET state = 'held', last_error = ?5, updated_at = ?6,
                 lease = NULL, lease_until = NULL
             WHERE (id = ?1 AND lease = ?2) OR (id BETWEEN ?3 AND ?4 AND state = 'pending')",
        )
        .and_then(|mut s| s.execute(params![row, token, first, first + size - 1, reason, now]))
        .map_err(unavailable)?;
        return Ok(Charged::Held);
    }
    if let Some(budget) = charge.budget {
        let today: Micros = tx
            .prepare_cached("SELECT amount FROM provider_spend WHERE provider = ?1 AND day = ?2")
            .and_then(|mut s| {
                s.query_row(params![charge.provider, charge.day], |r| r.get(0))
                    .optional()
            })
            .map_err(unavailable)?
            .unwrap_or(0);
        if today.saturating_add(charge.amount) > budget {
            return Ok(Charged::OverBudget);
        }
    }
    tx.prepare_cached(
        "UPDATE messages SET charge = ?2, charge_provider = ?3, charge_day = ?4 WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![row, charge.amount, charge.provider, charge.day]))
    .map_err(unavailable)?;
    tx.prepare_cached("UPDATE batches SET spent = spent + ?2 WHERE seq = ?1")
        .and_then(|mut s| s.execute(params![batch, charge.amount]))
        .map_err(unavailable)?;
    tx.prepare_cached(
        "INSERT INTO provider_spend (provider, day, amount) VALUES (?1, ?2, ?3)
         ON CONFLICT (provider, day) DO UPDATE SET amount = amount + excluded.amount",
    )
    .and_then(|mut s| s.execute(params![charge.provider, charge.day, charge.amount]))
    .map_err(unavailable)?;
    Ok(Charged::Yes)
}

/// Sets batch `id`'s cap to `max_cost` and puts its held messages back to
/// pending, as [`Engine::raise_cap`](crate::queue::Engine::raise_cap) describes.
pub(super) fn raise_cap(
    conn: &mut Connection,
    id: BatchId,
    max_cost: Micros,
) -> Result<Option<()>> {
    let tx = write_transaction(conn)?;
    let Some(batch) = batch_by_id(&tx, id)? else {
        return Ok(None);
    };
    let (seq, (first, last)) = (batch.seq(), batch.rows());
    let (control, spent, cap): (String, Micros, Option<Micros>) = tx
        .query_row(
            "SELECT control, spent, max_cost FROM batches WHERE seq = ?1",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(unavailable)?;
    if let Some(why) = cap_refusal(control == "cancelled", cap, spent, max_cost) {
        return Err(Error::Conflict(why));
    }
    tx.execute(
        "UPDATE batches SET max_cost = ?2 WHERE seq = ?1",
        params![seq, max_cost],
    )
    .map_err(unavailable)?;
    // Back to pending, or to paused in a paused batch.
    tx.execute(
        &format!(
            "UPDATE messages SET state = {REQUEUED_STATE}, available_at = MAX(available_at, ?3),
                 updated_at = ?3
             WHERE id BETWEEN ?1 AND ?2 AND state = 'held'"
        ),
        params![first, last, now_ms()],
    )
    .map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    Ok(Some(()))
}

/// What `provider` has been charged on `day`.
pub(super) fn spent(conn: &mut Connection, provider: &str, day: &str) -> Result<Micros> {
    conn.prepare_cached("SELECT amount FROM provider_spend WHERE provider = ?1 AND day = ?2")
        .and_then(|mut s| s.query_row(params![provider, day], |r| r.get(0)).optional())
        .map(Option::unwrap_or_default)
        .map_err(unavailable)
}
