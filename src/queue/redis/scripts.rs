//! The Redis engine's Lua scripts. Every change of state is one script, so readers
//! and other workers never see half of one; each starts with [`PRELUDE`]. The
//! claim script is in `scripts/claim.rs`, the settle and receipt scripts in
//! `scripts/settle.rs`, the outbox's recording (after the prelude in every script)
//! and its scripts in `scripts/outbox.rs`; the rest are here.

use redis::Script;

use super::ledger::SUMMARY_FIELDS;

mod claim;
mod outbox;
mod settle;

use claim::CLAIM;
pub(super) use outbox::DELIVERY_ROW;
use settle::{APPLY_RECEIPTS, RECEIPTS, SETTLE};

/// Shared by every script. `ARGV[1]` is the key prefix (with its `:`), `ARGV[2]` the
/// caller's clock in ms: scripts never read Redis's clock, so engines agree on time.
pub(super) const PRELUDE: &str = r"
local P = ARGV[1]
local now = ARGV[2]
local batches = {}
-- The outbox's (see `scripts/outbox.rs`), defined after this prelude.
local record_change, record_finished
local function batch_of(id)
  local b = batches[id]
  if b == nil then
    local key = P .. 'b:' .. id
    local f = redis.call('HMGET', key, 'control', 'priority', 'channel', 'expires_at',
      'subscriptions', 'max_cost')
    b = { id = id, key = key, control = f[1], priority = f[2], channel = f[3],
      expires_at = tonumber(f[4]), subs = f[5], max_cost = tonumber(f[6]), delta = {} }
    batches[id] = b
  end
  return b
end
-- Counts change in memory and are written once per batch at the end. A message
-- `member` of a batch with subscriptions records its event, if `to` has one, with
-- `code` (nil: what the message says).
local function count(b, from, to, member, code)
  b.delta[from] = (b.delta[from] or 0) - 1
  b.delta[to] = (b.delta[to] or 0) + 1
  if b.subs and from ~= to then record_change(b, member, to, code) end
end
-- Keeps `finished` (see `prune.rs`): a batch with no message left to send is in
-- it, scored by this change's time.
local function file_finished(b)
  local c = redis.call('HMGET', b.key, 'pending', 'sending', 'paused', 'unknown')
  for i = 1, 4 do
    if (tonumber(c[i]) or 0) ~= 0 then
      redis.call('ZREM', P .. 'finished', b.id)
      return
    end
  end
  redis.call('ZADD', P .. 'finished', now, b.id)
end
-- Writes the counts; a subscribed batch a change may have finished is looked at.
local function flush_counts()
  for _, b in pairs(batches) do
    local changed = false
    for state, n in pairs(b.delta) do
      if n ~= 0 then
        redis.call('HINCRBY', b.key, state, n)
        changed = true
      end
    end
    if b.finishing then record_finished(b) end
    if changed then file_finished(b) end
  end
end
-- Whether the batch's deadline has passed: its unsent messages are expired.
local function past_deadline(b)
  return b.expires_at ~= nil and b.expires_at <= tonumber(now)
end
-- A message going back to the queue takes its batch's cancel, deadline or pause.
local function requeued_state(b)
  if b.control == 'cancelled' then return b.control end
  if past_deadline(b) then return 'expired' end
  if b.control == 'paused' then return b.control end
  return 'pending'
end
local indexed = {}
local function make_ready(b, provider, member, at)
  local ready = P .. 'ready:' .. b.priority .. ':' .. provider
  redis.call('ZADD', ready, at, member)
  if indexed[ready] == nil then
    redis.call('ZADD', P .. 'prios:' .. provider, -tonumber(b.priority), b.priority)
    indexed[ready] = true
  end
end
local function unready(b, provider, member)
  redis.call('ZREM', P .. 'ready:' .. b.priority .. ':' .. provider, member)
end
-- Lua's unpack is limited to a few thousand values.
local function zrem_all(key, members)
  for i = 1, #members, 1000 do
    redis.call('ZREM', key, unpack(members, i, math.min(i + 999, #members)))
  end
end
local function member_of(seq, index)
  return seq .. ':' .. string.format('%010d', index)
end
";

/// Allocates a batch's arrival number and records it as staging.
/// ARGV: P, now, deadline, span.
const RESERVE: &str = r"
local seq = string.format('%010d', redis.call('INCR', P .. 'seq'))
redis.call('ZADD', P .. 'staging', ARGV[3], seq .. ':' .. ARGV[4])
return seq
";

/// An idempotency key's earlier batch: `{batch id, request hash, report}` or `{}`.
/// ARGV: P, now, key.
const LOOKUP: &str = r"
local seen = redis.call('HMGET', P .. 'idem:' .. ARGV[3], 'batch', 'request_hash')
if not seen[1] then return {} end
return { seen[1], seen[2], redis.call('HGET', P .. 'b:' .. seen[1], 'report') }
";

/// Writes message hashes of a batch being staged, under keys nothing refers to yet.
/// One script rather than a pipeline of HSETs: with `appendfsync always` Redis
/// fsyncs once per event-loop pass, and a large pipeline is read (and fsynced) in
/// many small pieces, while a script's request is executed, and fsynced, once.
/// ARGV: P, now, batch id, send_at, the batch's stored template (or ''), then per
/// message: member, provider, to, body ('' when the batch's template renders it),
/// segments, which optional fields follow (a
/// sum of 1: ref, 2: subject, 4: vars), ref, subject, vars, when it is due, and
/// the recipient's key for searches (`search::recipient_key`). The message joins
/// the search indexes `to:{key}` and `ref:{ref}` now: a search skips it until its
/// batch is committed, and drops it if its staging is discarded.
const STAGE: &str = r"
local batch, template = ARGV[3], ARGV[5]
for i = 6, #ARGV, 11 do
  local has = tonumber(ARGV[i + 5])
  local fields = { P .. 'm:' .. ARGV[i], 'batch', batch, 'provider', ARGV[i + 1], 'state', 'pending',
    'attempts', 0, 'to', ARGV[i + 2], 'body', ARGV[i + 3], 'segments', ARGV[i + 4],
    'available_at', ARGV[i + 9], 'created_at', now, 'updated_at', now }
  if has % 2 == 1 then
    fields[#fields + 1] = 'ref'
    fields[#fields + 1] = ARGV[i + 6]
  end
  if math.floor(has / 2) % 2 == 1 then
    fields[#fields + 1] = 'subject'
    fields[#fields + 1] = ARGV[i + 7]
  end
  if has >= 4 then
    fields[#fields + 1] = 'vars'
    fields[#fields + 1] = ARGV[i + 8]
  end
  if template ~= '' then
    fields[#fields + 1] = 'template'
    fields[#fields + 1] = template
  end
  redis.call('HSET', unpack(fields))
  redis.call('ZADD', P .. 'to:' .. ARGV[i + 10], 0, ARGV[i])
  if has % 2 == 1 then redis.call('ZADD', P .. 'ref:' .. ARGV[i + 6], 0, ARGV[i]) end
end
return 1
";

/// Makes a staged batch visible, all at once: the batch record, the idempotency key,
/// its entry in the list of batches, and its members in the ready sets.
/// ARGV: P, now, id, channel, source, priority, send_at, report, seq, span, total,
/// idempotency key (or ''), request hash, the span its staging entry records, the
/// batch's template as JSON (or ''), its deadline in ms (or ''), then per provider:
/// name, the number of runs, and each run of its message indices as `from` and
/// `to` (exclusive). A batch with a deadline joins `deadlines`. ARGV[17] and
/// ARGV[18], before the providers: its callback URL and its subscriptions as JSON
/// (each '' for none). ARGV[19]: '1' when some messages are due later than the
/// batch (their sending window opens later): each joins its ready set scored by
/// its own `available_at`. ARGV[20]: its sending window as JSON (or ''). ARGV[21]:
/// its spend cap in millionths (or '').
const COMMIT: &str = r"
local id, prio, send_at, seq, span, idem = ARGV[3], ARGV[6], ARGV[7], ARGV[9], ARGV[10], ARGV[12]
if idem ~= '' then
  local seen = redis.call('HMGET', P .. 'idem:' .. idem, 'batch', 'request_hash')
  if seen[1] then
    return { 'seen', seen[1], seen[2], redis.call('HGET', P .. 'b:' .. seen[1], 'report') }
  end
end
local bkey = P .. 'b:' .. id
if redis.call('EXISTS', bkey) == 1 then return { 'exists' } end
if redis.call('ZREM', P .. 'staging', seq .. ':' .. ARGV[14]) == 0 then return { 'expired' } end
redis.call('HSET', bkey, 'seq', seq, 'span', span, 'channel', ARGV[4], 'source', ARGV[5],
  'control', 'active', 'priority', prio, 'send_at', send_at, 'created_at', now, 'report', ARGV[8],
  'pending', ARGV[11], 'sending', 0, 'sent', 0, 'failed', 0, 'cancelled', 0, 'paused', 0)
if idem ~= '' then
  redis.call('HSET', P .. 'idem:' .. idem, 'batch', id, 'request_hash', ARGV[13])
  redis.call('HSET', bkey, 'idempotency_key', idem)
end
if ARGV[15] ~= '' then redis.call('HSET', bkey, 'template_source', ARGV[15]) end
if ARGV[16] ~= '' then
  redis.call('HSET', bkey, 'expires_at', ARGV[16])
  redis.call('ZADD', P .. 'deadlines', ARGV[16], id)
end
if ARGV[17] ~= '' then redis.call('HSET', bkey, 'callback_url', ARGV[17]) end
if ARGV[18] ~= '' then redis.call('HSET', bkey, 'subscriptions', ARGV[18]) end
redis.call('ZADD', P .. 'batches', 0, id)
if tonumber(ARGV[11]) == 0 then redis.call('ZADD', P .. 'finished', now, id) end
local own_due = ARGV[19] == '1'
if ARGV[20] ~= '' then redis.call('HSET', bkey, 'window', ARGV[20]) end
if ARGV[21] ~= '' then redis.call('HSET', bkey, 'max_cost', ARGV[21], 'spent', 0) end
local i = 22
while i <= #ARGV do
  local provider, runs = ARGV[i], tonumber(ARGV[i + 1])
  local ready = P .. 'ready:' .. prio .. ':' .. provider
  local args = {}
  for r = 0, runs - 1 do
    for index = tonumber(ARGV[i + 2 + 2 * r]), tonumber(ARGV[i + 3 + 2 * r]) - 1 do
      local member = member_of(seq, index)
      args[#args + 1] = own_due and redis.call('HGET', P .. 'm:' .. member, 'available_at') or send_at
      args[#args + 1] = member
      if #args >= 2000 then
        redis.call('ZADD', ready, unpack(args))
        args = {}
      end
    end
  end
  if #args > 0 then redis.call('ZADD', ready, unpack(args)) end
  if runs > 0 then redis.call('ZADD', P .. 'prios:' .. provider, -tonumber(prio), prio) end
  i = i + 2 + 2 * runs
end
return { 'new' }
";

/// Moves a staging entry to a larger span, before messages up to it are written,
/// so that a sweep of an abandoned staging removes them all. 0 when the staging
/// was swept already. ARGV: P, now, seq, old span, new span, deadline.
const EXTEND: &str = r"
if redis.call('ZREM', P .. 'staging', ARGV[3] .. ':' .. ARGV[4]) == 0 then return 0 end
redis.call('ZADD', P .. 'staging', ARGV[6], ARGV[3] .. ':' .. ARGV[5])
return 1
";

/// Pauses, resumes, cancels or retries a batch: `{'none'}`, `{'conflict', <summary
/// fields>}`, or `{'ok', <summary fields>}`. A retry requeues the failed and expired
/// messages and gives the batch its new deadline (none when '').
/// The refusal is `BatchAction::refusal`'s rule, which names the reason.
/// ARGV: P, now, batch id, action, the retry's deadline in ms (or '').
const CONTROL: &str = r"
local action = ARGV[4]
local b = batch_of(ARGV[3])
if not b.control then return { 'none' } end
local c = redis.call('HMGET', b.key, 'pending', 'sending', 'paused', 'unknown', 'failed', 'expired',
  'held')
for i = 1, 7 do c[i] = tonumber(c[i]) or 0 end
local open = c[1] + c[2] + c[3] + c[4] + c[7]
local refused
if b.control == 'cancelled' then refused = action ~= 'cancel'
elseif action == 'retry' then refused = open == 0 and c[5] + c[6] == 0
elseif action == 'resume' and c[7] > 0 then refused = true
elseif action == 'resume' and b.control == 'paused' then refused = false
else refused = open == 0 end
if refused then
  local out = redis.call('HMGET', b.key, SUMMARY_FIELDS)
  table.insert(out, 1, 'conflict')
  return out
end
if action == 'retry' then
  local id = ARGV[3]
  b.expires_at = tonumber(ARGV[5])
  if b.expires_at then
    redis.call('HSET', b.key, 'expires_at', ARGV[5])
    redis.call('ZADD', P .. 'deadlines', ARGV[5], id)
  else
    redis.call('HDEL', b.key, 'expires_at')
    redis.call('ZREM', P .. 'deadlines', id)
  end
end
local f = redis.call('HMGET', b.key, 'seq', 'span')
local seq, span = f[1], tonumber(f[2])
local control = ({ pause = 'paused', resume = 'active', cancel = 'cancelled' })[action]
if control then
  redis.call('HSET', b.key, 'control', control)
  b.control = control
end
for i = 0, span - 1 do
  local member = member_of(seq, i)
  local key = P .. 'm:' .. member
  local m = redis.call('HMGET', key, 'state', 'provider', 'available_at')
  local from, provider, to = m[1], m[2], nil
  if action == 'pause' and from == 'pending' then to = 'paused'
  elseif action == 'resume' and from == 'paused' then to = requeued_state(b)
  elseif action == 'cancel' and (from == 'pending' or from == 'paused' or from == 'held') then
    to = 'cancelled'
  elseif action == 'retry' and (from == 'failed' or from == 'expired') then
    to = requeued_state(b)
  end
  if to then
    if from == 'pending' then unready(b, provider, member) end
    redis.call('HSET', key, 'state', to, 'updated_at', now)
    local at = m[3]
    if action == 'retry' then
      at = now
      redis.call('HSET', key, 'attempts', 0, 'available_at', at)
    end
    if to == 'pending' then make_ready(b, provider, member, at) end
    count(b, from, to, member)
  end
end
flush_counts()
local out = redis.call('HMGET', b.key, SUMMARY_FIELDS)
table.insert(out, 1, 'ok')
return out
";

/// One page of a batch's ledger: 14 values per message (index, to, ref, state,
/// provider, attempts, error, provider message id, created, updated, sent, receipt
/// code, receipt time, segments).
/// ARGV: P, now, batch id, first index, limit, state ('' for any).
const MESSAGES: &str = r"
local f = redis.call('HMGET', P .. 'b:' .. ARGV[3], 'seq', 'span')
if not f[1] then return {} end
local seq, span, limit, want = f[1], tonumber(f[2]), tonumber(ARGV[5]), ARGV[6]
local out, n, i = {}, 0, tonumber(ARGV[4])
while i < span and n < limit do
  local m = redis.call('HMGET', P .. 'm:' .. member_of(seq, i), 'state', 'to', 'ref', 'provider',
    'attempts', 'error', 'provider_message_id', 'created_at', 'updated_at', 'sent_at',
    'receipt_code', 'receipt_at', 'segments')
  if m[1] and (want == '' or m[1] == want) then
    n = n + 1
    local k = #out
    out[k + 1] = i
    out[k + 2] = m[2]
    out[k + 3] = m[3]
    out[k + 4] = m[1]
    for j = 4, 13 do out[k + j + 1] = m[j] end
  end
  i = i + 1
end
return out
";

/// Expires the unsent messages (pending, paused, unknown) of the batches in
/// `deadlines` whose deadline has passed, a batch at a time, until `limit` messages
/// are expired or none is left; a batch walked leaves `deadlines` (a retry with a
/// fresh deadline puts it back). Returns how many messages it expired.
/// ARGV: P, now, limit.
const EXPIRE: &str = r"
local limit, expired = tonumber(ARGV[3]), 0
local due = redis.call('ZRANGEBYSCORE', P .. 'deadlines', '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  if expired >= limit then break end
  local b = batch_of(id)
  local f = redis.call('HMGET', b.key, 'seq', 'span')
  if f[1] and past_deadline(b) then
    local seq, span = f[1], tonumber(f[2])
    for i = 0, span - 1 do
      local member = member_of(seq, i)
      local key = P .. 'm:' .. member
      local m = redis.call('HMGET', key, 'state', 'provider')
      local from = m[1]
      if from == 'pending' or from == 'paused' or from == 'unknown' or from == 'held' then
        if from == 'pending' then unready(b, m[2], member) end
        if from == 'unknown' then redis.call('ZREM', P .. 'leased:' .. m[2], member) end
        redis.call('HSET', key, 'state', 'expired', 'updated_at', now)
        count(b, from, 'expired', member)
        expired = expired + 1
      end
    end
  end
  redis.call('ZREM', P .. 'deadlines', id)
end
flush_counts()
return expired
";

/// The Lua scripts, each with the prelude; loaded into the server on first use.
#[derive(Clone)]
pub(super) struct Scripts {
    pub(super) reserve: Script,
    pub(super) lookup: Script,
    pub(super) stage: Script,
    pub(super) commit: Script,
    pub(super) extend: Script,
    pub(super) claim: Script,
    pub(super) renew: Script,
    pub(super) settle: Script,
    pub(super) apply_receipts: Script,
    pub(super) control: Script,
    pub(super) messages: Script,
    pub(super) expire: Script,
    pub(super) claim_deliveries: Script,
    pub(super) settle_deliveries: Script,
    pub(super) list_deliveries: Script,
    pub(super) replay_deliveries: Script,
    pub(super) delivery_counts: Script,
    pub(super) prune_deliveries: Script,
    pub(super) charge: Script,
    pub(super) raise_cap: Script,
}

/// A script of `body` after the prelude and the outbox's recording, with
/// `SUMMARY_FIELDS` filled in.
pub(super) fn script(body: &str) -> Script {
    let fields = SUMMARY_FIELDS.map(|f| format!("'{f}'")).join(", ");
    Script::new(&format!(
        "{PRELUDE}{}{}",
        outbox::record(),
        body.replace("SUMMARY_FIELDS", &fields)
    ))
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            reserve: script(RESERVE),
            lookup: script(LOOKUP),
            stage: script(STAGE),
            commit: script(COMMIT),
            extend: script(EXTEND),
            claim: script(CLAIM),
            renew: script(super::lease::RENEW),
            settle: script(&format!("{RECEIPTS}{SETTLE}")),
            apply_receipts: script(&format!("{RECEIPTS}{APPLY_RECEIPTS}")),
            control: script(CONTROL),
            messages: script(MESSAGES),
            expire: script(EXPIRE),
            claim_deliveries: script(outbox::CLAIM_DELIVERIES),
            settle_deliveries: script(outbox::SETTLE_DELIVERIES),
            list_deliveries: script(outbox::LIST_DELIVERIES),
            replay_deliveries: script(outbox::REPLAY_DELIVERIES),
            delivery_counts: script(outbox::DELIVERY_COUNTS),
            prune_deliveries: script(outbox::PRUNE_DELIVERIES),
            charge: script(super::spend::CHARGE),
            raise_cap: script(super::spend::RAISE_CAP),
        }
    }
}
