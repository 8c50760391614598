//! `herald status`, `herald batches`, and `retry`, `cancel`, `pause` and
//! `resume`: a batch, or a page of them, as the server shows it.

use std::process::ExitCode;

use anyhow::Context;

use super::server::{ServerArg, call, call_with};
use super::{BatchesArgs, ControlArgs, RetryArgs, StatusArgs};
use crate::api::{BatchPage, BatchView};
use crate::domain::BatchId;

pub(super) async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let path = format!(
        "/v1/batches/{}",
        resolve(&args.server, &args.batch_id).await?
    );
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
pub(super) async fn control(args: ControlArgs, action: &str) -> anyhow::Result<ExitCode> {
    let id = resolve(&args.server, &args.batch_id).await?;
    let path = format!("/v1/batches/{id}/{action}");
    let Some(body) = call(&args.server, reqwest::Method::POST, &path).await? else {
        return Ok(ExitCode::FAILURE);
    };
    print_batch(&serde_json::from_str(&body).context("the server's answer is not a batch")?);
    Ok(ExitCode::SUCCESS)
}

/// `POST /v1/batches/{id}/resume`, with the raised spend cap when asked for, then
/// the batch.
pub(super) async fn resume(args: crate::cli::ResumeArgs) -> anyhow::Result<ExitCode> {
    let id = resolve(&args.server, &args.batch_id).await?;
    let path = format!("/v1/batches/{id}/resume");
    let body = args
        .max_cost
        .map(|max_cost| serde_json::json!({ "max_cost": max_cost }));
    let Some(answer) = call_with(&args.server, reqwest::Method::POST, &path, body.as_ref()).await?
    else {
        return Ok(ExitCode::FAILURE);
    };
    print_batch(&serde_json::from_str(&answer).context("the server's answer is not a batch")?);
    Ok(ExitCode::SUCCESS)
}

/// `POST /v1/batches/{id}/retry` with the deadline asked for, then the batch.
pub(super) async fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let id = resolve(&args.server, &args.batch_id).await?;
    let path = format!("/v1/batches/{id}/retry");
    let mut body = serde_json::Map::new();
    if let Some(at) = args.deadline.expires_at {
        body.insert("expires_at".into(), at.into());
    }
    if let Some(secs) = args.deadline.valid_for {
        body.insert("valid_for".into(), secs.into());
    }
    let body = serde_json::Value::Object(body);
    let Some(answer) = call_with(&args.server, reqwest::Method::POST, &path, Some(&body)).await?
    else {
        return Ok(ExitCode::FAILURE);
    };
    print_batch(&serde_json::from_str(&answer).context("the server's answer is not a batch")?);
    Ok(ExitCode::SUCCESS)
}

/// The fewest characters of an id that name a batch, as git takes a commit's.
const MIN_PREFIX: usize = 8;

/// The whole id of the batch `id` names: the id itself, or a unique prefix of at
/// least [`MIN_PREFIX`] characters (`01a2b3c4…` as Herald prints ids short, the
/// ellipsis optional), looked up in the server's listing.
pub(super) async fn resolve(server: &ServerArg, id: &str) -> anyhow::Result<String> {
    if BatchId::parse(id).is_some() {
        return Ok(id.to_owned());
    }
    let prefix = id.trim_end_matches(['…', '.']).to_ascii_lowercase();
    let Some(before) = highest_with_prefix(&prefix) else {
        anyhow::bail!(
            "`{id}` is not a batch id, nor the first {MIN_PREFIX} or more characters of one"
        );
    };
    // Ids are listed in descending order from `before`: those with the prefix come
    // first, and two are enough to know it is ambiguous.
    let path = format!("/v1/batches?limit=2&before={before}");
    let Some(body) = call(server, reqwest::Method::GET, &path).await? else {
        anyhow::bail!("cannot look up the batch `{id}` names");
    };
    let page: BatchPage =
        serde_json::from_str(&body).context("the server's answer is not a page of batches")?;
    let found: Vec<&str> = page
        .batches
        .iter()
        .map(|b| b.id.as_str())
        .filter(|b| b.starts_with(&prefix))
        .collect();
    match found[..] {
        [one] => Ok(one.to_owned()),
        [] => anyhow::bail!("no batch id starts with `{prefix}`"),
        _ => anyhow::bail!(
            "`{prefix}` starts more than one batch id ({}, …): give more of it",
            found.join(", ")
        ),
    }
}

/// The highest id that starts with `prefix`, when `prefix` can start an id (in
/// the hyphenated form, at least [`MIN_PREFIX`] characters): the prefix, then `f`s.
fn highest_with_prefix(prefix: &str) -> Option<String> {
    const HIGHEST: &str = "ffffffff-ffff-ffff-ffff-ffffffffffff";
    let fits = prefix.len() >= MIN_PREFIX
        && prefix.len() <= HIGHEST.len()
        && prefix.chars().zip(HIGHEST.chars()).all(|(c, at)| match at {
            '-' => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    // `before` is exclusive: it leaves out only the prefix followed by nothing but
    // `f`s, which a UUIDv7's random tail is not in practice.
    fits.then(|| format!("{prefix}{}", &HIGHEST[prefix.len()..]))
}

pub(super) async fn batches(args: BatchesArgs) -> anyhow::Result<ExitCode> {
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
            "ID", "CREATED", "CHANNEL", "STATE", "TOTAL", "SENT", "FAILED", "EXPIRED", "PENDING",
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
            c.expired.to_string(),
            (c.pending + c.sending + c.paused + c.held).to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..9)
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
fn print_batch(batch: &BatchView) {
    let c = &batch.counts;
    println!(
        "batch {}  {}  {} (from {})",
        batch.id, batch.channel, batch.state, batch.source
    );
    println!(
        "  total {}  pending {}  sending {}  sent {}  failed {}  expired {}  cancelled {}  paused {}",
        c.total, c.pending, c.sending, c.sent, c.failed, c.expired, c.cancelled, c.paused
    );
    if let Some(at) = &batch.expires_at {
        println!("  not sent after {at}");
    }
    if let Some(cap) = batch.max_cost {
        println!(
            "  spent {} of its cap of {cap}  held {}",
            batch.spent, c.held
        );
    }
    // Only once receipts or unknown outcomes make them matter.
    if c.delivered + c.undelivered + c.unknown > 0 {
        println!(
            "  delivered {}  undelivered {}  unknown {}",
            c.delivered, c.undelivered, c.unknown
        );
    }
}
