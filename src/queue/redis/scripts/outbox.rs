//! The outbox's Lua: recording deliveries (in every script, after the prelude, so
//! that a change records its events in its own script) and the scripts that claim,
//! settle, list, replay, count and prune them.
//!
//! Keys (after the prefix):
//! - `dlv:{seq}` hash: one delivery (`endpoint`, `event_id`, `kind`, `batch` and
//!   `member` when the event names them, `at`, `code`, `payload`, `state`,
//!   `attempts`, `first_at`, `due_at`, `lease`, `last_error`, `posted_at`); `seq`
//!   from the `dlv-seq` counter.
//! - `dlv-ids` hash: `{endpoint}\n{event id}` → seq, so an event is recorded once.
//! - `dlv-due` sorted set: the pending deliveries by when due (a leased one by the
//!   end of its lease).
//! - `dlv-all`, `dlv-all:{endpoint}`, `dlv-state:{state}` and
//!   `dlv-state:{state}:{endpoint}` sorted sets: seqs scored by seq, for pages and
//!   counts; `dlv-posted` sorted set: the posted ones by when, for pruning;
//!   `dlv-endpoints` set: every endpoint with deliveries.
//!
//! For another script recording in its own change (every script built by
//! `scripts::script` has these): `record_event(b, endpoints, event_id, kind,
//! member, code, payload)` for one event (a reply: kind `reply`, id `reply.{reply
//! id}`, its record as JSON in `payload`) to the named endpoints and to the
//! subscriptions wanting it of batch `b = batch_of(batch id)` (nil for none) about
//! message `member` (nil for none); and for a message it moves to another state
//! (`cancelled` by an opt-out), `count(b, from, to, member, code)` as every script
//! counts, with the reason as `code`, then `flush_counts()`, which also records
//! `batch.finished` when that ended the batch.

use crate::queue::EventKind;

/// Recording, after the prelude: `record_delivery`, `record_event`, and the
/// prelude's `record_change` and `record_finished`. `KINDS` (a message state → its
/// event's name and bit), `BITS` (a kind's name → its bit) and the finished bit
/// come from [`EventKind`].
const RECORD: &str = r"
local KINDS = { {kinds} }
local BITS = { {bits} }
local FINISHED_BIT = {finished_bit}
-- Where a message's event finds its code: its last error, or its receipt's.
local CODE_FIELD = { failed = 'error', expired = 'error', delivered = 'receipt_code',
  undelivered = 'receipt_code' }
local FINISHING = { sent = true, failed = true, expired = true, cancelled = true }
local function has_kind(kinds, bit)
  return math.floor(tonumber(kinds) / bit) % 2 == 1
end
local function subs_of(b)
  if b.sub_list == nil then b.sub_list = cjson.decode(b.subs) end
  return b.sub_list
end
local function file_delivery(seq, endpoint, state)
  redis.call('ZADD', P .. 'dlv-state:' .. state, seq, seq)
  redis.call('ZADD', P .. 'dlv-state:' .. state .. ':' .. endpoint, seq, seq)
end
local function unfile_delivery(seq, endpoint, state)
  redis.call('ZREM', P .. 'dlv-state:' .. state, seq)
  redis.call('ZREM', P .. 'dlv-state:' .. state .. ':' .. endpoint, seq)
end
local function record_delivery(endpoint, event_id, kind, batch_id, member, at, code, payload)
  local unique = endpoint .. '\n' .. event_id
  if redis.call('HEXISTS', P .. 'dlv-ids', unique) == 1 then return end
  local seq = redis.call('INCR', P .. 'dlv-seq')
  redis.call('HSET', P .. 'dlv-ids', unique, seq)
  local fields = { P .. 'dlv:' .. seq, 'endpoint', endpoint, 'event_id', event_id, 'kind', kind,
    'at', at, 'state', 'pending', 'attempts', 0, 'first_at', at, 'due_at', at }
  for name, value in pairs({ batch = batch_id, member = member, code = code, payload = payload }) do
    if value then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  redis.call('HSET', unpack(fields))
  redis.call('ZADD', P .. 'dlv-due', at, seq)
  redis.call('ZADD', P .. 'dlv-all', seq, seq)
  redis.call('ZADD', P .. 'dlv-all:' .. endpoint, seq, seq)
  file_delivery(seq, endpoint, 'pending')
  redis.call('SADD', P .. 'dlv-endpoints', endpoint)
end
record_change = function(b, member, state, code)
  local kind = KINDS[state]
  if not kind then return end
  if FINISHING[state] then b.finishing = true end
  if code == nil and CODE_FIELD[state] then
    code = redis.call('HGET', P .. 'm:' .. member, CODE_FIELD[state]) or nil
  end
  -- The message id is `{batch id}-{index}`, as `domain::message_id` writes it.
  local event_id = b.id .. '-' .. tonumber(string.sub(member, 12)) .. '.' .. state
  for _, s in ipairs(subs_of(b)) do
    if has_kind(s.kinds, kind[2]) then
      record_delivery(s.endpoint, event_id, kind[1], b.id, member, now, code, nil)
    end
  end
end
-- Records the event `event_id` of kind `kind` (a name) for each of `endpoints`
-- and for the subscriptions of batch `b` (nil: none) that want it, about message
-- `member` (nil: none): a reply, with its record as JSON in `payload`.
local function record_event(b, endpoints, event_id, kind, member, code, payload)
  local batch_id = nil
  if b then batch_id = b.id end
  for _, e in ipairs(endpoints) do
    record_delivery(e, event_id, kind, batch_id, member, now, code, payload)
  end
  if b and b.subs then
    for _, s in ipairs(subs_of(b)) do
      if has_kind(s.kinds, BITS[kind]) then
        record_delivery(s.endpoint, event_id, kind, b.id, member, now, code, payload)
      end
    end
  end
end
record_finished = function(b)
  b.finishing = nil
  local c = redis.call('HMGET', b.key, 'pending', 'sending', 'paused', 'unknown')
  for i = 1, 4 do
    if (tonumber(c[i]) or 0) ~= 0 then return end
  end
  for _, s in ipairs(subs_of(b)) do
    if has_kind(s.kinds, FINISHED_BIT) then
      record_delivery(s.endpoint, b.id .. '.finished', 'batch.finished', b.id, nil, now, nil, nil)
    end
  end
end
-- Appends what a listed or claimed delivery reads (22 values, `false` for none):
-- seq, endpoint, event id, kind, at, code, payload, attempts, first at, state, last
-- error, due at, posted at, batch, member; the batch's channel, source and callback
-- URL; the message's recipient, ref, provider and provider's id.
local function delivery_row(seq, out)
  local d = redis.call('HMGET', P .. 'dlv:' .. seq, 'endpoint', 'event_id', 'kind', 'at', 'code',
    'payload', 'attempts', 'first_at', 'state', 'last_error', 'due_at', 'posted_at', 'batch', 'member')
  out[#out + 1] = seq
  for i = 1, 14 do out[#out + 1] = d[i] end
  local b, m = { false, false, false }, { false, false, false, false }
  if d[13] then b = redis.call('HMGET', P .. 'b:' .. d[13], 'channel', 'source', 'callback_url') end
  if d[14] then
    m = redis.call('HMGET', P .. 'm:' .. d[14], 'to', 'ref', 'provider', 'provider_message_id')
  end
  for i = 1, 3 do out[#out + 1] = b[i] end
  for i = 1, 4 do out[#out + 1] = m[i] end
end
";

/// The values per delivery that `delivery_row` appends.
pub(in crate::queue::redis) const DELIVERY_ROW: usize = 22;

/// Leases up to `limit` due deliveries, oldest due first: their rows.
/// ARGV: P, now, limit, lease until, token.
pub(super) const CLAIM_DELIVERIES: &str = r"
local until_, token, out = ARGV[4], ARGV[5], {}
local due = redis.call('ZRANGEBYSCORE', P .. 'dlv-due', '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, seq in ipairs(due) do
  redis.call('HSET', P .. 'dlv:' .. seq, 'lease', token, 'due_at', until_)
  redis.call('ZADD', P .. 'dlv-due', until_, seq)
  delivery_row(seq, out)
end
return out
";

/// Settles claimed deliveries still under their lease.
/// ARGV: P, now, then per delivery: seq, token, outcome (posted, retry, failed),
/// due at (a retry's), error ('' for none).
pub(super) const SETTLE_DELIVERIES: &str = r"
for i = 3, #ARGV, 5 do
  local seq, token, outcome, at, error = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local key = P .. 'dlv:' .. seq
  local d = redis.call('HMGET', key, 'state', 'lease', 'endpoint')
  if d[1] == 'pending' and d[2] == token then
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HDEL', key, 'lease')
    if error ~= '' then redis.call('HSET', key, 'last_error', error) end
    if outcome == 'retry' then
      redis.call('HSET', key, 'due_at', at)
      redis.call('ZADD', P .. 'dlv-due', at, seq)
    else
      redis.call('HDEL', key, 'due_at')
      redis.call('ZREM', P .. 'dlv-due', seq)
      redis.call('HSET', key, 'state', outcome)
      unfile_delivery(seq, d[3], 'pending')
      file_delivery(seq, d[3], outcome)
      if outcome == 'posted' then
        redis.call('HSET', key, 'posted_at', now)
        redis.call('ZADD', P .. 'dlv-posted', now, seq)
      end
    end
  end
end
return 1
";

/// A page of deliveries, newest first: rows. ARGV: P, now, endpoint ('' for all),
/// state ('' for any), seq to list below ('' for none), limit.
pub(super) const LIST_DELIVERIES: &str = r"
local endpoint, state, before = ARGV[3], ARGV[4], ARGV[5]
local key = P .. 'dlv-all'
if state ~= '' then key = P .. 'dlv-state:' .. state end
if endpoint ~= '' then key = key .. ':' .. endpoint end
local top = '+inf'
if before ~= '' then top = '(' .. before end
local out = {}
for _, seq in ipairs(redis.call('ZREVRANGEBYSCORE', key, top, '-inf', 'LIMIT', 0, tonumber(ARGV[6]))) do
  delivery_row(seq, out)
end
return out
";

/// Makes deliveries of an endpoint pending and due now, afresh: the one of an
/// event id, or every failed one. Returns how many.
/// ARGV: P, now, endpoint, event id ('' for every failed one).
pub(super) const REPLAY_DELIVERIES: &str = r"
local endpoint, event_id = ARGV[3], ARGV[4]
local seqs = {}
if event_id ~= '' then
  local seq = redis.call('HGET', P .. 'dlv-ids', endpoint .. '\n' .. event_id)
  if seq then seqs[1] = seq end
else
  seqs = redis.call('ZRANGE', P .. 'dlv-state:failed:' .. endpoint, 0, -1)
end
for _, seq in ipairs(seqs) do
  local key = P .. 'dlv:' .. seq
  local state = redis.call('HGET', key, 'state')
  redis.call('HSET', key, 'state', 'pending', 'attempts', 0, 'first_at', now, 'due_at', now)
  redis.call('HDEL', key, 'lease', 'posted_at')
  redis.call('ZREM', P .. 'dlv-posted', seq)
  redis.call('ZADD', P .. 'dlv-due', now, seq)
  unfile_delivery(seq, endpoint, state)
  file_delivery(seq, endpoint, 'pending')
end
return #seqs
";

/// Per endpoint with deliveries: endpoint, pending, failed. ARGV: P, now.
pub(super) const DELIVERY_COUNTS: &str = r"
local out = {}
for _, endpoint in ipairs(redis.call('SMEMBERS', P .. 'dlv-endpoints')) do
  out[#out + 1] = endpoint
  out[#out + 1] = redis.call('ZCARD', P .. 'dlv-state:pending:' .. endpoint)
  out[#out + 1] = redis.call('ZCARD', P .. 'dlv-state:failed:' .. endpoint)
end
return out
";

/// Deletes up to `limit` deliveries posted before `before`; returns how many.
/// ARGV: P, now, before, limit.
pub(super) const PRUNE_DELIVERIES: &str = r"
local old = redis.call('ZRANGEBYSCORE', P .. 'dlv-posted', '-inf', '(' .. ARGV[3], 'LIMIT', 0,
  tonumber(ARGV[4]))
for _, seq in ipairs(old) do
  local key = P .. 'dlv:' .. seq
  local d = redis.call('HMGET', key, 'endpoint', 'event_id')
  redis.call('HDEL', P .. 'dlv-ids', d[1] .. '\n' .. d[2])
  redis.call('ZREM', P .. 'dlv-all', seq)
  redis.call('ZREM', P .. 'dlv-all:' .. d[1], seq)
  unfile_delivery(seq, d[1], 'posted')
  redis.call('ZREM', P .. 'dlv-posted', seq)
  redis.call('DEL', key)
end
return #old
";

/// The recording Lua, with the kinds filled in from [`EventKind`]: what every
/// script has after the prelude.
pub(super) fn record() -> String {
    let kinds: Vec<String> = EventKind::ALL
        .into_iter()
        .filter_map(|k| {
            let state = k.message_suffix()?;
            Some(format!("{state} = {{ '{}', {} }}", k.as_str(), k.bit()))
        })
        .collect();
    let bits: Vec<String> = EventKind::ALL
        .into_iter()
        .map(|k| format!("['{}'] = {}", k.as_str(), k.bit()))
        .collect();
    RECORD
        .replace("{kinds}", &kinds.join(", "))
        .replace("{bits}", &bits.join(", "))
        .replace(
            "{finished_bit}",
            &EventKind::BatchFinished.bit().to_string(),
        )
}
