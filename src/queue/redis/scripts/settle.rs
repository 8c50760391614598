//! The settle and receipt scripts: outcomes written, provider ids indexed, and
//! delivery reports applied or held until their send is recorded.

/// What the settle and receipt scripts share: the provider-id index and applying
/// delivery reports.
/// - `pids:{provider}` hash: provider message id → member, or `*` when several
///   messages share the id (an Aliyun request's `BizId`); then `{id}\n{to}` →
///   member for each of them. A message's segment ids (an SMPP long message's
///   later segments, kept in its hash as `segment_ids`, a JSON array) are
///   indexed here as its provider id is.
/// - `early:{provider}` hash: provider message id → JSON array of the reports that
///   matched no message yet (`[to, delivered, code, at]`, '' for none);
///   `early-at` sorted set: `{provider}\n{id}` scored by when first held.
pub(super) const RECEIPTS: &str = r"
local function index_pid(provider, pid, to, member)
  local key = P .. 'pids:' .. provider
  local seen = redis.call('HGET', key, pid)
  local seen_to = seen and seen ~= '*' and redis.call('HGET', P .. 'm:' .. seen, 'to')
  -- A message pruned by a build that left its ids behind names nothing.
  if not seen or (seen ~= '*' and not seen_to) then
    redis.call('HSET', key, pid, member)
  elseif seen ~= member then
    if seen ~= '*' then
      redis.call('HSET', key, pid .. '\n' .. seen_to, seen)
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
  count(b, state, next, member)
  return 'applied', m[3], b.channel
end
-- Applies the held reports of a provider id that a message was just sent with;
-- appends those that moved a message to `out` as provider, recipient, channel,
-- delivered ('1' or '0') and code ('' for none).
local function apply_held(provider, pid, out)
  local key = P .. 'early:' .. provider
  local held = redis.call('HGET', key, pid)
  if not held then return end
  local left = {}
  for _, r in ipairs(cjson.decode(held)) do
    local effect, to, channel = apply_report(provider, pid, r[1], r[2], r[3], r[4])
    if not effect then
      left[#left + 1] = r
    elseif effect == 'applied' then
      for _, v in ipairs({ provider, to, channel, r[2], r[3] }) do out[#out + 1] = v end
    end
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
/// A message sent with a provider id is indexed by it, and by its segment ids, under
/// the provider that sent it, and receipts held for those ids are applied; every message sent is what a
/// reply from its recipient through that provider is linked to (`last:`). Returns those that moved a
/// message, 5 values each (see `apply_held`). An unknown outcome stays in
/// `leased:{provider}`, scored by when it is due again.
/// ARGV: P, now, then per settlement: member, token, kind (sent, confirmed, retry,
/// unknown, release, failed, cancelled), at, has text ('1' or '0'), text (error or provider
/// message id), the provider that sent it when not its own (else empty), the segment
/// ids of a message sent (a JSON array, else empty).
pub(super) const SETTLE: &str = r"
local done, applied = {}, {}
for i = 3, #ARGV, 8 do
  local member, token, kind, at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local has_text, text, sent_by = ARGV[i + 4] == '1', ARGV[i + 5], ARGV[i + 6]
  local segments = ARGV[i + 7]
  local key = P .. 'm:' .. member
  local m = redis.call('HMGET', key, 'state', 'lease', 'provider', 'batch', 'attempts', 'to',
    'charge', 'charge_provider', 'charge_day', 'unknown_since')
  if m[1] == 'sending' and m[2] == token then
    local b = batch_of(m[4])
    -- An attempt that never reached the provider, or that it refused, is not
    -- billed: its charge is given back (see `spend.rs`), unless an earlier
    -- attempt's outcome was unknown, whose request may have been billed.
    if m[7] and not m[10] and (kind == 'retry' or kind == 'release' or kind == 'failed'
        or kind == 'cancelled') then
      redis.call('HINCRBY', b.key, 'spent', -tonumber(m[7]))
      redis.call('HINCRBY', P .. 'spend:' .. m[8], m[9], -tonumber(m[7]))
      redis.call('HDEL', key, 'charge', 'charge_provider', 'charge_day')
    end
    local leased = P .. 'leased:' .. m[3]
    local members = done[leased]
    if members == nil then
      members = {}
      done[leased] = members
    end
    -- A release is no attempt, nor is asking the provider; the rest count one,
    -- written with the state.
    local attempts = tonumber(m[5])
    if kind ~= 'release' and kind ~= 'confirmed' and kind ~= 'cancelled' then
      attempts = attempts + 1
    end
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
    elseif kind == 'failed' or kind == 'cancelled' then
      members[#members + 1] = member
      state = kind
      redis.call('HSET', key, 'state', state, 'attempts', attempts, 'error', text,
        'updated_at', now)
    elseif kind == 'unknown' and past_deadline(b) then
      -- Not asked about again: the batch's deadline has passed.
      members[#members + 1] = member
      state = 'expired'
      redis.call('HSET', key, 'state', state, 'attempts', attempts, 'updated_at', now,
        'error', text)
    elseif kind == 'unknown' then
      state = 'unknown'
      redis.call('HSET', key, 'state', state, 'attempts', attempts, 'available_at', at,
        'updated_at', now, 'error', text)
      redis.call('HSETNX', key, 'unknown_since', now)
      redis.call('ZADD', leased, at, member)
    else
      members[#members + 1] = member
      state = requeued_state(b)
      if kind == 'retry' or has_text then
        redis.call('HSET', key, 'state', state, 'attempts', attempts, 'available_at', at,
          'updated_at', now, 'error', text)
      else
        redis.call('HSET', key, 'state', state, 'available_at', at, 'updated_at', now)
      end
      if state == 'pending' then make_ready(b, m[3], member, at) end
    end
    -- The lease fields stay until the next claim overwrites them: a settlement only
    -- ever matches a message whose state is 'sending'.
    -- A message cancelled because its recipient opted out is told with the reason.
    local code = nil
    if kind == 'cancelled' then code = text end
    count(b, 'sending', state, member, code)
    if state == 'sent' then
      local by = m[3]
      if sent_by ~= '' then by = sent_by end
      -- What a reply from the recipient is linked to (see `replies.rs`).
      redis.call('SET', P .. 'last:' .. by .. ':' .. m[6], member)
    end
    if state == 'sent' and has_text then
      local by = m[3]
      if sent_by ~= '' then by = sent_by end
      index_pid(by, text, m[6], member)
      apply_held(by, text, applied)
      if kind == 'sent' and segments ~= '' then
        redis.call('HSET', key, 'segment_ids', segments)
        for _, segment in ipairs(cjson.decode(segments)) do
          index_pid(by, segment, m[6], member)
          apply_held(by, segment, applied)
        end
      end
    end
  end
end
for leased, members in pairs(done) do zrem_all(leased, members) end
flush_counts()
return applied
";

/// Applies delivery reports of one provider (see `Queue::apply_receipts`); those
/// that name no message yet are held, and held ones past their time or beyond the
/// most kept are dropped. Returns 3 values per report: the effect (`applied`,
/// `same`, `ambiguous`, `held`), and for `applied` the recipient and channel ('' else).
/// ARGV: P, now, provider, how long held reports are kept (ms), the most kept, then
/// per report: provider id, to, delivered ('1' or '0'), code, at ('' for none).
pub(super) const APPLY_RECEIPTS: &str = r"
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
