//! The Redis engine's audit trail. Keys (after the prefix):
//! - `audit:{seq}` hash: one entry (`at`, `actor`, `action`, `target`, `result`);
//!   `seq` from the `audit-seq` counter;
//! - `audit` sorted set: every entry's seq, scored by it; `audit-actor:{name}`
//!   and `audit-action:{action}` the same for one actor or action, for filters.
//!
//! Older builds never read these keys, so they leave the layout's version alone.

use async_trait::async_trait;
use redis::{Script, Value};

use super::Redis;
use super::reply::{number, required, unexpected};
use super::scripts::script;
use crate::domain::now_ms;
use crate::queue::{AuditEntry, AuditQuery, AuditStore, NewAuditEntry, Result};

/// Appends one entry. ARGV: P, now, at, actor, action, target, result.
const RECORD: &str = r"
local seq = redis.call('INCR', P .. 'audit-seq')
redis.call('HSET', P .. 'audit:' .. seq, 'at', ARGV[3], 'actor', ARGV[4], 'action', ARGV[5],
  'target', ARGV[6], 'result', ARGV[7])
redis.call('ZADD', P .. 'audit', seq, seq)
redis.call('ZADD', P .. 'audit-actor:' .. ARGV[4], seq, seq)
redis.call('ZADD', P .. 'audit-action:' .. ARGV[5], seq, seq)
return seq
";

/// Up to ARGV[6] entries below seq ARGV[5] ('' for none), newest first, of action
/// ARGV[3] and actor ARGV[4] ('' for any): six values each (seq, at, actor,
/// action, target, result). The narrowest set is walked, a page at a time, and
/// at most 10,000 entries are looked at.
const LIST: &str = r"
local action, actor, limit = ARGV[3], ARGV[4], tonumber(ARGV[6])
local set = P .. 'audit'
if action ~= '' then set = P .. 'audit-action:' .. action
elseif actor ~= '' then set = P .. 'audit-actor:' .. actor end
local top = '+inf'
if ARGV[5] ~= '' then top = '(' .. ARGV[5] end
local out, looked = {}, 0
while #out < limit * 6 and looked < 10000 do
  local seqs = redis.call('ZREVRANGEBYSCORE', set, top, '-inf', 'LIMIT', 0, 200)
  if #seqs == 0 then break end
  for _, seq in ipairs(seqs) do
    looked = looked + 1
    top = '(' .. seq
    local e = redis.call('HMGET', P .. 'audit:' .. seq, 'at', 'actor', 'action', 'target', 'result')
    if e[1] and (actor == '' or e[2] == actor) then
      out[#out + 1] = seq
      for i = 1, 5 do out[#out + 1] = e[i] end
      if #out >= limit * 6 then break end
    end
  end
end
return out
";

/// Removes up to ARGV[4] entries recorded before ARGV[3], oldest first.
const PRUNE: &str = r"
local n = 0
for _, seq in ipairs(redis.call('ZRANGE', P .. 'audit', 0, tonumber(ARGV[4]) - 1)) do
  local key = P .. 'audit:' .. seq
  local e = redis.call('HMGET', key, 'at', 'actor', 'action')
  if (tonumber(e[1]) or 0) >= tonumber(ARGV[3]) then break end
  redis.call('ZREM', P .. 'audit', seq)
  if e[2] then redis.call('ZREM', P .. 'audit-actor:' .. e[2], seq) end
  if e[3] then redis.call('ZREM', P .. 'audit-action:' .. e[3], seq) end
  redis.call('DEL', key)
  n = n + 1
end
return n
";

/// The audit trail's scripts.
#[derive(Clone)]
pub(super) struct Scripts {
    record: Script,
    list: Script,
    prune: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            record: script(RECORD),
            list: script(LIST),
            prune: script(PRUNE),
        }
    }
}

#[async_trait]
impl AuditStore for Redis {
    async fn record_audit(&self, entry: NewAuditEntry) -> Result<()> {
        let _: i64 = self
            .audits
            .record
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(entry.at_ms)
            .arg(&entry.actor)
            .arg(entry.action.as_str())
            .arg(&entry.target)
            .arg(&entry.result)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>> {
        let values: Vec<Value> = self
            .audits
            .list
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(query.action.map_or("", |a| a.as_str()))
            .arg(query.actor.as_deref().unwrap_or(""))
            .arg(query.before.map(|b| b.to_string()).unwrap_or_default())
            .arg(query.limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if !values.len().is_multiple_of(6) {
            return Err(unexpected("an audit page"));
        }
        values
            .chunks(6)
            .map(|e| {
                Ok(AuditEntry {
                    seq: number(&e[0], "audit seq")?,
                    at_ms: number(&e[1], "audit time")?,
                    actor: required(&e[2], "audit actor")?,
                    action: required(&e[3], "audit action")?,
                    target: required(&e[4], "audit target")?,
                    result: required(&e[5], "audit result")?,
                })
            })
            .collect()
    }

    async fn prune_audit(&self, before_ms: i64, limit: u32) -> Result<u64> {
        self.before_cutoff(&self.audits.prune, before_ms, limit)
            .await
    }
}
