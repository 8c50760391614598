//! The command line. `herald serve` (and `api`, `worker`) runs the service, which
//! `main` starts; the other commands are clients of a running server:
//!
//! - `send`: `herald send` submits a CSV of recipients through the API and prints
//!   the report; with `--wait` it follows the batch to its end (`watch`).
//! - `batch`: `herald status` shows a batch, `herald batches` lists them,
//!   `herald retry`, `cancel`, `pause` and `resume` control one.
//! - `person`: `herald messages` finds messages across batches by address or
//!   ref, `herald erase` forgets a person; `export`: `herald export` writes a
//!   batch's ledger or a search's result as CSV.
//! - `server`: the server to talk to (`--server`, `--token`) and the exchange
//!   with it.
//!
//! `herald token` makes an API token.

mod batch;
mod export;
mod person;
#[cfg(test)]
mod screen;
mod send;
mod server;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::domain::Channel;
use crate::telemetry::LogFormat;

pub use self::send::{CsvRecipients, read_csv};
pub use self::server::ServerArg;
pub use self::watch::{EventReader, ServerEvent};

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Asynchronous bulk-messaging dispatcher"
)]
pub struct Cli {
    /// Configuration file [default: ./herald.toml if present].
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log lines as human-readable text or JSON.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "HERALD_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the delivery workers.
    Serve(ServeArgs),
    /// Run only the HTTP API (workers run elsewhere, on a shared store).
    Api(ServeArgs),
    /// Run only the delivery workers, against a shared store; no HTTP listener.
    Worker(ServeArgs),
    /// Submit a batch from a CSV file (header: to, optional ref, then variables).
    Send(Box<SendArgs>),
    /// Show a batch's state and counts.
    Status(StatusArgs),
    /// List the batches, newest first.
    Batches(BatchesArgs),
    /// Send a batch's failed and expired messages again, with a fresh deadline.
    Retry(RetryArgs),
    /// Stop a batch: its unsent messages are not sent.
    Cancel(ControlArgs),
    /// Hold a batch's unsent messages.
    Pause(ControlArgs),
    /// Release a paused batch, or one held at its spend cap (with a higher --max-cost).
    Resume(ResumeArgs),
    /// Make a new API token: prints the token, for clients, and its hash, for the
    /// server's `[auth] tokens` (with `--name`, the `[[auth.tokens]]` entry).
    Token(TokenArgs),
    /// Find the messages to an address or with a ref, across batches, newest first.
    Messages(MessagesArgs),
    /// Write a batch's ledger, or the messages to an address or with a ref, as CSV.
    Export(ExportArgs),
    /// Forget a person: cancel their queued messages, then replace their address by
    /// a hash in every message, reply and webhook event (the suppression list keeps it).
    Erase(EraseArgs),
}

/// Which messages to find: to an address and/or with a ref, narrowed.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// The recipient: a phone number or an e-mail address (or an `erased:…` value).
    #[arg(long)]
    pub to: Option<String>,
    /// The messages' ref.
    #[arg(long = "ref")]
    pub reference: Option<String>,
    /// Only messages in this state (sent, failed, cancelled, …).
    #[arg(long)]
    pub state: Option<String>,
    /// Only messages created at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only messages created before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("key").required(true).multiple(true).args(["to", "reference"]))]
pub struct MessagesArgs {
    #[command(flatten)]
    pub find: FindArgs,
    /// How many messages, 1 to 1000.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Only messages older than this position (the `next page` hint gives it).
    #[arg(long)]
    pub before: Option<i64>,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).multiple(true).args(["batch_id", "to", "reference"]))]
pub struct ExportArgs {
    /// The batch's id, or a start of it (8 or more characters) only it has.
    #[arg(conflicts_with_all = ["to", "reference", "since", "until"])]
    pub batch_id: Option<String>,
    #[command(flatten)]
    pub find: FindArgs,
    /// The file to write [default: standard output].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The person's phone number or e-mail address.
    pub address: String,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Who holds the token, as the audit trail names what it does (letters,
    /// digits, `.`, `-`, `_`).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [config: listen; default 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Store directory (or sqlite://DIR, postgres://…, redis://…) [config: store;
    /// default ./herald-data].
    #[arg(long)]
    pub store: Option<crate::domain::StoreUrl>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[arg(long, value_parser = parse_channel)]
    pub channel: Channel,
    /// The message template (minijinja), e.g. 'Hello {{name}}'.
    #[arg(
        long,
        required_unless_present = "template_id",
        conflicts_with = "template_id"
    )]
    pub template: Option<String>,
    /// A stored template's id, instead of --template.
    #[arg(long)]
    pub template_id: Option<String>,
    /// The subject template (e-mail).
    #[arg(long)]
    pub subject: Option<String>,
    /// CSV file with a header row: to, optional ref, then one column per variable.
    #[arg(long)]
    pub csv: PathBuf,
    /// The CSV's encoding (utf-8, gbk, gb18030, …) [default: UTF-8, else GB18030].
    #[arg(long)]
    pub encoding: Option<String>,
    /// Reject recipients sent the same message recently (recipients.recent_window_secs).
    #[arg(long)]
    pub reject_recent_duplicates: bool,
    /// An http(s) URL the batch's status events are posted to (the server needs
    /// webhook.callback_secret).
    #[arg(long)]
    pub callback_url: Option<String>,
    /// The most the batch may spend, in its provider's currency: refused when the
    /// estimate is over it; held when sending would pass it.
    #[arg(long)]
    pub max_cost: Option<f64>,
    /// The batch's sending window in each recipient's local time, e.g.
    /// '08:00-21:00' or 'mon-fri 09:00-18:00', instead of the configured one.
    #[arg(long, conflicts_with = "ignore_window")]
    pub window: Option<String>,
    /// Send at any hour, whatever window is configured (login codes and the like).
    #[arg(long)]
    pub ignore_window: bool,
    /// The IANA time zone of recipients without one of their own (e-mail, numbers of
    /// no known zone), e.g. 'Asia/Shanghai'.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Provider name [default: the channel's default].
    #[arg(long)]
    pub provider: Option<String>,
    /// -100 (last) to 100 (first).
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i32>,
    /// Send not before this RFC 3339 time.
    #[arg(long)]
    pub send_at: Option<String>,
    #[command(flatten)]
    pub deadline: DeadlineArgs,
    /// Makes a repeated submit return the first batch instead of a second one.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Follow the batch with a progress bar until it is finished; exit with 1 if
    /// any message failed.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Debug, Args)]
pub struct BatchesArgs {
    /// How many batches, 1 to 100.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Only batches older than this one (the `next page` hint gives it).
    #[arg(long)]
    pub before: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The batch's id, or a start of it (8 or more characters) only it has.
    pub batch_id: String,
    #[command(flatten)]
    pub server: ServerArg,
}

/// `herald resume ID [--max-cost N]`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The batch's id, or a start of it (8 or more characters) only it has.
    pub batch_id: String,
    /// Raise the batch's spend cap to this (in its provider's currency), putting
    /// the messages held at the cap back to send.
    #[arg(long)]
    pub max_cost: Option<f64>,
    #[command(flatten)]
    pub server: ServerArg,
}

/// A batch's deadline: messages not sent by then end `expired`. Neither: the
/// server's configured default.
#[derive(Debug, Args)]
pub struct DeadlineArgs {
    /// Not sent after this RFC 3339 time.
    #[arg(long, conflicts_with = "valid_for")]
    pub expires_at: Option<String>,
    /// Not sent after this many seconds from when the batch is due.
    #[arg(long)]
    pub valid_for: Option<i64>,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The batch's id, or a start of it (8 or more characters) only it has.
    pub batch_id: String,
    #[command(flatten)]
    pub deadline: DeadlineArgs,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The batch's id, or a start of it (8 or more characters) only it has.
    pub batch_id: String,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

fn parse_channel(s: &str) -> Result<Channel, String> {
    s.parse()
}

/// Runs a client command against a Herald server.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) | Command::Api(_) | Command::Worker(_) => {
            unreachable!("serve, api and worker are handled by main")
        }
        Command::Send(args) => send::send(*args).await,
        Command::Status(args) => batch::status(args).await,
        Command::Batches(args) => batch::batches(args).await,
        Command::Retry(args) => batch::retry(args).await,
        Command::Cancel(args) => batch::control(args, "cancel").await,
        Command::Pause(args) => batch::control(args, "pause").await,
        Command::Resume(args) => batch::resume(args).await,
        Command::Token(args) => token(args),
        Command::Messages(args) => person::messages(args).await,
        Command::Export(args) => export::export(args).await,
        Command::Erase(args) => person::erase(args).await,
    }
}

fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.name {
        crate::auth::check_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    }
    let (token, hash) = crate::auth::new_token().context("reading the system's random numbers")?;
    println!("token: {token}");
    println!("hash:  {hash}");
    if let Some(name) = args.name {
        println!();
        println!("[[auth.tokens]]");
        println!("name = \"{name}\"");
        println!("hash = \"{hash}\"");
        eprintln!(
            "Add the [[auth.tokens]] entry above to the server's configuration, and give the token to \
             its clients (Authorization: Bearer <token>; herald's commands take --token or HERALD_TOKEN). \
             The audit trail names what it does `{name}`. The token is shown only now; the server keeps \
             only its hash."
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "Add the hash to the server's configuration, under [auth]: tokens = [\"{hash}\"], \
         and give the token to its clients (Authorization: Bearer <token>; herald's commands take \
         --token or HERALD_TOKEN). The token is shown only now; the server keeps only its hash."
    );
    Ok(ExitCode::SUCCESS)
}
