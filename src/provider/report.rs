//! Delivery reports: what a provider tells Herald, after a send, about whether
//! the message reached the handset or mailbox.

/// One final delivery outcome, as parsed from a provider's callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The provider's id for the message (the [`super::Receipt`]'s
    /// `provider_message_id`), or Herald's message id when the provider gave none.
    pub provider_message_id: String,
    /// The recipient, when the report names it.
    pub to: Option<String>,
    /// Reached the recipient (`true`), or the provider gave up (`false`).
    pub delivered: bool,
    /// The provider's error code for an undelivered message, as it wrote it.
    pub code: Option<String>,
    /// When the outcome happened, in Unix milliseconds, when the report says.
    pub at_ms: Option<i64>,
}
