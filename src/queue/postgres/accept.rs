//! Accepting a whole batch in one statement, replaying an idempotency key, and the
//! binding of a batch's row and its messages' columns to the statements' parameters.

use deadpool_postgres::Object;
use tokio_postgres::types::ToSql;

use super::{Postgres, db};
use crate::domain::now_ms;
use crate::queue::outbox::subscriptions_to_stored;
use crate::queue::{Accepted, Error, NewBatch, NewMessage, Result, parse_batch_id};

/// One statement: the batch row (unless its idempotency key is taken) and all its
/// messages. A taken key inserts nothing and returns no row.
pub(super) const ACCEPT: &str = "
WITH batch AS (
    INSERT INTO {s}.batches (id, channel, source, priority, send_at, created_at, idempotency_key,
                             request_hash, report, template, template_source, expires_at,
                             callback_url, subscriptions, send_window, max_cost)
    VALUES ($1, $2, $3, $4::integer, $5::bigint, $6::bigint, $7, $8, $9, $18, $19, $20::bigint,
            $21, $22::text::jsonb, $24, $25::bigint)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING seq
), inserted AS (
    INSERT INTO {s}.messages (id, provider, state, priority, available_at, to_addr, ref, subject, body,
                              segments, vars, created_at, updated_at, expires_at)
    SELECT (batch.seq << 32) | m.idx, m.provider, 'pending', $4, GREATEST(m.due, $5), m.to_addr, m.ref, m.subject, m.body,
           m.segments, m.vars, $6, $6, $20::bigint
    FROM batch, UNNEST($10::bigint[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                       $16::integer[], $17::text[], $23::bigint[])
         AS m(idx, provider, to_addr, ref, subject, body, segments, vars, due)
)
SELECT seq FROM batch";

pub(super) const REPLAY: &str =
    "SELECT id, request_hash, report FROM {s}.batches WHERE idempotency_key = $1";

impl Postgres {
    /// [`Engine::accept`](crate::queue::Engine::accept).
    pub(super) async fn accept_batch(&self, batch: NewBatch) -> Result<Accepted> {
        let client = self.client().await?;
        let insert = client.prepare_cached(&self.sql.accept).await.map_err(db)?;
        let (key, hash) = match &batch.idempotency {
            Some(i) => (Some(i.key.as_str()), Some(i.request_hash.as_str())),
            None => (None, None),
        };
        let columns = Columns::of(&batch, &batch.messages);
        let report = batch.report.to_string();
        // A replay can race with pruning of the batch it replays: then the key is
        // free again and the next round stores the batch.
        for _ in 0..3 {
            let head = BatchHead::of(&batch);
            let mut params = head.params(&batch);
            params.push(&report);
            params.extend(columns.params());
            params.push(&batch.template_id);
            params.push(&head.template);
            params.push(&batch.expires_at_ms);
            params.push(&batch.callback_url);
            params.push(&head.subscriptions);
            params.push(&columns.due);
            params.push(&head.window);
            params.push(&batch.max_cost);
            let stored = client.query_opt(&insert, &params).await.map_err(db)?;
            if stored.is_some() {
                return Ok(Accepted::New(batch.id));
            }
            let (Some(key), Some(hash)) = (key, hash) else {
                return Err(Error::Corrupt(
                    "a batch without an idempotency key was not stored".into(),
                ));
            };
            if let Some(replayed) = self.replayed(&client, key, hash).await? {
                return Ok(replayed);
            }
        }
        Err(Error::Unavailable(format!(
            "the Idempotency-Key `{}` keeps being taken and released: try again",
            key.unwrap_or_default()
        )))
    }

    /// The stored answer for an idempotency key and the hash of its request, if the
    /// key is taken: the same request replays it, another is a conflict.
    pub(super) async fn replayed(
        &self,
        client: &Object,
        key: &str,
        hash: &str,
    ) -> Result<Option<Accepted>> {
        let replay = client.prepare_cached(&self.sql.replay).await.map_err(db)?;
        let Some(seen) = client.query_opt(&replay, &[&key]).await.map_err(db)? else {
            return Ok(None);
        };
        if seen.get::<_, Option<&str>>(1) != Some(hash) {
            return Err(Error::Conflict(format!(
                "the Idempotency-Key `{key}` was used before with a different request"
            )));
        }
        let report = serde_json::from_str(seen.get(2))
            .map_err(|e| Error::Corrupt(format!("bad stored report: {e}")))?;
        Ok(Some(Accepted::Replayed {
            id: parse_batch_id(seen.get(0))?,
            report,
        }))
    }
}

/// The values of a batch row that the statements storing it take, as text and
/// numbers.
pub(super) struct BatchHead<'a> {
    id: String,
    channel: &'a str,
    now: i64,
    key: Option<&'a str>,
    hash: Option<&'a str>,
    /// The batch's template as stored (JSON: body, subject), which its messages
    /// are rendered from when claimed.
    pub(super) template: Option<String>,
    /// The batch's subscriptions as stored (JSON), none when it has none.
    pub(super) subscriptions: Option<String>,
    /// The batch's sending window as stored (JSON), none when it has none.
    pub(super) window: Option<String>,
}

impl<'a> BatchHead<'a> {
    pub(super) fn of(batch: &'a NewBatch) -> Self {
        BatchHead {
            id: batch.id.to_string(),
            channel: batch.channel.as_str(),
            now: now_ms(),
            key: batch.idempotency.as_ref().map(|i| i.key.as_str()),
            hash: batch.idempotency.as_ref().map(|i| i.request_hash.as_str()),
            template: batch.template.as_ref().map(|t| t.to_stored()),
            subscriptions: subscriptions_to_stored(&batch.subscriptions),
            window: batch.window.as_ref().map(|w| w.to_stored()),
        }
    }

    /// `$1` … `$8`: id, channel, source, priority, send_at, created_at, idempotency
    /// key and request hash.
    pub(super) fn params(&'a self, batch: &'a NewBatch) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.channel,
            &batch.source,
            &batch.priority,
            &batch.send_at_ms,
            &self.now,
            &self.key,
            &self.hash,
        ]
    }
}

/// Messages as the columns that `UNNEST` turns back into rows.
pub(super) struct Columns<'a> {
    idx: Vec<i64>,
    provider: Vec<&'a str>,
    to: Vec<&'a str>,
    reference: Vec<Option<&'a str>>,
    subject: Vec<Option<&'a str>>,
    body: Vec<&'a str>,
    segments: Vec<i32>,
    vars: Vec<Option<&'a str>>,
    /// Each message's due time, bound after the others: see [`NewMessage::due_ms`].
    pub(super) due: Vec<i64>,
}

impl<'a> Columns<'a> {
    /// The columns of `messages` of `batch`. With the batch's template stored, a
    /// message's body is rendered at claim: an empty one is stored.
    pub(super) fn of(batch: &NewBatch, messages: &'a [NewMessage]) -> Self {
        let n = messages.len();
        let mut c = Columns {
            idx: Vec::with_capacity(n),
            provider: Vec::with_capacity(n),
            to: Vec::with_capacity(n),
            reference: Vec::with_capacity(n),
            subject: Vec::with_capacity(n),
            body: Vec::with_capacity(n),
            segments: Vec::with_capacity(n),
            vars: Vec::with_capacity(n),
            due: Vec::with_capacity(n),
        };
        for m in messages {
            c.idx.push(i64::from(m.index));
            c.provider.push(&m.provider);
            c.to.push(&m.to);
            c.reference.push(m.reference.as_deref());
            c.subject.push(m.subject.as_deref());
            c.body.push(match batch.template {
                Some(_) if m.vars.is_some() => "",
                _ => &m.body,
            });
            c.segments
                .push(i32::try_from(m.segments).unwrap_or(i32::MAX));
            c.vars.push(m.vars.as_deref());
            c.due.push(m.due_at(batch.send_at_ms));
        }
        c
    }

    /// The columns in the order the statements take them.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.idx,
            &self.provider,
            &self.to,
            &self.reference,
            &self.subject,
            &self.body,
            &self.segments,
            &self.vars,
        ]
    }
}
