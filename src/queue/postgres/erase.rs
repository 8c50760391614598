//! The PostgreSQL engine's erasure of a person, in one transaction: their queued
//! messages cancelled, their address hashed in messages (through the
//! `messages_to` index), replies (`replies_from`), the payloads of those replies'
//! events (`deliveries_reply`), held receipts and recipient-cap records; and the
//! store's erasure salt.

use async_trait::async_trait;

use super::search::TO_KEY;
use super::{Postgres, db};
use crate::queue::erase::{ERASED_REASON, EraseStore, Erased, erase_in_payload, new_salt};
use crate::queue::{EventKind, Result};

/// The erasure statements, filled in for the schema.
pub(super) struct EraseSql {
    salt: String,
    make_salt: String,
    cancel: String,
    sending: String,
    messages: String,
    replies: String,
    payloads: String,
    payload: String,
    receipts: String,
    sends: String,
}

impl EraseSql {
    pub(super) fn new(fill: &dyn Fn(&str) -> String) -> EraseSql {
        let by_key = |sql: &str| fill(&sql.replace("{key}", TO_KEY));
        EraseSql {
            salt: fill("SELECT salt FROM {s}.erase_salt WHERE id = 1"),
            make_salt: fill(
                "INSERT INTO {s}.erase_salt (id, salt) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            ),
            cancel: by_key(
                "UPDATE {s}.messages SET state = 'cancelled', updated_at = $2, last_error = $3
                 WHERE {key} = $1 AND state IN ('pending', 'paused', 'unknown') RETURNING id",
            ),
            sending: by_key(
                "SELECT COUNT(*) FROM {s}.messages WHERE {key} = $1 AND state = 'sending'",
            ),
            messages: by_key(
                "UPDATE {s}.messages SET to_addr = $2 WHERE {key} = $1 AND state <> 'sending'",
            ),
            replies: fill(
                "UPDATE {s}.replies SET from_addr = $2 WHERE from_addr = $1 RETURNING 'reply.' || id",
            ),
            payloads: fill(
                "SELECT seq, payload FROM {s}.deliveries
                 WHERE kind = 'reply' AND event_id = ANY($1::text[]) AND payload IS NOT NULL
                 FOR UPDATE",
            ),
            payload: fill("UPDATE {s}.deliveries SET payload = $2 WHERE seq = $1"),
            receipts: fill("UPDATE {s}.early_receipts SET to_addr = $2 WHERE to_addr = $1"),
            sends: fill("UPDATE {s}.recipient_sends SET to_addr = $2 WHERE to_addr = $1"),
        }
    }
}

#[async_trait]
impl EraseStore for Postgres {
    async fn erase_salt(&self) -> Result<Vec<u8>> {
        let sql = &self.sql.erase;
        let client = self.client().await?;
        if let Some(row) = client.query_opt(&sql.salt, &[]).await.map_err(db)? {
            return Ok(row.get(0));
        }
        // Of processes racing to make it, the first insert wins; all read it.
        client
            .execute(&sql.make_salt, &[&new_salt()?])
            .await
            .map_err(db)?;
        let row = client.query_one(&sql.salt, &[]).await.map_err(db)?;
        Ok(row.get(0))
    }

    async fn erase(&self, address: &str, erased_as: &str, now: i64) -> Result<Erased> {
        let sql = &self.sql.erase;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let cancel = tx.prepare_cached(&sql.cancel).await.map_err(db)?;
        let cancelled: Vec<i64> = tx
            .query(&cancel, &[&address, &now, &ERASED_REASON])
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        self.record_message_events(
            &tx,
            &cancelled,
            EventKind::Cancelled,
            Some(ERASED_REASON),
            now,
        )
        .await?;
        let sending: i64 = tx
            .query_one(&sql.sending, &[&address])
            .await
            .map_err(db)?
            .get(0);
        let messages = tx
            .execute(&sql.messages, &[&address, &erased_as])
            .await
            .map_err(db)?;
        let events: Vec<String> = tx
            .query(&sql.replies, &[&address, &erased_as])
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut rewritten = 0;
        if !events.is_empty() {
            for row in tx.query(&sql.payloads, &[&events]).await.map_err(db)? {
                let payload: String = row.get(1);
                if let Some(erased) = erase_in_payload(&payload, address, erased_as) {
                    tx.execute(&sql.payload, &[&row.get::<_, i64>(0), &erased])
                        .await
                        .map_err(db)?;
                    rewritten += 1;
                }
            }
        }
        // Both are short-lived (a day of held receipts, a cap's window of sends) and
        // small; what they key by the address goes too.
        for stmt in [&sql.receipts, &sql.sends] {
            tx.execute(stmt, &[&address, &erased_as])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(Erased {
            messages,
            replies: events.len() as u64,
            events: rewritten,
            cancelled: cancelled.len() as u64,
            sending: sending.unsigned_abs(),
        })
    }
}
