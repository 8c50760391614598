//! The PostgreSQL engine's spend: charging claimed messages against their
//! batch's cap and their provider's day, raising a held batch's cap, and a
//! provider's spend on a day. Refunds are the `messages_refund` trigger's
//! (migration 14). A charge locks its batches' rows in order, then its provider's
//! day: processes charging at once take turns and count every charge once.

use deadpool_postgres::Transaction;

use super::{Postgres, db};
use crate::domain::{BatchId, now_ms};
use crate::queue::spend::{Charge, Charged, Micros, cap_refusal, held_reason};
use crate::queue::{Error, Result};

/// Locks batches `$1` (seqs) for charging, in seq order.
const LOCK_BATCHES: &str =
    "SELECT seq FROM {s}.batches WHERE seq = ANY($1::bigint[]) ORDER BY seq FOR UPDATE";

/// Message `$1` under lease `$2`: whether it carries a charge, and its batch's
/// spend and cap; no row when the lease is lost.
const MESSAGE: &str = "
SELECT m.charge IS NOT NULL, b.spent, b.max_cost, b.control
FROM {s}.messages m JOIN {s}.batches b ON b.seq = m.id >> 32
WHERE m.id = $1 AND m.lease = $2 AND m.state = 'sending'";

/// Holds message `$1` (lease `$2`) and every pending message of its batch, with
/// the reason `$3`.
const HOLD: &str = "
UPDATE {s}.messages SET state = 'held', last_error = $3, updated_at = $4,
    lease = NULL, lease_until = NULL
WHERE (id = $1 AND lease = $2)
   OR (id >= ($1 >> 32) << 32 AND id < (($1 >> 32) + 1) << 32 AND state = 'pending')";

/// Provider `$1`'s spend on day `$2`, its row locked (and made, at zero).
const LOCK_DAY: &str = "
INSERT INTO {s}.provider_spend (provider, day, amount) VALUES ($1, $2, 0)
ON CONFLICT (provider, day) DO UPDATE SET amount = {s}.provider_spend.amount
RETURNING amount";

/// Charges message `$1` `$2` on provider `$3`'s day `$4`, and adds it to both sums.
const CHARGE: &str = "
WITH message AS (
    UPDATE {s}.messages SET charge = $2, charge_provider = $3, charge_day = $4 WHERE id = $1
), batch AS (
    UPDATE {s}.batches SET spent = spent + $2 WHERE seq = $1 >> 32
)
INSERT INTO {s}.provider_spend (provider, day, amount) VALUES ($3, $4, $2)
ON CONFLICT (provider, day) DO UPDATE SET amount = {s}.provider_spend.amount + excluded.amount";

const BATCH: &str =
    "SELECT seq, control, spent, max_cost FROM {s}.batches WHERE id = $1 FOR UPDATE";

/// Sets batch `$1`'s cap to `$2` and puts its held messages back to pending (to
/// paused in a paused batch), due at `$3` at the soonest.
const RAISE: &str = "
WITH batch AS (UPDATE {s}.batches SET max_cost = $2 WHERE seq = $1)
UPDATE {s}.messages m SET state = {requeued}, available_at = GREATEST(m.available_at, $3),
    updated_at = $3
WHERE m.id >= $1 << 32 AND m.id < ($1 + 1) << 32 AND m.state = 'held'";

const SPENT: &str = "SELECT amount FROM {s}.provider_spend WHERE provider = $1 AND day = $2";

/// The spend statements, filled in for the schema.
pub(super) struct SpendSql {
    lock_batches: String,
    message: String,
    hold: String,
    lock_day: String,
    charge: String,
    batch: String,
    raise: String,
    spent: String,
}

impl SpendSql {
    pub(super) fn new(fill: &dyn Fn(&str) -> String) -> SpendSql {
        SpendSql {
            lock_batches: fill(LOCK_BATCHES),
            message: fill(MESSAGE),
            hold: fill(HOLD),
            lock_day: fill(LOCK_DAY),
            charge: fill(CHARGE),
            batch: fill(BATCH),
            raise: fill(RAISE),
            spent: fill(SPENT),
        }
    }
}

impl Postgres {
    /// [`Engine::charge`](crate::queue::Engine::charge).
    pub(super) async fn charge_claimed(&self, charges: Vec<Charge>) -> Result<Vec<Charged>> {
        let sql = &self.sql.spend;
        let now = now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let mut seqs: Vec<i64> = charges.iter().map(|c| c.lease.row >> 32).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let lock = tx.prepare_cached(&sql.lock_batches).await.map_err(db)?;
        tx.query(&lock, &[&seqs]).await.map_err(db)?;
        let mut answers = Vec::with_capacity(charges.len());
        for charge in &charges {
            answers.push(self.charge_one(&tx, charge, now).await?);
        }
        tx.commit().await.map_err(db)?;
        Ok(answers)
    }

    async fn charge_one(&self, tx: &Transaction<'_>, charge: &Charge, now: i64) -> Result<Charged> {
        let sql = &self.sql.spend;
        let (row, token) = (charge.lease.row, charge.lease.token);
        let message = tx.prepare_cached(&sql.message).await.map_err(db)?;
        let Some(found) = tx.query_opt(&message, &[&row, &token]).await.map_err(db)? else {
            return Ok(Charged::Lost);
        };
        if found.get::<_, bool>(0) {
            return Ok(Charged::Yes);
        }
        let (spent, max_cost): (Micros, Option<Micros>) = (found.get(1), found.get(2));
        if let Some(max_cost) = max_cost
            && spent.saturating_add(charge.amount) > max_cost
        {
            let reason = held_reason(max_cost, spent, charge.currency.as_deref());
            let hold = tx.prepare_cached(&sql.hold).await.map_err(db)?;
            tx.execute(&hold, &[&row, &token, &reason, &now])
                .await
                .map_err(db)?;
            return Ok(Charged::Held);
        }
        if let Some(budget) = charge.budget {
            let lock = tx.prepare_cached(&sql.lock_day).await.map_err(db)?;
            let today: Micros = tx
                .query_one(&lock, &[&charge.provider, &charge.day])
                .await
                .map_err(db)?
                .get(0);
            if today.saturating_add(charge.amount) > budget {
                return Ok(Charged::OverBudget);
            }
        }
        let stmt = tx.prepare_cached(&sql.charge).await.map_err(db)?;
        tx.execute(
            &stmt,
            &[&row, &charge.amount, &charge.provider, &charge.day],
        )
        .await
        .map_err(db)?;
        Ok(Charged::Yes)
    }

    /// [`Engine::raise_cap`](crate::queue::Engine::raise_cap).
    pub(super) async fn raise_batch_cap(
        &self,
        id: BatchId,
        max_cost: Micros,
    ) -> Result<Option<()>> {
        let sql = &self.sql.spend;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let batch = tx.prepare_cached(&sql.batch).await.map_err(db)?;
        let Some(row) = tx.query_opt(&batch, &[&id.to_string()]).await.map_err(db)? else {
            return Ok(None);
        };
        let (seq, control): (i64, &str) = (row.get(0), row.get(1));
        if let Some(why) = cap_refusal(control == "cancelled", row.get(3), row.get(2), max_cost) {
            return Err(Error::Conflict(why));
        }
        let raise = tx.prepare_cached(&sql.raise).await.map_err(db)?;
        tx.execute(&raise, &[&seq, &max_cost, &now_ms()])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Some(()))
    }

    /// [`Engine::spent`](crate::queue::Engine::spent).
    pub(super) async fn spent_on(&self, provider: &str, day: &str) -> Result<Micros> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.spend.spent)
            .await
            .map_err(db)?;
        let row = client
            .query_opt(&stmt, &[&provider, &day])
            .await
            .map_err(db)?;
        Ok(row.map_or(0, |r| r.get(0)))
    }
}
