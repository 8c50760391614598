//! One configured bind, kept up: connect (TCP, or TLS), bind as transmitter or
//! transceiver, answer the SMSC's `enquire_link`, `deliver_sm` and `unbind`,
//! check an idle link with `enquire_link`, and bind again with backoff after an
//! unbind, a lost connection or a refused bind. `unbind` on shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rusmpp::pdus::{BindTransceiver, BindTransmitter, DeliverSmResp};
use rusmpp::tlvs::TlvValue;
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::COctetString;
use rusmpp::values::{InterfaceVersion, Npi, Ton};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;

use super::receipt::{self, Delivered, Incoming};
use super::settings::{BindMode, Settings};
use super::window::Link;
use crate::backoff::{Backoff, Jitter, Streak};
use crate::provider::{Push, Pushed};

/// Waits between binds that failed in a row.
const REBIND: Backoff = Backoff {
    first: Duration::from_millis(200),
    cap: Duration::from_secs(30),
    jitter: Jitter::Equal,
};
/// How long the SMSC has to answer an `unbind` on shutdown.
const UNBIND_WAIT: Duration = Duration::from_secs(2);
/// How long a pushed receipt or reply may take to be stored before the SMSC is
/// told to send it again.
const STORE_WAIT: Duration = Duration::from_secs(30);

/// Where a bind's task publishes its bound link (`None` while unbound).
pub(crate) type Publish = watch::Sender<Option<Arc<Link>>>;
/// Where senders find a bind's link.
pub(crate) type Bound = watch::Receiver<Option<Arc<Link>>>;

/// What a bind's task shares with the provider.
#[derive(Clone)]
pub(crate) struct Shared {
    pub settings: Arc<Settings>,
    pub pushes: mpsc::Sender<Push>,
    /// Why the last attempt to bind failed, until one succeeds: what a send
    /// that finds no bind up says.
    pub failure: Arc<Mutex<Option<String>>>,
    pub stop: CancellationToken,
}

impl Shared {
    /// Records why the last bind attempt failed (`None`: it succeeded).
    fn failed(&self, why: Option<String>) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Why the last bind attempt failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Keeps bind `index` up until `shared.stop`, publishing each bound link on `link`.
pub(crate) async fn run(index: usize, shared: Shared, link: Publish) {
    let settings = &shared.settings;
    let mut streak = Streak::new(REBIND);
    while !shared.stop.is_cancelled() {
        let bound = tokio::select! {
            bound = bind(settings) => bound,
            () = shared.stop.cancelled() => break,
        };
        match bound {
            Ok(connection) => {
                streak.reset();
                shared.failed(None);
                tracing::info!(host = %settings.host, port = settings.port, bind = index, "SMPP bound");
                let why = serve(connection, &shared, &link).await;
                tracing::warn!(host = %settings.host, bind = index, "SMPP bind ended: {why}");
            }
            Err(why) => {
                tracing::warn!(host = %settings.host, port = settings.port, bind = index, "SMPP bind failed: {why}");
                shared.failed(Some(why));
            }
        }
        link.send_replace(None);
        tokio::select! {
            () = tokio::time::sleep(streak.failed()) => {}
            () = shared.stop.cancelled() => break,
        }
    }
}

type Reader = FramedRead<Box<dyn AsyncRead + Send + Unpin>, CommandCodec>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Connects and binds; the error says what failed.
async fn bind(settings: &Settings) -> Result<(Reader, Writer), String> {
    let wait = settings.submit_timeout;
    let address = (settings.host.as_str(), settings.port);
    let tcp = tokio::time::timeout(wait, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| format!("no connection within {wait:?}"))?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (read, mut write): (Box<dyn AsyncRead + Send + Unpin>, Writer) =
        if let Some(tls) = &settings.tls {
            let (r, w) = tokio::io::split(secure(tls, &settings.host, tcp).await?);
            (Box::new(r), Box::new(w))
        } else {
            let (r, w) = tcp.into_split();
            (Box::new(r), Box::new(w))
        };
    let mut reader = FramedRead::new(read, CommandCodec::new());
    let pdu = match settings.bind {
        BindMode::Transceiver => bind_pdu(BindTransceiver::new, settings)?,
        BindMode::Transmitter => bind_pdu(BindTransmitter::new, settings)?,
    };
    let request = Command::new(CommandStatus::EsmeRok, 1, pdu);
    write_all(&mut write, &[request]).await?;
    let answer = tokio::time::timeout(wait, reader.next())
        .await
        .map_err(|_| format!("no answer to the bind within {wait:?}"))?
        .ok_or("the SMSC closed the connection before answering the bind")?
        .map_err(|e| format!("unreadable answer to the bind: {e}"))?;
    let expected = match settings.bind {
        BindMode::Transceiver => CommandId::BindTransceiverResp,
        BindMode::Transmitter => CommandId::BindTransmitterResp,
    };
    if answer.status() != CommandStatus::EsmeRok {
        return Err(format!("the SMSC refused the bind: {:?}", answer.status()));
    }
    if answer.id() != expected {
        return Err(format!("the SMSC answered the bind with {:?}", answer.id()));
    }
    Ok((reader, write))
}

/// A bind PDU's constructor: both kinds take the same fields.
type NewBind<B> = fn(
    COctetString<1, 16>,
    COctetString<1, 9>,
    COctetString<1, 13>,
    InterfaceVersion,
    Ton,
    Npi,
    COctetString<1, 41>,
) -> B;

/// The bind PDU `new` makes of the account's settings, as SMPP 3.4.
fn bind_pdu<B: Into<Pdu>>(new: NewBind<B>, settings: &Settings) -> Result<Pdu, String> {
    Ok(new(
        c_text(&settings.system_id, "system_id")?,
        c_text(settings.password.expose(), "password")?,
        c_text(&settings.system_type, "system_type")?,
        InterfaceVersion::Smpp3_4,
        Ton::Unknown,
        Npi::Unknown,
        c_text(&settings.address_range, "address_range")?,
    )
    .into())
}

/// `value` as a C-octet string of at most `N - 1` characters; `key` names it.
pub(crate) fn c_text<const N: usize>(value: &str, key: &str) -> Result<COctetString<1, N>, String> {
    COctetString::from_vec(format!("{value}\0").into_bytes()).map_err(|e| format!("{key}: {e}"))
}

/// A TLS session over `tcp` with `host`, its certificate checked as `config`
/// says (see `Settings::tls`).
async fn secure(
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("host `{host}` is not a TLS name: {e}"))?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))
}

/// Encodes `commands` and writes them at once.
async fn write_all(write: &mut Writer, commands: &[Command]) -> Result<(), String> {
    let mut buf = BytesMut::new();
    let mut codec = CommandCodec::new();
    for command in commands {
        codec
            .encode(command, &mut buf)
            .map_err(|e| format!("cannot encode {:?}: {e}", command.id()))?;
    }
    write
        .write_all(&buf)
        .await
        .map_err(|e| format!("cannot write: {e}"))
}

/// Serves one bound connection until it ends; says why it did.
async fn serve(
    (mut reader, mut writer): (Reader, Writer),
    shared: &Shared,
    published: &Publish,
) -> String {
    let settings = &shared.settings;
    let (out, mut outgoing) = mpsc::unbounded_channel::<Command>();
    let link = Arc::new(Link::new(out, settings.window));
    let writing = tokio::spawn({
        let link = link.clone();
        async move {
            let mut batch = Vec::new();
            loop {
                tokio::select! {
                    n = outgoing.recv_many(&mut batch, 256) => if n == 0 { break },
                    () = link.closed.cancelled() => break,
                }
                if let Err(why) = write_all(&mut writer, &batch).await {
                    tracing::debug!("SMPP write failed: {why}");
                    break;
                }
                batch.clear();
            }
            link.close();
            let _ = writer.shutdown().await;
        }
    });
    published.send_replace(Some(link.clone()));
    let mut ticks = tokio::time::interval(settings.enquire_link_interval);
    ticks.reset();
    // The unbind in flight, on shutdown: its answer is read as any other.
    let mut unbinding = None;
    let why = loop {
        tokio::select! {
            () = shared.stop.cancelled(), if unbinding.is_none() => {
                published.send_replace(None);
                let link = link.clone();
                unbinding = Some(tokio::spawn(async move {
                    link.request(Pdu::Unbind, UNBIND_WAIT, false).await
                }));
            }
            _ = async { unbinding.as_mut().expect("guarded").await }, if unbinding.is_some() => {
                break "shutting down: unbound".to_string();
            }
            () = link.closed.cancelled() => break "the connection could not be written".into(),
            _ = ticks.tick() => {
                let link = link.clone();
                let wait = settings.submit_timeout;
                tokio::spawn(async move {
                    if link.request(Pdu::EnquireLink, wait, false).await.is_err() {
                        tracing::warn!("SMPP enquire_link unanswered: closing the bind");
                        link.close();
                    }
                });
            }
            frame = reader.next() => match frame {
                None => break "the SMSC closed the connection".into(),
                Some(Err(e)) => break format!("unreadable PDU: {e}"),
                Some(Ok(command)) => {
                    if let Some(why) = handle(command, &link, shared) {
                        break why;
                    }
                }
            },
        }
    };
    published.send_replace(None);
    link.close();
    // The writer ends once every sender of its channel is gone.
    drop(link);
    let _ = tokio::time::timeout(UNBIND_WAIT, writing).await;
    why
}

/// Handles one PDU from the SMSC; `Some(why)` when the bind is over.
fn handle(command: Command, link: &Arc<Link>, shared: &Shared) -> Option<String> {
    let sequence = command.sequence_number();
    let id = command.id();
    if id.is_response() {
        if !link.answered(command) {
            tracing::debug!(?id, sequence, "SMPP answer to no waiting request");
        }
        return None;
    }
    match command.pdu() {
        Some(Pdu::EnquireLink) => {
            link.answer(Command::new(
                CommandStatus::EsmeRok,
                sequence,
                Pdu::EnquireLinkResp,
            ));
        }
        Some(Pdu::Unbind) => {
            link.answer(Command::new(
                CommandStatus::EsmeRok,
                sequence,
                Pdu::UnbindResp,
            ));
            return Some("the SMSC unbound".into());
        }
        Some(Pdu::DeliverSm(deliver)) => {
            let incoming = Incoming {
                esm_class: u8::from(deliver.esm_class),
                source_ton: u8::from(deliver.source_addr_ton),
                source: deliver.source_addr.as_str().to_string(),
                destination: deliver.destination_addr.as_str().to_string(),
                data_coding: u8::from(deliver.data_coding),
                short_message: deliver.short_message().as_ref().to_vec(),
                payload: deliver.tlvs().iter().find_map(|t| match t.value() {
                    Some(TlvValue::MessagePayload(p)) => Some(p.value.as_ref().to_vec()),
                    _ => None,
                }),
                receipted_message_id: deliver.tlvs().iter().find_map(|t| match t.value() {
                    Some(TlvValue::ReceiptedMessageId(id)) => Some(id.as_str().to_string()),
                    _ => None,
                }),
                message_state: deliver.tlvs().iter().find_map(|t| match t.value() {
                    Some(TlvValue::MessageState(state)) => Some(u8::from(*state)),
                    _ => None,
                }),
            };
            deliver_sm(&incoming, sequence, link, shared);
        }
        _ => {
            link.answer(Command::new(
                CommandStatus::EsmeRinvcmdid,
                sequence,
                Pdu::GenericNack,
            ));
        }
    }
    None
}

/// Hands a `deliver_sm` on, and answers it once it is stored: the SMSC sends
/// again what is answered with an error (ESME_RX_T_APPN) or not at all.
fn deliver_sm(incoming: &Incoming, sequence: u32, link: &Arc<Link>, shared: &Shared) {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let pushed = match receipt::read(incoming, now_ms) {
        Delivered::Receipt(Some(report)) => Pushed::Receipt(report),
        Delivered::Reply(reply) => Pushed::Reply(reply),
        Delivered::Receipt(None) => return ok(link, sequence),
        Delivered::Unreadable(why) => {
            tracing::warn!("SMPP deliver_sm dropped: {why}");
            return ok(link, sequence);
        }
    };
    let (stored, done) = oneshot::channel();
    let pushes = shared.pushes.clone();
    let link = link.clone();
    tokio::spawn(async move {
        let handed = pushes.send(Push { pushed, stored }).await.is_ok();
        let stored = handed && matches!(tokio::time::timeout(STORE_WAIT, done).await, Ok(Ok(true)));
        let status = if stored {
            CommandStatus::EsmeRok
        } else {
            CommandStatus::EsmeRxTAppn
        };
        link.answer(Command::new(status, sequence, DeliverSmResp::default()));
    });
}

fn ok(link: &Link, sequence: u32) {
    link.answer(Command::new(
        CommandStatus::EsmeRok,
        sequence,
        DeliverSmResp::default(),
    ));
}
