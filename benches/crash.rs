//! The crash bench: kill -9 of real herald processes mid-batch, on each engine,
//! against a local Aliyun-format provider (2 ms a number, at least 20 ms a
//! request, and its status lookup), everything on 127.0.0.1. Each run measures how soon after the restart
//! the batch is whole again (every message settled: the crashed ones too), how
//! soon sending resumed, the messages the provider received twice (repeats) and
//! any lost. Run it with `cargo bench --bench crash`; `docs/BENCHMARKS.md`
//! explains the method.
//!
//! Setups: `serve-sqlite` (`herald serve` on the embedded store, killed 0.4 s into
//! the batch and started again), `workers-postgres` and `workers-redis` (`herald
//! api` and two `herald worker`s; both workers killed 0.4 s in, one started
//! again). `BENCH_HERALD` runs another herald build (an older commit's, say);
//! `BENCH_RUNS` (3), `BENCH_MESSAGES` (5,000) and `BENCH_SETUPS` (a comma-separated
//! subset) shape the run. The workers' settings are the binary's defaults, unless
//! `HERALD_…` variables in the environment say otherwise.

#[path = "../tests/e2e/dysmsapi.rs"]
mod dysmsapi;
#[path = "crash/fleet.rs"]
mod fleet;
#[path = "crash/provider.rs"]
mod provider;
#[path = "common/revision.rs"]
mod revision;
#[path = "../tests/e2e/store.rs"]
mod store;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use fleet::{Process, free_port, wait_ready};
use provider::Provider;
use store::Engine;

/// How far into the batch the processes are killed.
const KILL_AFTER: Duration = Duration::from_millis(400);
/// A run not whole by then after the restart is cut and reported as an error.
const DEADLINE: Duration = Duration::from_secs(150);
const POLL: Duration = Duration::from_millis(20);

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) this
    // is a smoke run of one small batch per setup, whose numbers are no results.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(run(smoke)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What one run saw.
struct Run {
    /// Messages the provider had before the kill and heard of again after it.
    crashed: usize,
    /// From the restart until the last of them was sent or asked about again.
    recovered: Option<Duration>,
    /// From the restart until the batch was done: every message settled.
    whole: Duration,
    /// From the restart until the provider's first request after it.
    resumed: Option<Duration>,
    repeats: usize,
    lost: usize,
    queries: usize,
}

async fn run(smoke: bool) -> anyhow::Result<()> {
    let number = |name: &str, default: usize| -> anyhow::Result<usize> {
        std::env::var(name).map_or(Ok(default), |v| {
            v.parse()
                .with_context(|| format!("{name}={v} is not a number"))
        })
    };
    let runs = if smoke { 1 } else { number("BENCH_RUNS", 3)? };
    let messages = if smoke {
        300
    } else {
        number("BENCH_MESSAGES", 5_000)?
    };
    let setups = std::env::var("BENCH_SETUPS")
        .unwrap_or_else(|_| "serve-sqlite,workers-postgres,workers-redis".into());
    // A smoke run's numbers are no results: it prints none.
    macro_rules! println {
        ($($line:tt)*) => {
            if !smoke {
                std::println!($($line)*);
            }
        };
    }
    println!(
        "crash bench: herald {}, {messages} messages, {runs} run(s) per setup, kill -9 {} ms in",
        revision::herald_label(),
        KILL_AFTER.as_millis()
    );
    println!();
    println!(
        "| setup | run | crashed messages | taken up again after restart | sending resumed | batch whole | repeats | lost | lookups |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let secs =
        |d: Option<Duration>| d.map_or("—".into(), |d| format!("{:.2} s", d.as_secs_f64()));
    for setup in setups.split(',').map(str::trim) {
        let mut all = Vec::new();
        for i in 1..=runs {
            let run = crash_run(setup, messages)
                .await
                .with_context(|| format!("{setup}, run {i}"))?;
            println!(
                "| {setup} | {i} | {} | {} | {} | {:.2} s | {} | {} | {} |",
                run.crashed,
                secs(run.recovered),
                secs(run.resumed),
                run.whole.as_secs_f64(),
                run.repeats,
                run.lost,
                run.queries
            );
            all.push(run);
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "| **{setup}** | median | {} | {:.2} s | | {:.2} s | {} | {} | |",
            median(all.iter().map(|r| r.crashed as f64).collect()),
            median(
                all.iter()
                    .map(|r| r.recovered.map_or(f64::NAN, |d| d.as_secs_f64()))
                    .collect()
            ),
            median(all.iter().map(|r| r.whole.as_secs_f64()).collect()),
            median(all.iter().map(|r| r.repeats as f64).collect()),
            all.iter().map(|r| r.lost).sum::<usize>()
        );
    }
    if smoke {
        std::println!(
            "crash bench: smoke run passed ({setups}: killed, restarted, nothing lost); \
             `cargo bench --bench crash` gives the numbers"
        );
    }
    Ok(())
}

/// One kill -9 run of `setup` on a fresh store and provider.
async fn crash_run(setup: &str, messages: usize) -> anyhow::Result<Run> {
    let (engine, workers) = match setup {
        "serve-sqlite" => ("sqlite", false),
        "workers-postgres" => ("postgres", true),
        "workers-redis" => ("redis", true),
        other => {
            bail!("unknown setup `{other}`: use serve-sqlite, workers-postgres or workers-redis")
        }
    };
    let engine = Engine::parse(engine).map_err(anyhow::Error::msg)?;
    let store = engine.scratch("crash").await.map_err(anyhow::Error::msg)?;
    let provider = Provider::start().await?;
    let dir = tempfile::tempdir().context("a working directory")?;
    let url = format!("http://127.0.0.1:{}", free_port()?);
    let settings = vec![
        ("HERALD_STORE".to_owned(), store.url().to_owned()),
        (
            "HERALD_LISTEN".to_owned(),
            url.trim_start_matches("http://").to_owned(),
        ),
        ("HERALD_PROVIDERS".to_owned(), provider.config()),
        ("HERALD_DEFAULTS__SMS".to_owned(), "ali".to_owned()),
    ];
    let client =
        herald::provider::http_client(Duration::from_secs(60)).map_err(anyhow::Error::msg)?;
    let start_delivery = || -> anyhow::Result<Vec<Process>> {
        if workers {
            Ok(vec![
                Process::start("worker", "worker-1", dir.path(), &settings)?,
                Process::start("worker", "worker-2", dir.path(), &settings)?,
            ])
        } else {
            Ok(vec![Process::start(
                "serve",
                "serve",
                dir.path(),
                &settings,
            )?])
        }
    };
    let api = if workers {
        Some(Process::start("api", "api", dir.path(), &settings)?)
    } else {
        None
    };
    let doomed = start_delivery()?;
    wait_ready(&client, &url).await?;
    let (status, created) = call(
        &client,
        &format!("{url}/v1/templates"),
        Some(json!({"id": "hi", "channel": "sms", "body": "Hi",
                    "providers": {"ali": {"code": "SMS_1"}}})),
    )
    .await?;
    ensure!(status == 201, "creating the template: {status} {created}");
    let recipients: Vec<Value> = (0..messages)
        .map(|i| json!({"to": format!("+86138{i:08}")}))
        .collect();
    let (status, report) = call(
        &client,
        &format!("{url}/v1/batches"),
        Some(json!({"channel": "sms", "template_id": "hi", "recipients": recipients})),
    )
    .await?;
    ensure!(status == 202, "submitting: {status} {report}");
    let batch = report["batch_id"]
        .as_str()
        .context("no batch_id")?
        .to_owned();
    tokio::time::sleep(KILL_AFTER).await;
    for process in doomed {
        process.kill()?;
    }
    let killed = Instant::now();
    let restarted = Instant::now();
    let _delivery = if workers {
        vec![Process::start("worker", "worker-1", dir.path(), &settings)?]
    } else {
        start_delivery()?
    };
    wait_ready(&client, &url).await?;
    let whole = loop {
        let (_, summary) = call(&client, &format!("{url}/v1/batches/{batch}"), None).await?;
        if summary["state"] == "done" {
            ensure!(
                summary["counts"]["sent"] == messages,
                "the batch ended with {}",
                summary["counts"]
            );
            break restarted.elapsed();
        }
        if restarted.elapsed() > DEADLINE {
            bail!(
                "not whole {DEADLINE:?} after the restart: {}",
                summary["counts"]
            );
        }
        tokio::time::sleep(POLL).await;
    };
    drop(api);
    let arrivals = provider.arrivals();
    let queries = provider.queries();
    let repeats = arrivals.values().map(|at| at.len() - 1).sum();
    let after_kill = |number: &String| {
        let again = arrivals.get(number).into_iter().flatten();
        let asked = queries.get(number).into_iter().flatten();
        again.chain(asked).filter(|&&at| at > killed).max().copied()
    };
    let taken_up: Vec<Instant> = arrivals
        .iter()
        .filter(|(_, at)| at.iter().any(|&at| at < killed))
        .filter_map(|(number, _)| after_kill(number))
        .collect();
    let resumed = arrivals
        .values()
        .flatten()
        .filter(|&&at| at > restarted)
        .min()
        .map(|&at| at - restarted);
    Ok(Run {
        crashed: taken_up.len(),
        recovered: taken_up.iter().max().map(|&at| at - restarted),
        whole,
        resumed,
        repeats,
        lost: messages.saturating_sub(arrivals.len()),
        queries: queries.values().map(Vec::len).sum(),
    })
}

/// `GET url` (or `POST` with `body`): the status and the JSON answer.
async fn call(
    client: &reqwest::Client,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let request = match body {
        Some(body) => client.post(url).json(&body),
        None => client.get(url),
    };
    let response = request.send().await.with_context(|| url.to_owned())?;
    let status = response.status().as_u16();
    let answer = response
        .json()
        .await
        .with_context(|| format!("{url}: not JSON"))?;
    Ok((status, answer))
}
