//! The Redis engine's retention (see [`crate::queue::prune`]). Keys (after the
//! prefix):
//! - `finished` sorted set: the batches none of whose messages is pending,
//!   sending, paused or unknown, scored by when a change last left them so (ms).
//!   Every script that writes a batch's counts keeps it (the prelude's
//!   `flush_counts`): a retry or resume takes the batch out, its end puts it back
//!   with the new time, and a late receipt moves it later. A batch that
//!   finished under a build before this index is added once, when the store is
//!   first opened by this one (`finished-indexed` marks that), scored by its
//!   creation.
//! - a batch being pruned keeps `pruned_to` in its hash: the index its messages
//!   are removed up to, a step at a time.
//!
//! Older builds never read these keys, so they leave the layout's version alone;
//! but an older build sharing the store does not keep `finished`, so a batch it
//! finishes after this one first opened the store is never pruned: upgrade every
//! process on a store together.
//! A pruned message takes with it its provider id and its segment ids (`pids:…`)
//! and its reply link (`last:…`) when they still name it; a pruned batch its
//! idempotency key. An older build does not know segment ids, and leaves them in
//! `pids:…` when it prunes: harmless (a receipt that names one finds no message),
//! but another reason to upgrade every process together.

use async_trait::async_trait;
use redis::Script;

use super::Redis;
use super::scripts::script;
use crate::domain::now_ms;
use crate::queue::Outbox;
use crate::queue::Result;
use crate::queue::prune::{Prune, Pruned};

/// Removes up to ARGV[4] messages of the batches in `finished` before ARGV[3],
/// oldest first, and each batch left with none: `{batches, messages}`.
const PRUNE_LEDGER: &str = r"
local budget = tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', '(' .. ARGV[3], 'LIMIT', 0, 100)
local gone, removed = 0, 0
for _, id in ipairs(ids) do
  if budget <= 0 then break end
  local key = P .. 'b:' .. id
  local f = redis.call('HMGET', key, 'seq', 'span', 'pending', 'sending', 'paused', 'unknown',
    'pruned_to', 'idempotency_key')
  local open = false
  for i = 3, 6 do
    if (tonumber(f[i]) or 0) ~= 0 then open = true end
  end
  if not f[1] or open then
    redis.call('ZREM', P .. 'finished', id)
  else
    local seq, span = f[1], tonumber(f[2]) or 0
    local from = tonumber(f[7]) or 0
    local to = math.min(span, from + budget)
    for index = from, to - 1 do
      local member = member_of(seq, index)
      local mkey = P .. 'm:' .. member
      local m = redis.call('HMGET', mkey, 'provider', 'provider_message_id', 'to', 'segment_ids')
      if m[1] then
        if m[2] then
          local pids = P .. 'pids:' .. m[1]
          local ids = { m[2] }
          if m[4] then
            for _, segment in ipairs(cjson.decode(m[4])) do ids[#ids + 1] = segment end
          end
          for _, pid in ipairs(ids) do
            if redis.call('HGET', pids, pid) == member then redis.call('HDEL', pids, pid) end
            if m[3] and redis.call('HGET', pids, pid .. '\n' .. m[3]) == member then
              redis.call('HDEL', pids, pid .. '\n' .. m[3])
            end
          end
        end
        if m[3] then
          local last = P .. 'last:' .. m[1] .. ':' .. m[3]
          if redis.call('GET', last) == member then redis.call('DEL', last) end
        end
        redis.call('DEL', mkey)
        removed = removed + 1
      end
    end
    budget = budget - math.max(to - from, 1)
    if to >= span then
      if f[8] then redis.call('DEL', P .. 'idem:' .. f[8]) end
      redis.call('ZREM', P .. 'deadlines', id)
      redis.call('ZREM', P .. 'batches', id)
      redis.call('ZREM', P .. 'finished', id)
      redis.call('DEL', key)
      gone = gone + 1
    else
      redis.call('HSET', key, 'pruned_to', to)
    end
  end
end
return { gone, removed }
";

/// Removes up to ARGV[4] each of the replies received, the failed deliveries
/// first recorded and the held receipts first held before ARGV[3]:
/// `{replies, deliveries, receipts}`. Replies and deliveries are walked by seq,
/// which is their order of arrival.
const PRUNE_BESIDE: &str = r"
local before, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local replies = 0
for _, id in ipairs(redis.call('ZRANGE', P .. 'replies', 0, limit - 1)) do
  local key = P .. 'reply:' .. id
  local r = redis.call('HMGET', key, 'received_at', 'from')
  if (tonumber(r[1]) or 0) >= before then break end
  redis.call('ZREM', P .. 'replies', id)
  if r[2] then redis.call('ZREM', P .. 'replies-from:' .. r[2], id) end
  redis.call('DEL', key)
  replies = replies + 1
end
local deliveries = 0
for _, seq in ipairs(redis.call('ZRANGE', P .. 'dlv-state:failed', 0, limit - 1)) do
  local key = P .. 'dlv:' .. seq
  local d = redis.call('HMGET', key, 'endpoint', 'event_id', 'first_at')
  if (tonumber(d[3]) or 0) >= before then break end
  redis.call('HDEL', P .. 'dlv-ids', d[1] .. '\n' .. d[2])
  redis.call('ZREM', P .. 'dlv-all', seq)
  redis.call('ZREM', P .. 'dlv-all:' .. d[1], seq)
  unfile_delivery(seq, d[1], 'failed')
  redis.call('DEL', key)
  deliveries = deliveries + 1
end
local held = redis.call('ZRANGEBYSCORE', P .. 'early-at', '-inf', '(' .. ARGV[3], 'LIMIT', 0, limit)
for _, entry in ipairs(held) do
  local provider, pid = string.match(entry, '^(.-)\n(.*)$')
  if provider then redis.call('HDEL', P .. 'early:' .. provider, pid) end
  redis.call('ZREM', P .. 'early-at', entry)
end
return { replies, deliveries, #held }
";

/// Adds the finished batches among ARGV[3..] to `finished`, scored by their
/// creation. ARGV: P, now, batch ids.
const INDEX_FINISHED: &str = r"
for i = 3, #ARGV do
  local f = redis.call('HMGET', P .. 'b:' .. ARGV[i], 'created_at', 'pending', 'sending', 'paused',
    'unknown')
  local open = f[1] == false
  for j = 2, 5 do
    if (tonumber(f[j]) or 0) ~= 0 then open = true end
  end
  if not open then redis.call('ZADD', P .. 'finished', 'NX', f[1], ARGV[i]) end
end
return 1
";

/// Batches per call of [`INDEX_FINISHED`].
const INDEX_PAGE: usize = 1_000;

/// The retention scripts.
#[derive(Clone)]
pub(super) struct Scripts {
    ledger: Script,
    beside: Script,
    index: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            ledger: script(PRUNE_LEDGER),
            beside: script(PRUNE_BESIDE),
            index: script(INDEX_FINISHED),
        }
    }
}

impl Redis {
    /// Runs a pruning `script` (ARGV: P, now, cutoff, limit).
    pub(super) async fn before_cutoff<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        before_ms: i64,
        limit: u32,
    ) -> Result<T> {
        script
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(before_ms)
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    /// Adds the batches that finished before the `finished` index existed to it,
    /// once per store (see the module's doc).
    pub(super) async fn index_finished(&self) -> Result<()> {
        let marker = self.key("finished-indexed");
        let mut conn = self.conn();
        let indexed: bool = redis::cmd("EXISTS")
            .arg(&marker)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        if indexed {
            return Ok(());
        }
        // Pages by rank: batches committed meanwhile sort last, and are indexed
        // by their own scripts anyway.
        let batches = self.key("batches");
        for start in (0_u64..).step_by(INDEX_PAGE) {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(&batches)
                .arg(start)
                .arg(start + INDEX_PAGE as u64 - 1)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.fail(e))?;
            if ids.is_empty() {
                break;
            }
            let mut call = self.prunes.index.prepare_invoke();
            call.arg(&self.prefix).arg(now_ms()).arg(&ids);
            let _: i64 = call
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.fail(e))?;
        }
        let () = redis::cmd("SET")
            .arg(&marker)
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }
}

#[async_trait]
impl Prune for Redis {
    async fn prune_ledger(&self, before_ms: i64, limit: u32) -> Result<Pruned> {
        let (batches, messages): (u64, u64) = self
            .before_cutoff(&self.prunes.ledger, before_ms, limit)
            .await?;
        Ok(Pruned {
            batches,
            messages,
            ..Pruned::default()
        })
    }

    async fn prune_beside(&self, before_ms: i64, limit: u32) -> Result<Pruned> {
        let (replies, failed, receipts): (u64, u64, u64) = self
            .before_cutoff(&self.prunes.beside, before_ms, limit)
            .await?;
        let posted = self.prune_deliveries(before_ms, limit).await?;
        Ok(Pruned {
            replies,
            deliveries: failed + posted,
            receipts,
            ..Pruned::default()
        })
    }
}
