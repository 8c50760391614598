//! The SMPP provider: Herald as an ESME, sending SMS to an SMSC over SMPP 3.4
//! (`kind = "smpp"`), with the SMSC's delivery receipts and people's replies
//! coming back on the same binds.
//!
//! - `settings`: the `[[providers]]` keys ([`SmppConfig`]) and their checks.
//! - `submit`: a text as `submit_sm` segments (GSM 7-bit packed or not, UCS-2;
//!   UDH or SAR), as many as `sms::measure` counts.
//! - `session`: one bind kept up (bind, `enquire_link`, rebind with backoff,
//!   `unbind`); `window`: its outstanding requests, each with a deadline.
//! - `codes`: what the SMSC's `command_status` means for the message.
//! - `receipt`: what a `deliver_sm` is (a receipt, or a reply).
//!
//! A long message's segments each get an id from the SMSC, and its receipts may
//! come under any of them: the [`Receipt`] carries them all, for the store to
//! match a receipt by any.
//!
//! SMPP has no idempotency key: a submit whose answer never came is `unknown`,
//! and sending it again may deliver it twice.

mod codes;
mod receipt;
mod session;
mod settings;
mod submit;
mod window;

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusmpp::pdus::SubmitSm;
use rusmpp::tlvs::MessageSubmissionRequestTlvValue;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{EsmClass, RegisteredDelivery};
use rusmpp::{CommandStatus, Pdu};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::settings::{BindMode, LongMessages, SmppConfig};

use self::session::{Bound, Publish, Shared};
use self::settings::Settings;
use self::submit::Segment;
use self::window::{Link, Unanswered};
use super::{Error, Message, Provider, Pushes, Receipt};
use crate::domain::Channel;

/// `esm_class` with the user data header indicator, in the default mode and type.
const UDHI: u8 = 0x40;

/// Pushed receipts and replies waiting to be stored, per provider.
const PUSHES_QUEUED: usize = 1024;

/// Sends SMS through one SMSC account over `binds` connections.
pub struct SmppProvider {
    name: String,
    shared: Shared,
    links: Vec<Bound>,
    /// The binds' senders until they are started, on first use.
    unstarted: Mutex<Option<Vec<Publish>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pushes: Mutex<Option<Pushes>>,
    next_bind: AtomicUsize,
    reference: AtomicU16,
}

impl SmppProvider {
    /// Checks the configuration (SMS only); `send_timeout` is the default
    /// submit timeout. Nothing connects until the first send or
    /// [`Provider::take_pushes`].
    pub fn new(
        name: &str,
        config: &SmppConfig,
        channels: &[Channel],
        send_timeout: std::time::Duration,
    ) -> Result<SmppProvider, String> {
        if channels != [Channel::Sms] {
            return Err("SMPP sends SMS only: set channels = [\"sms\"]".into());
        }
        let settings = Settings::new(config, send_timeout)?;
        let (senders, links) = (0..settings.binds).map(|_| watch::channel(None)).unzip();
        let (pushes_tx, pushes) = mpsc::channel(PUSHES_QUEUED);
        Ok(SmppProvider {
            name: name.to_string(),
            shared: Shared {
                settings: Arc::new(settings),
                pushes: pushes_tx,
                failure: Arc::default(),
                stop: CancellationToken::new(),
            },
            links,
            unstarted: Mutex::new(Some(senders)),
            tasks: Mutex::new(Vec::new()),
            pushes: Mutex::new(Some(pushes)),
            next_bind: AtomicUsize::new(fastrand::usize(..)),
            reference: AtomicU16::new(fastrand::u16(..)),
        })
    }

    /// Starts the binds' tasks, once.
    fn start(&self) {
        let senders = self
            .unstarted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(senders) = senders else {
            return;
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for (index, sender) in senders.into_iter().enumerate() {
            tasks.push(tokio::spawn(session::run(
                index,
                self.shared.clone(),
                sender,
            )));
        }
    }

    /// A bound link, the binds taken in turn; when none is bound, waits for the
    /// first to come up (see `Settings::bind_wait`), and else says why the last
    /// bind failed.
    async fn link(&self) -> Result<Arc<Link>, Error> {
        let start = self.next_bind.fetch_add(1, Ordering::Relaxed);
        let n = self.links.len();
        for i in 0..n {
            if let Some(link) = self.links[(start + i) % n].borrow().clone() {
                return Ok(link);
            }
        }
        let wait = self.shared.settings.bind_wait;
        let any_bound = futures_util::future::select_all(self.links.iter().map(|link| {
            let mut link = link.clone();
            Box::pin(async move {
                let bound = link.wait_for(Option::is_some).await;
                bound.ok().and_then(|link| link.clone())
            })
        }));
        match tokio::time::timeout(wait, any_bound).await {
            Ok((Some(link), _, _)) => Ok(link),
            _ => {
                let s = &self.shared.settings;
                let why = match self.shared.failure() {
                    Some(why) => format!(": the last bind failed: {why}"),
                    None => String::new(),
                };
                Err(Error::Transient {
                    reason: format!(
                        "not bound to the SMSC {}:{} (binding again){why}",
                        s.host, s.port
                    ),
                    retry_after: None,
                })
            }
        }
    }

    /// The `submit_sm` of `segment` to `destination`.
    fn submit_sm(&self, destination: &COctetString<1, 21>, segment: Segment) -> SubmitSm {
        let s = &self.shared.settings;
        let source =
            session::c_text(&s.source.addr, "source_addr").expect("checked with the settings");
        // Not EsmClass::default(), which sets an ANSI-41 acknowledgement bit.
        let esm_class = EsmClass::from(if segment.udhi { UDHI } else { 0 });
        let registered = if s.registered_delivery { 1 } else { 0 };
        let mut tlvs = Vec::new();
        if let Some((reference, total, number)) = segment.sar {
            tlvs.push(MessageSubmissionRequestTlvValue::SarMsgRefNum(reference));
            tlvs.push(MessageSubmissionRequestTlvValue::SarTotalSegments(total));
            tlvs.push(MessageSubmissionRequestTlvValue::SarSegmentSeqnum(number));
        }
        SubmitSm::builder()
            .source_addr_ton(s.source.ton.into())
            .source_addr_npi(s.source.npi.into())
            .source_addr(source)
            .dest_addr_ton(s.dest_ton.into())
            .dest_addr_npi(s.dest_npi.into())
            .destination_addr(destination.clone())
            .esm_class(esm_class)
            .registered_delivery(RegisteredDelivery::from(registered))
            .data_coding(segment.data_coding.into())
            .short_message(
                OctetString::from_vec(segment.short_message)
                    .expect("segments are at most 160 octets"),
            )
            .tlvs(tlvs)
            .build()
    }
}

/// The destination address of an E.164 recipient: its digits.
fn destination(to: &str) -> Result<COctetString<1, 21>, Error> {
    to.strip_prefix('+')
        .filter(|d| (4..=20).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| session::c_text(d, "destination_addr").ok())
        .ok_or_else(|| Error::Undeliverable {
            reason: format!("`{to}` is not an E.164 phone number"),
        })
}

#[async_trait]
impl Provider for SmppProvider {
    /// Submits each segment in turn on one bind. The message is recorded under
    /// its first segment's id, with the others' ids beside it; a refusal of a
    /// later segment is classified as the first's would be, and a retry sends
    /// every segment again.
    async fn send(&self, message: &Message) -> Result<Receipt, Error> {
        if message.channel != Channel::Sms {
            return Err(Error::Permanent {
                reason: format!("provider `{}` sends SMS only", self.name),
            });
        }
        let destination = destination(&message.to)?;
        let settings = &self.shared.settings;
        let reference = self.reference.fetch_add(1, Ordering::Relaxed);
        let segments = submit::segments(
            &message.body,
            settings.gsm7_packed,
            settings.long_messages,
            reference,
        )
        .map_err(|reason| Error::Permanent { reason })?;
        self.start();
        let link = self.link().await?;
        let total = segments.len();
        let mut ids = Vec::with_capacity(total);
        for (i, segment) in segments.into_iter().enumerate() {
            let pdu = self.submit_sm(&destination, segment);
            let outcome = match link.request(pdu, settings.submit_timeout, true).await {
                Ok(answer) => match (answer.status(), answer.pdu()) {
                    (CommandStatus::EsmeRok, Some(Pdu::SubmitSmResp(resp))) => {
                        ids.push(resp.message_id().as_str().to_string());
                        continue;
                    }
                    (CommandStatus::EsmeRok, _) => Error::Transient {
                        reason: format!("the SMSC answered the submit with {:?}", answer.id()),
                        retry_after: None,
                    },
                    (status, _) => codes::refusal(u32::from(status), &format!("{status:?}")),
                },
                Err(Unanswered::NotSent(reason)) => Error::Transient {
                    reason,
                    retry_after: None,
                },
                Err(Unanswered::NoAnswer(reason)) => Error::Unknown { reason },
            };
            return Err(partly(outcome, i, total));
        }
        if total > 1 {
            tracing::debug!(message = %message.id, segments = ?ids, "SMPP segments accepted");
        }
        let mut ids = ids.into_iter();
        Ok(Receipt {
            provider_message_id: ids.next().filter(|id| !id.is_empty()),
            segment_ids: ids.filter(|id| !id.is_empty()).collect(),
        })
    }

    fn take_pushes(&self) -> Option<Pushes> {
        let pushes = self.pushes.lock().unwrap_or_else(|e| e.into_inner()).take();
        if pushes.is_some() {
            self.start();
        }
        pushes
    }

    /// Unbinds every bind and waits for their tasks to end.
    async fn close(&self) {
        self.shared.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// `error` for segment `i` (from 0) of `total`, saying so when earlier ones
/// were accepted.
fn partly(error: Error, i: usize, total: usize) -> Error {
    if i == 0 {
        return error;
    }
    let note = format!("segment {} of {total} ({i} accepted before it): ", i + 1);
    match error {
        Error::Transient {
            reason,
            retry_after,
        } => Error::Transient {
            reason: note + &reason,
            retry_after,
        },
        Error::Throttled {
            reason,
            retry_after,
        } => Error::Throttled {
            reason: note + &reason,
            retry_after,
        },
        Error::Permanent { reason } => Error::Permanent {
            reason: note + &reason,
        },
        Error::Undeliverable { reason } => Error::Undeliverable {
            reason: note + &reason,
        },
        Error::Unknown { reason } => Error::Unknown {
            reason: note + &reason,
        },
        other => other,
    }
}

#[cfg(test)]
mod smsc;
#[cfg(test)]
mod tests;
