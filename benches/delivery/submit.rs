//! The submit-latency phase: timed `POST /v1/batches` of 10,000 recipients to a
//! herald without workers, and the timing loop the pre-flight phase shares.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;

use crate::cpu::{Cpu, CpuUse};
use crate::process::Herald;
use crate::request::{accepted_all, post_batch};
use crate::stats::ms;
use crate::store::Engine;
use crate::{SUBMIT_PHASE_TIMEOUT, SUBMIT_WARMUP};

pub(crate) struct SubmitPhase {
    pub(crate) latencies_ms: Vec<f64>,
    pub(crate) rss_mb: f64,
    pub(crate) secs: f64,
    /// CPU used during the timed submits.
    pub(crate) cpu: CpuUse,
}

/// How many submits a phase makes, and how long all of them may take.
pub(crate) struct Timing {
    pub(crate) warmup: usize,
    pub(crate) timed: usize,
    pub(crate) timeout: Duration,
}

pub(crate) async fn submit_phase(
    client: &reqwest::Client,
    body: &Bytes,
    submits: usize,
    passed: &[(String, String)],
    engine: &Engine,
) -> anyhow::Result<SubmitPhase> {
    let herald = Herald::start(
        passed,
        &[("HERALD_WORKER__ENABLED", "false".into())],
        engine,
    )
    .await?;
    herald.wait_ready(client).await?;
    let timing = Timing {
        warmup: SUBMIT_WARMUP,
        timed: submits,
        timeout: SUBMIT_PHASE_TIMEOUT,
    };
    timed_submits(client, &herald, engine, body, timing, |answer| {
        accepted_all(answer).map(drop)
    })
    .await
}

/// Posts `body` `timing.warmup + timing.timed` times to a ready herald and times
/// the timed ones, from sending the request until the whole 202 answer is read.
/// `check` judges each answer outside the timing.
pub(crate) async fn timed_submits(
    client: &reqwest::Client,
    herald: &Herald,
    engine: &Engine,
    body: &Bytes,
    timing: Timing,
    check: impl Fn(&str) -> anyhow::Result<()>,
) -> anyhow::Result<SubmitPhase> {
    let deadline = Instant::now() + timing.timeout;
    let mut latencies_ms = Vec::with_capacity(timing.timed);
    let mut before = (Cpu::now(herald, engine)?, Instant::now());
    for n in 0..timing.warmup + timing.timed {
        if n == timing.warmup {
            before = (Cpu::now(herald, engine)?, Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {} s with {n} submits made",
                timing.timeout.as_secs()
            );
        }
        let sent = Instant::now();
        let answer = post_batch(client, &herald.url, body).await?;
        if n >= timing.warmup {
            latencies_ms.push(ms(sent.elapsed()));
        }
        check(&answer).with_context(|| format!("submit {} of the phase", n + 1))?;
    }
    let (cpu_before, started) = before;
    Ok(SubmitPhase {
        latencies_ms,
        rss_mb: herald.peak_rss_mb()?,
        secs: started.elapsed().as_secs_f64(),
        cpu: Cpu::now(herald, engine)?.since(&cpu_before),
    })
}
