//! The delivery benchmark: the real `herald serve` executable against a local
//! webhook provider, everything on 127.0.0.1. It measures end-to-end delivery
//! throughput (at herald's in-flight limit and at 50 in flight), the latency of a durable 10,000-recipient submit, the latency of a
//! 100,000-recipient submit that exercises every pre-flight check, and the herald
//! process's peak RSS, then prints a markdown report. Run it with
//! `cargo bench --bench delivery`; `docs/BENCHMARKS.md` explains the method.
//!
//! `BENCH_STORE` picks the queue engine: `sqlite` (the default), `postgres` or
//! `redis` (the servers the tests use: `HERALD_TEST_POSTGRES` / `HERALD_TEST_REDIS`,
//! by default on loopback), or a `postgres://` / `redis://` server URL. Each herald
//! process gets a fresh store: a temp directory, or a schema / key prefix of its
//! own that is dropped after it.
//!
//! `BENCH_ROUNDS`, `BENCH_MESSAGES`, `BENCH_SUBMITS` and `BENCH_BIG_SUBMITS` shrink
//! or grow the run (for profiling). `HERALD_…` variables in the environment reach the
//! herald child unless the bench sets them itself, and the report lists them, so
//! settings can be compared with e.g.
//! `HERALD_WORKER__MAX_IN_FLIGHT=512 cargo bench --bench delivery`.
//! `BENCH_HERALD` runs another build of herald instead of the one cargo built
//! beside the bench, so two revisions can be compared in one sitting.

// The crate root is `benches/delivery.rs`, so its modules would be looked for beside
// it; they live in `benches/delivery/` instead, out of the way of other benches.
#[path = "delivery/cpu.rs"]
mod cpu;
#[path = "common/env.rs"]
mod env;
#[path = "delivery/preflight.rs"]
mod preflight;
#[path = "delivery/process.rs"]
mod process;
#[path = "delivery/provider.rs"]
mod provider;
#[path = "delivery/receiver.rs"]
mod receiver;
#[path = "delivery/report.rs"]
mod report;
#[path = "delivery/request.rs"]
mod request;
#[path = "common/revision.rs"]
mod revision;
#[path = "delivery/stats.rs"]
mod stats;
#[path = "delivery/submit.rs"]
mod submit;
#[path = "delivery/throughput.rs"]
mod throughput;
#[path = "delivery/upload.rs"]
mod upload;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use axum::body::Bytes;
use env::env_usize;

#[path = "../tests/e2e/store.rs"]
mod store;

use preflight::{Preflight, preflight_phase};
use receiver::Receiver;
use report::{report, upload_report};
use request::batch_body;
use stats::{median, thousands};
use store::Engine;
use submit::submit_phase;
use throughput::throughput_round;
use upload::upload_phase;

/// The in-flight limit of the second throughput variant: a realistic
/// concurrency, where claims and settlements are small and many.
const SMALL_IN_FLIGHT: usize = 50;
/// Recipients in one submitted batch.
const BATCH_SIZE: usize = 10_000;
/// A throughput round that has not finished by then fails the bench.
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);
/// Each submit phase must finish within this.
const SUBMIT_PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long herald may take to answer `/healthz` after it is started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Submits made and thrown away before the timed ones (first-touch costs).
const SUBMIT_WARMUP: usize = 2;
/// Recipients in the pre-flight phase's batch, and in its smoke run.
const PREFLIGHT_SIZE: usize = 100_000;
const PREFLIGHT_SMOKE_SIZE: usize = 2_000;
/// Pre-flight submits made and thrown away before the timed ones.
const PREFLIGHT_WARMUP: usize = 1;
/// Recipients of the streamed uploads whose time and memory are measured.
const UPLOAD_SIZES: [usize; 2] = [100_000, 1_000_000];
const UPLOAD_SMOKE_SIZE: usize = 25_000;
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Numbers put on the suppression list before the pre-flight submits.
const SUPPRESSED: usize = 1_000;
/// The pre-flight provider's limit and prices, so the report estimates an ETA and a cost.
const PREFLIGHT_RATE: f64 = 500.0;
const PRICE_PER_MESSAGE: f64 = 0.01;
const PRICE_PER_SEGMENT: f64 = 0.04;
/// A round is flagged when the rest of the machine used more than this share of a
/// core meanwhile.
const DISTURBED: f64 = 0.1;
const TEMPLATE: &str = "Hello {{name}}, your code is {{code}}";
/// Chinese (UCS-2, 91 units: 2 segments) when `lang` is `zh`, else GSM-7 (99
/// septets: 1 segment), with a six-digit `name` number and `code` in each.
const PREFLIGHT_TEMPLATE: &str = "{% if lang == \"zh\" %}{{name}}您好：您的Herald验证码是{{code}}，\
    10分钟内有效。为保障账户安全，请勿将验证码告诉任何人（包括客服人员）；如非本人操作，\
    请忽略本短信，您的账户不会受到影响。{% else %}Hello {{name}}, your Herald code is {{code}}. \
    It expires in 10 minutes; never share it with anyone.{% endif %}";
/// Segments of one Chinese and of one GSM-7 message rendered from [`PREFLIGHT_TEMPLATE`].
const UCS2_SEGMENTS: usize = 2;
const GSM7_SEGMENTS: usize = 1;

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`. Without it (`cargo test --all-targets`) this is
    // a smoke run: one small round, proving the harness and the delivery it checks
    // still work, with no claim about speed (it is a debug build).
    let smoke = !std::env::args().any(|a| a == "--bench");
    if smoke {
        eprintln!(
            "delivery bench: smoke run (no --bench): one small round of a debug build, \
             to prove the harness; `cargo bench --bench delivery` measures \
             (with BENCH_STORE=postgres or redis for the server engines)."
        );
    }
    match run(smoke) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("delivery bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What this run does; fixed unless the `BENCH_…` variables change it.
struct Plan {
    /// `BENCH_STORE` as given, `None` when unset (SQLite).
    store: Option<String>,
    engine: Engine,
    rounds: usize,
    messages: usize,
    submits: usize,
    /// Timed pre-flight submits, and the recipients in each.
    big_submits: usize,
    preflight_size: usize,
    /// Recipients of each streamed upload (`BENCH_UPLOADS`, comma-separated).
    uploads: Vec<usize>,
}

impl Plan {
    /// The store the run uses: `BENCH_STORE`, SQLite by default.
    fn store_from_env() -> anyhow::Result<(Option<String>, Engine)> {
        let store = std::env::var("BENCH_STORE").ok();
        let engine = Engine::parse(store.as_deref().unwrap_or("sqlite"))
            .map_err(|e| anyhow::anyhow!("BENCH_STORE: {e}"))?;
        Ok((store, engine))
    }

    fn from_env() -> anyhow::Result<Plan> {
        let (store, engine) = Plan::store_from_env()?;
        let plan = Plan {
            store,
            engine,
            rounds: env_usize("BENCH_ROUNDS", 7)?,
            messages: env_usize("BENCH_MESSAGES", 20_000)?,
            submits: env_usize("BENCH_SUBMITS", 15)?,
            big_submits: env_usize("BENCH_BIG_SUBMITS", 5)?,
            preflight_size: PREFLIGHT_SIZE,
            uploads: match std::env::var("BENCH_UPLOADS") {
                Ok(list) => list
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| anyhow::anyhow!("BENCH_UPLOADS: {e}"))?,
                Err(_) => UPLOAD_SIZES.to_vec(),
            },
        };
        ensure!(
            plan.rounds >= 1 && plan.submits >= 1 && plan.big_submits >= 1,
            "BENCH_ROUNDS, BENCH_SUBMITS and BENCH_BIG_SUBMITS must be at least 1"
        );
        ensure!(
            plan.messages >= BATCH_SIZE && plan.messages.is_multiple_of(BATCH_SIZE),
            "BENCH_MESSAGES must be a positive multiple of {BATCH_SIZE}"
        );
        Ok(plan)
    }
}

fn run(smoke: bool) -> anyhow::Result<()> {
    let plan = if smoke {
        let (store, engine) = Plan::store_from_env()?;
        Plan {
            store,
            engine,
            rounds: 1,
            messages: BATCH_SIZE,
            submits: 1,
            big_submits: 1,
            preflight_size: PREFLIGHT_SMOKE_SIZE,
            uploads: vec![UPLOAD_SMOKE_SIZE],
        }
    } else {
        Plan::from_env()?
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the bench's runtime")?;
    runtime.block_on(bench(plan, smoke))
}

async fn bench(plan: Plan, smoke: bool) -> anyhow::Result<()> {
    // A smoke run's numbers are no results: it prints none as it goes either.
    macro_rules! eprintln {
        ($($line:tt)*) => {
            if !smoke {
                std::eprintln!($($line)*);
            }
        };
    }
    let started = Instant::now();
    let client =
        herald::provider::http_client(Duration::from_secs(60)).map_err(anyhow::Error::msg)?;
    let bodies: Vec<Bytes> = (0..plan.messages / BATCH_SIZE)
        .map(|b| batch_body(b * BATCH_SIZE))
        .collect();
    let preflight = Preflight::new(plan.preflight_size);
    let passed = passthrough_env();
    let engine = &plan.engine;
    let settings = engine
        .settings()
        .await
        .map_err(|e| anyhow::anyhow!("reading the server's settings: {e}"))?;

    // Each round runs at herald's own in-flight limit and then at
    // [`SMALL_IN_FLIGHT`], side by side, so both see the same machine.
    // A third variant subscribes a local receiver to every kind of status event.
    let mut rounds = Vec::with_capacity(2 * plan.rounds);
    let mut webhook_rounds = Vec::with_capacity(plan.rounds);
    for n in 1..=plan.rounds {
        for (in_flight, webhooks) in [(None, false), (Some(SMALL_IN_FLIGHT), false), (None, true)] {
            let receiver = match webhooks {
                true => Some(Receiver::start().await?),
                false => None,
            };
            let round = throughput_round(
                &client,
                &bodies,
                &passed,
                engine,
                in_flight,
                receiver.as_ref(),
            )
            .await
            .with_context(|| format!("throughput round {n} of {} ({engine})", plan.rounds))?;
            eprintln!(
                "round {n}{}: {} messages in {:.3} s = {:.0} msg/s; peak RSS {:.1} MB; herald CPU {:.2} s{}",
                in_flight.map_or(String::new(), |k| format!(" ({k} in flight)")),
                plan.messages,
                round.secs,
                round.msgs_per_sec,
                round.rss_mb,
                round.cpu.herald,
                round.cpu.server.map_or(String::new(), |s| format!(
                    "; {} CPU {s:.2} s",
                    engine.name()
                ))
            );
            if let Some(w) = &round.webhooks {
                eprintln!(
                    "  with webhooks: every event in {:.3} s; settle to arrival median {:.0} ms, p99 {:.0} ms",
                    w.secs,
                    median(&w.latency_ms),
                    stats::percentile(&w.latency_ms, 99.0)
                );
            }
            match round.webhooks {
                Some(_) => webhook_rounds.push(round),
                None => rounds.push(round),
            }
        }
    }
    let submit = submit_phase(&client, &bodies[0], plan.submits, &passed, engine)
        .await
        .with_context(|| format!("submit-latency phase ({engine})"))?;
    eprintln!("submits: median {:.1} ms", median(&submit.latencies_ms));
    let big = preflight_phase(&client, &preflight, plan.big_submits, &passed, engine)
        .await
        .with_context(|| format!("pre-flight submit phase ({engine})"))?;
    eprintln!(
        "pre-flight submits of {} recipients: median {:.1} ms; herald CPU {:.2} s",
        thousands(plan.preflight_size as f64),
        median(&big.latencies_ms),
        big.cpu.herald
    );
    let mut uploads = Vec::with_capacity(plan.uploads.len());
    for &size in &plan.uploads {
        let upload = upload_phase(&client, size, &passed, engine)
            .await
            .with_context(|| format!("upload of {size} recipients ({engine})"))?;
        eprintln!(
            "upload of {} recipients: {:.2} s to the 202; peak RSS {:.1} MB (idle {:.1} MB)",
            thousands(size as f64),
            upload.secs,
            upload.rss_mb,
            upload.idle_rss_mb
        );
        uploads.push(upload);
    }
    if smoke {
        // A debug build's numbers, set against release targets, would read as
        // failures: the smoke run says only that every phase ran and checked out.
        println!(
            "delivery bench: smoke run passed (every message delivered and recorded, \
             submits, pre-flight and upload checked); `cargo bench --bench delivery` gives the numbers"
        );
        return Ok(());
    }
    print!(
        "{}",
        report(
            &plan,
            settings.as_deref(),
            &rounds,
            &submit,
            &big,
            &passed,
            started.elapsed()
        )
    );
    print!("{}", upload_report(&uploads));
    print!("{}", report::webhook_report(&rounds, &webhook_rounds));
    Ok(())
}

/// Inherited `HERALD_…` variables (the bench's own settings win over them), but
/// not the tests' `HERALD_TEST_…` server addresses, which are no herald setting.
fn passthrough_env() -> Vec<(String, String)> {
    let mut vars: Vec<_> = std::env::vars()
        .filter(|(k, _)| k.starts_with("HERALD_") && !k.starts_with("HERALD_TEST_"))
        .collect();
    vars.sort();
    vars
}
