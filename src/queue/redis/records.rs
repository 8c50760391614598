//! Stored templates, the suppression list and the fingerprints of recent sends in
//! the Redis engine (keys in the layout at the top of `redis.rs`). A change is one
//! script, or one MULTI/EXEC of script or command chunks when its argument list is
//! large; a lookup of many addresses or fingerprints is one pipeline of `ZMSCORE`
//! chunks.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use redis::{Script, Value};

use super::reply::{number, required, text, unexpected};
use super::{PRELUDE, Redis};
use crate::domain::{Channel, now_ms};
use crate::queue::{
    Error, RecordStore, Result, StoredTemplate, Suppression, Unacked, parse_providers,
    providers_json, suppression_ranges,
};

/// Entries or addresses per script call or command within one change or lookup:
/// well under Lua's and Redis's argument limits, and short enough that other
/// clients' commands slip in between the chunks of a lookup.
const CHUNK: usize = 10_000;

/// The template hash fields read back, in this order.
const TEMPLATE_FIELDS: [&str; 7] = [
    "channel",
    "subject",
    "body",
    "providers",
    "version",
    "created_at",
    "updated_at",
];

/// Creates or replaces a template: `{'exists'}` (create, id taken), `{'none'}`
/// (replace, no such id) or `{'ok', version, created_at}`.
/// ARGV: P, now, id, 'create' or 'replace', channel, body, providers, has subject
/// ('1' or '0'), subject.
const SAVE_TEMPLATE: &str = r"
local id = ARGV[3]
local key = P .. 'template:' .. id
local exists = redis.call('EXISTS', key) == 1
if ARGV[4] == 'create' then
  if exists then return { 'exists' } end
  redis.call('HSET', key, 'version', 0, 'created_at', now)
  redis.call('ZADD', P .. 'templates', 0, id)
elseif not exists then
  return { 'none' }
end
redis.call('HSET', key, 'channel', ARGV[5], 'body', ARGV[6], 'providers', ARGV[7], 'updated_at', now)
if ARGV[8] == '1' then
  redis.call('HSET', key, 'subject', ARGV[9])
else
  redis.call('HDEL', key, 'subject')
end
return { 'ok', redis.call('HINCRBY', key, 'version', 1), redis.call('HGET', key, 'created_at') }
";

/// One page of templates: 8 values each (id, then TEMPLATE_FIELDS).
/// ARGV: P, now, the ZRANGEBYLEX minimum (`-` or `(` and the last id), limit.
const TEMPLATES: &str = r"
local ids = redis.call('ZRANGEBYLEX', P .. 'templates', ARGV[3], '+', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', P .. 'template:' .. id, TEMPLATE_FIELDS)
  out[#out + 1] = id
  for j = 1, #f do out[#out + 1] = f[j] end
end
return out
";

/// Upserts one channel's entries; returns how many were new. The hash holds
/// `{created_at}:{reason}` per address, so an update keeps the creation time.
/// ARGV: P, now, channel, then per entry: address, reason.
const SUPPRESS: &str = r"
local set, info = P .. 'suppressed:' .. ARGV[3], P .. 'suppression:' .. ARGV[3]
local added = {}
for i = 4, #ARGV, 2 do
  local address, reason = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', info, address)
  if not old then
    redis.call('HSET', info, address, now .. ':' .. reason)
    added[#added + 1] = 0
    added[#added + 1] = address
  else
    local since, was = string.match(old, '^(%d+):(.*)$')
    if was ~= reason then redis.call('HSET', info, address, since .. ':' .. reason) end
  end
end
for i = 1, #added, 1000 do
  redis.call('ZADD', set, unpack(added, i, math.min(i + 999, #added)))
end
return #added / 2
";

/// Up to `limit` suppressions from the given channels, in order: 3 values each
/// (channel, address, `{created_at}:{reason}`).
/// ARGV: P, now, limit, then per channel: name, the ZRANGEBYLEX minimum.
const SUPPRESSIONS: &str = r"
local limit = tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV, 2 do
  if limit <= 0 then break end
  local channel = ARGV[i]
  local info = P .. 'suppression:' .. channel
  local addresses = redis.call('ZRANGEBYLEX', P .. 'suppressed:' .. channel, ARGV[i + 1], '+',
    'LIMIT', 0, limit)
  for _, address in ipairs(addresses) do
    out[#out + 1] = channel
    out[#out + 1] = address
    out[#out + 1] = redis.call('HGET', info, address)
  end
  limit = limit - #addresses
end
return out
";

/// Removes up to `limit` of a channel's fingerprints scored before `before`: the
/// lowest ranks, so the work is bounded without reading the members. Returns how many.
/// ARGV: P, now, channel, before, limit.
const FORGET_SENDS: &str = r"
local key = P .. 'fingerprints:' .. ARGV[3]
local n = math.min(redis.call('ZCOUNT', key, '-inf', '(' .. ARGV[4]), tonumber(ARGV[5]))
if n > 0 then redis.call('ZREMRANGEBYRANK', key, 0, n - 1) end
return n
";

/// The scripts of this module, each with the engine's prelude.
#[derive(Clone)]
pub(super) struct Scripts {
    save_template: Script,
    templates: Script,
    suppress: Script,
    suppressions: Script,
    forget_sends: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let fields = TEMPLATE_FIELDS.map(|f| format!("'{f}'")).join(", ");
        let script = |body: &str| {
            Script::new(&format!(
                "{PRELUDE}{}",
                body.replace("TEMPLATE_FIELDS", &fields)
            ))
        };
        Scripts {
            save_template: script(SAVE_TEMPLATE),
            templates: script(TEMPLATES),
            suppress: script(SUPPRESS),
            suppressions: script(SUPPRESSIONS),
            forget_sends: script(FORGET_SENDS),
        }
    }
}

/// `(` and `after` as a ZRANGEBYLEX minimum, or `-` (the first member).
fn lex_after(after: Option<&str>) -> String {
    after.map_or_else(|| "-".to_owned(), |after| format!("({after}"))
}

/// A template from its id and TEMPLATE_FIELDS; `None` when it has no channel (no
/// such template).
fn parse_template(id: String, f: &[Value]) -> Result<Option<StoredTemplate>> {
    let [channel, subject, body, providers, version, created, updated] = f else {
        return Err(unexpected("a template"));
    };
    let Some(channel) = text(channel)? else {
        return Ok(None);
    };
    Ok(Some(StoredTemplate {
        id,
        channel: channel.parse().map_err(Error::Corrupt)?,
        subject: text(subject)?,
        body: required(body, "template body")?,
        providers: parse_providers(&required(providers, "template providers")?)?,
        version: number(version, "template version")?,
        created_at_ms: number(created, "template creation time")?,
        updated_at_ms: number(updated, "template update time")?,
    }))
}

impl Redis {
    /// Runs SAVE_TEMPLATE: `Ok(None)` when the template exists (create) or does
    /// not (replace).
    async fn save_template(
        &self,
        template: StoredTemplate,
        mode: &str,
    ) -> Result<Option<StoredTemplate>> {
        let now = now_ms();
        let reply: Vec<Value> = self
            .records
            .save_template
            .arg(&self.prefix)
            .arg(now)
            .arg(&template.id)
            .arg(mode)
            .arg(template.channel.as_str())
            .arg(&template.body)
            .arg(providers_json(&template.providers))
            .arg(if template.subject.is_some() { "1" } else { "0" })
            .arg(template.subject.as_deref().unwrap_or(""))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        let status = reply.first().map(text).transpose()?.flatten();
        match (status.as_deref(), &reply[..]) {
            (Some("exists" | "none"), _) => Ok(None),
            (Some("ok"), [_, version, created]) => Ok(Some(StoredTemplate {
                version: number(version, "template version")?,
                created_at_ms: number(created, "template creation time")?,
                updated_at_ms: now,
                ..template
            })),
            _ => Err(unexpected("a template write")),
        }
    }
}

#[async_trait]
impl RecordStore for Redis {
    async fn create_template(&self, template: StoredTemplate) -> Result<Option<StoredTemplate>> {
        self.save_template(template, "create").await
    }

    async fn replace_template(&self, template: StoredTemplate) -> Result<Option<StoredTemplate>> {
        self.save_template(template, "replace").await
    }

    async fn template(&self, id: &str) -> Result<Option<StoredTemplate>> {
        let fields: Vec<Value> = redis::cmd("HMGET")
            .arg(self.key(&format!("template:{id}")))
            .arg(&TEMPLATE_FIELDS[..])
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        parse_template(id.to_owned(), &fields)
    }

    async fn templates(&self, after: Option<String>, limit: u32) -> Result<Vec<StoredTemplate>> {
        let reply: Vec<Value> = self
            .records
            .templates
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(lex_after(after.as_deref()))
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        let width = 1 + TEMPLATE_FIELDS.len();
        if !reply.len().is_multiple_of(width) {
            return Err(unexpected("a page of templates"));
        }
        let mut page = Vec::with_capacity(reply.len() / width);
        for t in reply.chunks_exact(width) {
            // A template deleted while its page was read is simply not on it.
            page.extend(parse_template(required(&t[0], "template id")?, &t[1..])?);
        }
        Ok(page)
    }

    async fn delete_template(&self, id: &str) -> Result<bool> {
        let (deleted,): (i64,) = redis::pipe()
            .atomic()
            .cmd("ZREM")
            .arg(self.key("templates"))
            .arg(id)
            .ignore()
            .cmd("DEL")
            .arg(self.key(&format!("template:{id}")))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(deleted > 0)
    }

    async fn suppress(&self, entries: Vec<Suppression>) -> Result<usize> {
        let mut by_channel: BTreeMap<&str, Vec<&Suppression>> = BTreeMap::new();
        for entry in &entries {
            by_channel
                .entry(entry.channel.as_str())
                .or_default()
                .push(entry);
        }
        let now = now_ms();
        let mut pipe = redis::pipe();
        // Loaded within the transaction, so its EVALSHAs find the script.
        pipe.atomic().load_script(&self.records.suppress).ignore();
        for (channel, entries) in &by_channel {
            for chunk in entries.chunks(CHUNK) {
                let mut call = self.records.suppress.prepare_invoke();
                call.arg(&self.prefix).arg(now).arg(*channel);
                for entry in chunk {
                    call.arg(&entry.address).arg(&entry.reason);
                }
                pipe.invoke_script(&call);
            }
        }
        let new: Vec<usize> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(new.into_iter().sum())
    }

    async fn unsuppress(&self, channel: Channel, addresses: Vec<String>) -> Result<usize> {
        let (set, info) = (
            self.key(&format!("suppressed:{channel}")),
            self.key(&format!("suppression:{channel}")),
        );
        let mut pipe = redis::pipe();
        pipe.atomic();
        for chunk in addresses.chunks(CHUNK) {
            pipe.cmd("ZREM").arg(&set).arg(chunk);
            pipe.cmd("HDEL").arg(&info).arg(chunk).ignore();
        }
        let removed: Vec<usize> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(removed.into_iter().sum())
    }

    async fn suppressed(&self, channel: Channel, addresses: &[&str]) -> Result<HashSet<String>> {
        let set = self.key(&format!("suppressed:{channel}"));
        let mut pipe = redis::pipe();
        for chunk in addresses.chunks(CHUNK) {
            pipe.cmd("ZMSCORE").arg(&set).arg(chunk);
        }
        let scores: Vec<Vec<Option<f64>>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(addresses
            .iter()
            .zip(scores.into_iter().flatten())
            .filter_map(|(address, score)| score.map(|_| (*address).to_owned()))
            .collect())
    }

    async fn suppressions(
        &self,
        channel: Option<Channel>,
        after: Option<(Channel, String)>,
        limit: u32,
    ) -> Result<Vec<Suppression>> {
        let mut call = self.records.suppressions.prepare_invoke();
        call.arg(&self.prefix).arg(now_ms()).arg(limit);
        for (channel, after) in suppression_ranges(channel, after) {
            call.arg(channel.as_str()).arg(lex_after(after.as_deref()));
        }
        let reply: Vec<Value> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if !reply.len().is_multiple_of(3) {
            return Err(unexpected("a page of suppressions"));
        }
        reply
            .chunks_exact(3)
            .map(|s| {
                let info = required(&s[2], "suppression")?;
                let (created, reason) = info
                    .split_once(':')
                    .ok_or_else(|| Error::Corrupt(format!("a bad suppression `{info}`")))?;
                Ok(Suppression {
                    channel: required(&s[0], "channel")?
                        .parse()
                        .map_err(Error::Corrupt)?,
                    address: required(&s[1], "suppressed address")?,
                    reason: reason.to_owned(),
                    created_at_ms: created.parse().map_err(|_| {
                        Error::Corrupt(format!("a bad suppression time `{created}`"))
                    })?,
                })
            })
            .collect()
    }

    async fn remember_sends(
        &self,
        channel: Channel,
        fingerprints: Vec<String>,
        at_ms: i64,
    ) -> Result<()> {
        let set = self.key(&format!("fingerprints:{channel}"));
        let mut pipe = redis::pipe();
        pipe.atomic();
        for chunk in fingerprints.chunks(CHUNK) {
            // GT: a fingerprint already there keeps the later time.
            let zadd = pipe.cmd("ZADD").arg(&set).arg("GT");
            for fingerprint in chunk {
                zadd.arg(at_ms).arg(fingerprint);
            }
            zadd.ignore();
        }
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    async fn recently_sent(
        &self,
        channel: Channel,
        fingerprints: Vec<String>,
        since_ms: i64,
    ) -> Result<HashSet<String>> {
        let set = self.key(&format!("fingerprints:{channel}"));
        let recent: u64 = redis::cmd("ZCOUNT")
            .arg(&set)
            .arg(since_ms)
            .arg("+inf")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if recent == 0 {
            return Ok(HashSet::new());
        }
        let mut pipe = redis::pipe();
        for chunk in fingerprints.chunks(CHUNK) {
            pipe.cmd("ZMSCORE").arg(&set).arg(chunk);
        }
        let scores: Vec<Vec<Option<f64>>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        // Times in ms are far below 2^53: exact as scores.
        let since = since_ms as f64;
        Ok(fingerprints
            .into_iter()
            .zip(scores.into_iter().flatten())
            .filter_map(|(fingerprint, at)| at.filter(|at| *at >= since).map(|_| fingerprint))
            .collect())
    }

    async fn forget_sends(&self, channel: Channel, before_ms: i64, limit: u32) -> Result<u64> {
        self.records
            .forget_sends
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(channel.as_str())
            .arg(before_ms)
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    async fn mark_unacked(&self, marker: &Unacked, at_ms: i64, stale_before_ms: i64) -> Result<()> {
        let set = self.key(&format!("unacked:{}:{}", marker.source, marker.hash));
        // One sorted set per source and body, kept a day after its last marker:
        // Redis expires what is left, so nothing needs sweeping.
        redis::pipe()
            .atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&set)
            .arg("-inf")
            .arg(format!("({stale_before_ms}"))
            .ignore()
            .cmd("ZADD")
            .arg(&set)
            .arg("NX")
            .arg(at_ms)
            .arg(&marker.key)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&set)
            .arg((at_ms - stale_before_ms).max(1))
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    async fn unacked(
        &self,
        source: &str,
        hash: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<String>> {
        let set = self.key(&format!("unacked:{source}:{hash}"));
        redis::cmd("ZRANGE")
            .arg(&set)
            .arg(since_ms)
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    async fn unmark_unacked(&self, marker: &Unacked) -> Result<()> {
        let set = self.key(&format!("unacked:{}:{}", marker.source, marker.hash));
        redis::cmd("ZREM")
            .arg(&set)
            .arg(&marker.key)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }
}
