//! The throughput phase: one round delivers every batch through a fresh herald to
//! the local provider and checks that each message arrived and was recorded.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use axum::body::Bytes;
use serde_json::Value;

use crate::cpu::{Cpu, CpuUse};
use crate::process::Herald;
use crate::provider::Provider;
use crate::receiver::Receiver;
use crate::request::{get_json, submit};
use crate::stats::ms;
use crate::store::Engine;
use crate::{BATCH_SIZE, ROUND_TIMEOUT};

/// One throughput round's measurements.
pub(crate) struct Round {
    /// `worker.max_in_flight` when the round set it; herald's own (or the
    /// environment's) otherwise.
    pub(crate) in_flight: Option<usize>,
    pub(crate) secs: f64,
    pub(crate) msgs_per_sec: f64,
    /// How long each of the round's `POST /v1/batches` took, with delivery running.
    pub(crate) submit_ms: Vec<f64>,
    pub(crate) first_delivery_ms: f64,
    pub(crate) duplicates: usize,
    pub(crate) rss_mb: f64,
    pub(crate) cpu: CpuUse,
    /// With status webhooks subscribed: what the receiver saw.
    pub(crate) webhooks: Option<Webhooks>,
}

/// A round's status events, every kind subscribed by one local receiver.
pub(crate) struct Webhooks {
    /// From the first submit to the last event's arrival.
    pub(crate) secs: f64,
    /// Per event, from its change (the settle, for `message.sent`) to its arrival.
    pub(crate) latency_ms: Vec<f64>,
    /// Events that arrived more than once.
    pub(crate) repeats: usize,
}

pub(crate) async fn throughput_round(
    client: &reqwest::Client,
    bodies: &[Bytes],
    passed: &[(String, String)],
    engine: &Engine,
    in_flight: Option<usize>,
    receiver: Option<&Receiver>,
) -> anyhow::Result<Round> {
    let deadline = Instant::now() + ROUND_TIMEOUT;
    let provider = Provider::start().await?;
    let mut settings = vec![
        ("HERALD_PROVIDERS", provider.config("")),
        ("HERALD_DEFAULTS__SMS", "hook".into()),
    ];
    if let Some(receiver) = receiver {
        settings.push(("HERALD_WEBHOOKS", receiver.config()));
    }
    if let Some(n) = in_flight {
        settings.push(("HERALD_WORKER__MAX_IN_FLIGHT", n.to_string()));
    }
    let herald = Herald::start(passed, &settings, engine).await?;
    herald.wait_ready(client).await?;
    let cpu_before = Cpu::now(&herald, engine)?;
    let total = bodies.len() * BATCH_SIZE;

    let start = Instant::now();
    let mut batches = Vec::with_capacity(bodies.len());
    let mut submit_ms = Vec::with_capacity(bodies.len());
    for body in bodies {
        let sent = Instant::now();
        batches.push(submit(client, &herald.url, body).await?);
        submit_ms.push(ms(sent.elapsed()));
    }
    while provider.sink.count.load(Ordering::Relaxed) < total {
        if Instant::now() > deadline {
            bail!(
                "timed out after {} s: the provider saw {} of {total} messages",
                ROUND_TIMEOUT.as_secs(),
                provider.sink.count.load(Ordering::Relaxed)
            );
        }
        herald.check_alive()?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Every message reached the provider; the round ends when herald has recorded it.
    let mut pending: Vec<&str> = batches.iter().map(String::as_str).collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let view: Value = get_json(client, &format!("{}/v1/batches/{id}", herald.url)).await?;
            let counts = &view["counts"];
            if view["state"] == "done" {
                ensure!(
                    counts["sent"] == counts["total"] && counts["total"] == BATCH_SIZE,
                    "batch {id} finished without sending everything: {counts}"
                );
            } else {
                still.push(id);
            }
        }
        pending = still;
        if !pending.is_empty() {
            if Instant::now() > deadline {
                bail!(
                    "timed out after {} s: batches {pending:?} are not done",
                    ROUND_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let elapsed = start.elapsed();
    let webhooks = match receiver {
        Some(receiver) => Some(events(receiver, &batches, start, deadline, &herald).await?),
        None => None,
    };

    let (seen, duplicates) = provider.sink.distinct();
    for batch in &batches {
        for index in 0..BATCH_SIZE {
            let id = format!("{batch}-{index}");
            ensure!(
                seen.contains(&id),
                "the provider never received message {id}"
            );
        }
    }
    ensure!(
        seen.len() == total,
        "the provider received {} distinct ids, expected {total}",
        seen.len()
    );
    let cpu = Cpu::now(&herald, engine)?.since(&cpu_before);
    let first_delivery_ms = provider
        .sink
        .first_at()
        .map_or(f64::NAN, |at| ms(at.saturating_duration_since(start)));
    Ok(Round {
        in_flight,
        secs: elapsed.as_secs_f64(),
        msgs_per_sec: total as f64 / elapsed.as_secs_f64(),
        submit_ms,
        first_delivery_ms,
        duplicates,
        rss_mb: herald.peak_rss_mb()?,
        cpu,
        webhooks,
    })
}

/// Waits for every event of `batches` (each message's `message.sent` and each
/// batch's `batch.finished`) to reach `receiver`, and checks they all did.
async fn events(
    receiver: &Receiver,
    batches: &[String],
    start: Instant,
    deadline: Instant,
    herald: &Herald,
) -> anyhow::Result<Webhooks> {
    let expected = batches.len() * (BATCH_SIZE + 1);
    while receiver.events.count() < expected {
        if Instant::now() > deadline {
            bail!(
                "timed out after {} s: the webhook receiver saw {} of {expected} events",
                ROUND_TIMEOUT.as_secs(),
                receiver.events.count()
            );
        }
        herald.check_alive()?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let (latency, repeats) = receiver.events.latencies();
    for batch in batches {
        let finished = format!("{batch}.finished");
        ensure!(latency.contains_key(&finished), "no event {finished}");
        for index in 0..BATCH_SIZE {
            let sent = format!("{batch}-{index}.sent");
            ensure!(latency.contains_key(&sent), "no event {sent}");
        }
    }
    ensure!(
        latency.len() == expected,
        "the receiver saw {} distinct events, expected {expected}",
        latency.len()
    );
    Ok(Webhooks {
        secs,
        latency_ms: latency.into_values().collect(),
        repeats,
    })
}
