//! A batch being taken in: what its recipients add up to as its chunks are
//! checked (duplicates, rejections, SMS summary, fingerprints), and the batch
//! it makes for the store.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;
use crate::domain::{BatchId, Channel, now_ms};
use crate::provider::Route;
use crate::queue::{BatchTemplate, Idempotency, NewBatch, NewMessage, Subscription};

/// A batch being taken in: its plan, and what its recipients so far add up to.
pub(super) struct Intaking {
    pub(super) channel: Channel,
    /// Where the batch's events go besides the configured webhooks.
    pub(super) callback_url: Option<String>,
    /// Who is told of the batch's events.
    pub(super) subscriptions: Vec<Subscription>,
    pub(super) template_id: Option<String>,
    /// The template, for an engine that renders at claim.
    pub(super) stored_template: Option<BatchTemplate>,
    pub(super) route: Route,
    pub(super) priority: i32,
    pub(super) send_at_ms: i64,
    /// The batch's deadline (ms since the epoch), if it has one.
    pub(super) expires_at_ms: Option<i64>,
    pub(super) renderer: Arc<Renderer>,
    pub(super) max_recipients: usize,
    /// Recipients taken so far: the next one's index.
    pub(super) seen: usize,
    /// Each recipient key's first index: later ones are duplicates.
    pub(super) first: FirstSeen,
    pub(super) rejected: Vec<Rejection>,
    pub(super) accepted: usize,
    pub(super) last_index: Option<u32>,
    pub(super) sms: Option<SmsSummary>,
    /// Fingerprints of what the accepted messages send, when recent sends are
    /// remembered.
    pub(super) remember: Vec<String>,
    /// The first accepted messages, for a dry run's report.
    pub(super) preview: Vec<Preview>,
    /// The batch's sending window, when it has one.
    pub(super) quiet: Option<window::Quiet>,
    /// The batch's spend cap, if it has one.
    pub(super) max_cost: Option<crate::queue::spend::Micros>,
    /// The accepted recipients at one of the provider's per-recipient caps now,
    /// counted when it has caps.
    pub(super) held_by_caps: Option<usize>,
}

/// The first index of each recipient key, found by a hash of the key rather than
/// the key (16 bytes a recipient, so a million take about 32 MB): 64 bits of it
/// address the map and 32 more must match too; keys whose first 64 bits collide
/// with another's (about one pair in 10^7 batches of a million) are told apart by
/// all 128 bits in a side map.
#[derive(Default)]
pub(super) struct FirstSeen {
    /// Keyed by 64 bits of the seeded hash itself, which need no hashing again.
    pub(super) main: HashMap<u64, (u32, u32), BuildHasherDefault<Prehashed>>,
    pub(super) collided: HashMap<u128, u32>,
}

/// The hasher of keys that are seeded hashes already: it passes them through.
#[derive(Default)]
pub(super) struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys come here (`write_u64`); anything else still hashes.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl FirstSeen {
    /// The index of the first recipient with `key`; `None` when this is the first,
    /// and `index` is recorded as it.
    #[cfg(test)]
    pub(super) fn first(&mut self, key: &str, index: u32) -> Option<u32> {
        self.first_of_hash(key_hash(key), index)
    }

    pub(super) fn first_of_hash(&mut self, hash: u128, index: u32) -> Option<u32> {
        let (high, low) = ((hash >> 64) as u64, hash as u32);
        match self.main.entry(high) {
            Entry::Vacant(slot) => {
                slot.insert((low, index));
                None
            }
            Entry::Occupied(seen) if seen.get().0 == low => Some(seen.get().1),
            Entry::Occupied(_) => match self.collided.entry(hash) {
                Entry::Vacant(slot) => {
                    slot.insert(index);
                    None
                }
                Entry::Occupied(seen) => Some(*seen.get()),
            },
        }
    }
}

/// A 128-bit hash of a recipient key, for finding duplicates.
pub(super) fn key_hash(key: &str) -> u128 {
    use std::hash::{BuildHasher, Hasher};
    static SEEDS: std::sync::LazyLock<(std::hash::RandomState, std::hash::RandomState)> =
        std::sync::LazyLock::new(|| (std::hash::RandomState::new(), std::hash::RandomState::new()));
    let half = |state: &std::hash::RandomState| {
        let mut h = state.build_hasher();
        h.write(key.as_bytes());
        h.finish()
    };
    (u128::from(half(&SEEDS.0)) << 64) | u128::from(half(&SEEDS.1))
}

impl Intaking {
    /// Checks and renders the next `recipients`, rejects duplicates (of these and
    /// all before), suppressed addresses and recent duplicates, measures the rest
    /// and answers them as messages to store.
    pub(super) async fn take(
        &mut self,
        intake: &Intake,
        envelope: &Envelope<'_>,
        recipients: Vec<RecipientSpec>,
    ) -> Result<Vec<NewMessage>, Error> {
        let offset = self.seen;
        self.seen += recipients.len();
        if self.seen > self.max_recipients {
            return Err(Error::TooLarge {
                field: "recipients".into(),
                message: format!(
                    "has more than {} recipients, the limit per batch: split the batch",
                    self.max_recipients
                ),
            });
        }
        let mut messages = Vec::with_capacity(recipients.len());
        let mut keys = Vec::with_capacity(recipients.len());
        let mut measures = Vec::with_capacity(recipients.len());
        let checked = check_all(&self.renderer, self.channel, intake.rules, recipients);
        let mut rejected = Vec::new();
        for (index, checked) in (offset..).zip(checked) {
            let index32 = u32::try_from(index).expect("max_recipients keeps indices small");
            let checked = checked.and_then(|c| match self.first.first_of_hash(c.hash, index32) {
                None => Ok(c),
                Some(first) => Err(Rejection {
                    index,
                    detail: format!("`{}` is also recipient {first}", c.to),
                    first_index: Some(first as usize),
                    to: c.to,
                    reason: "duplicate".into(),
                    variable: None,
                }),
            });
            match checked {
                Ok(c) => {
                    keys.push(c.key);
                    measures.push(c.segments);
                    let due_ms = self.quiet.as_mut().and_then(|q| q.due(&c.to));
                    messages.push(NewMessage {
                        index: index32,
                        provider: self.route.name.clone(),
                        to: c.to,
                        reference: c.reference,
                        subject: c.subject,
                        body: c.body,
                        segments: c
                            .segments
                            .map_or(1, |m| u32::try_from(m.segments).unwrap_or(u32::MAX)),
                        vars: c.vars,
                        due_ms,
                    });
                }
                Err(r) => rejected.push(Rejection { index, ..r }),
            }
        }
        // A message's key is its address, but where a mailbox's display name sets
        // the two apart.
        let lookup: Vec<&str> = messages
            .iter()
            .zip(&keys)
            .map(|(m, key)| key.as_deref().unwrap_or(&m.to))
            .collect();
        let fingerprints: Vec<String> = if intake.recent_window.is_some() {
            messages
                .iter()
                .zip(&lookup)
                .map(|(m, key)| fingerprint(key, m))
                .collect()
        } else {
            Vec::new()
        };
        let suppressed = intake
            .queue
            .records()
            .suppressed(self.channel, &lookup)
            .await?;
        let recent = match intake.recent_window {
            Some(window) if envelope.reject_recent_duplicates => {
                let since = now_ms() - crate::domain::millis(window);
                intake
                    .queue
                    .records()
                    .recently_sent(self.channel, fingerprints.clone(), since)
                    .await?
            }
            _ => HashSet::new(),
        };
        let mut kept = Vec::with_capacity(messages.len());
        let mut fingerprints = fingerprints.into_iter();
        for ((message, key), measured) in messages.into_iter().zip(keys).zip(measures) {
            let fingerprint = fingerprints.next();
            let key = key.as_deref().unwrap_or(&message.to);
            let refusal = if suppressed.contains(key) {
                Some((
                    "suppressed",
                    format!("`{key}` is on the {} suppression list", self.channel),
                ))
            } else if fingerprint.as_ref().is_some_and(|f| recent.contains(f)) {
                Some((
                    "recent_duplicate",
                    format!("`{key}` was sent the same message within the last window"),
                ))
            } else {
                None
            };
            if let Some((reason, detail)) = refusal {
                rejected.push(Rejection {
                    index: message.index as usize,
                    detail,
                    to: message.to,
                    reason: reason.into(),
                    variable: None,
                    first_index: None,
                });
                continue;
            }
            if let (Some(summary), Some(measured)) = (&mut self.sms, measured) {
                summary.add(measured);
            }
            if envelope.dry_run && self.preview.len() < PREVIEW_MESSAGES {
                self.preview.push(Preview {
                    index: message.index as usize,
                    to: message.to.clone(),
                    subject: message.subject.clone(),
                    body: message.body.clone(),
                    encoding: measured.map(|m| m.encoding),
                    segments: measured.map(|m| m.segments),
                });
            }
            if let Some(quiet) = &mut self.quiet {
                quiet.count(message.due_ms);
            }
            self.remember.extend(fingerprint);
            self.last_index = Some(message.index);
            kept.push(message);
        }
        if let Some(held) = &mut self.held_by_caps {
            let tos = kept.iter().map(|m| m.to.clone()).collect();
            let route = &self.route;
            *held += intake
                .queue
                .at_caps(&route.name, &route.limits, tos)
                .await?;
        }
        rejected.sort_unstable_by_key(|r| r.index);
        self.rejected.extend(rejected);
        self.accepted += kept.len();
        Ok(kept)
    }

    /// One more than the highest index of an accepted message.
    pub(super) fn span(&self) -> u32 {
        self.last_index.map_or(0, |i| i + 1)
    }

    /// The report of everything taken, as JSON; an error when nothing was accepted.
    pub(super) fn report(&mut self, id: Option<BatchId>, ahead: &Ahead) -> Result<Value, Error> {
        let rejected = std::mem::take(&mut self.rejected);
        if self.accepted == 0 {
            return Err(Error::NoneAccepted(rejected));
        }
        let preview = std::mem::take(&mut self.preview);
        let mut report = Report::new(
            id,
            &self.route,
            self.accepted,
            self.sms.clone(),
            rejected,
            preview,
        );
        report.expires_at = self.expires_at_ms.map(crate::domain::format_ms);
        report.window = self.quiet.as_ref().map(window::Quiet::report);
        let segments = self.sms.as_ref().map_or(0, |s| s.segments);
        report.eta_seconds = eta_seconds(&self.route.limits, self.accepted, segments, ahead);
        report.held_by_recipient_caps = self.held_by_caps;
        if let (Some(max_cost), Some(cost)) = (self.max_cost, &report.cost)
            && crate::queue::spend::to_micros(cost.amount) > max_cost
        {
            use crate::queue::spend::format_amount;
            let currency = cost.currency.as_deref();
            return Err(invalid(
                "max_cost",
                format!(
                    "the estimated cost {} is over max_cost {}: raise max_cost or send to fewer recipients",
                    format_amount(crate::queue::spend::to_micros(cost.amount), currency),
                    format_amount(max_cost, currency),
                ),
            ));
        }
        Ok(serde_json::to_value(&report).expect("a report always serializes"))
    }

    /// The batch to store, with `messages` (none when they are staged).
    pub(super) fn batch(
        &self,
        id: BatchId,
        envelope: &Envelope<'_>,
        messages: Vec<NewMessage>,
    ) -> NewBatch {
        NewBatch {
            id,
            channel: self.channel,
            source: envelope.source.to_string(),
            priority: self.priority,
            send_at_ms: self.send_at_ms,
            expires_at_ms: self.expires_at_ms,
            idempotency: envelope.idempotency.map(|(key, request)| Idempotency {
                key: key.to_string(),
                request_hash: hex::encode(Sha256::digest(request)),
            }),
            report: Value::Null,
            template_id: self.template_id.clone(),
            template: self.stored_template.clone(),
            callback_url: self.callback_url.clone(),
            subscriptions: self.subscriptions.clone(),
            window: self.quiet.as_ref().map(|q| q.stored.clone()),
            max_cost: self.max_cost,
            messages,
        }
    }
}

/// Who got what: the recipient key, subject and body, hashed (128 bits of SHA-256).
pub(super) fn fingerprint(key: &str, message: &NewMessage) -> String {
    let mut hash = Sha256::new();
    for part in [key, message.subject.as_deref().unwrap_or(""), &message.body] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..16])
}
