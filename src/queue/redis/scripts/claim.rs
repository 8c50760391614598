//! The claim script: expired leases requeued, then due messages leased within the
//! provider's rate limits and per-recipient caps.

/// Requeues the provider's expired leases, then leases up to `limit` due messages,
/// best priority first, then earliest `available_at`, then arrival. With a rate, the
/// provider's token bucket (the arithmetic of `crate::ratelimit`, on Redis's own
/// clock so that every machine counts alike) bounds the claim and pays for it.
/// A message whose recipient is at one of the per-recipient caps is put back until
/// the cap allows it. With a segment rate, a second bucket (`segrate:{provider}`)
/// pays for the messages' SMS segments: the claim takes the due messages in order
/// while its tokens last (a message costing more than the burst goes alone from a
/// full bucket). Unknown outcomes wait in `leased:{provider}` too, scored by when
/// they are due again. Returns how long to wait for a rate in ms (0: no wait), and
/// when it is 0, two arrays: the claimed messages, 12 values each (member, batch,
/// channel, to, ref, subject, body, attempts, segments, template, vars, unknown
/// since), then each of their batches stored with a template, once: batch id and
/// `template_source`.
/// The buckets and the recipients' sends are those of the limits' owner (the
/// provider the messages will be sent through, see `Limits::owner`).
/// ARGV: P, now, provider, limit, lease until, token, rate per second and burst
/// (both empty for no limit), the number of caps, then each cap's count and window
/// in ms, then the segment rate per second and burst (both empty for none), then
/// the owner.
pub(super) const CLAIM: &str = r"
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
  local m = redis.call('HMGET', key, 'state', 'batch', 'available_at', 'updated_at')
  -- A lapsed lease, or an unknown outcome whose time has come.
  if m[1] == 'sending' or m[1] == 'unknown' then
    -- A lapsed lease's request may have reached the provider: an unknown outcome
    -- since the claim (`updated_at`; renewals leave it).
    if m[1] == 'sending' then redis.call('HSETNX', key, 'unknown_since', m[4]) end
    local b = batch_of(m[2])
    local state = requeued_state(b)
    redis.call('HSET', key, 'state', state, 'updated_at', now)
    redis.call('HDEL', key, 'lease', 'lease_until')
    count(b, m[1], state, member)
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
local out, templates = {}, {}
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
      'segments', 'template', 'vars', 'unknown_since', 'charge')
    local cost = tonumber(m[8]) or 1
    if m[1] == 'pending' and seg_bucket and seg_taken + cost > seg_tokens
      and not (seg_taken == 0 and seg_tokens >= seg_burst) then
      -- Out of segment tokens: this and the rest stay ready.
      seg_short = cost
      break
    end
    done[#done + 1] = member
    local b, until_ = nil, nil
    if m[1] == 'pending' then b = batch_of(m[2]) end
    if b ~= nil and past_deadline(b) then
      -- Never claimed after its batch's deadline: it leaves the ready set expired.
      redis.call('HSET', key, 'state', 'expired', 'updated_at', now)
      count(b, 'pending', 'expired', member)
      b = nil
    end
    if b ~= nil and #caps > 0 then until_ = capped_until(m[3]) end
    if b == nil then
      -- Settled since, or expired just now: it only leaves the ready set.
    elseif until_ ~= nil then
      redis.call('HSET', key, 'available_at', until_, 'updated_at', now)
      deferred[#deferred + 1] = { member, until_ }
    else
      if #caps > 0 then record_send(m[3], member) end
      redis.call('HSET', key, 'state', 'sending', 'lease', token, 'lease_until', lease_until,
        'updated_at', now)
      lease_args[#lease_args + 1] = lease_until
      lease_args[#lease_args + 1] = member
      count(b, 'pending', 'sending', member)
      if b.template == nil then
        b.template = redis.call('HGET', b.key, 'template_source') or false
        if b.template then
          templates[#templates + 1] = m[2]
          templates[#templates + 1] = b.template
        end
      end
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
      out[n + 13] = m[12] and 1 or 0
      out[n + 14] = b.max_cost and 1 or 0
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
return { 0, out, templates }
";
