//! The upload phase: one streamed NDJSON upload of a given size to a herald
//! without workers, its time to the 202 and herald's peak RSS before and after.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, ensure};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::process::Herald;
use crate::request::shorten;
use crate::store::Engine;
use crate::{TEMPLATE, UPLOAD_TIMEOUT};

/// One streamed upload: how long until its 202, and herald's peak RSS before and
/// after it.
pub(crate) struct Upload {
    pub(crate) size: usize,
    pub(crate) secs: f64,
    pub(crate) idle_rss_mb: f64,
    pub(crate) rss_mb: f64,
}

/// A herald without workers takes one NDJSON upload of `size` recipients, made
/// piece by piece as it is sent; the answer must accept every recipient.
pub(crate) async fn upload_phase(
    client: &reqwest::Client,
    size: usize,
    passed: &[(String, String)],
    engine: &Engine,
) -> anyhow::Result<Upload> {
    let herald = Herald::start(
        passed,
        &[
            ("HERALD_WORKER__ENABLED", "false".into()),
            ("HERALD_RECIPIENTS__DEFAULT_REGION", "CN".into()),
            ("HERALD_LIMITS__MAX_RECIPIENTS", size.to_string()),
        ],
        engine,
    )
    .await?;
    herald.wait_ready(client).await?;
    let idle_rss_mb = herald.peak_rss_mb()?;
    let head = json!({"channel": "sms", "template": {"body": TEMPLATE}}).to_string() + "\n";
    let pieces = (0..size.div_ceil(10_000)).map(move |piece| {
        let mut lines = String::with_capacity(10_000 * 80);
        for i in piece * 10_000..((piece + 1) * 10_000).min(size) {
            let _ = writeln!(
                lines,
                r#"{{"to":"139{i:08}","vars":{{"name":"n{i}","code":"{:04}"}}}}"#,
                i % 10_000
            );
        }
        Ok::<_, std::io::Error>(lines)
    });
    let body = std::iter::once(Ok(head)).chain(pieces);
    let started = Instant::now();
    let response = tokio::time::timeout(
        UPLOAD_TIMEOUT,
        client
            .post(format!("{}/v1/batches", herald.url))
            .header("content-type", "application/x-ndjson")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(body)))
            .send(),
    )
    .await
    .context("the upload timed out")??;
    let status = response.status();
    let answer = response.text().await?;
    let secs = started.elapsed().as_secs_f64();
    let report: Value = serde_json::from_str(&answer).unwrap_or(Value::String(answer));
    ensure!(
        status == StatusCode::ACCEPTED && report["accepted"] == size,
        "the upload was answered {status}: {}",
        shorten(&report)
    );
    Ok(Upload {
        size,
        secs,
        idle_rss_mb,
        rss_mb: herald.peak_rss_mb()?,
    })
}
