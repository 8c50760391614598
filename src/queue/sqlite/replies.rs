//! The embedded engine's replies ledger (table `replies`, migration 11): recording
//! a request's replies in one write transaction with their links and their
//! keywords' suppressions, and listing them.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Transaction, params};

use super::Sqlite;
use super::connection::{unavailable, write_transaction};
use super::ledger::batch_by_seq;
use super::record::record_deliveries;
use crate::domain::{Channel, message_id};
use crate::provider::Keyword;
use crate::queue::replies::{
    Answered, NewReply, Recorded, Reply, ReplyQuery, ReplyStore, stored_answer, stored_keyword,
};
use crate::queue::suppress::{self, REPLIED_STOP};
use crate::queue::{Error, Result};

const REPLY: &str = "SELECT id, seq, provider, from_addr, to_addr, body, sent_at, received_at,
    keyword, batch_id, message_id, ref FROM replies";

#[async_trait]
impl ReplyStore for Sqlite {
    async fn record_replies(
        &self,
        replies: Vec<NewReply>,
        endpoints: Vec<String>,
        now_ms: i64,
    ) -> Result<Vec<Recorded>> {
        self.write(move |conn| {
            let tx = write_transaction(conn)?;
            let recorded = replies
                .into_iter()
                .map(|reply| record(&tx, reply, &endpoints, now_ms))
                .collect::<Result<Vec<_>>>()?;
            tx.commit().map_err(unavailable)?;
            Ok(recorded)
        })
        .await
    }

    async fn replies(&self, query: ReplyQuery) -> Result<Vec<Reply>> {
        self.read(move |conn| {
            let after = query.after.unwrap_or(i64::MIN);
            let rows = match &query.from {
                Some(from) => conn
                    .prepare_cached(&format!(
                        "{REPLY} WHERE from_addr = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                    ))
                    .and_then(|mut s| {
                        s.query_map(params![from, after, query.limit], read_reply)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }),
                None => conn
                    .prepare_cached(&format!("{REPLY} WHERE seq > ?1 ORDER BY seq LIMIT ?2"))
                    .and_then(|mut s| {
                        s.query_map(params![after, query.limit], read_reply)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }),
            };
            rows.map_err(unavailable)?.into_iter().collect()
        })
        .await
    }

    async fn suppression_reasons(
        &self,
        channel: Channel,
        addresses: Vec<String>,
    ) -> Result<HashMap<String, String>> {
        let addresses = serde_json::to_string(&addresses)
            .map_err(|e| Error::Unavailable(format!("cannot encode addresses: {e}")))?;
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT address, reason FROM suppressions
                 WHERE channel = ?1 AND address IN (SELECT value FROM json_each(?2))",
            )
            .and_then(|mut s| {
                s.query_map(params![channel.as_str(), addresses], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
            })
            .map_err(unavailable)
        })
        .await
    }
}

/// Records one reply, unless it is there already, with its link, its keyword's
/// effect and its event.
fn record(
    tx: &Transaction<'_>,
    reply: NewReply,
    endpoints: &[String],
    now_ms: i64,
) -> Result<Recorded> {
    if let Some(stored) = stored(tx, &reply.id)? {
        return Ok(Recorded {
            reply: stored,
            new: false,
        });
    }
    let (row, answers) = match latest_sent(tx, &reply.provider, &reply.from)? {
        Some((row, answers)) => (Some(row), Some(answers)),
        None => (None, None),
    };
    let seq = tx
        .prepare_cached(
            "INSERT INTO replies (id, provider, from_addr, to_addr, body, sent_at, received_at,
                 keyword, batch_id, message_id, ref)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING seq",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    reply.id,
                    reply.provider,
                    reply.from,
                    reply.to,
                    reply.body,
                    reply.sent_at_ms,
                    now_ms,
                    reply.keyword.map(Keyword::as_str),
                    answers.as_ref().map(|a| a.batch_id.to_string()),
                    answers.as_ref().map(|a| a.message_id.clone()),
                    answers.as_ref().and_then(|a| a.reference.clone()),
                ],
                |r| r.get(0),
            )
        })
        .map_err(unavailable)?;
    match reply.keyword {
        Some(Keyword::OptOut) => {
            let entry = suppress::opted_out(&reply.from, &reply.id);
            tx.prepare_cached(
                "INSERT INTO suppressions (channel, address, reason, created_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (channel, address) DO UPDATE SET reason = excluded.reason",
            )
            .and_then(|mut s| {
                s.execute(params![
                    entry.channel.as_str(),
                    entry.address,
                    entry.reason,
                    now_ms
                ])
            })
            .map_err(unavailable)?;
        }
        Some(Keyword::OptIn) => {
            let entry = suppress::opted_out(&reply.from, &reply.id);
            tx.prepare_cached(
                "DELETE FROM suppressions
                 WHERE channel = ?1 AND address = ?2 AND substr(reason, 1, length(?3)) = ?3",
            )
            .and_then(|mut s| {
                s.execute(params![entry.channel.as_str(), entry.address, REPLIED_STOP])
            })
            .map_err(unavailable)?;
        }
        None => {}
    }
    let reply = reply.stored(seq, now_ms, answers);
    record_deliveries(tx, endpoints, &reply.event(row))?;
    Ok(Recorded { reply, new: true })
}

fn stored(tx: &Transaction<'_>, id: &str) -> Result<Option<Reply>> {
    tx.prepare_cached(&format!("{REPLY} WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], read_reply).optional())
        .map_err(unavailable)?
        .transpose()
}

/// The latest message sent to `to` through `provider`, and its row (by the partial
/// index of sent messages by provider and recipient).
fn latest_sent(tx: &Transaction<'_>, provider: &str, to: &str) -> Result<Option<(i64, Answered)>> {
    let Some((row, batch, reference)) = tx
        .prepare_cached(
            "SELECT id, batch, ref FROM messages
             WHERE provider = ?1 AND to_addr = ?2 AND sent_at IS NOT NULL
             ORDER BY sent_at DESC, id DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(params![provider, to], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .optional()
        })
        .map_err(unavailable)?
    else {
        return Ok(None);
    };
    let batch = batch_by_seq(tx, batch)?;
    Ok(Some((
        row,
        Answered {
            batch_id: batch.id,
            message_id: message_id(batch.id, batch.index_of(row)),
            reference,
        },
    )))
}

fn read_reply(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Reply>> {
    let (keyword, batch, message, reference): (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = (r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?);
    let reply = Reply {
        id: r.get(0)?,
        seq: r.get(1)?,
        provider: r.get(2)?,
        from: r.get(3)?,
        to: r.get(4)?,
        body: r.get(5)?,
        sent_at_ms: r.get(6)?,
        received_at_ms: r.get(7)?,
        keyword: None,
        answers: None,
    };
    Ok(stored_keyword(keyword.as_deref()).and_then(|keyword| {
        Ok(Reply {
            keyword,
            answers: stored_answer(batch.as_deref(), message, reference)?,
            ..reply
        })
    }))
}
