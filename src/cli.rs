//! The command line: `herald serve` runs the service; `herald send` submits a CSV of
//! recipients through the API and prints the report (with `--wait`, follows the
//! batch to its end: `watch`); `herald status` shows a batch, `herald batches` lists
//! them, `herald retry`, `cancel`, `pause` and `resume` control one; `herald token`
//! makes an API token.

mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::api::BatchView;
use crate::csv_input;
use crate::domain::Channel;
use crate::intake::{BatchRequest, RecipientSpec, Report, TemplateSpec};
use crate::telemetry::LogFormat;

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
    /// Send a batch's failed messages again.
    Retry(ControlArgs),
    /// Stop a batch: its unsent messages are not sent.
    Cancel(ControlArgs),
    /// Hold a batch's unsent messages.
    Pause(ControlArgs),
    /// Release a paused batch.
    Resume(ControlArgs),
    /// Make a new API token: prints the token, for clients, and its hash, for the
    /// server's `[auth] tokens`.
    Token,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [config: listen; default 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Store directory (or sqlite://DIR) [config: store; default ./herald-data].
    #[arg(long)]
    pub store: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServerArg {
    /// The Herald server to talk to.
    #[arg(long, env = "HERALD_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The API token, for a server with `[auth] tokens`.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArg {
    /// A request to `path` on the server, with the token when there is one.
    fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> (reqwest::RequestBuilder, String) {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let mut request = client.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        (request, url)
    }
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
    /// Provider name [default: the channel's default].
    #[arg(long)]
    pub provider: Option<String>,
    /// -100 (last) to 100 (first).
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i32>,
    /// Send not before this RFC 3339 time.
    #[arg(long)]
    pub send_at: Option<String>,
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
    pub batch_id: String,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
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

/// Recipients read from a CSV, with the line each came from (for messages).
pub struct CsvRecipients {
    pub recipients: Vec<RecipientSpec>,
    pub lines: Vec<u64>,
}

/// Reads recipients from CSV: a header row with `to`, optionally `ref`, and one
/// column per template variable. Errors name the file and line.
pub fn read_csv(path: &Path, encoding: Option<&str>) -> anyhow::Result<CsvRecipients> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot open {}", path.display()))?;
    let text = csv_input::decode(&bytes, encoding)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    parse_csv(text.as_bytes(), &path.display().to_string())
}

fn parse_csv(text: &[u8], name: &str) -> anyhow::Result<CsvRecipients> {
    let text = csv_input::without_bom(text);
    let mut lines = csv_input::Lines::new(text);
    let mut reader = csv_input::with_header(text);
    let headers = reader
        .headers()
        .map_err(|e| anyhow::anyhow!("{name} line 1: {}", describe_csv_error(&e)))?
        .clone();
    let columns = csv_input::RecipientColumns::from_header(&headers)
        .map_err(|e| anyhow::anyhow!("{name} line 1: {e}"))?;
    let mut out = CsvRecipients {
        recipients: Vec::new(),
        lines: Vec::new(),
    };
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            anyhow::anyhow!("{name} line {line}: {}", describe_csv_error(&e))
        })?;
        if csv_input::is_blank(&record) {
            continue;
        }
        let line = lines.of(&record);
        let recipient = columns
            .recipient(&record)
            .map_err(|e| anyhow::anyhow!("{name} line {line}: {e}"))?;
        out.recipients.push(recipient);
        out.lines.push(line);
    }
    if out.recipients.is_empty() {
        bail!("{name}: no recipients below the header row");
    }
    Ok(out)
}

fn describe_csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8; save the file as UTF-8".into(),
        _ => e.to_string(),
    }
}

/// Runs a client command against a Herald server.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) | Command::Api(_) | Command::Worker(_) => {
            unreachable!("serve, api and worker are handled by main")
        }
        Command::Send(args) => send(args).await,
        Command::Status(args) => status(args).await,
        Command::Batches(args) => batches(args).await,
        Command::Retry(args) => control(args, "retry").await,
        Command::Cancel(args) => control(args, "cancel").await,
        Command::Pause(args) => control(args, "pause").await,
        Command::Resume(args) => control(args, "resume").await,
        Command::Token => token(),
    }
}

fn token() -> anyhow::Result<ExitCode> {
    let (token, hash) = crate::auth::new_token().context("reading the system's random numbers")?;
    println!("token: {token}");
    println!("hash:  {hash}");
    eprintln!(
        "Add the hash to the server's configuration, under [auth]: tokens = [\"{hash}\"], \
         and give the token to its clients (Authorization: Bearer <token>; herald's commands take \
         --token or HERALD_TOKEN). The token is shown only now; the server keeps only its hash."
    );
    Ok(ExitCode::SUCCESS)
}

fn client() -> anyhow::Result<reqwest::Client> {
    crate::provider::http_client(Duration::from_secs(300)).map_err(anyhow::Error::msg)
}

/// Sends `request` to `url`; the answer's status and body.
async fn exchange(
    request: reqwest::RequestBuilder,
    url: &str,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .context("reading the server's answer")?;
    Ok((status, body))
}

/// The server's error message, from its JSON body when it has one.
fn server_error(status: reqwest::StatusCode, body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => {
            let message = v["message"].as_str().unwrap_or(body).to_string();
            match v["field"].as_str() {
                Some(field) if !message.starts_with(field) => {
                    format!("{message} (field `{field}`)")
                }
                _ => message,
            }
        }
        Err(_) => format!("HTTP {status}: {body}"),
    }
}

async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let csv = read_csv(&args.csv, args.encoding.as_deref())?;
    let options = BatchRequest {
        channel: args.channel,
        template: args.template.map(|body| TemplateSpec {
            body,
            subject: args.subject,
            stored_id: None,
        }),
        template_id: args.template_id,
        recipients: Vec::new(),
        provider: args.provider,
        priority: args.priority,
        send_at: args.send_at,
        reject_recent_duplicates: args.reject_recent_duplicates,
    };
    let bar = upload_bar(csv.recipients.len() as u64);
    let (digest, body) = ndjson_upload(&options, csv.recipients, bar.clone())?;
    let (post, url) = args
        .server
        .request(&client()?, reqwest::Method::POST, "/v1/batches");
    let mut post = post
        .header("content-type", "application/x-ndjson")
        .header("content-digest", digest)
        .body(body);
    if let Some(key) = &args.idempotency_key {
        post = post.header("idempotency-key", key);
    }
    let answer = exchange(post, &url).await;
    bar.finish_and_clear();
    let (status, body) = answer?;
    let line_of = |index: usize| csv.lines.get(index).copied().unwrap_or(0);
    if !status.is_success() {
        eprintln!(
            "herald: the batch was not accepted: {}",
            server_error(status, &body)
        );
        if let Ok(v) = serde_json::from_str::<Value>(&body)
            && let Ok(rejected) =
                serde_json::from_value::<Vec<crate::intake::Rejection>>(v["rejected"].clone())
        {
            print_rejections(&args.csv, &rejected, line_of);
        }
        return Ok(ExitCode::FAILURE);
    }
    let report: Report =
        serde_json::from_str(&body).context("the server's answer is not a report")?;
    let batch_id = report.batch_id.as_deref().unwrap_or("(none)");
    println!(
        "batch {batch_id} accepted: {} of {} recipients queued",
        report.accepted,
        report.accepted + report.rejected.len()
    );
    print_rejections(&args.csv, &report.rejected, line_of);
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let finished = watch::wait(&args.server, batch_id).await?;
    let count = |state: &str| finished.batch["counts"][state].as_u64().unwrap_or(0);
    // Receipts that came in while the batch went out are named once there are any.
    let receipts = match (count("delivered"), count("undelivered")) {
        (0, 0) => String::new(),
        (delivered, undelivered) => {
            format!(" ({delivered} delivered, {undelivered} undelivered of them)")
        }
    };
    println!(
        "batch {batch_id} {}: {} sent{receipts}, {} failed, {} cancelled of {}",
        finished.batch["state"].as_str().unwrap_or("finished"),
        watch::sent(&finished.batch["counts"]),
        count("failed"),
        count("cancelled"),
        count("total")
    );
    if finished.failed() > 0 {
        // `retry` requeues failed messages only: an undelivered one reached the
        // provider, which gave up on it.
        let again = match count("failed") {
            0 => String::new(),
            failed => format!("; `herald retry {batch_id}` sends the {failed} failed again"),
        };
        eprintln!(
            "herald: {} messages were not delivered{again}",
            finished.failed()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Recipients sent in one piece of the upload body.
const UPLOAD_PIECE: usize = 1_000;

/// A progress bar of recipients sent, on standard error when it is a terminal.
fn upload_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} recipients sent ({per_sec}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// The batch as an NDJSON upload — the options line, then one recipient per line —
/// and its `Content-Digest` (which makes an idempotency key stand for these
/// recipients). The body is made piece by piece as the server reads it, ticking
/// `bar`; the digest is taken in a first pass over the same pieces.
fn ndjson_upload(
    options: &BatchRequest,
    recipients: Vec<RecipientSpec>,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<(String, reqwest::Body)> {
    use base64::Engine;
    use sha2::{Digest, Sha256};

    let mut head = serde_json::to_vec(options).context("encoding the batch's options")?;
    head.push(b'\n');
    let mut hash = Sha256::new();
    hash.update(&head);
    for piece in recipients.chunks(UPLOAD_PIECE) {
        hash.update(ndjson_lines(piece));
    }
    let digest = format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(hash.finalize())
    );
    let mut rest = recipients.into_iter();
    let pieces = std::iter::from_fn(move || {
        let piece: Vec<RecipientSpec> = rest.by_ref().take(UPLOAD_PIECE).collect();
        if piece.is_empty() {
            bar.set_message("the server is storing the batch…");
            return None;
        }
        bar.inc(piece.len() as u64);
        Some(Ok::<_, std::io::Error>(ndjson_lines(&piece)))
    });
    let body = std::iter::once(Ok(head)).chain(pieces);
    Ok((
        digest,
        reqwest::Body::wrap_stream(futures_util::stream::iter(body)),
    ))
}

/// Recipients as NDJSON lines.
fn ndjson_lines(recipients: &[RecipientSpec]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(recipients.len() * 64);
    for recipient in recipients {
        // A recipient of strings and JSON values always encodes.
        if serde_json::to_writer(&mut bytes, recipient).is_ok() {
            bytes.push(b'\n');
        }
    }
    bytes
}

fn print_rejections(
    csv: &Path,
    rejected: &[crate::intake::Rejection],
    line_of: impl Fn(usize) -> u64,
) {
    for r in rejected {
        println!(
            "  {} line {} ({}): {}: {}",
            csv.display(),
            line_of(r.index),
            r.to,
            r.reason,
            r.detail
        );
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/batches/{}", args.batch_id);
    let Some(body) = call(&args.server, reqwest::Method::GET, &path).await? else {
        return Ok(ExitCode::FAILURE);
    };
    if args.json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    print_batch(&serde_json::from_str(&body).context("the server's answer is not a batch")?);
    Ok(ExitCode::SUCCESS)
}

/// `POST /v1/batches/{id}/{action}`, then the batch as it is now.
async fn control(args: ControlArgs, action: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/batches/{}/{action}", args.batch_id);
    let Some(body) = call(&args.server, reqwest::Method::POST, &path).await? else {
        return Ok(ExitCode::FAILURE);
    };
    print_batch(&serde_json::from_str(&body).context("the server's answer is not a batch")?);
    Ok(ExitCode::SUCCESS)
}

async fn batches(args: BatchesArgs) -> anyhow::Result<ExitCode> {
    let mut path = format!("/v1/batches?limit={}", args.limit);
    if let Some(before) = &args.before {
        path.push_str(&format!("&before={before}"));
    }
    let Some(body) = call(&args.server, reqwest::Method::GET, &path).await? else {
        return Ok(ExitCode::FAILURE);
    };
    if args.json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let page: crate::api::BatchPage =
        serde_json::from_str(&body).context("the server's answer is not a page of batches")?;
    print!("{}", batch_table(&page.batches));
    if let Some(next) = page.next_before {
        println!("next page: herald batches --before {next}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The batches as a table, one line each, columns aligned.
fn batch_table(batches: &[BatchView]) -> String {
    let mut rows = vec![
        [
            "ID", "CREATED", "CHANNEL", "STATE", "TOTAL", "SENT", "FAILED", "PENDING",
        ]
        .map(String::from),
    ];
    for b in batches {
        let c = &b.counts;
        rows.push([
            b.id.clone(),
            b.created_at.clone(),
            b.channel.clone(),
            b.state.clone(),
            c.total.to_string(),
            c.sent.to_string(),
            c.failed.to_string(),
            (c.pending + c.sending + c.paused).to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut table = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &width))| {
                // Counts line up on the right, words on the left.
                if i >= 4 {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}

/// Calls `path` on the server: the answer's body when it succeeded; `None`
/// (with the server's message printed) when it did not.
async fn call(
    server: &ServerArg,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<Option<String>> {
    let (request, url) = server.request(&client()?, method, path);
    let (status, body) = exchange(request, &url).await?;
    if !status.is_success() {
        eprintln!("herald: {}", server_error(status, &body));
        return Ok(None);
    }
    Ok(Some(body))
}

fn print_batch(batch: &BatchView) {
    let c = &batch.counts;
    println!(
        "batch {}  {}  {} (from {})",
        batch.id, batch.channel, batch.state, batch.source
    );
    println!(
        "  total {}  pending {}  sending {}  sent {}  failed {}  cancelled {}  paused {}",
        c.total, c.pending, c.sending, c.sent, c.failed, c.cancelled, c.paused
    );
    // Only once receipts or unknown outcomes make them matter.
    if c.delivered + c.undelivered + c.unknown > 0 {
        println!(
            "  delivered {}  undelivered {}  unknown {}",
            c.delivered, c.undelivered, c.unknown
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_become_to_ref_and_variables() {
        let csv = "\u{feff}to,ref,name\n+8613800000001,o-1,Li\n+8613800000002,,Wang\n";
        let r = parse_csv(csv.as_bytes(), "r.csv").unwrap();
        assert_eq!(r.recipients.len(), 2);
        assert_eq!(r.recipients[0].reference.as_deref(), Some("o-1"));
        assert_eq!(r.recipients[1].reference, None);
        assert_eq!(r.recipients[1].vars.to_map()["name"], "Wang");
        assert!(!r.recipients[0].vars.to_map().contains_key("ref"));
        assert_eq!(r.lines, [2, 3]);
    }

    #[test]
    fn a_short_row_is_reported_with_its_line() {
        let csv = "to,name\n+8613800000001,Li\n+8613800000002\n";
        let err = parse_csv(csv.as_bytes(), "r.csv")
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("r.csv line 3: expected 2 fields"), "{err}");
    }

    #[test]
    fn an_empty_to_and_a_missing_to_column_are_reported() {
        let err = parse_csv("to,name\n,Li\n".as_bytes(), "r.csv")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(err, "r.csv line 2: the `to` column is empty");
        let err = parse_csv("phone,name\n1,Li\n".as_bytes(), "r.csv")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("r.csv line 1: the header row has no `to` column"),
            "{err}"
        );
    }

    #[test]
    fn invalid_utf8_is_reported_with_its_line() {
        let err = parse_csv(&b"to,name\n1380000001,\xc0\xc1\n"[..], "r.csv")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("line 2") && err.contains("UTF-8"), "{err}");
    }
}
