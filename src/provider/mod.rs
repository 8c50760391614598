//! Providers: the services that actually deliver a message.
//!
//! - This file: the [`Provider`] adapter trait, with the [`Message`] it sends, the
//!   [`Receipt`] it answers and the [`Error`] that says whether trying again can
//!   help (or that the outcome is unknown), and the [`Lookup`] its `query` gives.
//! - `settings`: one `[[providers]]` entry ([`ProviderConfig`], [`ProviderKind`]).
//! - `registry`: every configured provider as a [`Route`], and each channel's
//!   providers in order of preference ([`Registry`]).
//! - `http`: the client, exchange and status classes the HTTP adapters share.
//! - `log` writes each message to the log (the default, for trying Herald out).
//! - `webhook` POSTs each message as signed JSON to a URL.
//! - `twilio` sends SMS through Twilio's Messages API.
//! - `smtp` hands each e-mail to a mail server over SMTP.
//! - `aliyun` and `tencent` send provider-approved SMS templates through Aliyun
//!   and Tencent Cloud, many numbers per request (`call` holds what they share).
//! - `receipt` holds what a delivery receipt request reads into
//!   ([`Provider::read_receipts`]) and Aliyun's and Tencent's push parsers;
//!   `inbound` what an inbound request (replies) reads into
//!   ([`Provider::read_inbound`]) and the reply parsers; `keyword` the opt-out
//!   and opt-in words a reply may be.
//!
//! Adapters never sleep or retry: the worker decides, from the error's class.

mod aliyun;
mod call;
mod http;
/// Inbound messages (replies): what an inbound request reads into, and the parsers.
pub mod inbound;
/// Opt-out and opt-in keywords, and how a reply is folded to match them.
pub mod keyword;
mod log;
mod push;
/// Delivery receipts: what a receipt request reads into, and the push parsers.
pub mod receipt;
mod registry;
mod settings;
mod smpp;
mod smtp;
mod tencent;
mod twilio;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::aliyun::{AliyunConfig, AliyunProvider};
pub use self::http::{Answer, classify_status, exchange, http_client, parse_retry_after};
pub(crate) use self::inbound::{AliyunUplink, TencentReply, WireReply};
pub use self::inbound::{Inbound, InboundReply, reply_id};
pub use self::keyword::{Keyword, Keywords};
pub use self::log::LogProvider;
pub use self::push::{Push, Pushed, Pushes};
pub use self::receipt::{DeliveryReport, ReceiptAnswer, ReceiptError, ReceiptRequest, Receipts};
pub use self::registry::{ConfigError, Price, Registry, Route};
pub use self::settings::{PerRecipient, ProviderConfig, ProviderKind};
pub use self::smpp::{BindMode, LongMessages, SmppConfig, SmppProvider};
pub use self::smtp::{SmtpConfig, SmtpProvider};
pub use self::tencent::{TencentConfig, TencentProvider};
pub use self::twilio::{
    SIGNATURE_HEADER as TWILIO_SIGNATURE_HEADER, TwilioConfig, TwilioProvider,
    code_names_the_recipient as twilio_code_names_the_recipient, parse_twilio_callback,
    verify_twilio_signature,
};
pub(crate) use self::webhook::WireReceipt;
pub use self::webhook::{
    SIGNATURE_HEADER as WEBHOOK_SIGNATURE_HEADER, WebhookProvider, parse_webhook_receipts,
    verify_webhook_signature,
};
use crate::domain::ProviderTemplate;
use crate::domain::{BatchId, Channel};

/// One message as a provider sees it.
#[derive(Debug, Clone)]
pub struct Message {
    /// Stable across every attempt: providers pass it on as the idempotency key.
    pub id: String,
    /// The batch the message belongs to.
    pub batch_id: BatchId,
    /// The caller's own reference for the recipient, when the batch gave one.
    pub reference: Option<String>,
    /// SMS or e-mail.
    pub channel: Channel,
    /// The recipient, normalized: an E.164 number or a mailbox.
    pub to: String,
    /// The subject, for e-mail; `None` when the message has none.
    pub subject: Option<String>,
    /// The rendered text.
    pub body: String,
    /// The recipient's template variables, for providers that render pre-approved
    /// templates on their side (Aliyun, Tencent Cloud); `None` when not stored.
    pub vars: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// The stored template's code and sign name at this provider, when the batch
    /// used a stored template that has them.
    pub template: Option<ProviderTemplate>,
}

/// What a provider says after accepting a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's own id for the message, when it gives one.
    pub provider_message_id: Option<String>,
    /// The provider's ids of the message's other parts, when it sent it in
    /// several (an SMPP long message's later segments, whose receipts may come
    /// under any of them); empty for every other provider.
    pub segment_ids: Vec<String>,
}

/// Why a send did not succeed, classified for the retry decision: the worker
/// decides what happens next from the variant alone (see `worker::decide`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Worth trying again: a timeout, a server error. `retry_after` is the
    /// provider's own hint (e.g. `Retry-After`), when it gave one.
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The provider is throttling this account (too many requests, a quota for the
    /// whole account), as opposed to one recipient's limit or a failure: worth
    /// trying again, and sending slower helps. `retry_after` is the provider's
    /// hint, when it gave one.
    #[error("throttled: {reason}")]
    Throttled {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The recipient is over the provider's frequency cap for one number (Aliyun
    /// `isv.BUSINESS_LIMIT_CONTROL`, Tencent `LimitExceeded.PhoneNumber…`):
    /// nothing was sent, and the message can go once the cap's window has passed,
    /// `wait` from now. Neither a throttle nor a failure of the provider.
    #[error("recipient capped: {reason}")]
    RecipientCapped { reason: String, wait: Duration },
    /// Trying again cannot help: the request itself was refused.
    #[error("{reason}")]
    Permanent { reason: String },
    /// Trying again cannot help because of the recipient: an invalid or
    /// unassigned number, a mailbox that does not exist (a hard bounce). Besides
    /// failing the message, the worker adds the address to the suppression list.
    #[error("{reason}")]
    Undeliverable { reason: String },
    /// The request may have reached the provider but no answer came back (a
    /// timeout after it was written, a connection lost before the answer): the
    /// message may have been sent. The worker marks it `unknown` and, before trying
    /// again, asks the provider about it ([`Provider::query`]).
    #[error("{reason}")]
    Unknown { reason: String },
}

/// What a provider says about an earlier attempt whose outcome was unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The attempt reached the provider: the message is sent, with the id the
    /// provider gave it when it says.
    Sent { provider_message_id: Option<String> },
    /// The provider has no record of it: sending again is safe.
    NotSent,
    /// The provider cannot say (it has no status query, the query failed, or its
    /// records lag): the next attempt goes ahead, and the idempotency key, for
    /// providers that take one, is what keeps it from being sent twice.
    CannotTell(String),
}

impl Error {
    /// An [`Error::Throttled`] for `reason`.
    pub fn throttled(reason: impl std::fmt::Display, retry_after: Option<Duration>) -> Error {
        Error::Throttled {
            reason: reason.to_string(),
            retry_after,
        }
    }

    /// Whether the provider is throttling this account ([`Error::Throttled`]).
    pub fn is_throttle(&self) -> bool {
        matches!(self, Error::Throttled { .. })
    }

    /// An [`Error::RecipientCapped`] for `reason`, whose window ends `wait` from now.
    pub fn recipient_capped(reason: impl std::fmt::Display, wait: Duration) -> Error {
        Error::RecipientCapped {
            reason: reason.to_string(),
            wait,
        }
    }

    /// Whether the recipient is over a frequency cap ([`Error::RecipientCapped`]).
    pub fn is_recipient_capped(&self) -> bool {
        matches!(self, Error::RecipientCapped { .. })
    }
}

/// A delivery adapter. Implementations must be cheap to share across tasks.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Makes one delivery attempt. Must not retry or sleep on its own.
    async fn send(&self, message: &Message) -> Result<Receipt, Error>;

    /// The most messages one [`Provider::send_many`] call takes: more than 1 for
    /// providers with a batch API (one request for many numbers).
    fn batch_limit(&self) -> usize {
        1
    }

    /// Makes one delivery attempt for each of `messages` (at most
    /// [`Provider::batch_limit`]), in as few requests as the provider allows, and
    /// answers one result per message, in order.
    async fn send_many(&self, messages: &[Message]) -> Vec<Result<Receipt, Error>> {
        futures_util::future::join_all(messages.iter().map(|m| self.send(m))).await
    }

    /// Asks the provider whether an attempt at `message` made at `since_ms` (ms
    /// since the epoch) or later, whose outcome was unknown, reached it. Must not
    /// retry or sleep; by default the provider cannot tell.
    async fn query(&self, message: &Message, since_ms: i64) -> Lookup {
        let _ = (message, since_ms);
        Lookup::CannotTell("the provider has no status query".into())
    }

    /// Reads a delivery-receipt request the provider made to
    /// `POST /v1/receipts/{name}`: checks that it comes from the provider, and
    /// parses its reports. By default the provider sends none.
    fn read_receipts(&self, request: &ReceiptRequest<'_>) -> Result<Receipts, ReceiptError> {
        let _ = request;
        Err(ReceiptError::NotTaken(
            "this kind of provider sends no delivery receipts".into(),
        ))
    }

    /// Reads an inbound request (replies people sent to the provider's numbers)
    /// the provider made to `POST /v1/inbound/{name}`: checks that it comes from
    /// the provider, as its receipts are checked, and parses its replies. By
    /// default the provider passes on none.
    fn read_inbound(&self, request: &ReceiptRequest<'_>) -> Result<Inbound, ReceiptError> {
        let _ = request;
        Err(ReceiptError::NotTaken(
            "this kind of provider passes on no replies".into(),
        ))
    }

    /// Whether a receipt's `undelivered` code says the recipient itself cannot
    /// receive messages (so the address is suppressed, as for
    /// [`Error::Undeliverable`]). By default no code does.
    fn receipt_names_the_recipient(&self, code: &str) -> bool {
        let _ = code;
        false
    }

    /// Whether it sends only its own approved templates, so that a message needs
    /// the stored template's code at this provider ([`Message::template`]).
    fn needs_template_code(&self) -> bool {
        false
    }

    /// Takes what the provider pushes on connections of its own (SMPP's
    /// `deliver_sm`: receipts and replies), to be stored as the receipt and
    /// inbound routes store theirs. `None` for providers that push nothing, and
    /// after the first call.
    fn take_pushes(&self) -> Option<Pushes> {
        None
    }

    /// Closes the provider's own connections cleanly (SMPP's `unbind`): called
    /// once at shutdown, after the workers have stopped. By default there are none.
    async fn close(&self) {}
}
