//! `kind = "smpp"` settings as the configuration file writes them
//! ([`SmppConfig`]), and the checked form a session runs on ([`Settings`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use crate::domain::Secret;

/// `kind = "smpp"`: an SMSC spoken to directly over SMPP 3.4.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmppConfig {
    /// The SMSC's host name or address.
    pub host: String,
    /// Its port; default 2775.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Speak TLS on the connection, the SMSC's certificate checked against the
    /// system's root certificates and those of `ca_file`.
    #[serde(default)]
    pub tls: bool,
    /// A PEM file of certificates to trust besides the system's, for an SMSC
    /// with a private CA or a self-signed certificate; needs `tls`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The account's `system_id` (at most 15 characters).
    pub system_id: String,
    /// The account's password (at most 8 characters).
    pub password: Secret,
    /// `system_type`, when the SMSC asks for one (at most 12 characters).
    #[serde(default)]
    pub system_type: String,
    /// `transceiver` (the default: receipts and replies come on the same
    /// connection) or `transmitter` (submits only).
    #[serde(default)]
    pub bind: BindMode,
    /// The bind's `address_range`, when the SMSC routes replies by it.
    #[serde(default)]
    pub address_range: String,
    /// The sender: a number (`+` and digits, or digits) or an alphanumeric id.
    pub source_addr: String,
    /// The sender's type of number; by default 1 (international) for `+…`, 5
    /// (alphanumeric) for a name, 0 (unknown) otherwise.
    #[serde(default)]
    pub source_ton: Option<u8>,
    /// The sender's numbering plan; by default 1 (ISDN/E.164) for a number, 0 for a name.
    #[serde(default)]
    pub source_npi: Option<u8>,
    /// The recipients' type of number; default 1 (international, as E.164 is).
    #[serde(default = "international")]
    pub dest_ton: u8,
    /// The recipients' numbering plan; default 1 (ISDN/E.164).
    #[serde(default = "international")]
    pub dest_npi: u8,
    /// Connections bound at once; default 1. Submits are spread over them.
    #[serde(default = "one")]
    pub binds: u32,
    /// Submits outstanding on one bind before the next waits; default 10.
    #[serde(default = "default_window")]
    pub window: u32,
    /// How long a submit waits for its answer, in ms; default the send timeout.
    #[serde(default)]
    pub submit_timeout_ms: Option<u64>,
    /// How often an idle bind is checked with `enquire_link`, in ms; default 30 s.
    #[serde(default = "default_enquire_link")]
    pub enquire_link_interval_ms: u64,
    /// Pack GSM 7-bit text (8 characters in 7 octets); by default one character
    /// an octet, as most SMSCs take it.
    #[serde(default)]
    pub gsm7_packed: bool,
    /// How a long message's segments are tied together: `udh` (a header in each
    /// segment, the default) or `sar` (the `sar_*` TLVs).
    #[serde(default)]
    pub long_messages: LongMessages,
    /// Ask for a delivery receipt with each segment; default true.
    #[serde(default = "yes")]
    pub registered_delivery: bool,
}

impl SmppConfig {
    /// The account `system_id`/`password` at `host:port`, sending as
    /// `source_addr`, every other key at its default.
    pub fn new(
        host: &str,
        port: u16,
        system_id: &str,
        password: Secret,
        source_addr: &str,
    ) -> SmppConfig {
        SmppConfig {
            host: host.into(),
            port,
            tls: false,
            ca_file: None,
            system_id: system_id.into(),
            password,
            system_type: String::new(),
            bind: BindMode::default(),
            address_range: String::new(),
            source_addr: source_addr.into(),
            source_ton: None,
            source_npi: None,
            dest_ton: international(),
            dest_npi: international(),
            binds: one(),
            window: default_window(),
            submit_timeout_ms: None,
            enquire_link_interval_ms: default_enquire_link(),
            gsm7_packed: false,
            long_messages: LongMessages::default(),
            registered_delivery: yes(),
        }
    }
}

/// How a session binds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindMode {
    #[default]
    Transceiver,
    Transmitter,
}

/// How a long message's segments are tied together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongMessages {
    /// A 6-octet user data header (8-bit reference) in each segment.
    #[default]
    Udh,
    /// The `sar_msg_ref_num`, `sar_total_segments` and `sar_segment_seqnum` TLVs.
    Sar,
}

fn default_port() -> u16 {
    2775
}
fn international() -> u8 {
    1
}
fn one() -> u32 {
    1
}
fn default_window() -> u32 {
    10
}
fn default_enquire_link() -> u64 {
    30_000
}
fn yes() -> bool {
    true
}

/// A checked [`SmppConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub host: String,
    pub port: u16,
    /// How the connection speaks TLS, when it does: the roots it trusts.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub system_id: String,
    pub password: Secret,
    pub system_type: String,
    pub bind: BindMode,
    pub address_range: String,
    pub source: Address,
    pub dest_ton: u8,
    pub dest_npi: u8,
    pub binds: usize,
    pub window: usize,
    pub submit_timeout: Duration,
    /// How long a send waits for a bind to come up: half the submit or send
    /// timeout, whichever is shorter, so that it says it found no bind before
    /// the worker gives the send up as of unknown outcome.
    pub bind_wait: Duration,
    pub enquire_link_interval: Duration,
    pub gsm7_packed: bool,
    pub long_messages: LongMessages,
    pub registered_delivery: bool,
}

/// An address with its type of number and numbering plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    pub ton: u8,
    pub npi: u8,
    pub addr: String,
}

impl Settings {
    /// Checks `config`; `send_timeout` is the default submit timeout. The error
    /// names the key at fault.
    pub fn new(config: &SmppConfig, send_timeout: Duration) -> Result<Settings, String> {
        if config.host.trim().is_empty() {
            return Err("host must not be empty".into());
        }
        for (key, value, max) in [
            ("system_id", config.system_id.as_str(), 15),
            ("password", config.password.expose(), 8),
            ("system_type", config.system_type.as_str(), 12),
            ("address_range", config.address_range.as_str(), 40),
        ] {
            if value.len() > max || !value.is_ascii() {
                return Err(format!("{key} must be at most {max} ASCII characters"));
            }
        }
        if config.system_id.is_empty() {
            return Err("system_id must not be empty".into());
        }
        if !(1..=64).contains(&config.binds) {
            return Err(format!("binds must be 1 to 64, not {}", config.binds));
        }
        if !(1..=10_000).contains(&config.window) {
            return Err(format!("window must be 1 to 10000, not {}", config.window));
        }
        if config.enquire_link_interval_ms < 100 {
            return Err("enquire_link_interval_ms must be at least 100".into());
        }
        let submit_timeout = match config.submit_timeout_ms {
            Some(0) => return Err("submit_timeout_ms must be more than 0".into()),
            Some(ms) => Duration::from_millis(ms),
            None => send_timeout,
        };
        Ok(Settings {
            host: config.host.trim().to_string(),
            port: config.port,
            tls: tls_config(config)?,
            system_id: config.system_id.clone(),
            password: config.password.clone(),
            system_type: config.system_type.clone(),
            bind: config.bind,
            address_range: config.address_range.clone(),
            source: source_address(config)?,
            dest_ton: config.dest_ton,
            dest_npi: config.dest_npi,
            binds: config.binds as usize,
            window: config.window as usize,
            submit_timeout,
            bind_wait: submit_timeout.min(send_timeout) / 2,
            enquire_link_interval: Duration::from_millis(config.enquire_link_interval_ms),
            gsm7_packed: config.gsm7_packed,
            long_messages: config.long_messages,
            registered_delivery: config.registered_delivery,
        })
    }
}

/// The TLS client of `config`, when it asks for TLS: the system's roots and
/// those of `ca_file`, read now so that a bad file stops the start.
fn tls_config(config: &SmppConfig) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    if !config.tls {
        return match &config.ca_file {
            Some(_) => Err("ca_file needs tls = true".into()),
            None => Ok(None),
        };
    }
    let mut roots = Vec::new();
    if let Some(path) = &config.ca_file {
        let unreadable = |e: &dyn std::fmt::Display| {
            format!("ca_file {} is not a readable PEM file: {e}", path.display())
        };
        let pem = std::fs::read(path).map_err(|e| unreadable(&e))?;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            roots.push(certificate.map_err(|e| unreadable(&e))?);
        }
        if roots.is_empty() {
            return Err(format!(
                "ca_file {} holds no PEM certificate",
                path.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider.clone())
            .map_err(|e| format!("TLS cannot be set up: {e}"))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS cannot be set up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Some(Arc::new(client)))
}

/// The sender as submitted: `+` is dropped from a number, and TON/NPI follow from
/// its form unless configured.
fn source_address(config: &SmppConfig) -> Result<Address, String> {
    let raw = config.source_addr.trim();
    let (digits, plus) = match raw.strip_prefix('+') {
        Some(rest) => (rest, true),
        None => (raw, false),
    };
    let numeric = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if raw.is_empty() || !raw.is_ascii() || (plus && !numeric) {
        return Err(format!(
            "source_addr `{raw}` must be a number (+ and digits) or an ASCII sender name"
        ));
    }
    let (addr, max) = if numeric { (digits, 20) } else { (raw, 11) };
    if addr.len() > max {
        return Err(format!(
            "source_addr `{raw}` is longer than {max} characters"
        ));
    }
    let (ton, npi) = match (numeric, plus) {
        (true, true) => (1, 1),
        (true, false) => (0, 1),
        (false, _) => (5, 0),
    };
    Ok(Address {
        ton: config.source_ton.unwrap_or(ton),
        npi: config.source_npi.unwrap_or(npi),
        addr: addr.to_string(),
    })
}
