//! The delivery benchmark: the real `herald serve` executable against a local
//! webhook provider, everything on 127.0.0.1. It measures end-to-end delivery
//! throughput, the latency of a durable 10,000-recipient submit, the latency of a
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

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tempfile::TempDir;

#[path = "../tests/e2e/store.rs"]
mod store;

use store::{Engine, Scratch};

/// What the report compares against for one engine; `None`: no target.
struct Targets {
    msgs_per_sec: f64,
    submit_ms: Option<f64>,
    preflight_ms: Option<f64>,
    rss_mb: Option<f64>,
}

impl Targets {
    fn of(engine: &Engine) -> Targets {
        let (msgs_per_sec, submit_ms, preflight_ms, rss_mb) = match engine {
            Engine::Sqlite => (30_000.0, Some(20.0), Some(250.0), Some(40.0)),
            Engine::Postgres(_) => (10_000.0, None, None, None),
            Engine::Redis(_) => (20_000.0, None, None, None),
        };
        Targets {
            msgs_per_sec,
            submit_ms,
            preflight_ms,
            rss_mb,
        }
    }
}

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
            "delivery bench: smoke run (no --bench): one small round of a debug build; \
             its numbers are not results. Run `cargo bench --bench delivery` for those \
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

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}=`{v}` is not a whole number")),
        Err(_) => Ok(default),
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
    runtime.block_on(bench(plan))
}

/// One throughput round's measurements.
struct Round {
    secs: f64,
    msgs_per_sec: f64,
    /// How long each of the round's `POST /v1/batches` took, with delivery running.
    submit_ms: Vec<f64>,
    first_delivery_ms: f64,
    duplicates: usize,
    rss_mb: f64,
    cpu: CpuUse,
}

async fn bench(plan: Plan) -> anyhow::Result<()> {
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

    let mut rounds = Vec::with_capacity(plan.rounds);
    for n in 1..=plan.rounds {
        let round = throughput_round(&client, &bodies, &passed, engine)
            .await
            .with_context(|| format!("throughput round {n} of {} ({engine})", plan.rounds))?;
        eprintln!(
            "round {n}: {} messages in {:.3} s = {:.0} msg/s; peak RSS {:.1} MB; herald CPU {:.2} s{}",
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
        rounds.push(round);
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
    Ok(())
}

/// One streamed upload: how long until its 202, and herald's peak RSS before and
/// after it.
struct Upload {
    size: usize,
    secs: f64,
    idle_rss_mb: f64,
    rss_mb: f64,
}

/// A herald without workers takes one NDJSON upload of `size` recipients, made
/// piece by piece as it is sent; the answer must accept every recipient.
async fn upload_phase(
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

/// The uploads as a markdown table.
fn upload_report(uploads: &[Upload]) -> String {
    let mut out = String::new();
    if uploads.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\n| streamed NDJSON upload | to the 202 | recipients / s | herald peak RSS | before it |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
    for u in uploads {
        let _ = writeln!(
            out,
            "| {} recipients | {:.2} s | {} | {:.1} MB | {:.1} MB |",
            thousands(u.size as f64),
            u.secs,
            thousands((u.size as f64 / u.secs).round()),
            u.rss_mb,
            u.idle_rss_mb
        );
    }
    out
}

/// `{"channel":"sms","template":…,"recipients":[…]}` with [`BATCH_SIZE`] distinct
/// valid numbers starting at number `first`.
fn batch_body(first: usize) -> Bytes {
    let recipients: Vec<Value> = (first..first + BATCH_SIZE)
        .map(|i| {
            json!({
                "to": format!("+86138{i:08}"),
                "vars": {"name": format!("User{i}"), "code": format!("{:06}", (i * 7919) % 1_000_000)},
            })
        })
        .collect();
    to_bytes(&json!({"channel": "sms", "template": {"body": TEMPLATE}, "recipients": recipients}))
}

/// The pre-flight phase's request, built before timing, and the report it implies.
struct Preflight {
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
    fn new(size: usize) -> Preflight {
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
    fn check(&self, answer: &str) -> anyhow::Result<()> {
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
        let eta = self.accepted as f64 / PREFLIGHT_RATE;
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
fn national(digits: &str) -> String {
    format!("{} {} {}", &digits[..3], &digits[3..7], &digits[7..])
}

/// A JSON value shown in a message: at most 200 characters of it.
fn shorten(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("a JSON value always serializes"))
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

async fn throughput_round(
    client: &reqwest::Client,
    bodies: &[Bytes],
    passed: &[(String, String)],
    engine: &Engine,
) -> anyhow::Result<Round> {
    let deadline = Instant::now() + ROUND_TIMEOUT;
    let provider = Provider::start().await?;
    let herald = Herald::start(
        passed,
        &[
            ("HERALD_PROVIDERS", provider.config("")),
            ("HERALD_DEFAULTS__SMS", "hook".into()),
        ],
        engine,
    )
    .await?;
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
        secs: elapsed.as_secs_f64(),
        msgs_per_sec: total as f64 / elapsed.as_secs_f64(),
        submit_ms,
        first_delivery_ms,
        duplicates,
        rss_mb: herald.peak_rss_mb()?,
        cpu,
    })
}

struct SubmitPhase {
    latencies_ms: Vec<f64>,
    rss_mb: f64,
    secs: f64,
    /// CPU used during the timed submits.
    cpu: CpuUse,
}

/// How many submits a phase makes, and how long all of them may take.
struct Timing {
    warmup: usize,
    timed: usize,
    timeout: Duration,
}

async fn submit_phase(
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

/// A herald without workers whose provider has a rate and prices, with
/// [`SUPPRESSED`] numbers on its suppression list, takes the pre-flight batch; every
/// answer must be the report the batch implies.
async fn preflight_phase(
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
    timed_submits(client, &herald, engine, &preflight.body, timing, |answer| {
        preflight.check(answer)
    })
    .await
}

/// Posts `body` `timing.warmup + timing.timed` times to a ready herald and times
/// the timed ones, from sending the request until the whole 202 answer is read.
/// `check` judges each answer outside the timing.
async fn timed_submits(
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

/// Submits one batch and returns its id, once herald has answered 202 with every
/// recipient accepted.
async fn submit(client: &reqwest::Client, url: &str, body: &Bytes) -> anyhow::Result<String> {
    accepted_all(&post_batch(client, url, body).await?)
}

/// `POST /v1/batches`; herald's answer, once it is a 202.
async fn post_batch(client: &reqwest::Client, url: &str, body: &Bytes) -> anyhow::Result<String> {
    let (status, text) = post(client, url, "/v1/batches", body).await?;
    ensure!(
        status == StatusCode::ACCEPTED,
        "POST /v1/batches answered {status}: {}",
        text.chars().take(300).collect::<String>()
    );
    Ok(text)
}

/// The batch id of a submit answer that accepted all [`BATCH_SIZE`] recipients.
fn accepted_all(answer: &str) -> anyhow::Result<String> {
    let report: Value = serde_json::from_str(answer).context("the submit answer is not JSON")?;
    ensure!(
        report["accepted"] == BATCH_SIZE
            && report["rejected"].as_array().is_some_and(Vec::is_empty),
        "not every recipient was accepted: {}",
        answer.chars().take(300).collect::<String>()
    );
    report["batch_id"]
        .as_str()
        .map(String::from)
        .context("the submit answer has no batch_id")
}

/// POSTs a JSON `body` to herald's `path`; the answer's status and text.
async fn post(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    body: &Bytes,
) -> anyhow::Result<(StatusCode, String)> {
    let response = client
        .post(format!("{url}{path}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.clone())
        .send()
        .await
        .with_context(|| format!("POST {path}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the answer to POST {path}"))?;
    Ok((status, text))
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    ensure!(status.is_success(), "GET {url} answered {status}");
    response
        .json()
        .await
        .with_context(|| format!("GET {url}: the answer is not JSON"))
}

/// A `herald serve` child process with a fresh store of its own; killed when
/// dropped, and then its store removed.
struct Herald {
    child: Child,
    url: String,
    /// Its working directory, with its log.
    dir: TempDir,
    /// Removed after the child is killed (fields drop after `Drop::drop`).
    _store: Scratch,
}

impl Herald {
    async fn start(
        passed: &[(String, String)],
        settings: &[(&str, String)],
        engine: &Engine,
    ) -> anyhow::Result<Herald> {
        let store = engine
            .scratch("bench")
            .await
            .map_err(|e| anyhow::anyhow!("creating a fresh store: {e}"))?;
        let dir = tempfile::tempdir().context("creating herald's working directory")?;
        let port = free_port()?;
        let log =
            File::create(dir.path().join("herald.log")).context("creating herald's log file")?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .arg("serve")
            // No stray herald.toml from the working directory.
            .current_dir(dir.path())
            .envs(passed.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HERALD_STORE", store.url())
            .env("HERALD_LOG", "warn")
            .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn().context("starting `herald serve`")?;
        Ok(Herald {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            _store: store,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/healthz` answers, or fails with herald's own words.
    async fn wait_ready(&self, client: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            self.check_alive()?;
            if let Ok(r) = client.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "herald did not answer /healthz within {} s; its log:\n{}",
                    STARTUP_TIMEOUT.as_secs(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn check_alive(&self) -> anyhow::Result<()> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // A child that exited stays a zombie (state Z) until it is reaped.
        let state = status
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if matches!(state, None | Some('Z' | 'X')) {
            bail!("herald exited; its log:\n{}", self.log());
        }
        Ok(())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("herald.log"))
            .unwrap_or_else(|e| format!("(unreadable: {e})"))
    }

    /// `VmHWM` from `/proc/PID/status`, in MB (10^6 bytes).
    fn peak_rss_mb(&self) -> anyhow::Result<f64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{path} has no VmHWM line"))?;
        Ok(kb * 1024.0 / 1e6)
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now (bound, then released).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener
        .local_addr()
        .context("reading the free port")?
        .port())
}

/// CPU seconds used so far, by part.
struct Cpu {
    herald: f64,
    bench: f64,
    /// The store's server processes on this machine; `None` for SQLite or when none runs here.
    server: Option<f64>,
    machine: f64,
}

/// CPU seconds used between two [`Cpu`] readings, by part.
struct CpuUse {
    herald: f64,
    bench: f64,
    server: Option<f64>,
    /// The rest of the machine: other load makes a round slower.
    other: f64,
}

impl Cpu {
    fn now(herald: &Herald, engine: &Engine) -> anyhow::Result<Cpu> {
        let server = match server_command(engine) {
            Some(comm) => processes_cpu_secs(comm)?,
            None => None,
        };
        Ok(Cpu {
            herald: cpu_secs(&herald.pid().to_string())?,
            bench: cpu_secs("self")?,
            server,
            machine: machine_busy_secs()?,
        })
    }

    fn since(&self, earlier: &Cpu) -> CpuUse {
        let herald = self.herald - earlier.herald;
        let bench = self.bench - earlier.bench;
        let server = self
            .server
            .zip(earlier.server)
            .map(|(now, then)| (now - then).max(0.0));
        let machine = self.machine - earlier.machine;
        CpuUse {
            herald,
            bench,
            server,
            other: (machine - herald - bench - server.unwrap_or(0.0)).max(0.0),
        }
    }
}

/// The command name (`/proc/PID/comm`) of the engine's server processes.
fn server_command(engine: &Engine) -> Option<&'static str> {
    match engine {
        Engine::Sqlite => None,
        Engine::Postgres(_) => Some("postgres"),
        Engine::Redis(_) => Some("redis-server"),
    }
}

/// The fields of `/proc/WHO/stat` after the command name, as numbers where they are
/// (field 3, the state, is index 0; utime is 11, stime 12, cutime 13, cstime 14).
fn stat_fields(who: &str) -> anyhow::Result<Vec<Option<f64>>> {
    let path = format!("/proc/{who}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let fields: Vec<Option<f64>> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').map(|f| f.parse().ok()).collect())
        .unwrap_or_default();
    ensure!(
        fields.len() > 14,
        "{path} does not have the expected fields"
    );
    Ok(fields)
}

/// Sums `stat` fields `indices` of `/proc/WHO`, in seconds.
fn ticks_secs(who: &str, indices: &[usize]) -> anyhow::Result<f64> {
    let fields = stat_fields(who)?;
    let mut ticks = 0.0;
    for &i in indices {
        ticks += fields[i]
            .with_context(|| format!("/proc/{who}/stat field {} is not a number", i + 3))?;
    }
    // USER_HZ is 100 on every Linux architecture herald targets.
    Ok(ticks / 100.0)
}

/// User + system CPU seconds of `/proc/WHO` (`self` or a pid).
fn cpu_secs(who: &str) -> anyhow::Result<f64> {
    ticks_secs(who, &[11, 12])
}

/// User + system CPU seconds of every process whose `/proc/PID/comm` is `comm`,
/// with their reaped children's (a PostgreSQL backend that exits is added to the
/// postmaster's), so two readings' difference counts processes that came or went
/// in between. `None` when no such process runs on this machine.
fn processes_cpu_secs(comm: &str) -> anyhow::Result<Option<f64>> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may exit between the listing and the reads: skip it.
        let Ok(name) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if name.trim_end() != comm {
            continue;
        }
        if let Ok(secs) = ticks_secs(&pid, &[11, 12, 13, 14]) {
            *total.get_or_insert(0.0) += secs;
        }
    }
    Ok(total)
}

/// Busy CPU seconds of the whole machine since boot, from the first line of `/proc/stat`.
fn machine_busy_secs() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        ticks.len() >= 8,
        "/proc/stat does not start with the expected cpu line"
    );
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7];
    Ok(busy / 100.0)
}

/// The local webhook provider: answers `200 {"id":…}` at once and records the
/// `Idempotency-Key` (the message id) of every request.
struct Provider {
    addr: SocketAddr,
    sink: Arc<Sink>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Sink {
    count: AtomicUsize,
    keys: Mutex<Vec<String>>,
    first: Mutex<Option<Instant>>,
}

impl Sink {
    /// The distinct ids received, and how many requests repeated one.
    fn distinct(&self) -> (HashSet<String>, usize) {
        let keys = self
            .keys
            .lock()
            .expect("no handler panics while holding the lock");
        let seen: HashSet<String> = keys.iter().cloned().collect();
        let duplicates = keys.len() - seen.len();
        (seen, duplicates)
    }

    fn first_at(&self) -> Option<Instant> {
        *self
            .first
            .lock()
            .expect("no handler panics while holding the lock")
    }
}

impl Provider {
    async fn start() -> anyhow::Result<Provider> {
        let sink = Arc::new(Sink::default());
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(sink.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the provider server")?;
        let addr = listener
            .local_addr()
            .context("reading the provider's address")?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                eprintln!("the provider server stopped: {e}");
            }
        });
        Ok(Provider { addr, sink, task })
    }

    /// The `HERALD_PROVIDERS` value that points a `hook` webhook provider here;
    /// `extra` is more of the entry's settings (`rate_per_sec=500, …`) or empty.
    fn config(&self, extra: &str) -> String {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        };
        format!(
            r#"[{{name="hook", kind="webhook", url="http://{}/hook"{extra}}}]"#,
            self.addr
        )
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(sink): State<Arc<Sink>>,
    headers: HeaderMap,
    _body: Bytes,
) -> impl IntoResponse {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let n = sink.count.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        *sink
            .first
            .lock()
            .expect("no handler panics while holding the lock") = Some(Instant::now());
    }
    sink.keys
        .lock()
        .expect("no handler panics while holding the lock")
        .push(key);
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"id":"p-{n}"}}"#),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn median(values: &[f64]) -> f64 {
    let v = sorted(values);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile, `p` in (0, 100].
fn percentile(values: &[f64], p: f64) -> f64 {
    let v = sorted(values);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// `12345.6` → `12,346`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn machine() -> (usize, String, String, String) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = read("/proc/meminfo");
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(
            || "unknown".into(),
            |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
        );
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    (cores, cpu, memory, kernel)
}

fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&[
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "src",
                "Cargo.toml",
            ])
            .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev} + uncommitted changes in src/")
            } else {
                rev
            }
        }
        None => "unknown".into(),
    }
}

/// `| ≥ 30,000 | 0.94× |`, or `| no target | — |`: the last two cells of a metric's
/// row. `at_least`: higher is better.
fn against(median: f64, target: Option<f64>, at_least: bool) -> String {
    match target {
        Some(target) => format!(
            "{} {} | {:.2}×",
            if at_least { "≥" } else { "≤" },
            thousands(target),
            median / target
        ),
        None => "no target | —".into(),
    }
}

fn report(
    plan: &Plan,
    settings: Option<&str>,
    rounds: &[Round],
    submit: &SubmitPhase,
    big: &SubmitPhase,
    passed: &[(String, String)],
    took: Duration,
) -> String {
    let rates: Vec<f64> = rounds.iter().map(|r| r.msgs_per_sec).collect();
    let rss: Vec<f64> = rounds.iter().map(|r| r.rss_mb).collect();
    let lat = &submit.latencies_ms;
    let (rate, submit_med, rss_med) = (median(&rates), median(lat), median(&rss));
    let (cores, cpu, memory, kernel) = machine();
    let engine = &plan.engine;
    let targets = Targets::of(engine);
    let command = match &plan.store {
        Some(store) => format!("BENCH_STORE={store} cargo bench --bench delivery"),
        None => "cargo bench --bench delivery".into(),
    };

    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "\n## Herald delivery benchmark: {} store\n",
        engine.name()
    );
    let _ = writeln!(w, "- command: `{command}`");
    let _ = writeln!(
        w,
        "- date: {}",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(
        w,
        "- herald: {} ({})",
        revision(),
        env!("CARGO_BIN_EXE_herald")
    );
    let _ = writeln!(
        w,
        "- machine: {cores} CPUs ({cpu}), {memory} RAM, Linux {kernel}"
    );
    let fresh = match engine {
        Engine::Sqlite => "a fresh temp directory",
        Engine::Postgres(_) => "a fresh schema, dropped after it",
        Engine::Redis(_) => "a fresh key prefix, whose keys are deleted after it",
    };
    let _ = writeln!(
        w,
        "- store: {engine}{}; each herald process gets {fresh}",
        settings.map_or(String::new(), |s| format!(" ({s})"))
    );
    let _ = writeln!(
        w,
        "- plan: {} rounds × {} messages ({} batches of {BATCH_SIZE}); {} timed submits after {SUBMIT_WARMUP} warm-up",
        plan.rounds,
        plan.messages,
        plan.messages / BATCH_SIZE,
        plan.submits
    );
    let _ = writeln!(
        w,
        "- pre-flight: {} timed submits of {} recipients after {PREFLIGHT_WARMUP} warm-up, into a store with {} suppressed numbers",
        plan.big_submits,
        thousands(plan.preflight_size as f64),
        thousands(SUPPRESSED as f64)
    );
    if !passed.is_empty() {
        let list: Vec<String> = passed.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        let _ = writeln!(
            w,
            "- herald settings from the environment: {}",
            list.join(", ")
        );
    }
    let _ = writeln!(w, "- wall time: {:.1} s\n", took.as_secs_f64());

    let _ = writeln!(
        w,
        "| metric ({} store) | median | spread | target | median / target |",
        engine.name()
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    let _ = writeln!(
        w,
        "| end-to-end delivery, messages/s | {} | min {} · max {} | {} |",
        thousands(rate),
        thousands(min(&rates)),
        thousands(max(&rates)),
        against(rate, Some(targets.msgs_per_sec), true)
    );
    let _ = writeln!(
        w,
        "| submit 10,000 recipients → 202, ms | {submit_med:.1} | p90 {:.1} · min {:.1} · max {:.1} | {} |",
        percentile(lat, 90.0),
        min(lat),
        max(lat),
        against(submit_med, targets.submit_ms, false)
    );
    let big_lat = &big.latencies_ms;
    let big_med = median(big_lat);
    let _ = writeln!(
        w,
        "| submit {} recipients with the full pre-flight → 202, ms | {big_med:.1} | p90 {:.1} · min {:.1} · max {:.1} | {} |",
        thousands(plan.preflight_size as f64),
        percentile(big_lat, 90.0),
        min(big_lat),
        max(big_lat),
        // The target is for the full batch, not the smoke run's small one.
        against(
            big_med,
            targets
                .preflight_ms
                .filter(|_| plan.preflight_size == PREFLIGHT_SIZE),
            false
        )
    );
    let _ = writeln!(
        w,
        "| herald peak RSS (VmHWM) after delivery, MB = 10^6 B | {rss_med:.1} | min {:.1} · max {:.1} | {} |",
        min(&rss),
        max(&rss),
        against(rss_med, targets.rss_mb, false)
    );
    let _ = writeln!(
        w,
        "\nPeak RSS of the submit-only herald after {} submits: {:.1} MB.\n",
        SUBMIT_WARMUP + plan.submits,
        submit.rss_mb
    );
    let _ = writeln!(
        w,
        "Pre-flight herald: {:.2} CPU-s for the {} timed submits ({:.0} CPU-ms each); \
         peak RSS {:.1} MB after {} submits.\n",
        big.cpu.herald,
        plan.big_submits,
        1000.0 * big.cpu.herald / plan.big_submits as f64,
        big.rss_mb,
        PREFLIGHT_WARMUP + plan.big_submits
    );

    // The server's column only for a server engine whose processes run here.
    let server = rounds
        .iter()
        .all(|r| r.cpu.server.is_some())
        .then(|| engine.name());
    let _ = writeln!(w, "Throughput rounds (each a fresh herald and store):\n");
    let _ = writeln!(
        w,
        "| round | seconds | messages/s | submits during delivery, ms | first delivery, ms | peak RSS, MB | herald CPU, s | bench CPU, s |{} other CPU, s | duplicates |",
        server.map_or(String::new(), |name| format!(" {name} CPU, s |"))
    );
    let _ = writeln!(
        w,
        "|---:|---:|---:|---|---:|---:|---:|---:|{}---:|---:|",
        if server.is_some() { "---:|" } else { "" }
    );
    for (i, r) in rounds.iter().enumerate() {
        let submits: Vec<String> = r.submit_ms.iter().map(|m| format!("{m:.0}")).collect();
        let _ = writeln!(
            w,
            "| {} | {:.3} | {} | {} | {:.0} | {:.1} | {:.2} ({:.0}% of one core) | {:.2} |{} {:.2} | {} |",
            i + 1,
            r.secs,
            thousands(r.msgs_per_sec),
            submits.join(" + "),
            r.first_delivery_ms,
            r.rss_mb,
            r.cpu.herald,
            100.0 * r.cpu.herald / r.secs,
            r.cpu.bench,
            r.cpu
                .server
                .filter(|_| server.is_some())
                .map_or(String::new(), |s| format!(" {s:.2} |")),
            r.cpu.other,
            r.duplicates
        );
    }
    match (server_command(engine), server) {
        (None, _) => {}
        (Some(comm), Some(name)) => {
            let _ = writeln!(
                w,
                "\nThe {name} CPU column sums every `{comm}` process on this machine, including \
                 work for other clients; `other CPU` is what is left."
            );
        }
        (Some(comm), None) => {
            let _ = writeln!(
                w,
                "\nNo `{comm}` process is visible on this machine (the server runs elsewhere or in \
                 another PID namespace), so its CPU is not measured; if it shares these cores, it \
                 is in `other CPU`."
            );
        }
    }
    for (what, phase) in [("submits", submit), ("pre-flight submits", big)] {
        if phase.cpu.other > DISTURBED * phase.secs {
            let _ = writeln!(
                w,
                "\n**The {what} ran while other processes used {:.2} CPU-s in {:.2} s**: the latencies are inflated; \
                 rerun on a quiet machine.",
                phase.cpu.other, phase.secs
            );
        }
    }
    let disturbed = rounds
        .iter()
        .filter(|r| r.cpu.other > DISTURBED * r.secs)
        .count();
    if disturbed > 0 {
        let _ = writeln!(
            w,
            "\n**{disturbed} of {} rounds ran while other processes kept more than {:.0}% of a core busy** \
             (the `other CPU` column): those rounds are slower; rerun on a quiet machine.",
            rounds.len(),
            DISTURBED * 100.0
        );
    }
    let _ = writeln!(w);
    out
}
