//! The PostgreSQL engine's replies ledger (table `replies`, migration 11):
//! recording a request's replies in one transaction with their links and their
//! keywords' suppressions, and listing them.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{Postgres, db, index_of};
use crate::domain::{Channel, message_id};
use crate::provider::Keyword;
use crate::queue::replies::{
    Answered, NewReply, Recorded, Reply, ReplyQuery, ReplyStore, stored_answer, stored_keyword,
};
use crate::queue::suppress::{self, REPLIED_STOP};
use crate::queue::{Result, parse_batch_id};

const REPLY: &str = "SELECT id, seq, provider, from_addr, to_addr, body, sent_at, received_at,
    keyword, batch_id, message_id, ref FROM {s}.replies";

/// A reply already there is left alone: a concurrent request with the same reply
/// waits for the first to commit, then inserts nothing.
const INSERT: &str = "INSERT INTO {s}.replies (id, provider, from_addr, to_addr, body, sent_at,
    received_at, keyword, batch_id, message_id, ref)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (id) DO NOTHING RETURNING seq";

/// The latest message sent to `$2` through `$1`, by the partial index of sent
/// messages by provider and recipient.
const LATEST_SENT: &str = "SELECT m.id, b.id, m.ref FROM {s}.messages m
JOIN {s}.batches b ON b.seq = m.id >> 32
WHERE m.provider = $1 AND m.to_addr = $2 AND m.sent_at IS NOT NULL
ORDER BY m.sent_at DESC, m.id DESC LIMIT 1";

const OPT_OUT: &str = "INSERT INTO {s}.suppressions (channel, address, reason, created_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (channel, address) DO UPDATE SET reason = EXCLUDED.reason";

/// Lifts a suppression only when a reply made it (its reason starts with `$3`).
const OPT_IN: &str = "DELETE FROM {s}.suppressions
WHERE channel = $1 AND address = $2 AND starts_with(reason, $3)";

/// The replies ledger's statements, filled in for the schema.
pub(super) struct ReplySql {
    reply: String,
    insert: String,
    latest_sent: String,
    opt_out: String,
    opt_in: String,
    page: String,
    page_from: String,
    reasons: String,
}

impl ReplySql {
    pub(super) fn new(fill: &dyn Fn(&str) -> String) -> ReplySql {
        ReplySql {
            reply: fill(&format!("{REPLY} WHERE id = $1")),
            insert: fill(INSERT),
            latest_sent: fill(LATEST_SENT),
            opt_out: fill(OPT_OUT),
            opt_in: fill(OPT_IN),
            page: fill(&format!("{REPLY} WHERE seq > $1 ORDER BY seq LIMIT $2")),
            reasons: fill(
                "SELECT address, reason FROM {s}.suppressions
                 WHERE channel = $1 AND address = ANY($2::text[])",
            ),
            page_from: fill(&format!(
                "{REPLY} WHERE from_addr = $3 AND seq > $1 ORDER BY seq LIMIT $2"
            )),
        }
    }
}

#[async_trait]
impl ReplyStore for Postgres {
    async fn record_replies(
        &self,
        replies: Vec<NewReply>,
        endpoints: Vec<String>,
        now_ms: i64,
    ) -> Result<Vec<Recorded>> {
        let sql = &self.sql.replies;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let mut recorded = Vec::with_capacity(replies.len());
        for reply in replies {
            let (message_row, answers) = match tx
                .query_opt(&sql.latest_sent, &[&reply.provider, &reply.from])
                .await
                .map_err(db)?
            {
                Some(row) => {
                    let batch_id = parse_batch_id(row.get::<_, &str>(1))?;
                    (
                        Some(row.get::<_, i64>(0)),
                        Some(Answered {
                            batch_id,
                            message_id: message_id(batch_id, index_of(row.get(0))),
                            reference: row.get(2),
                        }),
                    )
                }
                None => (None, None),
            };
            let keyword = reply.keyword.map(Keyword::as_str);
            let (batch, message, reference) = match &answers {
                Some(a) => (
                    Some(a.batch_id.to_string()),
                    Some(a.message_id.clone()),
                    a.reference.clone(),
                ),
                None => (None, None, None),
            };
            let params: [&(dyn ToSql + Sync); 11] = [
                &reply.id,
                &reply.provider,
                &reply.from,
                &reply.to,
                &reply.body,
                &reply.sent_at_ms,
                &now_ms,
                &keyword,
                &batch,
                &message,
                &reference,
            ];
            let Some(row) = tx.query_opt(&sql.insert, &params).await.map_err(db)? else {
                let row = tx.query_one(&sql.reply, &[&reply.id]).await.map_err(db)?;
                recorded.push(Recorded {
                    reply: to_reply(&row)?,
                    new: false,
                });
                continue;
            };
            let entry = suppress::opted_out(&reply.from, &reply.id);
            match reply.keyword {
                Some(Keyword::OptOut) => {
                    tx.execute(
                        &sql.opt_out,
                        &[
                            &entry.channel.as_str(),
                            &entry.address,
                            &entry.reason,
                            &now_ms,
                        ],
                    )
                    .await
                    .map_err(db)?;
                }
                Some(Keyword::OptIn) => {
                    tx.execute(
                        &sql.opt_in,
                        &[&entry.channel.as_str(), &entry.address, &REPLIED_STOP],
                    )
                    .await
                    .map_err(db)?;
                }
                None => {}
            }
            let reply = reply.stored(row.get(0), now_ms, answers);
            self.record_deliveries(&tx, &endpoints, &reply.event(message_row))
                .await?;
            recorded.push(Recorded { reply, new: true });
        }
        tx.commit().await.map_err(db)?;
        Ok(recorded)
    }

    async fn replies(&self, query: ReplyQuery) -> Result<Vec<Reply>> {
        let sql = &self.sql.replies;
        let client = self.client().await?;
        let after = query.after.unwrap_or(i64::MIN);
        let limit = i64::from(query.limit);
        let rows = match &query.from {
            Some(from) => client
                .query(&sql.page_from, &[&after, &limit, from])
                .await
                .map_err(db)?,
            None => client
                .query(&sql.page, &[&after, &limit])
                .await
                .map_err(db)?,
        };
        rows.iter().map(to_reply).collect()
    }

    async fn suppression_reasons(
        &self,
        channel: Channel,
        addresses: Vec<String>,
    ) -> Result<HashMap<String, String>> {
        let client = self.client().await?;
        let rows = client
            .query(&self.sql.replies.reasons, &[&channel.as_str(), &addresses])
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

fn to_reply(row: &Row) -> Result<Reply> {
    let keyword = stored_keyword(row.get(8))?;
    let answers = stored_answer(row.get(9), row.get(10), row.get(11))?;
    Ok(Reply {
        id: row.get(0),
        seq: row.get(1),
        provider: row.get(2),
        from: row.get(3),
        to: row.get(4),
        body: row.get(5),
        sent_at_ms: row.get(6),
        received_at_ms: row.get(7),
        keyword,
        answers,
    })
}
