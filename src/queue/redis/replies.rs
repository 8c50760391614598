//! The Redis engine's replies ledger. Keys (after the prefix):
//! - `reply:{id}` hash: one reply (`seq`, `provider`, `from`, `to`, `body`,
//!   `sent_at`, `received_at`, `keyword`, and the message it answers: `batch_id`,
//!   `message_id`, `ref`);
//! - `replies` sorted set: every reply id scored by its `seq` (from the counter
//!   `reply-seq`), and `replies-from:{number}` the same for one sender;
//! - `last:{provider}:{to}` string: the message (`{seq}:{index}`) last sent to `to`
//!   through `provider`, set by the settle script when a message is sent.
//!
//! Older builds never read these keys, so they leave the layout's version alone. A
//! request's replies are recorded by one script, with their keywords'
//! suppressions (kept as the records' `suppressed:sms` and `suppression:sms`) and
//! their `reply` events (the outbox's `record_event`); their links and seqs are
//! read just before.

use std::collections::HashMap;

use async_trait::async_trait;
use redis::{Script, Value};

use crate::domain::message_id;

use super::Redis;
use super::reply::{number, optional_number, required, text, unexpected};
use super::scripts::script;
use super::slot::Slot;
use crate::domain::Channel;
use crate::provider::Keyword;
use crate::queue::Result;
use crate::queue::replies::{
    Answered, NewReply, Recorded, Reply, ReplyQuery, ReplyStore, stored_answer, stored_keyword,
};
use crate::queue::suppress::{self, REPLIED_STOP};

/// The reply hash fields read back, in this order, after the id.
const REPLY_FIELDS: &str = "'seq', 'provider', 'from', 'to', 'body', 'sent_at', 'received_at', \
    'keyword', 'batch_id', 'message_id', 'ref'";
const FIELDS: usize = 11;

/// Records replies not recorded yet, each with its keyword's effect and its
/// `reply` event; returns per reply whether it is new ('1' or '0'), its id and its
/// fields as stored. The caller reads the link and takes the seq beforehand (a
/// reply posted again wastes one). ARGV: P, now, the prefix of a reason that a
/// reply made, the number of endpoints wanting replies and those endpoints, then
/// per reply: id, seq, provider, from, to, body, sent_at, keyword, the answered
/// message's batch id, message id, ref and member ('' for none of these),
/// suppressed address, reason, event payload.
const RECORD: &str = r"
local by_reply = ARGV[3]
local endpoints = {}
local n = tonumber(ARGV[4])
for i = 1, n do endpoints[i] = ARGV[4 + i] end
local set, info = P .. 'suppressed:sms', P .. 'suppression:sms'
local out = {}
for i = 5 + n, #ARGV, 15 do
  local id, seq, provider, from, to = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local body, sent_at, keyword = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local batch_id, message_id, ref, member = ARGV[i + 8], ARGV[i + 9], ARGV[i + 10], ARGV[i + 11]
  local address, reason, payload = ARGV[i + 12], ARGV[i + 13], ARGV[i + 14]
  local key = P .. 'reply:' .. id
  local new = '0'
  if redis.call('EXISTS', key) == 0 then
    new = '1'
    local fields = { key, 'seq', seq, 'provider', provider, 'from', from, 'body', body,
      'received_at', now }
    local function put(name, value)
      if value ~= '' then
        fields[#fields + 1] = name
        fields[#fields + 1] = value
      end
    end
    put('to', to)
    put('sent_at', sent_at)
    put('keyword', keyword)
    put('batch_id', batch_id)
    put('message_id', message_id)
    put('ref', ref)
    redis.call('HSET', unpack(fields))
    redis.call('ZADD', P .. 'replies', seq, id)
    redis.call('ZADD', P .. 'replies-from:' .. from, seq, id)
    local old = redis.call('HGET', info, address)
    if keyword == 'opt_out' then
      if not old then
        redis.call('HSET', info, address, now .. ':' .. reason)
        redis.call('ZADD', set, 0, address)
      else
        local since = string.match(old, '^(%d+):')
        redis.call('HSET', info, address, since .. ':' .. reason)
      end
    elseif keyword == 'opt_in' and old then
      local was = string.match(old, '^%d+:(.*)$')
      if string.sub(was, 1, #by_reply) == by_reply then
        redis.call('HDEL', info, address)
        redis.call('ZREM', set, address)
      end
    end
    local b, about = nil, nil
    if batch_id ~= '' then b, about = batch_of(batch_id), member end
    record_event(b, endpoints, 'reply.' .. id, 'reply', about, nil, payload)
  end
  out[#out + 1] = new
  out[#out + 1] = id
  local f = redis.call('HMGET', key, REPLY_FIELDS)
  for j = 1, #f do out[#out + 1] = f[j] end
end
return out
";

/// Up to `limit` replies of a sorted set after a seq: the id and fields of each.
/// ARGV: P, now, the set (`replies` or `replies-from:{number}`), the minimum
/// score (`(seq` or `-inf`), limit.
const PAGE: &str = r"
local ids = redis.call('ZRANGEBYSCORE', P .. ARGV[3], ARGV[4], '+inf', 'LIMIT', 0, tonumber(ARGV[5]))
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  local f = redis.call('HMGET', P .. 'reply:' .. id, REPLY_FIELDS)
  for j = 1, #f do out[#out + 1] = f[j] end
end
return out
";

/// The scripts of the replies ledger, each with the engine's prelude and the
/// outbox's recording.
#[derive(Clone)]
pub(super) struct Scripts {
    record: Script,
    page: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let script = |body: &str| script(&body.replace("REPLY_FIELDS", REPLY_FIELDS));
        Scripts {
            record: script(RECORD),
            page: script(PAGE),
        }
    }
}

#[async_trait]
impl ReplyStore for Redis {
    async fn record_replies(
        &self,
        replies: Vec<NewReply>,
        endpoints: Vec<String>,
        now_ms: i64,
    ) -> Result<Vec<Recorded>> {
        let links = self.links(&replies).await?;
        let first_seq: i64 = redis::cmd("INCRBY")
            .arg(self.key("reply-seq"))
            .arg(replies.len())
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        let first_seq = first_seq - i64::try_from(replies.len()).unwrap_or(i64::MAX) + 1;
        let mut call = self.replies.record.prepare_invoke();
        call.arg(&self.prefix)
            .arg(now_ms)
            .arg(REPLIED_STOP)
            .arg(endpoints.len())
            .arg(&endpoints);
        for ((reply, link), seq) in replies.into_iter().zip(links).zip(first_seq..) {
            let entry = suppress::opted_out(&reply.from, &reply.id);
            let member = link.as_ref().map(|(member, _)| member.clone());
            let stored = reply.stored(seq, now_ms, link.map(|(_, answers)| answers));
            let payload = stored
                .event(None)
                .payload
                .expect("a reply's event carries its record");
            let answers = stored.answers.as_ref();
            call.arg(&stored.id)
                .arg(seq)
                .arg(&stored.provider)
                .arg(&stored.from)
                .arg(stored.to.as_deref().unwrap_or(""))
                .arg(&stored.body)
                .arg(stored.sent_at_ms.map(|t| t.to_string()).unwrap_or_default())
                .arg(stored.keyword.map_or("", Keyword::as_str))
                .arg(answers.map(|a| a.batch_id.to_string()).unwrap_or_default())
                .arg(answers.map_or("", |a| a.message_id.as_str()))
                .arg(answers.and_then(|a| a.reference.as_deref()).unwrap_or(""))
                .arg(member.unwrap_or_default())
                .arg(&entry.address)
                .arg(&entry.reason)
                .arg(payload);
        }
        let values: Vec<Value> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        values
            .chunks(FIELDS + 2)
            .map(|chunk| {
                let [new, rest @ ..] = chunk else {
                    return Err(unexpected("a recorded reply"));
                };
                Ok(Recorded {
                    new: required(new, "reply flag")? == "1",
                    reply: to_reply(rest)?,
                })
            })
            .collect()
    }

    async fn replies(&self, query: ReplyQuery) -> Result<Vec<Reply>> {
        let set = match &query.from {
            Some(from) => format!("replies-from:{from}"),
            None => "replies".to_owned(),
        };
        let min = query
            .after
            .map_or_else(|| "-inf".to_owned(), |after| format!("({after}"));
        let values: Vec<Value> = self
            .replies
            .page
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(0)
            .arg(set)
            .arg(min)
            .arg(query.limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        values.chunks(FIELDS + 1).map(to_reply).collect()
    }

    async fn suppression_reasons(
        &self,
        channel: Channel,
        addresses: Vec<String>,
    ) -> Result<HashMap<String, String>> {
        if addresses.is_empty() {
            return Ok(HashMap::new());
        }
        let stored: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key(&format!("suppression:{channel}")))
            .arg(&addresses)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(addresses
            .into_iter()
            .zip(stored)
            .filter_map(|(address, stored)| {
                // `{created_at}:{reason}`, as the records keep it.
                let reason = stored?.split_once(':')?.1.to_owned();
                Some((address, reason))
            })
            .collect())
    }
}

impl Redis {
    /// For each reply, the message last sent to its sender through its provider
    /// (`last:`), as its member and what the reply answers: read before the reply
    /// is recorded, in two round trips.
    async fn links(&self, replies: &[NewReply]) -> Result<Vec<Option<(String, Answered)>>> {
        let mut pipe = redis::pipe();
        for reply in replies {
            pipe.get(self.key(&format!("last:{}:{}", reply.provider, reply.from)));
        }
        let members: Vec<Option<String>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if members.iter().all(Option::is_none) {
            return Ok(vec![None; members.len()]);
        }
        let mut pipe = redis::pipe();
        for member in members.iter().flatten() {
            pipe.cmd("HMGET")
                .arg(self.key(&format!("m:{member}")))
                .arg("batch")
                .arg("ref");
        }
        let mut found: std::vec::IntoIter<(Option<String>, Option<String>)> = pipe
            .query_async::<Vec<(Option<String>, Option<String>)>>(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?
            .into_iter();
        members
            .into_iter()
            .map(|member| {
                let Some(member) = member else {
                    return Ok(None);
                };
                let (batch, reference) = found.next().ok_or_else(|| unexpected("a message"))?;
                let (Some(batch), Some(slot)) = (batch, Slot::parse_member(&member)) else {
                    return Ok(None);
                };
                let batch_id = crate::queue::parse_batch_id(&batch)?;
                let answers = Answered {
                    batch_id,
                    message_id: message_id(batch_id, slot.index),
                    reference,
                };
                Ok(Some((member, answers)))
            })
            .collect()
    }
}

/// A reply's id and its [`REPLY_FIELDS`], as the scripts return them.
fn to_reply(values: &[Value]) -> Result<Reply> {
    let [
        id,
        seq,
        provider,
        from,
        to,
        body,
        sent_at,
        received_at,
        keyword,
        batch,
        message,
        reference,
    ] = values
    else {
        return Err(unexpected("a reply"));
    };
    let keyword = stored_keyword(text(keyword)?.as_deref())?;
    let answers = stored_answer(text(batch)?.as_deref(), text(message)?, text(reference)?)?;
    Ok(Reply {
        id: required(id, "reply id")?,
        seq: number(seq, "reply seq")?,
        provider: required(provider, "reply provider")?,
        from: required(from, "reply sender")?,
        to: text(to)?,
        body: text(body)?.unwrap_or_default(),
        sent_at_ms: optional_number(sent_at, "reply time")?,
        received_at_ms: number(received_at, "reply time")?,
        keyword,
        answers,
    })
}
