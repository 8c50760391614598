//! The SMTP provider: hands each e-mail to a mail server (a relay, a submission
//! server) over SMTP with STARTTLS, implicit TLS or in clear, through a small pool
//! of open connections. Messages are plain-text UTF-8 MIME with a `Message-ID`
//! derived from Herald's message id, so every attempt of a message carries the same
//! one. The server's replies are classified by their codes: 4xx transient, 5xx
//! permanent, and 5xx replies that name a bad mailbox undeliverable.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::{Error, Message, Provider, Receipt};
use crate::domain::Secret;
use crate::recipient::{self, EmailRules};

/// The keys of a `kind = "smtp"` provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The server's name (or IP address); with TLS, the name its certificate must carry.
    pub host: String,
    /// Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// Default `starttls`.
    #[serde(default)]
    pub security: Security,
    /// Log in with AUTH PLAIN or LOGIN; needs `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// The password for `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The `From` mailbox and envelope sender, e.g. `Shop <noreply@shop.example>`.
    /// Its domain also ends every `Message-ID`.
    pub from: String,
    /// The `Reply-To` mailbox, when replies go elsewhere than `from`.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// One URL or several (`mailto:`, `https:`) for the `List-Unsubscribe` header;
    /// `{{to}}` in them becomes the recipient's address, URL-encoded.
    #[serde(default)]
    pub list_unsubscribe: Option<OneOrMany>,
    /// The longest one send may take, from waiting for a connection to the server's
    /// last reply. Default: the worker's `send_timeout_ms`, which also caps it.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The most connections open to the server at once. Default 4.
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// A PEM file of certificates to trust besides the system's, for servers with a
    /// private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// How the connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Connect in clear, then upgrade with STARTTLS; a server that does not offer
    /// it gets nothing (no fallback to clear text).
    #[default]
    Starttls,
    /// TLS from the first byte ("implicit TLS", usually port 465).
    Tls,
    /// No encryption, for a relay on the same host or network. Credentials, if
    /// any, travel in clear.
    None,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// How many connections a provider keeps open at most, unless `pool_size` says.
const DEFAULT_POOL_SIZE: usize = 4;
/// An idle connection older than this is closed rather than reused: servers drop
/// idle clients after a few minutes (RFC 5321 asks them to wait at least 5).
const MAX_IDLE: Duration = Duration::from_secs(60);
/// An idle connection older than this is checked with NOOP before it is reused; a
/// younger one is almost surely alive, and the check would cost a round trip per
/// message under load.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(2);
/// The placeholder in `list_unsubscribe` for the recipient's address.
const TO_PLACEHOLDER: &str = "{{to}}";

/// Sends through one SMTP server. Cheap to share: sends on many tasks draw on its
/// pool of at most `pool_size` connections; it introduces itself (EHLO) with the
/// machine's host name.
pub struct SmtpProvider {
    host: String,
    port: u16,
    security: Security,
    tls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    unsubscribe: Option<Unsubscribe>,
    timeout: Duration,
    pool: Pool,
}

impl SmtpProvider {
    /// Checks the configuration and prepares the TLS settings; connects only when
    /// the first message is sent. `send_timeout` is the worker's, the default and
    /// the cap of `timeout_ms`.
    pub fn new(config: &SmtpConfig, send_timeout: Duration) -> Result<Self, String> {
        if config.host.trim().is_empty() {
            return Err("host must not be empty".into());
        }
        let from = mailbox(&config.from).map_err(|e| format!("from: {e}"))?;
        let reply_to = config
            .reply_to
            .as_deref()
            .map(mailbox)
            .transpose()
            .map_err(|e| format!("reply_to: {e}"))?;
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            )),
            (None, None) => None,
            _ => return Err("username and password go together: give both or neither".into()),
        };
        let tls = match config.security {
            Security::None => None,
            Security::Starttls | Security::Tls => Some(tls_parameters(config)?),
        };
        let timeout = match config.timeout_ms {
            Some(0) => return Err("timeout_ms must be at least 1".into()),
            Some(ms) => Duration::from_millis(ms).min(send_timeout),
            None => send_timeout,
        };
        let pool_size = config.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
        if pool_size == 0 {
            return Err("pool_size must be at least 1".into());
        }
        Ok(SmtpProvider {
            host: config.host.clone(),
            port: config.port.unwrap_or(match config.security {
                Security::Starttls => 587,
                Security::Tls => 465,
                Security::None => 25,
            }),
            security: config.security,
            tls,
            credentials,
            hello: ClientId::default(),
            from,
            reply_to,
            unsubscribe: config
                .list_unsubscribe
                .as_ref()
                .map(Unsubscribe::parse)
                .transpose()
                .map_err(|e| format!("list_unsubscribe: {e}"))?,
            timeout,
            pool: Pool {
                idle: Mutex::new(Vec::new()),
                slots: Semaphore::new(pool_size),
            },
        })
    }

    /// The `Message-ID` of a message, without its angle brackets: Herald's message
    /// id (a UUID and an index: dot-atom text) at the domain of `from`.
    fn message_id(&self, message: &Message) -> String {
        format!("{}@{}", message.id, self.from.email.domain())
    }

    /// The e-mail and its envelope. Refuses, naming the field, what would let a
    /// value break out of its header.
    fn compose(&self, message: &Message) -> Result<lettre::Message, Error> {
        let permanent = |reason: String| Error::Permanent { reason };
        for (field, value) in [
            ("to", Some(message.to.as_str())),
            ("subject", message.subject.as_deref()),
        ] {
            if value.is_some_and(|v| v.contains(['\r', '\n'])) {
                return Err(permanent(format!(
                    "{field} contains a line break (CR or LF), which could inject mail headers"
                )));
            }
        }
        let to = mailbox(&message.to).map_err(|e| permanent(format!("to: {e}")))?;
        let mut builder = lettre::Message::builder()
            .message_id(Some(format!("<{}>", self.message_id(message))))
            .from(self.from.clone())
            .to(to.clone());
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        if let Some(subject) = &message.subject {
            builder = builder.subject(subject);
        }
        if let Some(unsubscribe) = &self.unsubscribe {
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                unsubscribe.header(to.email.as_ref()),
            ));
            if unsubscribe.one_click {
                // RFC 8058: mailbox providers may then unsubscribe with one POST.
                builder = builder.raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ));
            }
        }
        // lettre encodes the body as 7bit, quoted-printable or base64, whichever is
        // shortest, so the message is ASCII and needs no 8BITMIME from the server.
        builder
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(message.body.clone()),
            )
            .map_err(|e| permanent(format!("the message cannot be built: {e}")))
    }

    /// One transaction on a pooled connection. The connection is owned by this
    /// future, not lent: if the future is dropped (a timeout) mid-transaction, the
    /// connection is closed with it and never reused out of step with the server.
    async fn deliver(
        &self,
        envelope: &lettre::address::Envelope,
        email: &[u8],
    ) -> Result<(), Error> {
        let _slot = self
            .pool
            .slots
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        let mut connection = match self.pool.reusable().await {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        // On an error lettre has already sent QUIT and closed the connection.
        let reply = connection
            .send(envelope, email)
            .await
            .map_err(|e| classify(Stage::Transaction, &e))?;
        tracing::debug!(reply = %reply.message().collect::<Vec<_>>().join(" "), "smtp: accepted");
        self.pool.park(connection);
        Ok(())
    }

    /// Opens, secures and authenticates a new connection.
    async fn connect(&self) -> Result<AsyncSmtpConnection, Error> {
        let implicit = match self.security {
            Security::Tls => self.tls.clone(),
            Security::Starttls | Security::None => None,
        };
        let mut connection = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            implicit,
            None,
        )
        .await
        .map_err(|e| classify(Stage::Connect, &e))?;
        if self.security == Security::Starttls {
            if !connection.can_starttls() {
                connection.abort().await;
                return Err(Error::Transient {
                    reason: format!(
                        "the server {}:{} does not offer STARTTLS (security = \"starttls\")",
                        self.host, self.port
                    ),
                    retry_after: None,
                });
            }
            let tls = self.tls.clone().expect("starttls has TLS parameters");
            connection
                .starttls(tls, &self.hello)
                .await
                .map_err(|e| classify(Stage::Starttls, &e))?;
        }
        if let Some(credentials) = &self.credentials {
            let result = connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await;
            if let Err(e) = result {
                connection.abort().await;
                return Err(classify(Stage::Auth, &e));
            }
        }
        Ok(connection)
    }
}

#[async_trait]
impl Provider for SmtpProvider {
    async fn send(&self, message: &Message) -> Result<Receipt, Error> {
        let email = self.compose(message)?;
        let bytes = email.formatted();
        match tokio::time::timeout(self.timeout, self.deliver(email.envelope(), &bytes)).await {
            Ok(Ok(())) => Ok(Receipt {
                provider_message_id: Some(self.message_id(message)),
                segment_ids: Vec::new(),
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::Transient {
                reason: format!(
                    "SMTP server {}:{} did not finish within {} ms",
                    self.host,
                    self.port,
                    self.timeout.as_millis()
                ),
                retry_after: None,
            }),
        }
    }
}

/// Open connections waiting for their next message, and the permits that cap how
/// many are open at once.
struct Pool {
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    slots: Semaphore,
}

impl Pool {
    /// The most recently used idle connection that is still fit for use.
    async fn reusable(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut connection, since) = self.idle.lock().expect("pool lock").pop()?;
            let idle = since.elapsed();
            if idle > MAX_IDLE {
                continue;
            }
            if idle < CHECK_IDLE_AFTER || connection.test_connected().await {
                return Some(connection);
            }
        }
    }

    fn park(&self, connection: AsyncSmtpConnection) {
        if !connection.has_broken() {
            self.idle
                .lock()
                .expect("pool lock")
                .push((connection, Instant::now()));
        }
    }
}

/// The TLS settings: the host's name to verify, the system's roots and `ca_file`.
fn tls_parameters(config: &SmtpConfig) -> Result<TlsParameters, String> {
    // Like reqwest here, lettre is built without choosing a crypto backend itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = TlsParameters::builder(config.host.clone());
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("ca_file {} cannot be read: {e}", path.display()))?;
        let certificate = Certificate::from_pem(&pem)
            .map_err(|e| format!("ca_file {} is not a PEM certificate: {e}", path.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|e| format!("TLS cannot be set up: {e}"))
}

/// Parses a mailbox (`a@b`, `Name <a@b>`, `"Last, First" <a@b>`) the way the API
/// checked it, domains for local use included.
fn mailbox(raw: &str) -> Result<Mailbox, String> {
    let parsed = recipient::Mailbox::parse(
        raw,
        &EmailRules {
            allow_local_domains: true,
        },
    )
    .map_err(|e| e.0)?;
    let (user, domain) = parsed
        .address
        .rsplit_once('@')
        .expect("a parsed address has an @");
    let address = lettre::Address::new(user, domain)
        .map_err(|e| format!("`{}` is not an e-mail address: {e}", parsed.address))?;
    Ok(Mailbox::new(parsed.name, address))
}

/// The `List-Unsubscribe` targets.
#[derive(Debug)]
struct Unsubscribe {
    targets: Vec<String>,
    /// Whether a target is HTTPS, which RFC 8058 one-click unsubscription needs.
    one_click: bool,
}

impl Unsubscribe {
    fn parse(config: &OneOrMany) -> Result<Self, String> {
        let targets = match config {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        };
        if targets.is_empty() {
            return Err("give at least one URL".into());
        }
        for target in &targets {
            let lower = target.to_ascii_lowercase();
            if !["mailto:", "https://", "http://"]
                .iter()
                .any(|scheme| lower.starts_with(scheme))
            {
                return Err(format!("`{target}` must be a mailto:, https: or http: URL"));
            }
            // Inside `<…>, <…>` these would end the URL early or break the header.
            if !target.is_ascii()
                || target
                    .chars()
                    .any(|c| c.is_ascii_whitespace() || c.is_control() || "<>,\"".contains(c))
            {
                return Err(format!(
                    "`{target}` must be ASCII without spaces, <, >, \" or commas (write them %-encoded)"
                ));
            }
            if target.replace(TO_PLACEHOLDER, "").contains("{{") {
                return Err(format!(
                    "`{target}`: the only placeholder is {TO_PLACEHOLDER}"
                ));
            }
        }
        let one_click = targets
            .iter()
            .any(|t| t.to_ascii_lowercase().starts_with("https://"));
        Ok(Unsubscribe { targets, one_click })
    }

    /// The header's value for `address`: `<url>, <url>`.
    fn header(&self, address: &str) -> String {
        let encoded: String = form_urlencoded::byte_serialize(address.as_bytes()).collect();
        self.targets
            .iter()
            .map(|t| format!("<{}>", t.replace(TO_PLACEHOLDER, &encoded)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where in the conversation a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connect,
    Starttls,
    Auth,
    /// MAIL, RCPT and DATA: the only stage whose replies can be about the recipient.
    Transaction,
}

/// Classifies a lettre error: SMTP replies by [`classify_reply`]; lettre refusing
/// on its own (no common AUTH mechanism, an address the server cannot take) is
/// permanent; the network, TLS and unreadable replies are transient.
fn classify(stage: Stage, error: &lettre::transport::smtp::Error) -> Error {
    let text = std::error::Error::source(error)
        .map(|s| s.to_string())
        .unwrap_or_default();
    if let Some(code) = error.status() {
        return classify_reply(stage, u16::from(code), &text);
    }
    let what = match stage {
        Stage::Connect => "connecting",
        Stage::Starttls => "STARTTLS",
        Stage::Auth => "AUTH",
        Stage::Transaction => "sending",
    };
    // lettre nests errors of one kind, each saying its kind: keep one of each.
    let mut parts: Vec<&str> = Vec::new();
    let full = error.to_string();
    for part in full.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    let reason = format!("SMTP {what}: {}", one_line(&parts.join(": ")));
    if error.is_client() {
        Error::Permanent { reason }
    } else {
        Error::Transient {
            reason,
            retry_after: None,
        }
    }
}

/// Classifies a negative SMTP reply. 4xx is transient (421 and 454 with
/// "throttled" in the reason: the server wants fewer connections or messages);
/// 5xx is permanent, and undeliverable when it is a reply to the transaction
/// whose enhanced status code (RFC 3463) says the mailbox or its domain does not
/// exist or takes no mail: 5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10, 5.2.1. A reply
/// without an enhanced code counts as undeliverable when it is 550, 551 or 553
/// and says so in the usual words ("user unknown", "no such user", …).
fn classify_reply(stage: Stage, code: u16, text: &str) -> Error {
    let text = one_line(text);
    let reason = match stage {
        Stage::Auth => format!("SMTP AUTH refused: {code} {text}"),
        _ => format!("SMTP {code} {text}"),
    };
    if matches!(code, 421 | 454) {
        return Error::throttled(reason, None);
    }
    if (400..500).contains(&code) {
        return Error::Transient {
            reason,
            retry_after: None,
        };
    }
    if stage == Stage::Transaction && names_a_bad_mailbox(code, &text) {
        return Error::Undeliverable { reason };
    }
    Error::Permanent { reason }
}

fn names_a_bad_mailbox(code: u16, text: &str) -> bool {
    match enhanced_status(text) {
        Some(status) => matches!(
            status,
            "5.1.1" | "5.1.2" | "5.1.3" | "5.1.6" | "5.1.10" | "5.2.1"
        ),
        None => {
            let text = text.to_ascii_lowercase();
            matches!(code, 550 | 551 | 553)
                && [
                    "user unknown",
                    "unknown user",
                    "no such user",
                    "mailbox not found",
                    "does not exist",
                ]
                .iter()
                .any(|words| text.contains(words))
        }
    }
}

/// The enhanced status code at the start of a reply's text, e.g. `5.1.1`.
fn enhanced_status(text: &str) -> Option<&str> {
    let first = text.split_whitespace().next()?;
    let mut parts = first.split('.');
    let class = parts.next()?;
    let ok = matches!(class, "2" | "4" | "5")
        && parts
            .by_ref()
            .take(2)
            .filter(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            .count()
            == 2
        && parts.next().is_none();
    ok.then_some(first)
}

/// A reply's lines on one line, cut to a length that fits a ledger entry.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(300) {
        Some((end, _)) => format!("{}…", &joined[..end]),
        None => joined,
    }
}

#[cfg(test)]
mod tests;
