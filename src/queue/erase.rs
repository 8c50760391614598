//! Erasing a person: their still-queued messages cancelled, then their address
//! replaced in every message, reply and stored webhook payload by a salted hash,
//! `erased:<hex of HMAC-SHA256(salt, address)>`. The salt is made once per store
//! and kept in it, so the same address always erases to the same value: counts
//! stay right, the erased rows of one person stay together, and a search for the
//! erased value finds them. The suppression list keeps the address: a person who
//! opted out must stay opted out. Every engine implements the crate-private
//! [`EraseStore`], each erasure one transaction (one script on Redis).
//!
//! A message being sent at the moment (under a lease) is left as it is by that
//! transaction: its worker holds the address and its outcome is still to land.
//! [`Queue::erase`] waits for such sends to settle and erases again, so the whole
//! erasure answers only once nothing of that address is left in flight.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::{Error, Queue, Result};

/// What an erased address is replaced by starts with this.
pub const ERASED_PREFIX: &str = "erased:";

/// The reason a message cancelled by an erasure keeps as its last error.
pub const ERASED_REASON: &str = "the recipient was erased";

/// What an erasure did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Erased {
    /// Messages whose address was replaced (those cancelled included).
    pub messages: u64,
    /// Replies whose sender was replaced.
    pub replies: u64,
    /// Stored webhook deliveries whose payload named the address (a reply's
    /// event); message events read the message when posted, so they follow it.
    pub events: u64,
    /// Messages that were still queued (pending, paused or of unknown outcome)
    /// and are now `cancelled`.
    pub cancelled: u64,
    /// Messages being sent at the moment: left as they are, to erase once settled.
    #[serde(skip)]
    pub sending: u64,
}

impl std::ops::AddAssign for Erased {
    fn add_assign(&mut self, more: Erased) {
        self.messages += more.messages;
        self.replies += more.replies;
        self.events += more.events;
        self.cancelled += more.cancelled;
        self.sending = more.sending;
    }
}

/// The erasure seam every engine implements.
#[async_trait]
pub(crate) trait EraseStore: Send + Sync + 'static {
    /// The store's erasure salt, made (from the system's random numbers) and
    /// kept the first time it is asked for.
    async fn erase_salt(&self) -> Result<Vec<u8>>;
    /// In one transaction: cancels the pending, paused and unknown messages to
    /// `address` (recording their `message.cancelled` events as a batch cancel
    /// does), then replaces `address` by `erased_as` in every message to it that
    /// is not being sent, in the replies from it and in the stored payloads of
    /// those replies' events. Counts what it changed and the sends in flight.
    async fn erase(&self, address: &str, erased_as: &str, now_ms: i64) -> Result<Erased>;
}

/// What `address` is replaced by in a store whose salt is `salt`.
pub fn erased_as(salt: &[u8], address: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(salt).expect("HMAC takes keys of any length");
    mac.update(address.as_bytes());
    format!(
        "{ERASED_PREFIX}{}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// A new salt: 32 bytes from the system's random numbers.
pub(crate) fn new_salt() -> Result<Vec<u8>> {
    let mut salt = vec![0; 32];
    getrandom::fill(&mut salt)
        .map_err(|e| Error::Unavailable(format!("cannot read the system's random numbers: {e}")))?;
    Ok(salt)
}

/// How often an erasure waiting for sends in flight looks again.
const RECHECK: Duration = Duration::from_millis(100);

impl Queue {
    /// Erases `address` (normalised as intake does), as [`EraseStore::erase`]
    /// says, and answers what was erased. Sends in flight to it are waited for,
    /// up to `wait`, and erased once settled; [`Error::Conflict`] when some are
    /// still in flight then (what was erased stays erased: erasing again finishes
    /// the rest). A second erasure of the same address answers zeros.
    pub async fn erase(&self, address: &str, wait: Duration) -> Result<Erased> {
        let hashed = erased_as(&self.eraser.erase_salt().await?, address);
        let deadline = tokio::time::Instant::now() + wait;
        let mut total = Erased::default();
        loop {
            total += self
                .eraser
                .erase(address, &hashed, crate::domain::now_ms())
                .await?;
            if total.sending == 0 {
                return Ok(total);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Conflict(format!(
                    "{} message(s) to this address are being sent right now and were not erased yet \
                     (the rest was): erase it again once they have settled",
                    total.sending
                )));
            }
            // The sends settle on their workers' time; their leases bound it.
            tokio::time::sleep(RECHECK).await;
        }
    }

    /// The value an erasure replaces `address` by in this store.
    pub async fn erased_as(&self, address: &str) -> Result<String> {
        Ok(erased_as(&self.eraser.erase_salt().await?, address))
    }
}

/// Replaces every string value equal to `address` in a stored JSON payload by
/// `erased_as`; `None` when it has none (or is not JSON, which it always is).
pub(crate) fn erase_in_payload(payload: &str, address: &str, erased_as: &str) -> Option<String> {
    fn walk(v: &mut serde_json::Value, address: &str, erased_as: &str) -> bool {
        match v {
            serde_json::Value::String(s) if s == address => {
                erased_as.clone_into(s);
                true
            }
            serde_json::Value::Array(items) => items
                .iter_mut()
                .fold(false, |any, item| walk(item, address, erased_as) | any),
            serde_json::Value::Object(fields) => fields
                .values_mut()
                .fold(false, |any, item| walk(item, address, erased_as) | any),
            _ => false,
        }
    }
    let mut value: serde_json::Value = serde_json::from_str(payload).ok()?;
    walk(&mut value, address, erased_as).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_erases_to_the_same_value_under_one_salt_and_another_under_another() {
        let one = erased_as(b"salt one", "+8613800000000");
        assert_eq!(one, erased_as(b"salt one", "+8613800000000"));
        assert_ne!(one, erased_as(b"salt two", "+8613800000000"));
        assert_ne!(one, erased_as(b"salt one", "+8613800000001"));
        assert!(one.starts_with(ERASED_PREFIX));
        assert_eq!(one.len(), ERASED_PREFIX.len() + 64);
    }

    #[test]
    fn a_payload_has_each_value_equal_to_the_address_replaced_and_nothing_else() {
        let payload = r#"{"from":"+861","to":"+862","body":"+861 said hi","nested":["+861"]}"#;
        let erased = erase_in_payload(payload, "+861", "erased:x").expect("it names it");
        let v: serde_json::Value = serde_json::from_str(&erased).unwrap();
        assert_eq!(v["from"], "erased:x");
        assert_eq!(v["to"], "+862");
        assert_eq!(v["body"], "+861 said hi");
        assert_eq!(v["nested"][0], "erased:x");
        assert_eq!(erase_in_payload(payload, "+869", "erased:x"), None);
    }
}
