//! The Redis engine's Lua scripts. Every change of state is one script, so readers
//! and other workers never see half of one; each starts with [`PRELUDE`].

use redis::Script;

use super::SUMMARY_FIELDS;

/// Shared by every script. `ARGV[1]` is the key prefix (with its `:`), `ARGV[2]` the
/// caller's clock in ms: scripts never read Redis's clock, so engines agree on time.
pub(super) const PRELUDE: &str = r"
local P = ARGV[1]
local now = ARGV[2]
local batches = {}
local function batch_of(id)
  local b = batches[id]
  if b == nil then
    local key = P .. 'b:' .. id
    local f = redis.call('HMGET', key, 'control', 'priority', 'channel')
    b = { key = key, control = f[1], priority = f[2], channel = f[3], delta = {} }
    batches[id] = b
  end
  return b
end
-- Counts change in memory and are written once per batch at the end.
local function count(b, from, to)
  b.delta[from] = (b.delta[from] or 0) - 1
  b.delta[to] = (b.delta[to] or 0) + 1
end
local function flush_counts()
  for _, b in pairs(batches) do
    for state, n in pairs(b.delta) do
      if n ~= 0 then redis.call('HINCRBY', b.key, state, n) end
    end
  end
end
-- A message going back to the queue takes its batch's pause or cancel.
local function requeued_state(b)
  if b.control == 'paused' or b.control == 'cancelled' then return b.control end
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
/// message: member, provider, to, body, segments, which optional fields follow (a
/// sum of 1: ref, 2: subject, 4: vars), ref, subject, vars.
const STAGE: &str = r"
local batch, send_at, template = ARGV[3], ARGV[4], ARGV[5]
for i = 6, #ARGV, 9 do
  local has = tonumber(ARGV[i + 5])
  local fields = { P .. 'm:' .. ARGV[i], 'batch', batch, 'provider', ARGV[i + 1], 'state', 'pending',
    'attempts', 0, 'to', ARGV[i + 2], 'body', ARGV[i + 3], 'segments', ARGV[i + 4],
    'available_at', send_at, 'created_at', now, 'updated_at', now }
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
end
return 1
";

/// Makes a staged batch visible, all at once: the batch record, the idempotency key,
/// its entry in the list of batches, and its members in the ready sets.
/// ARGV: P, now, id, channel, source, priority, send_at, report, seq, span, total,
/// idempotency key (or ''), request hash, the span its staging entry records, then
/// per provider: name, the number of runs, and each run of its message indices as
/// `from` and `to` (exclusive).
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
redis.call('ZADD', P .. 'batches', 0, id)
local i = 15
while i <= #ARGV do
  local provider, runs = ARGV[i], tonumber(ARGV[i + 1])
  local ready = P .. 'ready:' .. prio .. ':' .. provider
  local args = {}
  for r = 0, runs - 1 do
    for index = tonumber(ARGV[i + 2 + 2 * r]), tonumber(ARGV[i + 3 + 2 * r]) - 1 do
      args[#args + 1] = send_at
      args[#args + 1] = member_of(seq, index)
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

/// Requeues the provider's expired leases, then leases up to `limit` due messages,
/// best priority first, then earliest `available_at`, then arrival. With a rate, the
/// provider's token bucket (the arithmetic of `crate::ratelimit`, on Redis's own
/// clock so that every machine counts alike) bounds the claim and pays for it.
/// A message whose recipient is at one of the per-recipient caps is put back until
/// the cap allows it. With a segment rate, a second bucket (`segrate:{provider}`)
/// pays for the messages' SMS segments: the claim takes the due messages in order
/// while its tokens last (a message costing more than the burst goes alone from a
/// full bucket). Unknown outcomes wait in `leased:{provider}` too, scored by when
/// they are due again. Returns how long to wait for a rate in ms (0: no wait), then
/// 12 values per message: member, batch, channel, to, ref, subject, body, attempts,
/// segments, template, vars, unknown since.
/// The buckets and the recipients' sends are those of the limits' owner (the
/// provider the messages will be sent through, see `Limits::owner`).
/// ARGV: P, now, provider, limit, lease until, token, rate per second and burst
/// (both empty for no limit), the number of caps, then each cap's count and window
/// in ms, then the segment rate per second and burst (both empty for none), then
/// the owner.
const CLAIM: &str = r"
local provider, want, lease_until, token = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local per_sec, burst = tonumber(ARGV[7]), tonumber(ARGV[8])
local caps, longest = {}, 0
for i = 10, 9 + 2 * tonumber(ARGV[9]), 2 do
  local cap = { tonumber(ARGV[i]), tonumber(ARGV[i + 1]) }
  caps[#caps + 1] = cap
  longest = math.max(longest, cap[2])
end
local seg_per_sec = tonumber(ARGV[10 + 2 * #caps])
local seg_burst = tonumber(ARGV[11 + 2 * #caps])
local owner = ARGV[12 + 2 * #caps]
local leased = P .. 'leased:' .. provider
local expired = redis.call('ZRANGEBYSCORE', leased, '-inf', now)
for _, member in ipairs(expired) do
  local key = P .. 'm:' .. member
  local m = redis.call('HMGET', key, 'state', 'batch', 'available_at')
  -- A lapsed lease, or an unknown outcome whose time has come.
  if m[1] == 'sending' or m[1] == 'unknown' then
    local b = batch_of(m[2])
    local state = requeued_state(b)
    redis.call('HSET', key, 'state', state, 'updated_at', now)
    redis.call('HDEL', key, 'lease', 'lease_until')
    count(b, m[1], state)
    if state == 'pending' then make_ready(b, provider, member, m[3]) end
  end
end
zrem_all(leased, expired)
local bucket, tokens, clock
if per_sec or #caps > 0 or seg_per_sec then
  local t = redis.call('TIME')
  clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The bucket at `key` refilled to `clock` at `rate` a second, never above `burst`
-- (full when new), and the time it is now counted at (a clock that went backwards
-- refills nothing until it has caught up).
local function refill(key, rate, most)
  local b = redis.call('HMGET', key, 'tokens', 'at')
  if not b[1] then return most, clock end
  local at = tonumber(b[2])
  return math.min(most, tonumber(b[1]) + math.max(0, clock - at) * rate / 1000), math.max(clock, at)
end
if per_sec then
  bucket = P .. 'rate:' .. owner
  tokens, clock = refill(bucket, per_sec, burst)
  local chunk = math.max(1, math.min(want, math.ceil(burst / 2)))
  if tokens < chunk then
    flush_counts()
    return { math.max(1, math.ceil((chunk - tokens) * 1000 / per_sec)) }
  end
  want = math.min(want, math.floor(tokens))
end
local seg_bucket, seg_tokens, seg_at
if seg_per_sec then
  seg_bucket = P .. 'segrate:' .. owner
  seg_tokens, seg_at = refill(seg_bucket, seg_per_sec, seg_burst)
end
local seg_taken, seg_short = 0, nil
-- When a recipient's caps next allow a send (nil: now). `sent:{owner}:{to}`
-- holds the recipient's sends, scored by time, and expires after the longest window.
local function capped_until(to)
  local key = P .. 'sent:' .. owner .. ':' .. to
  local at
  for _, cap in ipairs(caps) do
    local recent = redis.call('ZREVRANGEBYSCORE', key, '+inf', '(' .. (clock - cap[2]),
      'WITHSCORES', 'LIMIT', 0, cap[1])
    if #recent >= 2 * cap[1] then
      local free = tonumber(recent[2 * cap[1]]) + cap[2]
      if at == nil or free > at then at = free end
    end
  end
  if at ~= nil then return math.max(at, clock + 1) end
  return nil
end
local function record_send(to, member)
  local key = P .. 'sent:' .. owner .. ':' .. to
  redis.call('ZADD', key, clock, token .. ':' .. member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', clock - longest)
  redis.call('PEXPIRE', key, longest)
end
local out = { 0 }
local taken = 0
local lease_args = {}
local prios = P .. 'prios:' .. provider
for _, prio in ipairs(redis.call('ZRANGE', prios, 0, -1)) do
  if want <= 0 then break end
  local ready = P .. 'ready:' .. prio .. ':' .. provider
  local members = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', 0, want)
  local deferred, done = {}, {}
  for _, member in ipairs(members) do
    local key = P .. 'm:' .. member
    local m = redis.call('HMGET', key, 'state', 'batch', 'to', 'ref', 'subject', 'body', 'attempts',
      'segments', 'template', 'vars', 'unknown_since')
    local cost = tonumber(m[8]) or 1
    if m[1] == 'pending' and seg_bucket and seg_taken + cost > seg_tokens
      and not (seg_taken == 0 and seg_tokens >= seg_burst) then
      -- Out of segment tokens: this and the rest stay ready.
      seg_short = cost
      break
    end
    done[#done + 1] = member
    local until_ = nil
    if m[1] == 'pending' and #caps > 0 then until_ = capped_until(m[3]) end
    if until_ ~= nil then
      redis.call('HSET', key, 'available_at', until_, 'updated_at', now)
      deferred[#deferred + 1] = { member, until_ }
    elseif m[1] == 'pending' then
      if #caps > 0 then record_send(m[3], member) end
      local b = batch_of(m[2])
      redis.call('HSET', key, 'state', 'sending', 'lease', token, 'lease_until', lease_until,
        'updated_at', now)
      lease_args[#lease_args + 1] = lease_until
      lease_args[#lease_args + 1] = member
      count(b, 'pending', 'sending')
      local n = #out
      out[n + 1] = member
      out[n + 2] = m[2]
      out[n + 3] = b.channel
      out[n + 4] = m[3]
      out[n + 5] = m[4]
      out[n + 6] = m[5]
      out[n + 7] = m[6]
      out[n + 8] = m[7]
      out[n + 9] = m[8]
      out[n + 10] = m[9]
      out[n + 11] = m[10]
      out[n + 12] = m[11]
      want = want - 1
      taken = taken + 1
      seg_taken = seg_taken + cost
    end
  end
  zrem_all(ready, done)
  for _, d in ipairs(deferred) do redis.call('ZADD', ready, d[2], d[1]) end
  if want > 0 and redis.call('ZCARD', ready) == 0 then redis.call('ZREM', prios, prio) end
  if seg_short then break end
end
if seg_bucket then
  redis.call('HSET', seg_bucket, 'tokens', seg_tokens - seg_taken, 'at', seg_at)
  if taken == 0 and seg_short then
    if bucket then redis.call('HSET', bucket, 'tokens', tokens, 'at', clock) end
    flush_counts()
    local need = math.min(seg_short, seg_burst)
    return { math.max(1, math.ceil((need - seg_tokens) * 1000 / seg_per_sec)) }
  end
end
for i = 1, #lease_args, 2000 do
  redis.call('ZADD', leased, unpack(lease_args, i, math.min(i + 1999, #lease_args)))
end
if bucket then redis.call('HSET', bucket, 'tokens', tokens - taken, 'at', clock) end
flush_counts()
return out
";

/// What the settle and receipt scripts share: the provider-id index and applying
/// delivery reports.
/// - `pids:{provider}` hash: provider message id → member, or `*` when several
///   messages share the id (an Aliyun request's `BizId`); then `{id}\n{to}` →
///   member for each of them.
/// - `early:{provider}` hash: provider message id → JSON array of the reports that
///   matched no message yet (`[to, delivered, code, at]`, '' for none);
///   `early-at` sorted set: `{provider}\n{id}` scored by when first held.
const RECEIPTS: &str = r"
local function index_pid(provider, pid, to, member)
  local key = P .. 'pids:' .. provider
  local seen = redis.call('HGET', key, pid)
  if not seen then
    redis.call('HSET', key, pid, member)
  elseif seen ~= member then
    if seen ~= '*' then
      redis.call('HSET', key, pid .. '\n' .. redis.call('HGET', P .. 'm:' .. seen, 'to'), seen)
      redis.call('HSET', key, pid, '*')
    end
    redis.call('HSET', key, pid .. '\n' .. to, member)
  end
end
-- The member a report names: nil when none (yet), '*' when it cannot tell which.
local function receipt_member(provider, pid, to)
  local key = P .. 'pids:' .. provider
  local seen = redis.call('HGET', key, pid)
  if not seen then return nil end
  if seen == '*' then
    if to == '' then return '*' end
    return redis.call('HGET', key, pid .. '\n' .. to) or nil
  end
  if to ~= '' and redis.call('HGET', P .. 'm:' .. seen, 'to') ~= to then return nil end
  return seen
end
-- Applies one report: nil when it names no message, else 'applied' (with the
-- recipient and channel), 'same' or 'ambiguous'.
local function apply_report(provider, pid, to, delivered, code, at)
  local member = receipt_member(provider, pid, to)
  if not member then return nil end
  if member == '*' then return 'ambiguous' end
  local key = P .. 'm:' .. member
  local m = redis.call('HMGET', key, 'state', 'batch', 'to')
  local state, next = m[1], nil
  if delivered == '1' and (state == 'sent' or state == 'undelivered') then next = 'delivered'
  elseif delivered == '0' and state == 'sent' then next = 'undelivered' end
  if not next then return 'same' end
  local b = batch_of(m[2])
  if at == '' then at = now end
  redis.call('HSET', key, 'state', next, 'updated_at', now, 'receipt_at', at)
  if code ~= '' then redis.call('HSET', key, 'receipt_code', code) else redis.call('HDEL', key, 'receipt_code') end
  count(b, state, next)
  return 'applied', m[3], b.channel
end
-- Applies the held reports of a provider id that a message was just sent with.
local function apply_held(provider, pid)
  local key = P .. 'early:' .. provider
  local held = redis.call('HGET', key, pid)
  if not held then return end
  local left = {}
  for _, r in ipairs(cjson.decode(held)) do
    if not apply_report(provider, pid, r[1], r[2], r[3], r[4]) then left[#left + 1] = r end
  end
  if #left == 0 then
    redis.call('HDEL', key, pid)
    redis.call('ZREM', P .. 'early-at', provider .. '\n' .. pid)
  else
    redis.call('HSET', key, pid, cjson.encode(left))
  end
end
";

/// Settles leased messages; a settlement whose lease is no longer current is ignored.
/// A message sent with a provider id is indexed by it under the provider that sent
/// it, and receipts held for the id are applied. An unknown outcome stays in
/// `leased:{provider}`, scored by when it is due again.
/// ARGV: P, now, then per settlement: member, token, kind (sent, confirmed, retry,
/// unknown, release, failed), at, has text ('1' or '0'), text (error or provider
/// message id), the provider that sent it when not its own (else empty).
const SETTLE: &str = r"
local done = {}
for i = 3, #ARGV, 7 do
  local member, token, kind, at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local has_text, text, sent_by = ARGV[i + 4] == '1', ARGV[i + 5], ARGV[i + 6]
  local key = P .. 'm:' .. member
  local m = redis.call('HMGET', key, 'state', 'lease', 'provider', 'batch', 'attempts', 'to')
  if m[1] == 'sending' and m[2] == token then
    local b = batch_of(m[4])
    local leased = P .. 'leased:' .. m[3]
    local members = done[leased]
    if members == nil then
      members = {}
      done[leased] = members
    end
    -- A release is no attempt, nor is asking the provider; the rest count one,
    -- written with the state.
    local attempts = tonumber(m[5])
    if kind ~= 'release' and kind ~= 'confirmed' then attempts = attempts + 1 end
    local state
    if kind == 'sent' or kind == 'confirmed' then
      members[#members + 1] = member
      state = 'sent'
      -- An earlier attempt may have left an error; a first one has none to clear.
      if tonumber(m[5]) > 0 then redis.call('HDEL', key, 'error', 'unknown_since') end
      if sent_by ~= '' then redis.call('HSET', key, 'provider', sent_by) end
      if has_text then
        redis.call('HSET', key, 'state', state, 'attempts', attempts, 'sent_at', now,
          'updated_at', now, 'provider_message_id', text)
      else
        redis.call('HSET', key, 'state', state, 'attempts', attempts, 'sent_at', now,
          'updated_at', now)
      end
    elseif kind == 'failed' then
      members[#members + 1] = member
      state = 'failed'
      redis.call('HSET', key, 'state', state, 'attempts', attempts, 'error', text,
        'updated_at', now)
    elseif kind == 'unknown' then
      state = 'unknown'
      redis.call('HSET', key, 'state', state, 'attempts', attempts, 'available_at', at,
        'updated_at', now, 'error', text)
      redis.call('HSETNX', key, 'unknown_since', now)
      redis.call('ZADD', leased, at, member)
    else
      members[#members + 1] = member
      state = requeued_state(b)
      if kind == 'retry' then
        redis.call('HSET', key, 'state', state, 'attempts', attempts, 'available_at', at,
          'updated_at', now, 'error', text)
      else
        redis.call('HSET', key, 'state', state, 'available_at', at, 'updated_at', now)
      end
      if state == 'pending' then make_ready(b, m[3], member, at) end
    end
    -- The lease fields stay until the next claim overwrites them: a settlement only
    -- ever matches a message whose state is 'sending'.
    count(b, 'sending', state)
    if state == 'sent' and has_text then
      local by = m[3]
      if sent_by ~= '' then by = sent_by end
      index_pid(by, text, m[6], member)
      apply_held(by, text)
    end
  end
end
for leased, members in pairs(done) do zrem_all(leased, members) end
flush_counts()
return 1
";

/// Applies delivery reports of one provider (see `Queue::apply_receipts`); those
/// that name no message yet are held, and held ones past their time or beyond the
/// most kept are dropped. Returns 3 values per report: the effect (`applied`,
/// `same`, `ambiguous`, `held`), and for `applied` the recipient and channel ('' else).
/// ARGV: P, now, provider, how long held reports are kept (ms), the most kept, then
/// per report: provider id, to, delivered ('1' or '0'), code, at ('' for none).
const APPLY_RECEIPTS: &str = r"
local provider, ttl, most = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local out, held = {}, false
for i = 6, #ARGV, 5 do
  local pid, to, delivered, code, at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local effect, applied_to, channel = apply_report(provider, pid, to, delivered, code, at)
  if not effect then
    local key = P .. 'early:' .. provider
    local list = redis.call('HGET', key, pid)
    local reports = {}
    if list then reports = cjson.decode(list) end
    reports[#reports + 1] = { to, delivered, code, at }
    redis.call('HSET', key, pid, cjson.encode(reports))
    redis.call('ZADD', P .. 'early-at', 'NX', now, provider .. '\n' .. pid)
    effect, held = 'held', true
  end
  out[#out + 1] = effect
  out[#out + 1] = applied_to or ''
  out[#out + 1] = channel or ''
end
if held then
  local at_key = P .. 'early-at'
  local old = redis.call('ZRANGEBYSCORE', at_key, '-inf', '(' .. (tonumber(now) - ttl), 'LIMIT', 0, 1000)
  local over = redis.call('ZCARD', at_key) - #old - most
  if over > 0 then
    for _, e in ipairs(redis.call('ZRANGE', at_key, #old, #old + math.min(over, 1000) - 1)) do
      old[#old + 1] = e
    end
  end
  for _, e in ipairs(old) do
    local nl = string.find(e, '\n', 1, true)
    redis.call('HDEL', P .. 'early:' .. string.sub(e, 1, nl - 1), string.sub(e, nl + 1))
  end
  zrem_all(at_key, old)
end
flush_counts()
return out
";

/// Pauses, resumes, cancels or retries a batch: `{'none'}`, `{'conflict'}`, or
/// `{'ok', <summary fields>}`. ARGV: P, now, batch id, action.
const CONTROL: &str = r"
local action = ARGV[4]
local b = batch_of(ARGV[3])
if not b.control then return { 'none' } end
if b.control == 'cancelled' and action ~= 'cancel' then return { 'conflict' } end
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
  elseif action == 'resume' and from == 'paused' then to = 'pending'
  elseif action == 'cancel' and (from == 'pending' or from == 'paused') then to = 'cancelled'
  elseif action == 'retry' and from == 'failed' then to = requeued_state(b)
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
    count(b, from, to)
  end
end
flush_counts()
local out = redis.call('HMGET', b.key, SUMMARY_FIELDS)
table.insert(out, 1, 'ok')
return out
";

/// One page of a batch's ledger: 13 values per message (index, to, ref, state,
/// provider, attempts, error, provider message id, created, updated, sent, receipt
/// code, receipt time).
/// ARGV: P, now, batch id, first index, limit, state ('' for any).
const MESSAGES: &str = r"
local f = redis.call('HMGET', P .. 'b:' .. ARGV[3], 'seq', 'span')
if not f[1] then return {} end
local seq, span, limit, want = f[1], tonumber(f[2]), tonumber(ARGV[5]), ARGV[6]
local out, n, i = {}, 0, tonumber(ARGV[4])
while i < span and n < limit do
  local m = redis.call('HMGET', P .. 'm:' .. member_of(seq, i), 'state', 'to', 'ref', 'provider',
    'attempts', 'error', 'provider_message_id', 'created_at', 'updated_at', 'sent_at',
    'receipt_code', 'receipt_at')
  if m[1] and (want == '' or m[1] == want) then
    n = n + 1
    local k = #out
    out[k + 1] = i
    out[k + 2] = m[2]
    out[k + 3] = m[3]
    out[k + 4] = m[1]
    for j = 4, 12 do out[k + j + 1] = m[j] end
  end
  i = i + 1
end
return out
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
    pub(super) settle: Script,
    pub(super) apply_receipts: Script,
    pub(super) control: Script,
    pub(super) messages: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let fields = SUMMARY_FIELDS.map(|f| format!("'{f}'")).join(", ");
        let script = |body: &str| {
            Script::new(&format!(
                "{PRELUDE}{}",
                body.replace("SUMMARY_FIELDS", &fields)
            ))
        };
        Scripts {
            reserve: script(RESERVE),
            lookup: script(LOOKUP),
            stage: script(STAGE),
            commit: script(COMMIT),
            extend: script(EXTEND),
            claim: script(CLAIM),
            settle: script(&format!("{RECEIPTS}{SETTLE}")),
            apply_receipts: script(&format!("{RECEIPTS}{APPLY_RECEIPTS}")),
            control: script(CONTROL),
            messages: script(MESSAGES),
        }
    }
}
