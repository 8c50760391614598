//! What a provider pushes on a connection of its own (SMPP's `deliver_sm`), as
//! opposed to what it POSTs to Herald's routes: delivery reports and replies,
//! each with the answer the provider waits for once it is stored.

use tokio::sync::{mpsc, oneshot};

use super::InboundReply;
use crate::domain::DeliveryReport;

/// One thing a provider pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// A final delivery report, for the receipt path.
    Receipt(DeliveryReport),
    /// A message a person sent, for the replies path.
    Reply(InboundReply),
}

/// A [`Pushed`] with the way to say it is stored: `true` once it is, `false`
/// when it could not be (the provider then asks for it again later). Dropping
/// `stored` counts as `false`.
#[derive(Debug)]
pub struct Push {
    pub pushed: Pushed,
    pub stored: oneshot::Sender<bool>,
}

/// Where a provider's pushes arrive ([`super::Provider::take_pushes`]).
pub type Pushes = mpsc::Receiver<Push>;
