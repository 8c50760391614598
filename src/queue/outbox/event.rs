//! What an application is told: the kinds of events, the sets of them an endpoint
//! subscribes to, how a batch stores its subscriptions, event ids, and the event
//! itself.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{BatchId, Channel, Counts};
use crate::queue::{Error, Result};

/// What an application can be told. Serialized as the payload's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EventKind {
    #[serde(rename = "message.sent")]
    Sent,
    #[serde(rename = "message.delivered")]
    Delivered,
    #[serde(rename = "message.undelivered")]
    Undelivered,
    #[serde(rename = "message.failed")]
    Failed,
    #[serde(rename = "message.expired")]
    Expired,
    #[serde(rename = "message.cancelled")]
    Cancelled,
    #[serde(rename = "reply")]
    Reply,
    #[serde(rename = "batch.finished")]
    BatchFinished,
}

impl EventKind {
    /// Every kind, in the order of their bits in [`Kinds`].
    pub const ALL: [EventKind; 8] = [
        EventKind::Sent,
        EventKind::Delivered,
        EventKind::Undelivered,
        EventKind::Failed,
        EventKind::Expired,
        EventKind::Cancelled,
        EventKind::Reply,
        EventKind::BatchFinished,
    ];

    /// The name, as serialized, in configuration and in stores.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Sent => "message.sent",
            EventKind::Delivered => "message.delivered",
            EventKind::Undelivered => "message.undelivered",
            EventKind::Failed => "message.failed",
            EventKind::Expired => "message.expired",
            EventKind::Cancelled => "message.cancelled",
            EventKind::Reply => "reply",
            EventKind::BatchFinished => "batch.finished",
        }
    }

    /// The kind named `name` (as [`EventKind::as_str`] writes it).
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// This kind's bit in [`Kinds`].
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// What a message's event id ends with after its id (`None`: not a message's).
    pub(crate) fn message_suffix(self) -> Option<&'static str> {
        Some(match self {
            EventKind::Sent => "sent",
            EventKind::Delivered => "delivered",
            EventKind::Undelivered => "undelivered",
            EventKind::Failed => "failed",
            EventKind::Expired => "expired",
            EventKind::Cancelled => "cancelled",
            EventKind::Reply | EventKind::BatchFinished => return None,
        })
    }

    /// A stored kind; an unknown one means a corrupt store.
    pub(crate) fn from_stored(name: &str) -> Result<EventKind> {
        EventKind::parse(name).ok_or_else(|| Error::Corrupt(format!("unknown event kind `{name}`")))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of event kinds, one bit each (see [`EventKind::bit`]); stores keep the
/// number. Serialized as the list of names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Kinds(pub u16);

impl Kinds {
    /// Every kind.
    pub fn all() -> Kinds {
        Kinds(EventKind::ALL.iter().fold(0, |bits, k| bits | k.bit()))
    }

    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The kinds named in `names`; an unknown name is answered as the error.
    pub fn parse<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> std::result::Result<Kinds, String> {
        names.into_iter().try_fold(Kinds(0), |kinds, name| {
            EventKind::parse(name)
                .map(|k| Kinds(kinds.0 | k.bit()))
                .ok_or_else(|| {
                    format!(
                        "unknown event `{name}`: expected one of {}",
                        EventKind::ALL.map(EventKind::as_str).join(", ")
                    )
                })
        })
    }

    /// The kinds in the set, in [`EventKind::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

impl FromIterator<EventKind> for Kinds {
    fn from_iter<I: IntoIterator<Item = EventKind>>(iter: I) -> Kinds {
        Kinds(iter.into_iter().fold(0, |bits, k| bits | k.bit()))
    }
}

impl Serialize for Kinds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Kinds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Kinds, D::Error> {
        Ok(Vec::<EventKind>::deserialize(d)?.into_iter().collect())
    }
}

/// The endpoint name of a batch's own `callback_url`.
pub const CALLBACK: &str = "callback";

/// One endpoint a batch's events go to, and the kinds it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// A configured webhook's name, or [`CALLBACK`]: the batch's own `callback_url`.
    pub endpoint: String,
    pub kinds: Kinds,
}

/// A subscription as every engine stores it in a batch's `subscriptions` (JSON).
#[derive(Serialize, Deserialize)]
struct StoredSubscription<'a> {
    endpoint: std::borrow::Cow<'a, str>,
    kinds: u16,
}

/// What every engine stores as a batch's subscriptions: a JSON array of
/// `{"endpoint": name, "kinds": bits}`, or `None` when there are none (nothing
/// will be recorded).
pub(crate) fn subscriptions_to_stored(subscriptions: &[Subscription]) -> Option<String> {
    if subscriptions.iter().all(|s| s.kinds.0 == 0) {
        return None;
    }
    let stored: Vec<StoredSubscription<'_>> = subscriptions
        .iter()
        .filter(|s| s.kinds.0 != 0)
        .map(|s| StoredSubscription {
            endpoint: s.endpoint.as_str().into(),
            kinds: s.kinds.0,
        })
        .collect();
    Some(serde_json::to_string(&stored).expect("strings and numbers serialize"))
}

/// Subscriptions as [`subscriptions_to_stored`] wrote them.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn subscriptions_from_stored(stored: &str) -> Result<Vec<Subscription>> {
    let parsed: Vec<StoredSubscription<'_>> = serde_json::from_str(stored)
        .map_err(|e| Error::Corrupt(format!("a batch's subscriptions are not readable: {e}")))?;
    Ok(parsed
        .into_iter()
        .map(|s| Subscription {
            endpoint: s.endpoint.into_owned(),
            kinds: Kinds(s.kinds),
        })
        .collect())
}

/// The event id of a message's event of `kind` (see the module's doc).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn message_event_id(message_id: &str, kind: EventKind) -> String {
    match kind.message_suffix() {
        Some(suffix) => format!("{message_id}.{suffix}"),
        None => format!("{message_id}.{kind}"),
    }
}

/// The event id of a batch's `batch.finished`.
pub(crate) fn finished_event_id(batch: BatchId) -> String {
    format!("{batch}.finished")
}

/// One event to record from another transaction (a reply), to named endpoints.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Deterministic (see the module's doc): `reply.{reply id}` for a reply.
    pub id: String,
    pub kind: EventKind,
    /// When it happened (ms since the epoch); the retry window counts from here too.
    pub at_ms: i64,
    /// The engine's row of the message the event is about, if any: the event then
    /// names its message and batch, read from the ledger when claimed.
    pub message_row: Option<i64>,
    pub code: Option<String>,
    /// Posted as the event's `data` (JSON text): a reply's record.
    pub payload: Option<String>,
}

/// The payload's fields, as posted.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Event {
    /// Deterministic: receivers dedupe by it.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When the change happened (ms since the epoch).
    pub at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<BatchId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// The error (failed, expired, cancelled) or the receipt's code (delivered,
    /// undelivered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `batch.finished`: the batch's counts when the event was claimed (final by then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// A reply: its record, as stored with the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_names_and_serialize_back_as_names() {
        let kinds = Kinds::parse(["message.sent", "batch.finished"]).expect("known names");
        assert!(kinds.contains(EventKind::Sent) && kinds.contains(EventKind::BatchFinished));
        assert!(!kinds.contains(EventKind::Failed));
        assert_eq!(
            serde_json::to_value(kinds).unwrap(),
            serde_json::json!(["message.sent", "batch.finished"])
        );
        let err = Kinds::parse(["message.sent", "sent"]).unwrap_err();
        assert!(err.contains("`sent`"), "{err}");
        assert_eq!(Kinds::all().iter().count(), EventKind::ALL.len());
    }

    #[test]
    fn every_kind_serializes_as_its_name() {
        for kind in EventKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn stored_subscriptions_read_back_and_none_stores_nothing() {
        let subs = vec![
            Subscription {
                endpoint: "crm".into(),
                kinds: Kinds::all(),
            },
            Subscription {
                endpoint: CALLBACK.into(),
                kinds: [EventKind::Failed].into_iter().collect(),
            },
        ];
        let stored = subscriptions_to_stored(&subs).expect("some");
        assert_eq!(subscriptions_from_stored(&stored).unwrap(), subs);
        assert_eq!(subscriptions_to_stored(&[]), None);
    }
}
