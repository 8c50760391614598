//! A batch stored in chunks: one transaction held open on a connection of its own
//! from the batch row to the commit, so a process that dies leaves nothing.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::accept::{BatchHead, Columns};
use super::sql::Sql;
use super::{Postgres, db};
use crate::domain::now_ms;
use crate::queue::{Accepted, Arrival, Begun, Error, NewBatch, NewMessage, Result, Stage, Staging};

/// The batch row of a batch stored in chunks (in one transaction of its own
/// connection); its report is set at the end by [`STAGE_REPORT`].
pub(super) const STAGE_BATCH: &str = "
INSERT INTO {s}.batches (id, channel, source, priority, send_at, created_at, idempotency_key,
                         request_hash, report, template, template_source, expires_at,
                         callback_url, subscriptions, send_window, max_cost)
VALUES ($1, $2, $3, $4::integer, $5::bigint, $6::bigint, $7, $8, '{}', $9, $10, $11::bigint,
        $12, $13::text::jsonb, $14, $15::bigint)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING seq";

/// One chunk of a batch being stored in chunks.
pub(super) const STAGE_MESSAGES: &str = "
INSERT INTO {s}.messages (id, provider, state, priority, available_at, to_addr, ref, subject, body,
                          segments, vars, created_at, updated_at, expires_at)
SELECT ($1::bigint << 32) | m.idx, m.provider, 'pending', $2::integer, GREATEST(m.due, $3::bigint), m.to_addr, m.ref,
       m.subject, m.body, m.segments, m.vars, $4::bigint, $4::bigint,
       (SELECT expires_at FROM {s}.batches WHERE seq = $1::bigint)
FROM UNNEST($5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
            $11::integer[], $12::text[], $13::bigint[])
     AS m(idx, provider, to_addr, ref, subject, body, segments, vars, due)";

pub(super) const STAGE_REPORT: &str = "UPDATE {s}.batches SET report = $2 WHERE seq = $1";

impl Postgres {
    /// [`Engine::begin`](crate::queue::Engine::begin).
    pub(super) async fn stage(&self, batch: NewBatch, arrival: Arrival) -> Result<Begun> {
        if arrival == Arrival::AtHand {
            // Gathered and stored by one accept, as fast as the chunks are made.
            return Ok(Begun::Staging(Staging::gather(batch)));
        }
        // A connection of its own, outside the pool, holding one transaction from
        // the batch row to the last chunk: if this process dies or gives up, the
        // connection closes and the server rolls everything back.
        let (client, connection) = self.config.connect(NoTls).await.map_err(db)?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a staging connection to PostgreSQL ended");
            }
        });
        client.batch_execute("BEGIN").await.map_err(db)?;
        let (key, hash) = match &batch.idempotency {
            Some(i) => (Some(i.key.as_str()), Some(i.request_hash.as_str())),
            None => (None, None),
        };
        let head = BatchHead::of(&batch);
        let mut params = head.params(&batch);
        params.push(&batch.template_id);
        params.push(&head.template);
        params.push(&batch.expires_at_ms);
        params.push(&batch.callback_url);
        params.push(&head.subscriptions);
        params.push(&head.window);
        params.push(&batch.max_cost);
        let row = client
            .query_opt(&self.sql.stage_batch, &params)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            // The key is taken (a batch with it committed while we waited).
            let (Some(key), Some(hash)) = (key, hash) else {
                return Err(Error::Corrupt("a batch row was not stored".into()));
            };
            let pooled = self.client().await?;
            return match self.replayed(&pooled, key, hash).await? {
                Some(replayed) => Ok(Begun::Answered(replayed)),
                None => Err(Error::Unavailable(format!(
                    "the Idempotency-Key `{key}` was taken and released: try again"
                ))),
            };
        };
        Ok(Begun::Staging(Staging::new(Box::new(PgStaging {
            client,
            connection,
            sql: self.sql.clone(),
            seq: row.get(0),
            batch,
        }))))
    }
}

/// A batch being stored in chunks: one open transaction on a connection of its own.
struct PgStaging {
    client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
    sql: Arc<Sql>,
    seq: i64,
    batch: NewBatch,
}

#[async_trait]
impl Stage for PgStaging {
    async fn add(&mut self, messages: Vec<NewMessage>) -> Result<()> {
        let columns = Columns::of(&self.batch, &messages);
        let now = now_ms();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &self.seq,
            &self.batch.priority,
            &self.batch.send_at_ms,
            &now,
        ];
        params.extend(columns.params());
        params.push(&columns.due);
        self.client
            .execute(&self.sql.stage_messages, &params)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn commit(self: Box<Self>, report: serde_json::Value, _span: u32) -> Result<Accepted> {
        self.client
            .execute(&self.sql.stage_report, &[&self.seq, &report.to_string()])
            .await
            .map_err(db)?;
        self.client.batch_execute("COMMIT").await.map_err(db)?;
        drop(self.client);
        let _ = self.connection.await;
        Ok(Accepted::New(self.batch.id))
    }

    async fn discard(self: Box<Self>) {
        // Closing the connection rolls the transaction back.
        drop(self.client);
        let _ = self.connection.await;
    }
}
