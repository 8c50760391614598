//! The delivery benchmark: the real `herald serve` executable against a local
//! webhook provider, everything on 127.0.0.1. It measures end-to-end delivery
//! throughput, the latency of a durable 10,000-recipient submit, and the herald
//! process's peak RSS, then prints a markdown report. Run it with
//! `cargo bench --bench delivery`; `docs/BENCHMARKS.md` explains the method.
//!
//! `BENCH_ROUNDS`, `BENCH_MESSAGES` and `BENCH_SUBMITS` shrink or grow the run (for
//! profiling). `HERALD_…` variables in the environment reach the herald child
//! unless the bench sets them itself, and the report lists them, so settings can be
//! compared with e.g. `HERALD_WORKER__MAX_IN_FLIGHT=512 cargo bench --bench delivery`.

use std::collections::HashSet;
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

/// The targets the report compares against.
const TARGET_MSGS_PER_SEC: f64 = 30_000.0;
const TARGET_SUBMIT_MS: f64 = 20.0;
const TARGET_RSS_MB: f64 = 40.0;

/// Recipients in one submitted batch.
const BATCH_SIZE: usize = 10_000;
/// A throughput round that has not finished by then fails the bench.
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);
/// The whole submit-latency phase must finish within this.
const SUBMIT_PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long herald may take to answer `/healthz` after it is started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Submits made and thrown away before the timed ones (first-touch costs).
const SUBMIT_WARMUP: usize = 2;
/// A round is flagged when the rest of the machine used more than this share of a
/// core meanwhile.
const DISTURBED: f64 = 0.1;
const TEMPLATE: &str = "Hello {{name}}, your code is {{code}}";

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`. Without it (`cargo test --all-targets`) this is
    // a smoke run: one small round, proving the harness and the delivery it checks
    // still work, with no claim about speed (it is a debug build).
    let smoke = !std::env::args().any(|a| a == "--bench");
    if smoke {
        eprintln!(
            "delivery bench: smoke run (no --bench): one small round of a debug build; \
             its numbers are not results. Run `cargo bench --bench delivery` for those."
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
    rounds: usize,
    messages: usize,
    submits: usize,
}

impl Plan {
    fn from_env() -> anyhow::Result<Plan> {
        let plan = Plan {
            rounds: env_usize("BENCH_ROUNDS", 7)?,
            messages: env_usize("BENCH_MESSAGES", 20_000)?,
            submits: env_usize("BENCH_SUBMITS", 15)?,
        };
        ensure!(
            plan.rounds >= 1 && plan.submits >= 1,
            "BENCH_ROUNDS and BENCH_SUBMITS must be at least 1"
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
        Plan {
            rounds: 1,
            messages: BATCH_SIZE,
            submits: 1,
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
    herald_cpu_secs: f64,
    bench_cpu_secs: f64,
    /// CPU the rest of the machine used meanwhile: other load makes a round slower.
    other_cpu_secs: f64,
}

async fn bench(plan: Plan) -> anyhow::Result<()> {
    let started = Instant::now();
    let client =
        herald::provider::http_client(Duration::from_secs(60)).map_err(anyhow::Error::msg)?;
    let bodies: Vec<Bytes> = (0..plan.messages / BATCH_SIZE)
        .map(|b| batch_body(b * BATCH_SIZE))
        .collect();
    let passed = passthrough_env();

    let mut rounds = Vec::with_capacity(plan.rounds);
    for n in 1..=plan.rounds {
        let round = throughput_round(&client, &bodies, &passed)
            .await
            .with_context(|| format!("throughput round {n} of {}", plan.rounds))?;
        eprintln!(
            "round {n}: {} messages in {:.3} s = {:.0} msg/s; peak RSS {:.1} MB; herald CPU {:.2} s",
            plan.messages, round.secs, round.msgs_per_sec, round.rss_mb, round.herald_cpu_secs
        );
        rounds.push(round);
    }
    let submit = submit_phase(&client, &bodies[0], plan.submits, &passed)
        .await
        .context("submit-latency phase")?;
    eprintln!("submits: median {:.1} ms", median(&submit.latencies_ms));
    print!(
        "{}",
        report(&plan, &rounds, &submit, &passed, started.elapsed())
    );
    Ok(())
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
    let body = json!({"channel": "sms", "template": {"body": TEMPLATE}, "recipients": recipients});
    Bytes::from(serde_json::to_vec(&body).expect("a JSON value always serializes"))
}

/// Inherited `HERALD_…` variables (the bench's own settings win over them).
fn passthrough_env() -> Vec<(String, String)> {
    let mut vars: Vec<_> = std::env::vars()
        .filter(|(k, _)| k.starts_with("HERALD_"))
        .collect();
    vars.sort();
    vars
}

async fn throughput_round(
    client: &reqwest::Client,
    bodies: &[Bytes],
    passed: &[(String, String)],
) -> anyhow::Result<Round> {
    let deadline = Instant::now() + ROUND_TIMEOUT;
    let provider = Provider::start().await?;
    let herald = Herald::start(
        passed,
        &[
            ("HERALD_PROVIDERS", provider.config()),
            ("HERALD_DEFAULTS__SMS", "hook".into()),
        ],
    )?;
    herald.wait_ready(client).await?;
    let herald_cpu_before = cpu_secs(&herald.pid().to_string())?;
    let bench_cpu_before = cpu_secs("self")?;
    let machine_before = machine_busy_secs()?;
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
    let herald_cpu_secs = cpu_secs(&herald.pid().to_string())? - herald_cpu_before;
    let bench_cpu_secs = cpu_secs("self")? - bench_cpu_before;
    let other_cpu_secs =
        (machine_busy_secs()? - machine_before - herald_cpu_secs - bench_cpu_secs).max(0.0);
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
        herald_cpu_secs,
        bench_cpu_secs,
        other_cpu_secs,
    })
}

struct SubmitPhase {
    latencies_ms: Vec<f64>,
    rss_mb: f64,
    secs: f64,
    /// CPU the rest of the machine used during the timed submits.
    other_cpu_secs: f64,
}

async fn submit_phase(
    client: &reqwest::Client,
    body: &Bytes,
    submits: usize,
    passed: &[(String, String)],
) -> anyhow::Result<SubmitPhase> {
    let deadline = Instant::now() + SUBMIT_PHASE_TIMEOUT;
    let herald = Herald::start(passed, &[("HERALD_WORKER__ENABLED", "false".into())])?;
    herald.wait_ready(client).await?;
    let mut latencies_ms = Vec::with_capacity(submits);
    let mut before = (0.0, 0.0, 0.0, Instant::now());
    for n in 0..SUBMIT_WARMUP + submits {
        if n == SUBMIT_WARMUP {
            before = (
                cpu_secs(&herald.pid().to_string())?,
                cpu_secs("self")?,
                machine_busy_secs()?,
                Instant::now(),
            );
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {} s with {n} submits made",
                SUBMIT_PHASE_TIMEOUT.as_secs()
            );
        }
        let sent = Instant::now();
        submit(client, &herald.url, body).await?;
        if n >= SUBMIT_WARMUP {
            latencies_ms.push(ms(sent.elapsed()));
        }
    }
    let (herald_cpu, bench_cpu, machine, started) = before;
    let ours = cpu_secs(&herald.pid().to_string())? - herald_cpu + cpu_secs("self")? - bench_cpu;
    Ok(SubmitPhase {
        latencies_ms,
        rss_mb: herald.peak_rss_mb()?,
        secs: started.elapsed().as_secs_f64(),
        other_cpu_secs: (machine_busy_secs()? - machine - ours).max(0.0),
    })
}

/// Submits one batch and returns its id, once herald has answered 202.
async fn submit(client: &reqwest::Client, url: &str, body: &Bytes) -> anyhow::Result<String> {
    let response = client
        .post(format!("{url}/v1/batches"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.clone())
        .send()
        .await
        .context("POST /v1/batches")?;
    let status = response.status();
    let text = response.text().await.context("reading the submit answer")?;
    ensure!(
        status == StatusCode::ACCEPTED,
        "POST /v1/batches answered {status}: {text}"
    );
    let report: Value = serde_json::from_str(&text).context("the submit answer is not JSON")?;
    ensure!(
        report["accepted"] == BATCH_SIZE
            && report["rejected"].as_array().is_some_and(Vec::is_empty),
        "not every recipient was accepted: {}",
        text.chars().take(300).collect::<String>()
    );
    report["batch_id"]
        .as_str()
        .map(String::from)
        .context("the submit answer has no batch_id")
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

/// A `herald serve` child process with its own store; killed when dropped.
struct Herald {
    child: Child,
    url: String,
    dir: TempDir,
}

impl Herald {
    fn start(passed: &[(String, String)], settings: &[(&str, String)]) -> anyhow::Result<Herald> {
        let dir = tempfile::tempdir().context("creating the store directory")?;
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
            .env("HERALD_STORE", dir.path().join("store"))
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

/// User + system CPU seconds of `/proc/WHO` (`self` or a pid).
fn cpu_secs(who: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{who}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        bail!("{path} does not have the expected fields");
    };
    // USER_HZ is 100 on every Linux architecture herald targets.
    Ok((user + system) / 100.0)
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

    /// The `HERALD_PROVIDERS` value that points a `hook` webhook provider here.
    fn config(&self) -> String {
        format!(
            r#"[{{name="hook", kind="webhook", url="http://{}/hook"}}]"#,
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

fn report(
    plan: &Plan,
    rounds: &[Round],
    submit: &SubmitPhase,
    passed: &[(String, String)],
    took: Duration,
) -> String {
    let rates: Vec<f64> = rounds.iter().map(|r| r.msgs_per_sec).collect();
    let rss: Vec<f64> = rounds.iter().map(|r| r.rss_mb).collect();
    let lat = &submit.latencies_ms;
    let (rate, submit_med, rss_med) = (median(&rates), median(lat), median(&rss));
    let (cores, cpu, memory, kernel) = machine();

    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "\n## Herald delivery benchmark\n");
    let _ = writeln!(w, "- command: `cargo bench --bench delivery`");
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
    let _ = writeln!(
        w,
        "- plan: {} rounds × {} messages ({} batches of {BATCH_SIZE}); {} timed submits after {SUBMIT_WARMUP} warm-up",
        plan.rounds,
        plan.messages,
        plan.messages / BATCH_SIZE,
        plan.submits
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

    let _ = writeln!(w, "| metric | median | spread | target | median / target |");
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    let _ = writeln!(
        w,
        "| end-to-end delivery, messages/s | {} | min {} · max {} | ≥ 30,000 | {:.2}× |",
        thousands(rate),
        thousands(min(&rates)),
        thousands(max(&rates)),
        rate / TARGET_MSGS_PER_SEC
    );
    let _ = writeln!(
        w,
        "| submit 10,000 recipients → 202, ms | {submit_med:.1} | p90 {:.1} · min {:.1} · max {:.1} | ≤ 20 | {:.2}× |",
        percentile(lat, 90.0),
        min(lat),
        max(lat),
        submit_med / TARGET_SUBMIT_MS
    );
    let _ = writeln!(
        w,
        "| herald peak RSS (VmHWM) after delivery, MB = 10^6 B | {rss_med:.1} | min {:.1} · max {:.1} | ≤ 40 | {:.2}× |",
        min(&rss),
        max(&rss),
        rss_med / TARGET_RSS_MB
    );
    let _ = writeln!(
        w,
        "\nPeak RSS of the submit-only herald after {} submits: {:.1} MB.\n",
        SUBMIT_WARMUP + plan.submits,
        submit.rss_mb
    );

    let _ = writeln!(w, "Throughput rounds (each a fresh herald and store):\n");
    let _ = writeln!(
        w,
        "| round | seconds | messages/s | submits during delivery, ms | first delivery, ms | peak RSS, MB | herald CPU, s | bench CPU, s | other CPU, s | duplicates |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for (i, r) in rounds.iter().enumerate() {
        let submits: Vec<String> = r.submit_ms.iter().map(|m| format!("{m:.0}")).collect();
        let _ = writeln!(
            w,
            "| {} | {:.3} | {} | {} | {:.0} | {:.1} | {:.2} ({:.0}% of one core) | {:.2} | {:.2} | {} |",
            i + 1,
            r.secs,
            thousands(r.msgs_per_sec),
            submits.join(" + "),
            r.first_delivery_ms,
            r.rss_mb,
            r.herald_cpu_secs,
            100.0 * r.herald_cpu_secs / r.secs,
            r.bench_cpu_secs,
            r.other_cpu_secs,
            r.duplicates
        );
    }
    if submit.other_cpu_secs > DISTURBED * submit.secs {
        let _ = writeln!(
            w,
            "\n**The submits ran while other processes used {:.2} CPU-s in {:.2} s**: the latencies are inflated; \
             rerun on a quiet machine.",
            submit.other_cpu_secs, submit.secs
        );
    }
    let disturbed = rounds
        .iter()
        .filter(|r| r.other_cpu_secs > DISTURBED * r.secs)
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
