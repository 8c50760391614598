//! The command line. `herald serve` (and `api`, `worker`) runs the service, which
//! `main` starts; the other commands are clients of a running server:
//!
//! - `send`: `herald send` submits a CSV of recipients through the API and prints
//!   the report; with `--wait` it follows the batch to its end (`watch`).
//! - `batch`: `herald status` shows a batch, `herald batches` lists them,
//!   `herald retry`, `cancel`, `pause` and `resume` control one.
//! - `server`: the server to talk to (`--server`, `--token`) and the exchange
//!   with it.
//!
//! `herald token` makes an API token.

mod batch;
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
    Send(SendArgs),
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
    /// Release a paused batch.
    Resume(ControlArgs),
    /// Make a new API token: prints the token, for clients, and its hash, for the
    /// server's `[auth] tokens` (with `--name`, the `[[auth.tokens]]` entry).
    Token(TokenArgs),
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
        Command::Send(args) => send::send(args).await,
        Command::Status(args) => batch::status(args).await,
        Command::Batches(args) => batch::batches(args).await,
        Command::Retry(args) => batch::retry(args).await,
        Command::Cancel(args) => batch::control(args, "cancel").await,
        Command::Pause(args) => batch::control(args, "pause").await,
        Command::Resume(args) => batch::control(args, "resume").await,
        Command::Token(args) => token(args),
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
