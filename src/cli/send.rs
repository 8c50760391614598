//! `herald send`: reads a CSV of recipients, uploads them as NDJSON with a
//! progress bar, prints the report and, with `--wait`, follows the batch.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

use super::server::{client, exchange, server_error};
use super::{SendArgs, watch};
use crate::csv_input;
use crate::intake::{BatchRequest, RecipientSpec, Report, TemplateSpec};

/// Recipients read from a CSV, with the line each came from (for messages).
pub struct CsvRecipients {
    pub recipients: Vec<RecipientSpec>,
    pub lines: Vec<u64>,
}

/// Reads recipients from CSV: a header row with `to`, optionally `ref`, and one
/// column per template variable, read as the server reads a CSV upload (so a file
/// the server would refuse is refused here, with the same words). Errors name the
/// file and line.
pub fn read_csv(path: &Path, encoding: Option<&str>) -> anyhow::Result<CsvRecipients> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot open {}", path.display()))?;
    let encoding = encoding
        .map(csv_input::encoding)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    parse_csv(&bytes, encoding, &path.display().to_string())
}

fn parse_csv(
    bytes: &[u8],
    encoding: Option<&'static encoding_rs::Encoding>,
    name: &str,
) -> anyhow::Result<CsvRecipients> {
    let read = csv_input::recipients(bytes, encoding)
        .map_err(|(line, e)| anyhow::anyhow!("{name} line {line}: {e}"))?;
    if read.is_empty() {
        bail!("{name}: no recipients below the header row");
    }
    let (lines, recipients) = read.into_iter().unzip();
    Ok(CsvRecipients { recipients, lines })
}

pub(super) async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
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
        expires_at: args.deadline.expires_at,
        valid_for: args.deadline.valid_for,
        reject_recent_duplicates: args.reject_recent_duplicates,
        callback_url: args.callback_url,
        window: args.window,
        ignore_window: args.ignore_window,
        timezone: args.timezone,
        max_cost: args.max_cost,
    };
    let bar = upload_bar(
        csv.recipients.len() as u64,
        indicatif::ProgressDrawTarget::stderr(),
    );
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
    if let Some(window) = report.window.as_ref().filter(|w| w.waiting > 0) {
        let first = window.opens.first().map_or("", |o| o.at.as_str());
        println!(
            "{} wait for their sending window ({} in the recipient's time), the first at {first}",
            window.waiting, window.window
        );
    }
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
    // Messages not sent by the batch's deadline are named once there are any.
    let expired = match count("expired") {
        0 => String::new(),
        n => format!(", {n} expired"),
    };
    println!(
        "batch {batch_id} {}: {} sent{receipts}, {} failed{expired}, {} cancelled of {}",
        finished.batch["state"].as_str().unwrap_or("finished"),
        watch::sent(&finished.batch["counts"]),
        count("failed"),
        count("cancelled"),
        count("total")
    );
    if finished.failed() > 0 {
        // `retry` requeues failed and expired messages only: an undelivered one
        // reached the provider, which gave up on it.
        let again = match count("failed") + count("expired") {
            0 => String::new(),
            n => format!(
                "; `herald retry {batch_id}` sends the {n} failed or expired again (with --valid-for SECS for a fresh deadline)"
            ),
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

/// A progress bar of recipients uploaded, on `target` (standard error, drawn when
/// it is a terminal).
fn upload_bar(total: u64, target: indicatif::ProgressDrawTarget) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} recipients uploaded {msg}")
    {
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
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_become_to_ref_and_variables() {
        let csv = "\u{feff}to,ref,name\n+8613800000001,o-1,Li\n+8613800000002,,Wang\n";
        let r = parse_csv(csv.as_bytes(), None, "r.csv").unwrap();
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
        let err = parse_csv(csv.as_bytes(), None, "r.csv")
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("r.csv line 3: expected 2 fields"), "{err}");
    }

    #[test]
    fn an_empty_to_and_a_missing_to_column_are_reported() {
        let err = parse_csv("to,name\n,Li\n".as_bytes(), None, "r.csv")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(err, "r.csv line 2: the `to` column is empty");
        let err = parse_csv("phone,name\n1,Li\n".as_bytes(), None, "r.csv")
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
        let err = parse_csv(
            &b"to,name\n1380000001,\xc0\xc1\n"[..],
            Some(encoding_rs::UTF_8),
            "r.csv",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("line 2") && err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn an_unclosed_quote_is_refused_naming_its_line_as_the_server_does() {
        let err = parse_csv(b"to,name\n+8613800000001,\"Li\n", None, "r.csv")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "r.csv line 2: a quoted field is not closed by the end of the file"
        );
        let r = parse_csv(
            b"to,name\n\n+8613800000001,\"Li\nLei\"\n,\n+8613800000002,Wang\n",
            None,
            "r.csv",
        )
        .unwrap();
        assert_eq!(r.lines, [3, 6], "each recipient's line is where it begins");
        assert_eq!(r.recipients[0].vars.to_map()["name"], "Li\nLei");
    }

    #[test]
    fn the_upload_bar_says_uploaded_not_sent() {
        let screen = crate::cli::screen::Screen::default();
        let bar = upload_bar(300, screen.target());
        bar.set_position(120);
        bar.tick();
        let line = screen.line();
        assert!(line.contains("120/300 recipients uploaded"), "{line:?}");
        assert!(!line.contains("sent") && !line.contains("/s"), "{line:?}");
    }
}
