//! Delivery receipts: what applying one does, how long an early one is held,
//! and the two rules every engine applies them by.

use crate::domain::{Channel, DeliveryReport, MessageState};

/// What applying one delivery report did (see [`Queue::apply_receipts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptEffect {
    /// The message moved to `delivered` or `undelivered`; its recipient and channel.
    Applied { to: String, channel: Channel },
    /// The message had this outcome already, or a final one (`delivered` stays).
    Unchanged,
    /// No message has the provider's id yet (its send is not recorded, or the id is
    /// unknown): kept, and applied when a send settles with that id, for at most
    /// [`EARLY_RECEIPT_TTL_MS`].
    Held,
    /// Several messages share the id (one Aliyun request) and the report names no
    /// recipient that tells them apart: not applied.
    Ambiguous,
}

/// A delivery report a store applied to a message: the provider whose report it
/// is, the message's recipient and channel, and what the report said. What a
/// settlement answers for the held reports it applied, for the same
/// [suppression rules](crate::queue::suppress) as the reports applied on arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedReceipt {
    /// The provider's configured name.
    pub provider: String,
    pub to: String,
    pub channel: Channel,
    pub delivered: bool,
    pub code: Option<String>,
}

impl ReceiptEffect {
    /// The report `report` of `provider` as applied, when this effect is that it
    /// moved a message.
    pub(crate) fn applied(
        self,
        provider: String,
        report: DeliveryReport,
    ) -> Option<AppliedReceipt> {
        let ReceiptEffect::Applied { to, channel } = self else {
            return None;
        };
        Some(AppliedReceipt {
            provider,
            to,
            channel,
            delivered: report.delivered,
            code: report.code,
        })
    }
}

/// How long a delivery report that matches no message yet is kept (a day).
pub const EARLY_RECEIPT_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// The most early delivery reports a store keeps; beyond it the oldest go first.
pub const EARLY_RECEIPTS_MAX: i64 = 100_000;

/// Which of the messages that share a delivery report's provider id the report is
/// about, by position among `tos` (their recipients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReceiptTarget {
    /// None of them (or there are none yet): the report is held.
    None,
    One(usize),
    Ambiguous,
}

/// Picks the message a report names: the one whose recipient is the report's, when
/// it names one; else the only one.
pub(crate) fn receipt_target<'a>(
    tos: impl IntoIterator<Item = &'a str>,
    report_to: Option<&str>,
) -> ReceiptTarget {
    let mut found = ReceiptTarget::None;
    for (i, to) in tos.into_iter().enumerate() {
        if report_to.is_some_and(|want| want != to) {
            continue;
        }
        found = match found {
            ReceiptTarget::None => ReceiptTarget::One(i),
            _ => return ReceiptTarget::Ambiguous,
        };
    }
    found
}

/// The state a message in `current` moves to on a report, if it moves: `sent` to
/// either outcome, `undelivered` to `delivered`; `delivered` is final.
pub(crate) fn receipt_state(current: MessageState, delivered: bool) -> Option<MessageState> {
    match (current, delivered) {
        (MessageState::Sent | MessageState::Undelivered, true) => Some(MessageState::Delivered),
        (MessageState::Sent, false) => Some(MessageState::Undelivered),
        _ => None,
    }
}
