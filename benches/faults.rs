//! The fault suite: the real `herald serve` on the embedded store against a local
//! webhook provider that misbehaves, one scenario per fresh herald and store,
//! everything on 127.0.0.1. For each scenario it measures the time until every
//! message is settled (against a fault-free run), messages lost, messages the
//! provider accepted twice and requests per message, then prints a markdown table
//! with a line per target. Run it with `cargo bench --bench faults`;
//! `docs/BENCHMARKS.md` explains the method.
//!
//! `BENCH_MESSAGES` (2,000), `BENCH_DEADLINE_SECS` (120: a scenario not settled by
//! then is cut and reported as such), `BENCH_DOWN_SECS` (30, scenario b),
//! `BENCH_LIMIT` (100 requests a second, scenario c), `BENCH_VALID_FOR_SECS` (30:
//! the deadline of scenarios d and e's batches, whose messages can only end
//! `expired`) and `BENCH_SCENARIOS` (a comma-separated subset of
//! `baseline,random,down,throttle,fail,hang`) shape the run. `HERALD_…` variables in the environment reach the herald child and win
//! over the bench's worker settings (50 in flight, a 2 s send timeout).
//! `BENCH_HERALD` runs another build of herald instead of the one cargo built.

#[path = "common/env.rs"]
mod env;
#[path = "faults/process.rs"]
mod process;
#[path = "faults/provider.rs"]
mod provider;
#[path = "common/revision.rs"]
mod revision;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use env::env_usize;
use serde_json::{Value, json};

use process::Herald;
use provider::{Fault, Provider};

/// The worker settings the bench gives herald unless the environment sets them.
const IN_FLIGHT: &str = "50";
const SEND_TIMEOUT_MS: &str = "2000";
const LEASE_MS: &str = "5000";
/// Herald's own retry defaults (`[retry]`), for the targets' arithmetic.
const MAX_ATTEMPTS: u64 = 5;
const BASE_DELAY_MS: u64 = 1_000;
const MAX_DELAY_MS: u64 = 600_000;
/// Scenario (a)'s share of requests answered `503`.
const RANDOM_SHARE: f64 = 0.2;
/// How often the bench reads the batch's counts.
const POLL: Duration = Duration::from_millis(20);
/// The targets: (a) settled within this many fault-free times plus the retry
/// delays; (b) sending resumed this soon after recovery; (c) the accepted rate
/// within this share of the limit, this soon after the first throttle.
const RANDOM_SLOWDOWN: f64 = 1.5;
const RESUME_WITHIN: Duration = Duration::from_secs(2);
const RATE_BAND: f64 = 0.1;
const RATE_SETTLE_WITHIN: usize = 10;

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`. Without it (`cargo test --all-targets`) this is
    // a smoke run: three short scenarios proving the harness works, no results.
    let smoke = !std::env::args().any(|a| a == "--bench");
    if smoke {
        eprintln!(
            "faults bench: smoke run (no --bench): short scenarios of a debug build, \
             to prove the harness; `cargo bench --bench faults` measures."
        );
    }
    match run(smoke) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faults bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One scenario: the provider's fault.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scenario {
    Baseline,
    Random,
    Down,
    Throttle,
    FailAll,
    Hang,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Baseline,
        Scenario::Random,
        Scenario::Down,
        Scenario::Throttle,
        Scenario::FailAll,
        Scenario::Hang,
    ];

    /// Its name in `BENCH_SCENARIOS`.
    fn key(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::Random => "random",
            Scenario::Down => "down",
            Scenario::Throttle => "throttle",
            Scenario::FailAll => "fail",
            Scenario::Hang => "hang",
        }
    }

    fn label(self, plan: &Plan) -> String {
        match self {
            Scenario::Baseline => "fault-free".into(),
            Scenario::Random => format!("(a) {:.0} % answered 503", RANDOM_SHARE * 100.0),
            Scenario::Down => format!("(b) down (503) for {} s", plan.down.as_secs()),
            Scenario::Throttle => format!("(c) 429 above {}/s", plan.limit),
            Scenario::FailAll => "(d) every request 503".into(),
            Scenario::Hang => "(e) never answers".into(),
        }
    }

    fn fault(self, plan: &Plan) -> Fault {
        match self {
            Scenario::Baseline => Fault::None,
            Scenario::Random => Fault::Random {
                share: RANDOM_SHARE,
            },
            Scenario::Down => Fault::Down { for_: plan.down },
            Scenario::Throttle => Fault::Throttle {
                per_sec: plan.limit as f64,
            },
            Scenario::FailAll => Fault::FailAll,
            Scenario::Hang => Fault::Hang,
        }
    }

    /// The deadline its batch carries, in seconds: the provider that fails every
    /// request and the one that never answers are bounded by it.
    fn valid_for(self, plan: &Plan) -> Option<u64> {
        matches!(self, Scenario::FailAll | Scenario::Hang).then_some(plan.valid_for)
    }
}

/// What this run does.
struct Plan {
    messages: usize,
    deadline: Duration,
    down: Duration,
    limit: usize,
    /// Scenarios d and e's deadline, in seconds.
    valid_for: u64,
    scenarios: Vec<Scenario>,
    /// A smoke run (no `--bench`): no report.
    smoke: bool,
}

impl Plan {
    fn from_env(smoke: bool) -> anyhow::Result<Plan> {
        let (messages, deadline, down, limit, valid_for) = if smoke {
            (50, 20, 2, 50, 5)
        } else {
            (2_000, 120, 30, 100, 30)
        };
        let scenarios = match std::env::var("BENCH_SCENARIOS") {
            Ok(list) => list
                .split(',')
                .map(|name| {
                    Scenario::ALL
                        .into_iter()
                        .find(|s| s.key() == name.trim())
                        .with_context(|| {
                            format!(
                                "BENCH_SCENARIOS: `{name}` is none of baseline, random, down, throttle, fail, hang"
                            )
                        })
                })
                .collect::<anyhow::Result<_>>()?,
            Err(_) if smoke => vec![Scenario::Baseline, Scenario::Down, Scenario::Throttle],
            Err(_) => Scenario::ALL.to_vec(),
        };
        let plan = Plan {
            messages: env_usize("BENCH_MESSAGES", messages)?,
            deadline: Duration::from_secs(env_usize("BENCH_DEADLINE_SECS", deadline)? as u64),
            down: Duration::from_secs(env_usize("BENCH_DOWN_SECS", down)? as u64),
            limit: env_usize("BENCH_LIMIT", limit)?,
            valid_for: env_usize("BENCH_VALID_FOR_SECS", valid_for)? as u64,
            scenarios,
            smoke,
        };
        if plan.messages == 0 || plan.limit == 0 || plan.deadline.is_zero() || plan.valid_for == 0 {
            bail!(
                "BENCH_MESSAGES, BENCH_LIMIT, BENCH_DEADLINE_SECS and BENCH_VALID_FOR_SECS must be at least 1"
            );
        }
        Ok(plan)
    }
}

fn run(smoke: bool) -> anyhow::Result<()> {
    let plan = Plan::from_env(smoke)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the bench's runtime")?;
    runtime.block_on(bench(plan))
}

async fn bench(plan: Plan) -> anyhow::Result<()> {
    let started = Instant::now();
    let client =
        herald::provider::http_client(Duration::from_secs(60)).map_err(anyhow::Error::msg)?;
    let passed: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("HERALD_") && !k.starts_with("HERALD_TEST_"))
        .collect();
    let mut outcomes = Vec::with_capacity(plan.scenarios.len());
    for &scenario in &plan.scenarios {
        let outcome = run_scenario(&client, &plan, scenario, &passed)
            .await
            .with_context(|| format!("scenario {}", scenario.label(&plan)))?;
        eprintln!(
            "{}: {} sent, {} failed, {} expired, {} unsettled, {}",
            scenario.label(&plan),
            outcome.sent,
            outcome.failed,
            outcome.expired,
            outcome.unsettled,
            match outcome.settled {
                Some(t) => format!("settled in {:.2} s", t.as_secs_f64()),
                None => format!("cut at {} s", plan.deadline.as_secs()),
            }
        );
        outcomes.push(outcome);
    }
    if plan.smoke {
        // A debug build's short scenarios: their numbers are no results, but
        // every message must still have ended, and once.
        for o in &outcomes {
            anyhow::ensure!(
                o.unsettled == 0 && o.unseen == 0 && o.repeats == 0,
                "smoke run, {}: {} unsettled, {} never seen by the provider, {} repeats",
                o.scenario.label(&plan),
                o.unsettled,
                o.unseen,
                o.repeats
            );
        }
        println!(
            "faults bench: smoke run passed ({} scenarios ran to the end); \
             `cargo bench --bench faults` gives the numbers",
            outcomes.len()
        );
    } else {
        print!("{}", report(&plan, &outcomes, &passed, started.elapsed()));
    }
    Ok(())
}

/// What one scenario reached.
struct Outcome {
    scenario: Scenario,
    /// From the submit until the batch's counts showed every message final;
    /// `None`: cut at the deadline.
    settled: Option<Duration>,
    /// Sent (or delivered / undelivered by a receipt), failed, expired (not sent
    /// by the batch's deadline), and none of these.
    sent: u64,
    failed: u64,
    expired: u64,
    unsettled: u64,
    /// Messages herald calls sent that the provider never accepted.
    unseen: usize,
    /// Failed or expired messages without a `last_error`, but those below.
    failed_unexplained: usize,
    /// Expired messages never attempted (waiting for an open circuit's probes).
    expired_unattempted: usize,
    /// Message ids the provider accepted more than once.
    repeats: usize,
    /// Requests the provider received per message: the mean and the most.
    requests_mean: f64,
    requests_max: u32,
    /// The most attempts herald counted on one message.
    attempts_max: u64,
    /// (b): from the provider's recovery to the next accepted request; `Some(None)`:
    /// none came.
    resumed: Option<Option<Duration>>,
    /// (c): the accepted rate after the first throttle.
    rate: Option<Rate>,
}

impl Outcome {
    /// The brief's "lost": accepted messages neither sent nor failed at the end,
    /// and those herald calls sent that never reached the provider.
    fn lost(&self) -> u64 {
        self.unsettled + self.unseen as u64
    }
}

/// The provider's accepted requests per whole second after the first `429`.
struct Rate {
    /// When the first `429` was answered, from the submit.
    first_throttle: Duration,
    per_sec: Vec<usize>,
    /// The seconds that began with at least a second's worth still to accept: the
    /// rest saw the batch run dry, whatever the pace.
    fed: usize,
    /// The first second from which every later fed one is within [`RATE_BAND`] of
    /// the limit, and the median from then on.
    settled_from: Option<usize>,
    median: f64,
}

async fn run_scenario(
    client: &reqwest::Client,
    plan: &Plan,
    scenario: Scenario,
    passed: &[(String, String)],
) -> anyhow::Result<Outcome> {
    let provider = Provider::start(scenario.fault(plan)).await?;
    let mut settings: Vec<(String, String)> = [
        ("HERALD_WORKER__MAX_IN_FLIGHT", IN_FLIGHT),
        ("HERALD_WORKER__SEND_TIMEOUT_MS", SEND_TIMEOUT_MS),
        ("HERALD_WORKER__LEASE_MS", LEASE_MS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    settings.extend(passed.iter().cloned());
    settings.push(("HERALD_PROVIDERS".into(), provider.config()));
    settings.push(("HERALD_DEFAULTS__SMS".into(), "hook".into()));
    let herald = Herald::start(&settings)?;
    herald.wait_ready(client).await?;

    let body = batch_body(plan.messages, scenario.valid_for(plan));
    provider.arm();
    let start = Instant::now();
    let batch = herald.submit(client, body, plan.messages).await?;
    let deadline = start + plan.deadline;
    let path = format!("/v1/batches/{batch}");
    let (counts, settled) = loop {
        let counts = herald.get(client, &path).await?["counts"].clone();
        if unsettled(&counts) == 0 {
            break (counts, Some(start.elapsed()));
        }
        if Instant::now() >= deadline {
            break (counts, None);
        }
        herald.check_alive()?;
        tokio::time::sleep(POLL).await;
    };
    let messages = herald.messages(client, &batch).await?;
    if messages.len() != plan.messages {
        bail!(
            "batch {batch} lists {} messages, not the {} accepted",
            messages.len(),
            plan.messages
        );
    }
    let count = |k: &str| counts[k].as_u64().unwrap_or(0);
    let record = provider.record();
    let accepted = |id: &str| record.by_id.get(id).map_or(0, |c| c.1);
    let mut unseen = 0;
    let mut failed_unexplained = 0;
    let mut expired_unattempted = 0;
    let mut attempts_max = 0;
    for m in &messages {
        let id = m["id"].as_str().unwrap_or_default();
        let state = m["state"].as_str().unwrap_or_default();
        if matches!(state, "sent" | "delivered" | "undelivered") && accepted(id) == 0 {
            unseen += 1;
        }
        let attempts = m["attempts"].as_u64().unwrap_or(0);
        if matches!(state, "failed" | "expired")
            && m["last_error"].as_str().is_none_or(str::is_empty)
        {
            // A message that expired before any attempt has no error to keep.
            if state == "expired" && attempts == 0 {
                expired_unattempted += 1;
            } else {
                failed_unexplained += 1;
            }
        }
        attempts_max = attempts_max.max(m["attempts"].as_u64().unwrap_or(0));
    }
    let requests: u64 = record.by_id.values().map(|c| u64::from(c.0)).sum();
    let resumed = provider.recovered_at().map(|back| {
        record
            .accepted_at
            .iter()
            .find(|&&at| at >= back)
            .map(|&at| at - back)
    });
    let rate = record
        .first_throttle
        .map(|first| rate_after(first, start, &record.accepted_at, plan.limit));
    Ok(Outcome {
        scenario,
        settled,
        sent: count("sent") + count("delivered") + count("undelivered"),
        failed: count("failed"),
        expired: count("expired"),
        unsettled: unsettled(&counts),
        unseen,
        failed_unexplained,
        expired_unattempted,
        repeats: record.by_id.values().filter(|c| c.1 > 1).count(),
        requests_mean: requests as f64 / plan.messages as f64,
        requests_max: record.by_id.values().map(|c| c.0).max().unwrap_or(0),
        attempts_max,
        resumed,
        rate,
    })
}

/// Messages of a batch's `counts` that are not final: pending, sending, paused or
/// of unknown outcome.
fn unsettled(counts: &Value) -> u64 {
    ["pending", "sending", "paused", "unknown"]
        .iter()
        .map(|k| counts[k].as_u64().unwrap_or(0))
        .sum()
}

/// The accepted requests in each whole second from the first throttle until the
/// last accepted one (the last, partial second left out).
fn rate_after(first: Instant, start: Instant, accepted: &[Instant], limit: usize) -> Rate {
    let mut per_sec: BTreeMap<u64, usize> = BTreeMap::new();
    for at in accepted.iter().filter(|&&at| at >= first) {
        *per_sec.entry((*at - first).as_secs()).or_default() += 1;
    }
    let last = per_sec.keys().next_back().copied().unwrap_or(0);
    // What was still to be accepted when each second began, the last partial
    // second included: once less than a second's worth, the batch runs dry and
    // no pace could fill that second.
    let mut left: usize = per_sec.values().sum();
    let mut fed = 0;
    for s in 0..last {
        if left < limit {
            break;
        }
        fed += 1;
        left -= *per_sec.get(&s).unwrap_or(&0);
    }
    let per_sec: Vec<usize> = (0..last).map(|s| *per_sec.get(&s).unwrap_or(&0)).collect();
    let within = |n: usize| (n as f64 - limit as f64).abs() <= RATE_BAND * limit as f64;
    let paced = &per_sec[..fed];
    let settled_from = (0..paced.len()).find(|&k| paced[k..].iter().all(|&n| within(n)));
    let tail: Vec<f64> = paced[settled_from.unwrap_or(0)..]
        .iter()
        .map(|&n| n as f64)
        .collect();
    Rate {
        first_throttle: first.saturating_duration_since(start),
        per_sec,
        fed,
        settled_from,
        median: median(&tail),
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `{"channel":"sms","template":…,"recipients":[…]}` with `n` distinct numbers,
/// and `valid_for` (seconds) when given.
fn batch_body(n: usize, valid_for: Option<u64>) -> Vec<u8> {
    let recipients: Vec<Value> = (0..n)
        .map(|i| json!({"to": format!("+86138{i:08}"), "vars": {"code": format!("{:06}", (i * 7919) % 1_000_000)}}))
        .collect();
    let mut batch = json!({
        "channel": "sms",
        "template": {"body": "Your Herald code is {{code}}"},
        "recipients": recipients,
    });
    if let Some(secs) = valid_for {
        batch["valid_for"] = json!(secs);
    }
    serde_json::to_vec(&batch).expect("a JSON value always serializes")
}

/// A `HERALD_…` setting as the environment gives it, else herald's default.
fn setting(passed: &[(String, String)], name: &str, default: u64) -> u64 {
    passed
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(default)
}

/// The retry delays the slowest message of (a) may have waited: herald's backoff
/// steps before its last attempt, at their jitter's upper end.
fn retry_allowance(passed: &[(String, String)], attempts: u64) -> Duration {
    let base = setting(passed, "HERALD_RETRY__BASE_DELAY_MS", BASE_DELAY_MS);
    let cap = setting(passed, "HERALD_RETRY__MAX_DELAY_MS", MAX_DELAY_MS);
    let ms: u64 = (1..attempts.max(1))
        .map(|i| base.saturating_mul(1 << (i - 1).min(40)).min(cap))
        .sum();
    Duration::from_millis(ms)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

fn report(
    plan: &Plan,
    outcomes: &[Outcome],
    passed: &[(String, String)],
    took: Duration,
) -> String {
    let mut out = String::new();
    let (cores, cpu) = machine();
    let _ = writeln!(
        out,
        "\nFault suite: {} messages in one batch per scenario, herald {} on SQLite, \
         cut at {} s; {cores} cores ({cpu}); build {}; the run took {:.0} s.",
        thousands(plan.messages),
        env!("CARGO_PKG_VERSION"),
        plan.deadline.as_secs(),
        revision::herald_label(),
        took.as_secs_f64()
    );
    let mut settings: Vec<String> = [
        ("HERALD_WORKER__MAX_IN_FLIGHT", IN_FLIGHT),
        ("HERALD_WORKER__SEND_TIMEOUT_MS", SEND_TIMEOUT_MS),
        ("HERALD_WORKER__LEASE_MS", LEASE_MS),
    ]
    .iter()
    .filter(|(k, _)| !passed.iter().any(|(p, _)| p == k))
    .map(|(k, v)| format!("{k}={v}"))
    .collect();
    settings.extend(passed.iter().map(|(k, v)| format!("{k}={v}")));
    settings.sort();
    let _ = writeln!(out, "Herald settings: `{}`.\n", settings.join(" "));
    let _ = writeln!(
        out,
        "| scenario | settled in | vs fault-free | sent | failed | expired | lost | repeats | requests / message (mean, max) | notes |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let baseline = outcomes
        .iter()
        .find(|o| o.scenario == Scenario::Baseline)
        .and_then(|o| o.settled);
    for o in outcomes {
        let settled = match o.settled {
            Some(t) => secs(t),
            None => format!("cut at {} s", plan.deadline.as_secs()),
        };
        let ratio = match (o.settled, baseline) {
            (Some(t), Some(b)) => format!("{:.1}×", t.as_secs_f64() / b.as_secs_f64()),
            _ => "—".into(),
        };
        let lost = if o.lost() == 0 {
            "0".into()
        } else {
            format!(
                "{} ({} unsettled, {} sent unseen)",
                thousands(o.lost() as usize),
                thousands(o.unsettled as usize),
                o.unseen
            )
        };
        let _ = writeln!(
            out,
            "| {} | {settled} | {ratio} | {} | {} | {} | {lost} | {} | {:.2}, {} | {} |",
            o.scenario.label(plan),
            thousands(o.sent as usize),
            thousands(o.failed as usize),
            thousands(o.expired as usize),
            o.repeats,
            o.requests_mean,
            o.requests_max,
            notes(o, plan)
        );
    }
    let _ = writeln!(out);
    for o in outcomes {
        if let Some(line) = target(o, baseline, passed) {
            let _ = writeln!(out, "- {}: {line}", o.scenario.label(plan));
        }
    }
    let lost: u64 = outcomes.iter().map(Outcome::lost).sum();
    let _ = writeln!(
        out,
        "- every scenario, 0 lost: {} ({} lost in all)",
        met(lost == 0),
        thousands(lost as usize)
    );
    out
}

fn notes(o: &Outcome, plan: &Plan) -> String {
    let mut notes = vec![format!("herald attempts ≤ {}", o.attempts_max)];
    if let Some(resumed) = o.resumed {
        notes.push(match resumed {
            Some(d) => format!("first accepted request {} after recovery", secs(d)),
            None => "no accepted request after recovery".into(),
        });
    }
    if let Some(rate) = &o.rate {
        let seconds: Vec<String> = rate.per_sec.iter().map(usize::to_string).collect();
        notes.push(format!(
            "first 429 at {}; accepted per second after it: {}; {}",
            secs(rate.first_throttle),
            if seconds.is_empty() {
                "under a second".into()
            } else {
                seconds.join(" ")
            },
            match rate.settled_from {
                Some(k) => format!(
                    "within {:.0} % of {}/s from second {k} on, median {:.0}/s{}",
                    RATE_BAND * 100.0,
                    plan.limit,
                    rate.median,
                    if rate.fed < rate.per_sec.len() {
                        format!(
                            " (from second {} on, less than a second's worth was left to send)",
                            rate.fed
                        )
                    } else {
                        String::new()
                    }
                ),
                None => format!(
                    "never stays within {:.0} % of {}/s",
                    RATE_BAND * 100.0,
                    plan.limit
                ),
            }
        ));
    }
    if o.failed_unexplained > 0 {
        notes.push(format!(
            "{} failed or expired without a last error",
            o.failed_unexplained
        ));
    }
    if o.expired_unattempted > 0 {
        notes.push(format!(
            "{} expired never attempted (the circuit was open), so with no error to keep",
            thousands(o.expired_unattempted)
        ));
    }
    notes.join("; ")
}

/// The line saying whether a scenario met its target; `None` without one.
fn target(o: &Outcome, baseline: Option<Duration>, passed: &[(String, String)]) -> Option<String> {
    match o.scenario {
        Scenario::Baseline => None,
        Scenario::Hang => Some(format!(
            "every message ended by its deadline, expired, each attempted one with its last error: {} ({} of {} expired)",
            met(o.unsettled == 0 && o.sent == 0 && o.failed_unexplained == 0),
            thousands(o.expired as usize),
            thousands((o.failed + o.expired + o.sent + o.unsettled) as usize),
        )),
        Scenario::Random => {
            let allowance = retry_allowance(passed, o.attempts_max);
            Some(match (o.settled, baseline) {
                (Some(t), Some(b)) => {
                    let bound = b.mul_f64(RANDOM_SLOWDOWN) + allowance;
                    format!(
                        "settled within {RANDOM_SLOWDOWN}× the fault-free time plus the retry delays ({} + {} = {}): {} ({})",
                        secs(b.mul_f64(RANDOM_SLOWDOWN)),
                        secs(allowance),
                        secs(bound),
                        met(t <= bound),
                        secs(t)
                    )
                }
                (None, _) => format!(
                    "settled within {RANDOM_SLOWDOWN}× the fault-free time plus the retry delays: {} (not settled by the deadline)",
                    met(false)
                ),
                (Some(_), None) => "no fault-free run to compare with".into(),
            })
        }
        Scenario::Down => Some(format!(
            "sending resumes within {} of recovery: {}",
            secs(RESUME_WITHIN),
            match o.resumed.flatten() {
                Some(d) => format!("{} ({})", met(d <= RESUME_WITHIN), secs(d)),
                None => format!("{} (no accepted request after recovery)", met(false)),
            }
        )),
        Scenario::Throttle => {
            let settles = o
                .rate
                .as_ref()
                .and_then(|r| r.settled_from)
                .is_some_and(|k| k <= RATE_SETTLE_WITHIN);
            Some(format!(
                "0 failed: {} ({}); rate within {:.0} % of the limit within {RATE_SETTLE_WITHIN} s of the first 429, staying there: {}",
                met(o.failed == 0 && o.settled.is_some()),
                thousands(o.failed as usize),
                RATE_BAND * 100.0,
                met(settles)
            ))
        }
        Scenario::FailAll => {
            let attempts = setting(passed, "HERALD_RETRY__MAX_ATTEMPTS", MAX_ATTEMPTS);
            let all_failed = o.unsettled == 0 && o.sent == 0 && o.failed_unexplained == 0;
            Some(format!(
                "every message failed or expired, each attempted one with its last error: {} ({} failed, {} expired of {}); none sent twice (no message given more than {attempts} requests): {}",
                met(all_failed),
                thousands(o.failed as usize),
                thousands(o.expired as usize),
                thousands((o.failed + o.expired + o.sent + o.unsettled) as usize),
                met(o.repeats == 0 && u64::from(o.requests_max) <= attempts)
            ))
        }
    }
}

/// `12345` → `12,345`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn machine() -> (usize, String) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    (cores, cpu)
}
