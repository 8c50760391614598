//! The pre-flight phase: a 100,000-recipient batch built to exercise every
//! pre-flight check (normalization, duplicates, invalid numbers, suppressions,
//! segments, cost and ETA), the report it implies, and its timed submits.

use std::collections::BTreeMap;

use anyhow::{Context, ensure};
use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::process::Herald;
use crate::provider::Provider;
use crate::request::{post, shorten, to_bytes};
use crate::store::Engine;
use crate::submit::{SubmitPhase, Timing, timed_submits};
use crate::{
    GSM7_SEGMENTS, PREFLIGHT_RATE, PREFLIGHT_SIZE, PREFLIGHT_TEMPLATE, PREFLIGHT_WARMUP,
    PRICE_PER_MESSAGE, PRICE_PER_SEGMENT, SUBMIT_PHASE_TIMEOUT, SUPPRESSED, UCS2_SEGMENTS,
};

/// The pre-flight phase's request, built before timing, and the report it implies.
pub(crate) struct Preflight {
    /// The `POST /v1/batches` body.
    body: Bytes,
    /// The `POST /v1/suppressions` body: [`SUPPRESSED`] numbers in E.164.
    suppressions: Bytes,
    accepted: usize,
    /// The rejected recipients' indices by reason, in ascending order.
    rejected: BTreeMap<&'static str, Vec<usize>>,
    /// Accepted messages in Chinese (UCS-2) and in English (GSM-7).
    ucs2: usize,
    gsm7: usize,
}

impl Preflight {
    /// A batch of `size` Chinese mobile numbers, mostly in national form with
    /// separators (`138 0000 0001`, region CN), a fifth in E.164, rendered from
    /// [`PREFLIGHT_TEMPLATE`] in Chinese for even indices and in English for odd
    /// ones. Three disjoint sets of indices are rejected: 1% (every 100th, from 49)
    /// repeat the recipient before in E.164, a duplicate after normalization; 0.5%
    /// (every 200th, from 199) are invalid numbers; 0.05% (every 2,000th, from
    /// 1,000) are numbers on the suppression list.
    pub(crate) fn new(size: usize) -> Preflight {
        let mut recipients = Vec::with_capacity(size);
        let mut rejected: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let (mut ucs2, mut gsm7) = (0, 0);
        for i in 0..size {
            let mobile = format!("138{i:08}");
            let (to, reason) = if i % 2_000 == 1_000 {
                let k = (i / 2_000) % SUPPRESSED;
                (national(&format!("139{k:08}")), Some("suppressed"))
            } else if i % 200 == 199 {
                let short = &mobile[..10];
                let to = match (i / 200) % 3 {
                    0 => national(short),
                    1 => format!("+86 {}", national(short)),
                    _ => national(&mobile).replacen('0', "O", 1),
                };
                (to, Some("invalid_address"))
            } else if i % 100 == 49 {
                let previous = format!("138{:08}", i - 1);
                let to = match (i / 100) % 2 {
                    0 => format!("+86{previous}"),
                    _ => format!("+86 {}", national(&previous)),
                };
                (to, Some("duplicate"))
            } else {
                let to = match i % 10 {
                    0 => format!("+86{mobile}"),
                    5 => format!("+86 {}", national(&mobile)),
                    n if n % 2 == 0 => national(&mobile),
                    _ => national(&mobile).replace(' ', "-"),
                };
                (to, None)
            };
            let chinese = i % 2 == 0;
            match reason {
                Some(reason) => rejected.entry(reason).or_default().push(i),
                None if chinese => ucs2 += 1,
                None => gsm7 += 1,
            }
            let (lang, name) = if chinese {
                ("zh", format!("用户{i:06}"))
            } else {
                ("en", format!("User{i:06}"))
            };
            recipients.push(json!({
                "to": to,
                "vars": {"lang": lang, "name": name, "code": format!("{:06}", (i * 7919) % 1_000_000)},
            }));
        }
        let suppressed: Vec<String> = (0..SUPPRESSED).map(|k| format!("+86139{k:08}")).collect();
        Preflight {
            body: to_bytes(
                &json!({"channel": "sms", "template": {"body": PREFLIGHT_TEMPLATE}, "recipients": recipients}),
            ),
            suppressions: to_bytes(&json!({"channel": "sms", "addresses": suppressed})),
            accepted: ucs2 + gsm7,
            rejected,
            ucs2,
            gsm7,
        }
    }

    /// Fails unless `answer` is the report this batch implies, stored.
    /// Checks the report of this request's submit, made after `submitted` others
    /// of it that wait unsent (the phase's herald does not deliver).
    fn check(&self, answer: &str, submitted: usize) -> anyhow::Result<()> {
        let report: Value =
            serde_json::from_str(answer).context("the submit answer is not JSON")?;
        let segments = self.ucs2 * UCS2_SEGMENTS + self.gsm7 * GSM7_SEGMENTS;
        let rejected: usize = self.rejected.values().map(Vec::len).sum();
        let mut expected = vec![
            ("/accepted".to_owned(), json!(self.accepted)),
            ("/sms/segments".to_owned(), json!(segments)),
            ("/sms/ucs2/messages".to_owned(), json!(self.ucs2)),
            (
                "/sms/ucs2/segments".to_owned(),
                json!(self.ucs2 * UCS2_SEGMENTS),
            ),
            ("/sms/gsm7/messages".to_owned(), json!(self.gsm7)),
            (
                "/sms/gsm7/segments".to_owned(),
                json!(self.gsm7 * GSM7_SEGMENTS),
            ),
            ("/cost/currency".to_owned(), json!("CNY")),
        ];
        for (reason, indices) in &self.rejected {
            expected.push((format!("/rejections/{reason}/count"), json!(indices.len())));
            expected.push((format!("/rejections/{reason}/indices"), json!(indices)));
        }
        for (pointer, want) in &expected {
            let got = report.pointer(pointer).unwrap_or(&Value::Null);
            ensure!(
                got == want,
                "the pre-flight report's {pointer} is {}, the request implies {}",
                shorten(got),
                shorten(want)
            );
        }
        let reasons = report["rejections"].as_object().map_or(0, |r| r.len());
        let listed = report["rejected"].as_array().map_or(0, Vec::len);
        ensure!(
            reasons == self.rejected.len() && listed == rejected,
            "the pre-flight report lists {listed} rejections for {reasons} reasons, the request \
             implies {rejected} for {} ({:?})",
            self.rejected.len(),
            self.rejected.keys().collect::<Vec<_>>()
        );
        ensure!(
            segments > self.accepted,
            "the batch is meant to cost more segments than messages"
        );
        let cost = self.accepted as f64 * PRICE_PER_MESSAGE + segments as f64 * PRICE_PER_SEGMENT;
        // The estimate counts the messages already queued on the provider, as far
        // as herald counts them.
        let ahead = (submitted * self.accepted).min(ETA_AHEAD_CAP);
        let eta = (self.accepted + ahead) as f64 / PREFLIGHT_RATE;
        for (pointer, want, within) in [("/cost/amount", cost, 1e-6), ("/eta_seconds", eta, 0.05)] {
            let got = report.pointer(pointer).and_then(Value::as_f64);
            ensure!(
                got.is_some_and(|got| (got - want).abs() <= within + 1e-9),
                "the pre-flight report's {pointer} is {got:?}, the request implies {want}"
            );
        }
        ensure!(
            report["batch_id"].is_string(),
            "the pre-flight report has no batch_id: the batch was not stored"
        );
        Ok(())
    }
}

/// An 11-digit Chinese mobile number as people write it: `138 0013 8000`; a shorter
/// one keeps its last group short.
/// How many queued messages herald's `eta_seconds` counts at most.
const ETA_AHEAD_CAP: usize = 100_000;

fn national(digits: &str) -> String {
    format!("{} {} {}", &digits[..3], &digits[3..7], &digits[7..])
}

/// A herald without workers whose provider has a rate and prices, with
/// [`SUPPRESSED`] numbers on its suppression list, takes the pre-flight batch; every
/// answer must be the report the batch implies.
pub(crate) async fn preflight_phase(
    client: &reqwest::Client,
    preflight: &Preflight,
    submits: usize,
    passed: &[(String, String)],
    engine: &Engine,
) -> anyhow::Result<SubmitPhase> {
    let provider = Provider::start().await?;
    let priced = format!(
        r#"rate_per_sec={PREFLIGHT_RATE}, price_per_message={PRICE_PER_MESSAGE}, price_per_segment={PRICE_PER_SEGMENT}, currency="CNY""#
    );
    let herald = Herald::start(
        passed,
        &[
            ("HERALD_WORKER__ENABLED", "false".into()),
            ("HERALD_PROVIDERS", provider.config(&priced)),
            ("HERALD_DEFAULTS__SMS", "hook".into()),
            ("HERALD_RECIPIENTS__DEFAULT_REGION", "CN".into()),
            ("HERALD_LIMITS__MAX_RECIPIENTS", PREFLIGHT_SIZE.to_string()),
        ],
        engine,
    )
    .await?;
    herald.wait_ready(client).await?;
    let (status, added) = post(
        client,
        &herald.url,
        "/v1/suppressions",
        &preflight.suppressions,
    )
    .await?;
    let added: Value = serde_json::from_str(&added).unwrap_or(Value::String(added));
    ensure!(
        status == StatusCode::OK
            && added["added"] == SUPPRESSED
            && added["invalid"].as_array().is_some_and(Vec::is_empty),
        "POST /v1/suppressions answered {status} without adding the {SUPPRESSED} numbers: {added}"
    );
    let timing = Timing {
        warmup: PREFLIGHT_WARMUP,
        timed: submits,
        timeout: SUBMIT_PHASE_TIMEOUT,
    };
    let submitted = std::cell::Cell::new(0);
    timed_submits(client, &herald, engine, &preflight.body, timing, |answer| {
        let checked = preflight.check(answer, submitted.get());
        submitted.set(submitted.get() + 1);
        checked
    })
    .await
}
