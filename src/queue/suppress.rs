//! Undeliverable addresses: the one place that decides, from what a provider
//! said, that a recipient cannot receive messages, and adds the address to its
//! channel's suppression list. A send the provider refused for the recipient, a
//! receipt applied on arrival and a receipt held until its send was recorded all
//! come here, so each provider's rules hold the same on every path.

use super::{AppliedReceipt, Records, Suppression};
use crate::domain::Channel;
use crate::provider::Registry;
use crate::recipient;

/// What a provider said about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    /// A send the provider refused because the recipient cannot receive
    /// ([`crate::provider::Error::Undeliverable`]), with the reason as the ledger
    /// words it (`{provider}: {answer}`).
    Refused {
        channel: Channel,
        to: String,
        reason: String,
    },
    /// A delivery report applied to a message, on arrival or held until then.
    Receipt(AppliedReceipt),
}

/// The suppression `word` calls for, if any: every refusal; an `undelivered`
/// receipt whose code the provider's rules say names the recipient
/// ([`crate::provider::Provider::receipt_names_the_recipient`]).
pub fn decide(registry: &Registry, word: Word) -> Option<Suppression> {
    let (channel, to, reason) = match word {
        Word::Refused {
            channel,
            to,
            reason,
        } => (channel, to, reason),
        Word::Receipt(AppliedReceipt {
            provider,
            to,
            channel,
            delivered: false,
            code: Some(code),
        }) if registry
            .route(&provider)
            .is_some_and(|r| r.provider.receipt_names_the_recipient(&code)) =>
        {
            (channel, to, format!("{provider}: undelivered ({code})"))
        }
        Word::Receipt(_) => return None,
    };
    Some(Suppression {
        channel,
        address: recipient::address_key(channel, &to),
        reason,
        created_at_ms: 0,
    })
}

/// Suppresses the addresses that `words` call undeliverable (see [`decide`]), in
/// one write; answers how many were. A store that fails is logged, not answered:
/// the outcomes these words came with are recorded already, and a later
/// undeliverable send or receipt suppresses the address instead.
pub async fn undeliverable(
    records: &Records,
    registry: &Registry,
    words: impl IntoIterator<Item = Word>,
) -> usize {
    let entries: Vec<Suppression> = words
        .into_iter()
        .filter_map(|word| decide(registry, word))
        .collect();
    if entries.is_empty() {
        return 0;
    }
    let count = entries.len();
    match records.suppress(entries).await {
        Ok(_) => {
            tracing::info!(
                count,
                "recipients suppressed: their provider called them undeliverable"
            );
            count
        }
        Err(e) => {
            tracing::error!(count, error = %e, "suppressing undeliverable recipients failed");
            0
        }
    }
}

/// What a suppression made by an opt-out reply says, before the reply's id.
pub const REPLIED_STOP: &str = "replied STOP";

/// The suppression of an opt-out reply's sender on the SMS channel: the reason
/// names the reply, `replied STOP (reply {id})`. An opt-in reply lifts only a
/// suppression whose reason [`made_by_reply`] says a reply made, so that one an
/// operator added, or a number a provider called undeliverable, stays.
pub fn opted_out(from: &str, reply_id: &str) -> Suppression {
    Suppression {
        channel: Channel::Sms,
        address: recipient::address_key(Channel::Sms, from),
        reason: format!("{REPLIED_STOP} (reply {reply_id})"),
        created_at_ms: 0,
    }
}

/// Whether a suppression's `reason` is one an opt-out reply made ([`opted_out`]).
pub fn made_by_reply(reason: &str) -> bool {
    reason.starts_with(REPLIED_STOP)
}
