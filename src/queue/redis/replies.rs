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
//! request's replies are recorded by one script, with their links and their
//! keywords' suppressions (kept as the records' `suppressed:sms` and
//! `suppression:sms`).

use std::collections::HashMap;

use async_trait::async_trait;
use redis::{Script, Value};

use super::reply::{number, optional_number, required, text, unexpected};
use super::{PRELUDE, Redis};
use crate::domain::Channel;
use crate::provider::Keyword;
use crate::queue::Result;
use crate::queue::replies::{
    NewReply, Recorded, Reply, ReplyQuery, ReplyStore, stored_answer, stored_keyword,
};
use crate::queue::suppress::{self, REPLIED_STOP};

/// The reply hash fields read back, in this order, after the id.
const REPLY_FIELDS: &str = "'seq', 'provider', 'from', 'to', 'body', 'sent_at', 'received_at', \
    'keyword', 'batch_id', 'message_id', 'ref'";
const FIELDS: usize = 11;

/// Records replies not recorded yet; returns per reply whether it is new ('1' or
/// '0'), its id and its fields as stored. ARGV: P, now, the prefix of a reason
/// that a reply made, then per reply: id, provider, from, to, body, sent_at,
/// keyword ('' for none), suppressed address, reason.
const RECORD: &str = r"
local by_reply = ARGV[3]
local set, info = P .. 'suppressed:sms', P .. 'suppression:sms'
local out = {}
for i = 4, #ARGV, 9 do
  local id, provider, from, to, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local sent_at, keyword, address, reason = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
  local key = P .. 'reply:' .. id
  local new = '0'
  if redis.call('EXISTS', key) == 0 then
    new = '1'
    local seq = redis.call('INCR', P .. 'reply-seq')
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
    local member = redis.call('GET', P .. 'last:' .. provider .. ':' .. from)
    if member then
      local m = redis.call('HMGET', P .. 'm:' .. member, 'batch', 'ref')
      if m[1] then
        put('batch_id', m[1])
        put('message_id', m[1] .. '-' .. tonumber(string.match(member, ':(%d+)$')))
        if m[2] then put('ref', m[2]) end
      end
    end
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

/// The scripts of the replies ledger, each with the engine's prelude.
#[derive(Clone)]
pub(super) struct Scripts {
    record: Script,
    page: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let script = |body: &str| {
            Script::new(&format!(
                "{PRELUDE}{}",
                body.replace("REPLY_FIELDS", REPLY_FIELDS)
            ))
        };
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
        // The outbox has no Redis side yet: a reply records no event here.
        let _ = endpoints;
        let mut call = self.replies.record.prepare_invoke();
        call.arg(&self.prefix).arg(now_ms).arg(REPLIED_STOP);
        for reply in &replies {
            let entry = suppress::opted_out(&reply.from, &reply.id);
            call.arg(&reply.id)
                .arg(&reply.provider)
                .arg(&reply.from)
                .arg(reply.to.as_deref().unwrap_or(""))
                .arg(&reply.body)
                .arg(reply.sent_at_ms.map(|t| t.to_string()).unwrap_or_default())
                .arg(reply.keyword.map_or("", Keyword::as_str))
                .arg(&entry.address)
                .arg(&entry.reason);
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
