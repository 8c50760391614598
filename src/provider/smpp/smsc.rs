//! A small SMSC of Herald's own, on 127.0.0.1, for what an SMSC simulator cannot
//! be made to do: answer submits with throttles or not at all, refuse or drop
//! binds, send a receipt before the submit's answer, push a `deliver_sm`. It
//! speaks the wire format through rusmpp's codec. The SMPP bench runs it too,
//! answering every submit at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rusmpp::pdus::{BindTransceiverResp, BindTransmitterResp, DeliverSm, SubmitSm, SubmitSmResp};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::EsmClass;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Encoder, FramedRead};

/// How the SMSC answers one submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Accepted, with a message id.
    Accept,
    /// Refused with this status.
    Refuse(CommandStatus),
    /// Never answered.
    Silent,
}

/// What the SMSC does; change it at any time through [`Smsc::script`].
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Refuse binds with this status.
    pub refuse_binds: Option<CommandStatus>,
    /// How the next submits are answered, in order; then [`Answer::Accept`].
    pub answers: VecDeque<Answer>,
    /// Send a delivery receipt for each accepted submit.
    pub receipts: bool,
    /// Send that receipt before the submit's answer.
    pub receipt_first: bool,
    /// Leave `enquire_link` unanswered.
    pub ignore_enquire_link: bool,
}

/// What the SMSC saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub binds: AtomicUsize,
    pub unbinds: AtomicUsize,
    pub enquire_links: AtomicUsize,
    pub submits: Mutex<Vec<SubmitSm>>,
    /// The status of each `deliver_sm_resp`, in order.
    pub deliver_answers: Mutex<Vec<CommandStatus>>,
}

struct State {
    script: Mutex<Script>,
    seen: Seen,
    ids: AtomicUsize,
    /// Tells every connection to close (`true`) or to send a `deliver_sm`.
    control: broadcast::Sender<Control>,
}

#[derive(Clone)]
enum Control {
    Drop,
    Deliver(Box<DeliverSm>),
}

/// A running SMSC; it stops when dropped.
pub struct Smsc {
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Smsc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Smsc {
    /// Starts an SMSC on a free port of 127.0.0.1.
    pub async fn start(script: Script) -> Smsc {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("bound").port();
        let state = Arc::new(State {
            script: Mutex::new(script),
            seen: Seen::default(),
            ids: AtomicUsize::new(0),
            control: broadcast::channel(64).0,
        });
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(connection(stream, state.clone()));
                }
            }
        });
        Smsc { port, state, task }
    }

    /// Changes the script.
    pub fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.state.script.lock().expect("script"));
    }

    /// What it saw so far.
    pub fn seen(&self) -> &Seen {
        &self.state.seen
    }

    /// The submits so far.
    pub fn submits(&self) -> Vec<SubmitSm> {
        self.state.seen.submits.lock().expect("submits").clone()
    }

    /// Closes every connection, without an unbind.
    pub fn drop_connections(&self) {
        let _ = self.state.control.send(Control::Drop);
    }

    /// Sends `deliver_sm` on every bound connection.
    pub fn deliver(&self, deliver: DeliverSm) {
        let _ = self.state.control.send(Control::Deliver(Box::new(deliver)));
    }

    /// Waits until `done` holds of what it saw, for at most 5 s; false if it never did.
    pub async fn wait(&self, done: impl Fn(&Seen) -> bool) -> bool {
        for _ in 0..500 {
            if done(&self.state.seen) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        done(&self.state.seen)
    }
}

/// A delivery receipt for message `id` to `to`, as its text says it.
pub fn receipt(id: &str, to: &str, stat: &str) -> DeliverSm {
    let text = format!(
        "id:{id} sub:001 dlvrd:001 submit date:2506011200 done date:2506011201 stat:{stat} err:000 text:"
    );
    DeliverSm::builder()
        .source_addr(c_octets(to))
        .destination_addr(c_octets("Herald"))
        .esm_class(EsmClass::from(0x04))
        .short_message(OctetString::from_vec(text.into_bytes()).expect("short"))
        .build()
}

/// A message a person sends from `from`, in ASCII.
pub fn reply(from: &str, text: &str) -> DeliverSm {
    DeliverSm::builder()
        .source_addr_ton(1.into())
        .esm_class(EsmClass::from(0))
        .source_addr(c_octets(from))
        .destination_addr(c_octets("447700900000"))
        .short_message(OctetString::from_vec(text.as_bytes().to_vec()).expect("short"))
        .build()
}

fn c_octets<const N: usize>(text: &str) -> COctetString<1, N> {
    COctetString::from_vec(format!("{text}\0").into_bytes()).expect("short ASCII")
}

async fn connection(stream: tokio::net::TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = FramedRead::new(read, CommandCodec::new());
    let (out, mut outgoing) = mpsc::unbounded_channel::<Command>();
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut codec = CommandCodec::new();
        while outgoing.recv_many(&mut batch, 256).await > 0 {
            let mut buf = BytesMut::new();
            for command in batch.drain(..) {
                codec.encode(&command, &mut buf).expect("encodable");
            }
            if write.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let mut control = state.control.subscribe();
    let mut bound = false;
    let mut sequence = 0x4000_0000u32;
    loop {
        let command = tokio::select! {
            frame = reader.next() => match frame {
                Some(Ok(command)) => command,
                _ => break,
            },
            message = control.recv() => match message {
                Ok(Control::Deliver(deliver)) if bound => {
                    sequence += 1;
                    let _ = out.send(Command::new(CommandStatus::EsmeRok, sequence, *deliver));
                    continue;
                }
                Ok(Control::Deliver(_)) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Ok(Control::Drop) | Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        let seq = command.sequence_number();
        let script = state.script.lock().expect("script").clone();
        let seen = &state.seen;
        match command.pdu() {
            Some(Pdu::BindTransceiver(_) | Pdu::BindTransmitter(_)) => {
                let status = script.refuse_binds.unwrap_or(CommandStatus::EsmeRok);
                let system_id = c_octets("smsc");
                let pdu: Pdu = if command.id() == CommandId::BindTransceiver {
                    BindTransceiverResp::builder()
                        .system_id(system_id)
                        .build()
                        .into()
                } else {
                    BindTransmitterResp::builder()
                        .system_id(system_id)
                        .build()
                        .into()
                };
                let _ = out.send(Command::new(status, seq, pdu));
                bound = status == CommandStatus::EsmeRok;
                if bound {
                    seen.binds.fetch_add(1, Ordering::SeqCst);
                }
            }
            Some(Pdu::SubmitSm(submit)) => {
                seen.submits.lock().expect("submits").push(submit.clone());
                let answer = state
                    .script
                    .lock()
                    .expect("script")
                    .answers
                    .pop_front()
                    .unwrap_or(Answer::Accept);
                match answer {
                    Answer::Silent => {}
                    Answer::Refuse(status) => {
                        let _ = out.send(Command::new(status, seq, SubmitSmResp::default()));
                    }
                    Answer::Accept => {
                        let id = format!("m{}", state.ids.fetch_add(1, Ordering::SeqCst) + 1);
                        let resp = SubmitSmResp::builder().message_id(c_octets(&id)).build();
                        let receipt = script.receipts.then(|| {
                            sequence += 1;
                            let to = submit.destination_addr.as_str().to_string();
                            Command::new(
                                CommandStatus::EsmeRok,
                                sequence,
                                receipt(&id, &to, "DELIVRD"),
                            )
                        });
                        let resp = Command::new(CommandStatus::EsmeRok, seq, resp);
                        let order = if script.receipt_first {
                            [receipt, Some(resp)]
                        } else {
                            [Some(resp), receipt]
                        };
                        for command in order.into_iter().flatten() {
                            let _ = out.send(command);
                        }
                    }
                }
            }
            Some(Pdu::EnquireLink) => {
                seen.enquire_links.fetch_add(1, Ordering::SeqCst);
                if !script.ignore_enquire_link {
                    let _ = out.send(Command::new(
                        CommandStatus::EsmeRok,
                        seq,
                        Pdu::EnquireLinkResp,
                    ));
                }
            }
            Some(Pdu::Unbind) => {
                seen.unbinds.fetch_add(1, Ordering::SeqCst);
                let _ = out.send(Command::new(CommandStatus::EsmeRok, seq, Pdu::UnbindResp));
                break;
            }
            Some(Pdu::DeliverSmResp(_)) => {
                seen.deliver_answers
                    .lock()
                    .expect("answers")
                    .push(command.status());
            }
            _ => {}
        }
    }
    drop(out);
    let _ = writer.await;
}
