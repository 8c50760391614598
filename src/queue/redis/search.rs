//! The Redis engine's search across batches. Keys (after the prefix):
//! - `to:{address}` sorted set: the members (`{seq}:{index}`) of every message to
//!   the address (`search::recipient_key` of its `to`), all scored 0, so that they
//!   sort by bytes, i.e. in arrival order, and page newest first with
//!   `ZREVRANGEBYLEX`; `ref:{ref}` the same for the messages with that ref.
//!
//! A message joins them when staged (see `STAGE`); a search skips members whose
//! batch is not committed yet and removes those whose message is gone (a discarded
//! staging, a pruned batch), so nothing else has to keep them in step. An erasure
//! moves a message from its address's set to the erased value's.

use async_trait::async_trait;
use redis::{Script, Value};

use super::Redis;
use super::ledger::parse_record;
use super::reply::{batch_id, required, unexpected};
use super::scripts::script;
use super::slot::Slot;
use crate::domain::{MessageState, now_ms};
use crate::queue::search::{Found, SearchQuery, SearchStore};
use crate::queue::{Error, Result};

/// Members looked at per script call, at most: a call never holds the server long,
/// however selective the filters are; the next call goes on from where it stopped.
const STEP: usize = 500;

/// Calls per search, at most (so up to `STEP` times this many members looked at).
const MAX_CALLS: usize = 200;

/// Values per message a search answers: member, batch id, then the 14 of a ledger
/// page (see `MESSAGES`).
const FOUND_VALUES: usize = 16;

/// Up to `limit` messages of the index `key`, below `max` (`+`, or `(member`),
/// looking at no more than `step` members: `{next max or '', values…}`, the values
/// [`FOUND_VALUES`] per message. Filters: state (or ''), created since and until
/// (or ''), ref (or ''). Members whose message is gone leave the index.
/// ARGV: P, now, key, max, limit, step, state, since, until, ref.
const SEARCH: &str = r"
local key, max, limit, step = P .. ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local want, since, before, ref = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local out, n, looked, gone = { '' }, 0, 0, {}
local members = redis.call('ZREVRANGEBYLEX', key, max, '-', 'LIMIT', 0, step)
for _, member in ipairs(members) do
  looked = looked + 1
  local m = redis.call('HMGET', P .. 'm:' .. member, 'state', 'to', 'ref', 'provider',
    'attempts', 'error', 'provider_message_id', 'created_at', 'updated_at', 'sent_at',
    'receipt_code', 'receipt_at', 'segments', 'batch')
  if not m[1] then
    gone[#gone + 1] = member
  elseif redis.call('HEXISTS', P .. 'b:' .. m[14], 'seq') == 1
      and (want == '' or m[1] == want) and (ref == '' or m[3] == ref)
      and (since == nil or tonumber(m[8]) >= since)
      and (before == nil or tonumber(m[8]) < before) then
    n = n + 1
    local k = #out
    out[k + 1] = member
    out[k + 2] = m[14]
    out[k + 3] = tonumber(string.sub(member, 12))
    out[k + 4] = m[2]
    out[k + 5] = m[3]
    out[k + 6] = m[1]
    for j = 4, 13 do out[k + j + 3] = m[j] end
  end
  if n >= limit then break end
end
zrem_all(key, gone)
-- Where the next call goes on from; '' when the index has no more.
if n >= limit or #members == step then out[1] = '(' .. members[looked] end
return out
";

/// The search's and the erasure's scripts.
#[derive(Clone)]
pub(super) struct Scripts {
    search: Script,
    pub(super) erase: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            search: script(SEARCH),
            erase: script(super::erase::ERASE),
        }
    }
}

#[async_trait]
impl SearchStore for Redis {
    async fn search(&self, query: SearchQuery) -> Result<Vec<Found>> {
        let (key, reference) = match (&query.to, &query.reference) {
            (Some(to), reference) => (format!("to:{to}"), reference.as_deref()),
            (None, Some(reference)) => (format!("ref:{reference}"), None),
            (None, None) => return Ok(Vec::new()),
        };
        let mut max = match query.before.map(Slot::from_row) {
            None => "+".to_owned(),
            Some(Some(slot)) => format!("({}", slot.member()),
            // Below every position: nothing.
            Some(None) => return Ok(Vec::new()),
        };
        let limit = query.limit as usize;
        let mut found = Vec::new();
        for _ in 0..MAX_CALLS {
            let reply: Vec<Value> = self
                .person
                .search
                .arg(&self.prefix)
                .arg(now_ms())
                .arg(&key)
                .arg(&max)
                .arg(limit - found.len())
                .arg(STEP)
                .arg(query.state.map_or("", MessageState::as_str))
                .arg(query.since_ms.map(|t| t.to_string()).unwrap_or_default())
                .arg(query.until_ms.map(|t| t.to_string()).unwrap_or_default())
                .arg(reference.unwrap_or(""))
                .invoke_async(&mut self.conn())
                .await
                .map_err(|e| self.fail(e))?;
            let (next, values) = reply.split_first().ok_or_else(|| unexpected("a search"))?;
            found.extend(parse_found(values)?);
            let next = required(next, "search cursor")?;
            if found.len() >= limit || next.is_empty() {
                break;
            }
            max = next;
        }
        Ok(found)
    }
}

/// The messages of a [`SEARCH`] answer.
fn parse_found(values: &[Value]) -> Result<Vec<Found>> {
    if !values.len().is_multiple_of(FOUND_VALUES) {
        return Err(unexpected("a search"));
    }
    values
        .chunks_exact(FOUND_VALUES)
        .map(|m| {
            let member = required(&m[0], "message member")?;
            let slot = Slot::parse_member(&member)
                .ok_or_else(|| Error::Corrupt(format!("a bad message member `{member}`")))?;
            let batch = batch_id(&m[1])?;
            Ok(Found {
                batch_id: batch,
                position: slot.row(),
                message: parse_record(batch, &m[2..])?,
            })
        })
        .collect()
}
