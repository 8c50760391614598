//! The Redis engine's spend: charging claimed messages against their batch's cap
//! and their provider's day, raising a held batch's cap, and a provider's spend
//! on a day. A message's hash keeps its `charge` (millionths) with the
//! `charge_provider` and `charge_day` it counts on; a batch's hash its `max_cost`
//! and `spent`; `spend:{provider}` hash: local day → what the provider was charged.
//! The settle script gives a charge back (see [`crate::queue::spend`]).

use redis::Value;

use super::Redis;
use super::reply::{optional_number, required, unexpected};
use super::slot::Slot;
use crate::domain::{BatchId, now_ms};
use crate::queue::spend::{Charge, Charged, Micros, cap_refusal};
use crate::queue::{Error, Result};

/// Charges claimed messages in order; one answer each: `yes`, `held`, `over` or
/// `lost`. A charge past its batch's cap holds the message and every pending one
/// of its batch, with the reason.
/// ARGV: P, now, then per charge: member, token, amount, provider, day, budget (or
/// ''), currency (or '').
pub(super) const CHARGE: &str = r"
local out = {}
for i = 3, #ARGV, 7 do
  local member, token, amount = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local provider, day, budget, currency = ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5]), ARGV[i + 6]
  local key = P .. 'm:' .. member
  local m = redis.call('HMGET', key, 'state', 'lease', 'batch', 'charge')
  local answer
  if m[1] ~= 'sending' or m[2] ~= token then answer = 'lost'
  elseif m[4] then answer = 'yes'
  else
    local b = batch_of(m[3])
    local spent = tonumber(redis.call('HGET', b.key, 'spent')) or 0
    local spend_key = P .. 'spend:' .. provider
    if b.max_cost and spent + amount > b.max_cost then
      local unit = ''
      if currency ~= '' then unit = ' ' .. currency end
      local reason = string.format('spend cap %.2f%s reached (spent %.2f)',
        b.max_cost / 1e6, unit, spent / 1e6)
      redis.call('HSET', key, 'state', 'held', 'error', reason, 'updated_at', now)
      redis.call('ZREM', P .. 'leased:' .. redis.call('HGET', key, 'provider'), member)
      count(b, 'sending', 'held', member)
      local f = redis.call('HMGET', b.key, 'seq', 'span')
      for j = 0, tonumber(f[2]) - 1 do
        local other = member_of(f[1], j)
        local okey = P .. 'm:' .. other
        local o = redis.call('HMGET', okey, 'state', 'provider')
        if o[1] == 'pending' then
          unready(b, o[2], other)
          redis.call('HSET', okey, 'state', 'held', 'error', reason, 'updated_at', now)
          count(b, 'pending', 'held', other)
        end
      end
      answer = 'held'
    elseif budget and (tonumber(redis.call('HGET', spend_key, day)) or 0) + amount > budget then
      answer = 'over'
    else
      redis.call('HSET', key, 'charge', amount, 'charge_provider', provider, 'charge_day', day)
      redis.call('HINCRBY', b.key, 'spent', amount)
      redis.call('HINCRBY', spend_key, day, amount)
      answer = 'yes'
    end
  end
  out[#out + 1] = answer
end
flush_counts()
return out
";

/// Raises a batch's cap and puts its held messages back to pending: `{'none'}`,
/// `{'refused', control, max_cost, spent}` (see `cap_refusal`) or `{'ok'}`.
/// ARGV: P, now, batch id, max_cost.
pub(super) const RAISE_CAP: &str = r"
local b = batch_of(ARGV[3])
if not b.control then return { 'none' } end
local max_cost = tonumber(ARGV[4])
local spent = tonumber(redis.call('HGET', b.key, 'spent')) or 0
if b.control == 'cancelled' or not b.max_cost or max_cost <= spent then
  return { 'refused', b.control, b.max_cost or '', spent }
end
redis.call('HSET', b.key, 'max_cost', ARGV[4])
local f = redis.call('HMGET', b.key, 'seq', 'span')
for i = 0, tonumber(f[2]) - 1 do
  local member = member_of(f[1], i)
  local key = P .. 'm:' .. member
  local m = redis.call('HMGET', key, 'state', 'provider', 'available_at')
  if m[1] == 'held' then
    local to = requeued_state(b)
    local at = math.max(tonumber(m[3]) or 0, tonumber(now))
    redis.call('HSET', key, 'state', to, 'available_at', at, 'updated_at', now)
    if to == 'pending' then make_ready(b, m[2], member, at) end
    count(b, 'held', to, member)
  end
end
flush_counts()
return { 'ok' }
";

impl Redis {
    /// [`Engine::charge`](crate::queue::Engine::charge).
    pub(super) async fn charge_claimed(&self, charges: Vec<Charge>) -> Result<Vec<Charged>> {
        let mut call = self.scripts.charge.prepare_invoke();
        call.arg(&self.prefix).arg(now_ms());
        for c in &charges {
            let slot = Slot::from_row(c.lease.row).ok_or_else(|| unexpected("a charge's lease"))?;
            call.arg(slot.member())
                .arg(c.lease.token)
                .arg(c.amount)
                .arg(&c.provider)
                .arg(&c.day)
                .arg(c.budget.map_or_else(String::new, |b| b.to_string()))
                .arg(c.currency.as_deref().unwrap_or(""));
        }
        let answers: Vec<String> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if answers.len() != charges.len() {
            return Err(unexpected("a charge"));
        }
        answers
            .iter()
            .map(|a| match a.as_str() {
                "yes" => Ok(Charged::Yes),
                "held" => Ok(Charged::Held),
                "over" => Ok(Charged::OverBudget),
                "lost" => Ok(Charged::Lost),
                _ => Err(unexpected("a charge")),
            })
            .collect()
    }

    /// [`Engine::raise_cap`](crate::queue::Engine::raise_cap).
    pub(super) async fn raise_batch_cap(
        &self,
        id: BatchId,
        max_cost: Micros,
    ) -> Result<Option<()>> {
        let reply: Vec<Value> = self
            .scripts
            .raise_cap
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(id.to_string())
            .arg(max_cost)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        let Some(first) = reply.first() else {
            return Err(unexpected("a cap raise"));
        };
        match required(first, "cap raise")?.as_str() {
            "none" => Ok(None),
            "ok" => Ok(Some(())),
            "refused" => {
                let [_, control, cap, spent] = reply.as_slice() else {
                    return Err(unexpected("a cap raise"));
                };
                let control = required(control, "batch control")?;
                let cap = optional_number(cap, "batch spend cap")?;
                let spent = optional_number(spent, "batch spend")?.unwrap_or(0);
                let why = cap_refusal(control == "cancelled", cap, spent, max_cost)
                    .unwrap_or_else(|| "the batch's cap changed meanwhile: try again".into());
                Err(Error::Conflict(why))
            }
            _ => Err(unexpected("a cap raise")),
        }
    }

    /// [`Engine::spent`](crate::queue::Engine::spent).
    pub(super) async fn spent_on(&self, provider: &str, day: &str) -> Result<Micros> {
        let amount: Option<i64> = redis::cmd("HGET")
            .arg(self.key(&format!("spend:{provider}")))
            .arg(day)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(amount.unwrap_or(0))
    }
}
