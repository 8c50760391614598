//! The Redis engine's erasure of a person: one script cancels their queued
//! messages and hashes their address in messages (found through `to:{address}`,
//! see `search.rs`), in the replies from them (`replies-from:{number}`) and in the
//! stored payloads of those replies' events (found through `dlv-ids`); it drops
//! what is keyed by the address for a while only (`sent:{provider}:{address}`,
//! `last:{provider}:{address}`). The store's salt is the `erase-salt` string.
//! Older builds never read these keys; the version-7 layout (see `server.rs`) is
//! what keeps them from writing messages without their index entries.

use async_trait::async_trait;
use redis::Value;

use super::Redis;
use super::reply::{number, unexpected};
use crate::queue::Result;
use crate::queue::erase::{ERASED_REASON, EraseStore, Erased, new_salt};

/// Erases one address: `{messages, replies, events, cancelled, sending}`.
/// ARGV: P, now, address, what it is replaced by, the reason cancelled messages keep.
pub(super) const ERASE: &str = r#"
local address, erased, reason = ARGV[3], ARGV[4], ARGV[5]
local index = P .. 'to:' .. address
local messages, cancelled, sending, moved, providers = 0, 0, 0, {}, {}
for _, member in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  local key = P .. 'm:' .. member
  local m = redis.call('HMGET', key, 'state', 'provider', 'batch')
  local from = m[1]
  if not from then
    moved[#moved + 1] = member
  elseif from == 'sending' then
    sending = sending + 1
    providers[m[2]] = true
  else
    if from == 'pending' or from == 'paused' or from == 'unknown' then
      local b = batch_of(m[3])
      if from == 'pending' then unready(b, m[2], member) end
      if from == 'unknown' then redis.call('ZREM', P .. 'leased:' .. m[2], member) end
      redis.call('HSET', key, 'state', 'cancelled', 'updated_at', now, 'error', reason)
      count(b, from, 'cancelled', member, reason)
      cancelled = cancelled + 1
    end
    redis.call('HSET', key, 'to', erased)
    redis.call('ZADD', P .. 'to:' .. erased, 0, member)
    moved[#moved + 1] = member
    messages = messages + 1
    providers[m[2]] = true
  end
end
zrem_all(index, moved)
flush_counts()
for provider in pairs(providers) do
  redis.call('DEL', P .. 'sent:' .. provider .. ':' .. address,
    P .. 'last:' .. provider .. ':' .. address)
end
local quoted = '"' .. address:gsub('[%^%$%(%)%%%.%[%]%*%+%-%?]', '%%%0') .. '"'
local endpoints = redis.call('SMEMBERS', P .. 'dlv-endpoints')
local from_key = P .. 'replies-from:' .. address
local replies, events = 0, 0
local ids = redis.call('ZRANGE', from_key, 0, -1, 'WITHSCORES')
for i = 1, #ids, 2 do
  local id = ids[i]
  redis.call('HSET', P .. 'reply:' .. id, 'from', erased)
  redis.call('ZADD', P .. 'replies-from:' .. erased, ids[i + 1], id)
  replies = replies + 1
  for _, endpoint in ipairs(endpoints) do
    local seq = redis.call('HGET', P .. 'dlv-ids', endpoint .. '\n' .. 'reply.' .. id)
    if seq then
      local payload = redis.call('HGET', P .. 'dlv:' .. seq, 'payload')
      if payload then
        local rewritten, n = string.gsub(payload, quoted, '"' .. erased .. '"')
        if n > 0 then
          redis.call('HSET', P .. 'dlv:' .. seq, 'payload', rewritten)
          events = events + 1
        end
      end
    end
  end
end
redis.call('DEL', from_key)
return { messages, replies, events, cancelled, sending }
"#;

#[async_trait]
impl EraseStore for Redis {
    async fn erase_salt(&self) -> Result<Vec<u8>> {
        let key = self.key("erase-salt");
        let salt = self
            .set_once(&key, &hex::encode(new_salt()?))
            .await?
            .unwrap_or_default();
        hex::decode(&salt).map_err(|_| {
            crate::queue::Error::Corrupt(format!("the stored erasure salt `{key}` is not hex"))
        })
    }

    async fn erase(&self, address: &str, erased_as: &str, now_ms: i64) -> Result<Erased> {
        let reply: Vec<Value> = self
            .person
            .erase
            .arg(&self.prefix)
            .arg(now_ms)
            .arg(address)
            .arg(erased_as)
            .arg(ERASED_REASON)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        let [messages, replies, events, cancelled, sending] = reply.as_slice() else {
            return Err(unexpected("an erasure"));
        };
        Ok(Erased {
            messages: number(messages, "erased count")?,
            replies: number(replies, "erased count")?,
            events: number(events, "erased count")?,
            cancelled: number(cancelled, "erased count")?,
            sending: number(sending, "erased count")?,
        })
    }
}
