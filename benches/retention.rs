//! The retention benchmark: what pruning a million old messages costs the rest
//! of Herald. One in-process herald (API and workers, the `log` provider) on a
//! fresh store; a million messages in finished batches are stored and cancelled
//! (the old ledger), then two phases of equal length run: one while a pruning
//! pass (default pace: 2,000 rows a step, 20 ms between steps) removes the old
//! ledger, one without. In each, a client submits 10-recipient batches over HTTP
//! one after another (their latencies give the p50/p99 of `POST /v1/batches`) and
//! the workers send a backlog of pending messages (their rate is the delivery
//! rate). Prints a markdown table.
//!
//! `BENCH_STORE` picks the engine as `benches/delivery.rs` does (`sqlite`,
//! `postgres`, `redis` or a server URL); `BENCH_OLD` the old messages (default
//! 1,000,000), `BENCH_BACKLOG` the pending ones per phase (default 200,000). Run
//! it with `cargo bench --bench retention`. Under `cargo test` (no `--bench`) it is a
//! smoke run of a few thousand messages that proves the harness and prints no
//! numbers: it fails unless the pass removed every old message.

// Only its percentiles are used here.
#[allow(dead_code)]
#[path = "delivery/stats.rs"]
mod stats;
#[path = "../tests/e2e/store.rs"]
mod store;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use herald::config::Config;
use herald::domain::{BatchId, Channel, StoreUrl, now_ms};
use herald::queue::{Accepted, BatchAction, Cutoffs, NewBatch, NewMessage, Pace, Queue};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use stats::{ms, percentile, thousands};
use store::Engine;

/// Messages per stored batch of the old ledger and of a backlog.
const CHUNK: u32 = 100_000;
/// Recipients of each measured submit.
const SUBMIT_RECIPIENTS: usize = 10;

fn env_number(name: &str, default: u32) -> anyhow::Result<u32> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().with_context(|| format!("{name}={v}: a number")))
        .transpose()
        .map(|n| n.unwrap_or(default))
}

/// A batch of `n` SMS messages for `provider`, numbered from `first`.
fn batch(n: u32, provider: &str, first: u32) -> NewBatch {
    NewBatch {
        id: BatchId::new(),
        channel: Channel::Sms,
        source: "bench".into(),
        priority: 0,
        send_at_ms: now_ms(),
        expires_at_ms: None,
        idempotency: None,
        report: json!({"accepted": n}),
        template_id: None,
        template: None,
        callback_url: None,
        subscriptions: Vec::new(),
        window: None,
        max_cost: None,
        messages: (0..n)
            .map(|index| NewMessage {
                index,
                provider: provider.into(),
                to: format!("+86139{:08}", first + index),
                reference: None,
                subject: None,
                body: "Your code is 123456. It expires in 10 minutes.".into(),
                segments: 1,
                vars: None,
                due_ms: None,
            })
            .collect(),
    }
}

async fn accept(queue: &Queue, b: NewBatch) -> anyhow::Result<BatchId> {
    match queue.accept(b).await? {
        Accepted::New(id) => Ok(id),
        other => Err(anyhow!("expected a new batch, got {other:?}")),
    }
}

/// What one phase measured.
struct Phase {
    elapsed: Duration,
    submits: Vec<f64>,
    sent: u64,
    drained: bool,
}

/// Submits batches one after another until `stop`, timing each.
async fn submit_until(url: String, stop: CancellationToken) -> anyhow::Result<Vec<f64>> {
    let client = herald::provider::http_client(Duration::from_secs(30)).map_err(|e| anyhow!(e))?;
    let mut latencies = Vec::new();
    let mut n = 0_usize;
    while !stop.is_cancelled() {
        let recipients: Vec<_> = (0..SUBMIT_RECIPIENTS)
            .map(|i| json!({"to": format!("+86137{:08}", n * SUBMIT_RECIPIENTS + i)}))
            .collect();
        n += 1;
        let started = Instant::now();
        let response = client
            .post(format!("{url}/v1/batches"))
            .json(
                &json!({"channel": "sms", "template": {"body": "Hello"}, "recipients": recipients}),
            )
            .send()
            .await?;
        let status = response.status();
        let answer = response.bytes().await?;
        anyhow::ensure!(
            status == 202,
            "a submit answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        latencies.push(ms(started.elapsed()));
    }
    Ok(latencies)
}

/// One phase: a backlog sent while batches are submitted, for `length` or, when
/// pruning, until the pass ends.
async fn phase(
    url: &str,
    queue: &Queue,
    backlog: u32,
    prune_before: Option<i64>,
    length: Duration,
) -> anyhow::Result<(Phase, Option<herald::queue::Pruned>)> {
    let mut backlog_ids = Vec::new();
    for first in (0..backlog).step_by(CHUNK as usize) {
        backlog_ids.push(accept(queue, batch(CHUNK.min(backlog - first), "log", first)).await?);
    }
    let stop = CancellationToken::new();
    let submits = tokio::spawn(submit_until(url.to_owned(), stop.clone()));
    let started = Instant::now();
    let pruned = match prune_before {
        Some(before) => Some(
            queue
                .prune(
                    Cutoffs {
                        ledger_before_ms: Some(before),
                        audit_before_ms: None,
                    },
                    Pace::default(),
                    &CancellationToken::new(),
                )
                .await?,
        ),
        None => {
            tokio::time::sleep(length).await;
            None
        }
    };
    let elapsed = started.elapsed();
    stop.cancel();
    let submits = submits.await??;
    let mut sent = 0;
    let mut drained = true;
    for id in backlog_ids {
        let summary = queue.batch(id).await?.context("the backlog batch")?;
        sent += summary.counts.sent;
        drained &= summary.counts.pending == 0;
        queue.control(id, BatchAction::Cancel).await.ok();
    }
    Ok((
        Phase {
            elapsed,
            submits,
            sent,
            drained,
        },
        pruned,
    ))
}

fn row(name: &str, p: &Phase) -> String {
    format!(
        "| {name} | {:.1} s | {} | {:.1} ms | {:.1} ms | {} msg/s{} |",
        p.elapsed.as_secs_f64(),
        p.submits.len(),
        percentile(&p.submits, 50.0),
        percentile(&p.submits, 99.0),
        thousands(p.sent as f64 / p.elapsed.as_secs_f64()),
        if p.drained { " (backlog drained)" } else { "" },
    )
}

async fn run(smoke: bool) -> anyhow::Result<()> {
    let engine_name = std::env::var("BENCH_STORE").unwrap_or_else(|_| "sqlite".into());
    let engine = Engine::parse(&engine_name).map_err(|e| anyhow!(e))?;
    let (old, backlog) = if smoke {
        (4_000, 1_000)
    } else {
        (
            env_number("BENCH_OLD", 1_000_000)?,
            env_number("BENCH_BACKLOG", 200_000)?,
        )
    };
    let scratch = engine.scratch("retention").await.map_err(|e| anyhow!(e))?;
    let store: StoreUrl = scratch.url().parse().map_err(|e| anyhow!("{e}"))?;
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        store: store.clone(),
        ..Config::default()
    };
    // The bench drives the pass itself.
    config.retention.days = Some(0);
    config.audit.retention_days = 0;
    let running = herald::app::start(config).await?;
    let url = running.url().context("the API runs")?;
    let queue = Queue::open(&store).await?;

    let seeding = Instant::now();
    for first in (0..old).step_by(CHUNK as usize) {
        let id = accept(&queue, batch(CHUNK.min(old - first), "nobody", first)).await?;
        queue.control(id, BatchAction::Cancel).await?;
    }
    if !smoke {
        eprintln!(
            "stored and cancelled {} old messages in {:.1} s",
            thousands(f64::from(old)),
            seeding.elapsed().as_secs_f64()
        );
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let (pruning, pruned) = phase(&url, &queue, backlog, Some(before), Duration::ZERO).await?;
    let pruned = pruned.context("a pass ran")?;
    let (quiet, _) = phase(&url, &queue, backlog, None, pruning.elapsed).await?;
    if smoke {
        anyhow::ensure!(
            pruned.messages == u64::from(old),
            "the pass removed {} of the {old} old messages",
            pruned.messages
        );
        println!("retention bench: smoke run passed (`cargo bench --bench retention` measures)");
        running.shutdown();
        running.wait().await?;
        return Ok(());
    }
    println!(
        "Retention on {engine_name}: {} messages of {} batches pruned in {:.1} s ({} rows/s)\n",
        thousands(pruned.messages as f64),
        pruned.batches,
        pruning.elapsed.as_secs_f64(),
        thousands(pruned.messages as f64 / pruning.elapsed.as_secs_f64()),
    );
    println!("| phase | length | submits | submit p50 | submit p99 | delivery |");
    println!("|---|---|---|---|---|---|");
    println!("{}", row("while pruning", &pruning));
    println!("{}", row("without pruning", &quiet));
    running.shutdown();
    running.wait().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let smoke = !std::env::args().any(|a| a == "--bench");
    match run(smoke).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("retention bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
