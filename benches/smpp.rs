//! The SMPP bench: `submit_sm` per second on one bind, with the window at 1, 10
//! and 100, against Herald's own in-test SMSC on 127.0.0.1 (it answers every
//! submit at once: the numbers are the ESME's ceiling, not any real SMSC's).
//! The provider runs on the main thread's runtime, the SMSC on a thread of its
//! own, so each one's CPU time is read apart (`/proc`, per thread). Each window
//! runs `BENCH_ROUNDS` rounds (5) of `BENCH_SUBMITS` one-segment submits (20,000)
//! from twice the window's senders; the table shows each window's median round.
//! Run it with `cargo bench --bench smpp`; without `--bench` (as `cargo test
//! --all-targets` runs it) it is a short smoke run proving the harness.

#[path = "common/env.rs"]
mod env;
// This bench runs no herald process: only the commit is read.
#[allow(dead_code)]
#[path = "common/revision.rs"]
mod revision;
// The bench uses only part of the SMSC the unit tests script.
#[allow(dead_code)]
#[path = "../src/provider/smpp/smsc.rs"]
mod smsc;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use env::env_usize;
use herald::domain::{BatchId, Channel, Secret};
use herald::provider::{Message, Provider, SmppConfig, SmppProvider};

/// The text of every submit: GSM 7-bit, one segment.
const TEXT: &str = "Your Herald code is 123456. It expires in 10 minutes.";

fn main() -> ExitCode {
    let smoke = !std::env::args().any(|a| a == "--bench");
    if smoke {
        eprintln!(
            "smpp bench: smoke run (no --bench): a few hundred submits of a debug build, \
             to prove the harness; `cargo bench --bench smpp` measures."
        );
    }
    match run(smoke) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smpp bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One round's numbers.
struct Round {
    per_sec: f64,
    esme_cpu_us: f64,
    smsc_cpu_us: f64,
}

fn run(smoke: bool) -> anyhow::Result<()> {
    let (windows, rounds, submits) = if smoke {
        (vec![10], 1, 300)
    } else {
        (
            vec![1, 10, 100],
            env_usize("BENCH_ROUNDS", 5)?,
            env_usize("BENCH_SUBMITS", 20_000)?,
        )
    };
    ensure!(
        rounds >= 1 && submits >= 1,
        "BENCH_ROUNDS and BENCH_SUBMITS must be at least 1"
    );

    // The SMSC on a thread and runtime of its own.
    let (ready, port) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the SMSC's runtime");
        runtime.block_on(async {
            let smsc = smsc::Smsc::start(smsc::Script::default()).await;
            let _ = ready.send((smsc.port, thread_stat()));
            std::future::pending::<()>().await;
        });
    });
    let (port, smsc_stat) = port.recv().context("the SMSC did not start")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("the bench's runtime")?;

    let mut table = Vec::new();
    for window in windows {
        let mut results = Vec::new();
        for _ in 0..rounds {
            results.push(runtime.block_on(round(port, window, submits, &smsc_stat))?);
        }
        results.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
        let median = &results[results.len() / 2];
        table.push(format!(
            "| {window} | {:.0} | {:.0}–{:.0} | {:.1} | {:.1} |",
            median.per_sec,
            results[0].per_sec,
            results[results.len() - 1].per_sec,
            median.esme_cpu_us,
            median.smsc_cpu_us,
        ));
    }
    if smoke {
        return Ok(());
    }
    println!(
        "SMPP bench at {}: one bind, {submits} submits a round, median of {rounds} rounds",
        revision::revision()
    );
    println!();
    println!("| window | submits/s (median) | range | Herald CPU µs/submit | SMSC CPU µs/submit |");
    println!("|---:|---:|---:|---:|---:|");
    for line in table {
        println!("{line}");
    }
    Ok(())
}

/// One round: a fresh provider with `window`, bound once, then `submits`
/// submits from twice the window's senders.
async fn round(port: u16, window: usize, submits: usize, smsc: &str) -> anyhow::Result<Round> {
    let config = SmppConfig {
        window: u32::try_from(window)?,
        submit_timeout_ms: Some(10_000),
        ..SmppConfig::new("127.0.0.1", port, "bench", Secret::new("bench"), "Herald")
    };
    let provider = Arc::new(
        SmppProvider::new("smsc", &config, &[Channel::Sms], Duration::from_secs(10))
            .map_err(anyhow::Error::msg)?,
    );
    let message = Message {
        id: "bench".into(),
        batch_id: BatchId::new(),
        reference: None,
        channel: Channel::Sms,
        to: "+8613800000001".into(),
        subject: None,
        body: TEXT.into(),
        vars: None,
        template: None,
    };
    // Bound before the clock starts.
    provider
        .send(&message)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let senders = (window * 2).min(submits);
    let (esme_before, smsc_before) = (cpu_secs("self/task/self")?, cpu_secs(smsc)?);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..senders {
        let provider = provider.clone();
        let message = message.clone();
        let share = submits / senders + usize::from(i < submits % senders);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                provider.send(&message).await?;
            }
            Ok::<(), herald::provider::Error>(())
        }));
    }
    for task in tasks {
        if let Err(e) = task.await? {
            bail!("a submit failed: {e}");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (esme_after, smsc_after) = (cpu_secs("self/task/self")?, cpu_secs(smsc)?);
    provider.close().await;
    let per = 1e6 / submits as f64;
    Ok(Round {
        per_sec: submits as f64 / elapsed,
        esme_cpu_us: (esme_after - esme_before) * per,
        smsc_cpu_us: (smsc_after - smsc_before) * per,
    })
}

/// The `/proc` path of the calling thread's stat, e.g. `1234/task/1240`.
fn thread_stat() -> String {
    std::fs::read_link("/proc/thread-self")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "self".into())
}

/// User + system CPU seconds of `/proc/{who}/stat`.
fn cpu_secs(who: &str) -> anyhow::Result<f64> {
    let who = if who == "self/task/self" {
        thread_stat()
    } else {
        who.to_string()
    };
    let stat = std::fs::read_to_string(format!("/proc/{who}/stat"))
        .with_context(|| format!("reading /proc/{who}/stat"))?;
    // Fields after the command, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .map(|&i| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .sum();
    // The kernel's USER_HZ, 100 on Linux.
    Ok(ticks / 100.0)
}
