//! Pure domain types: channels, recipient addresses, identifiers and message states.
//! Nothing in here does I/O; everything that crosses the API boundary is parsed into
//! these types first, so the rest of Herald can trust them.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod deadline;
mod http_url;
mod secret;
mod signing_secret;
mod store_url;
pub use deadline::{Deadline, InvalidDeadline, MAX_VALID_FOR_SECS};
pub use http_url::{HTTP_URL_PATTERN, HttpUrl};
pub use secret::Secret;
pub use signing_secret::{MIN_SECRET_BYTES, SigningSecret};
pub use store_url::{InvalidStoreUrl, StoreUrl};

/// The kind of message a batch sends; each recipient address is checked for its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Sms, Channel::Email];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sms" => Ok(Channel::Sms),
            "email" => Ok(Channel::Email),
            other => Err(format!(
                "unknown channel `{other}`: expected `sms` or `email`"
            )),
        }
    }
}

/// A batch identifier: a UUIDv7, so identifiers sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(uuid::Uuid);

impl BatchId {
    pub fn new() -> Self {
        BatchId(uuid::Uuid::now_v7())
    }

    /// Parses the hyphenated form that the API hands out.
    pub fn parse(s: &str) -> Option<Self> {
        uuid::Uuid::try_parse(s).ok().map(BatchId)
    }
}

impl Default for BatchId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl Serialize for BatchId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for BatchId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BatchId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "uuid"})
    }
}

/// The public identifier of one message: its batch and its index in the submitted
/// recipient list. It is stable for the life of the message, so it doubles as the
/// idempotency key sent with every delivery attempt.
pub fn message_id(batch: BatchId, index: u32) -> String {
    format!("{batch}-{index}")
}

/// Where a message is in its life. `Sending` means claimed under a lease by a worker.
/// `Sent` means the provider accepted it; a delivery receipt then moves it on to
/// `Delivered` or `Undelivered`. `Unknown` means the last attempt's request may have
/// reached the provider but no answer came back: it is tried again later, after
/// asking the provider when it can say. `Expired` means the batch's deadline passed
/// before the message was sent: it is never sent after it, and keeps its last error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    Pending,
    Sending,
    Sent,
    Failed,
    Cancelled,
    Paused,
    Delivered,
    Undelivered,
    Unknown,
    Expired,
    /// Stopped at its batch's spend cap (`max_cost`): waits, like a paused
    /// message, until the batch is resumed with a higher cap.
    Held,
}

impl MessageState {
    pub const ALL: [MessageState; 11] = [
        MessageState::Pending,
        MessageState::Sending,
        MessageState::Sent,
        MessageState::Failed,
        MessageState::Cancelled,
        MessageState::Paused,
        MessageState::Delivered,
        MessageState::Undelivered,
        MessageState::Unknown,
        MessageState::Expired,
        MessageState::Held,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Pending => "pending",
            MessageState::Sending => "sending",
            MessageState::Sent => "sent",
            MessageState::Failed => "failed",
            MessageState::Cancelled => "cancelled",
            MessageState::Paused => "paused",
            MessageState::Delivered => "delivered",
            MessageState::Undelivered => "undelivered",
            MessageState::Unknown => "unknown",
            MessageState::Expired => "expired",
            MessageState::Held => "held",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// What the sender asked of a batch as a whole; message states follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchControl {
    Active,
    Paused,
    Cancelled,
}

impl BatchControl {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchControl::Active => "active",
            BatchControl::Paused => "paused",
            BatchControl::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            BatchControl::Active,
            BatchControl::Paused,
            BatchControl::Cancelled,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// Message counts of one batch, by state: each message counts once, in the state
/// it is in (a delivered message is in `delivered`, no longer in `sent`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Counts {
    pub total: u64,
    pub pending: u64,
    pub sending: u64,
    pub sent: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub paused: u64,
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub undelivered: u64,
    #[serde(default)]
    pub unknown: u64,
    /// Not sent by the batch's deadline.
    #[serde(default)]
    pub expired: u64,
    /// Stopped at the batch's spend cap, until it is resumed with a higher one.
    #[serde(default)]
    pub held: u64,
}

impl Counts {
    pub fn add(&mut self, state: MessageState, n: u64) {
        self.total += n;
        match state {
            MessageState::Pending => self.pending += n,
            MessageState::Sending => self.sending += n,
            MessageState::Sent => self.sent += n,
            MessageState::Failed => self.failed += n,
            MessageState::Cancelled => self.cancelled += n,
            MessageState::Paused => self.paused += n,
            MessageState::Delivered => self.delivered += n,
            MessageState::Undelivered => self.undelivered += n,
            MessageState::Unknown => self.unknown += n,
            MessageState::Expired => self.expired += n,
            MessageState::Held => self.held += n,
        }
    }

    /// True when no message can still change state without the sender acting
    /// (delivery receipts aside: they move `sent` messages on at any time). An
    /// expired message is settled, as a failed one is; a held one waits, as a
    /// paused one does.
    pub fn is_finished(&self) -> bool {
        self.pending == 0
            && self.sending == 0
            && self.paused == 0
            && self.unknown == 0
            && self.held == 0
    }

    /// Messages that have been handed to a provider at least once, as far as
    /// Herald knows: everything past `pending` and `paused` but `cancelled`, and
    /// expired ones (a deadline passing settles the batch as an attempt does).
    fn attempted(&self) -> u64 {
        self.sending
            + self.sent
            + self.failed
            + self.delivered
            + self.undelivered
            + self.unknown
            + self.expired
    }
}

/// The state of a batch as shown to users, derived from its control and counts.
pub fn batch_state(control: BatchControl, counts: &Counts) -> &'static str {
    match control {
        // An unknown outcome is still in flight: it is asked about and settled.
        BatchControl::Cancelled if counts.sending == 0 && counts.unknown == 0 => "cancelled",
        BatchControl::Cancelled => "cancelling",
        BatchControl::Paused => "paused",
        BatchControl::Active if counts.is_finished() => "done",
        // Only held messages are left to send: the batch waits for a higher cap.
        BatchControl::Active if counts.pending + counts.sending + counts.unknown == 0 => "held",
        BatchControl::Active if counts.attempted() == 0 => "queued",
        BatchControl::Active => "sending",
    }
}

/// One message's final fate, as its provider reports it after the send (a delivery
/// receipt, or a status query's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The id the provider answered the send with (the message's
    /// `provider_message_id`): Aliyun's `BizId` (shared by every number of one
    /// request, so matched on `to` as well), Tencent's `SerialNo`, Twilio's
    /// `MessageSid`; or Herald's message id when the provider gave none.
    pub provider_message_id: String,
    /// The recipient in E.164, when the report names a whole number.
    pub to: Option<String>,
    /// Reached the recipient (`true`), or the provider gave up (`false`).
    pub delivered: bool,
    /// The provider's or carrier's status code, as written, e.g. `DELIVRD`, `30003`.
    pub code: Option<String>,
    /// When the report says it happened (ms since the epoch).
    pub at_ms: Option<i64>,
}

/// What a provider needs of a template it has approved on its side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProviderTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_name: Option<String>,
}

/// Why a recipient address was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAddress(pub String);

/// Milliseconds since the Unix epoch, the unit every stored timestamp uses.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// `d` in whole milliseconds, the unit every stored time and delay uses; a span
/// too long for an `i64` (some 292 million years) saturates.
pub fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Formats a stored millisecond timestamp as RFC 3339 for the API.
pub fn format_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_state_follows_control_and_counts() {
        let mut c = Counts::default();
        c.add(MessageState::Pending, 2);
        assert_eq!(batch_state(BatchControl::Active, &c), "queued");
        c.add(MessageState::Sent, 1);
        assert_eq!(batch_state(BatchControl::Active, &c), "sending");
        let mut done = Counts::default();
        done.add(MessageState::Sent, 3);
        assert_eq!(batch_state(BatchControl::Active, &done), "done");
        assert_eq!(batch_state(BatchControl::Cancelled, &done), "cancelled");
    }

    #[test]
    fn message_ids_are_stable_for_batch_and_index() {
        let b = BatchId::new();
        assert_eq!(message_id(b, 7), message_id(b, 7));
        assert_ne!(message_id(b, 7), message_id(b, 8));
        assert_eq!(BatchId::parse(&b.to_string()), Some(b));
    }
}
