//! The markdown report: the machine, the plan, each metric against its target,
//! the throughput rounds and the uploads.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cpu::server_command;
use crate::stats::{max, median, min, percentile, thousands};
use crate::store::Engine;
use crate::submit::SubmitPhase;
use crate::throughput::Round;
use crate::upload::Upload;
use crate::{
    BATCH_SIZE, DISTURBED, PREFLIGHT_SIZE, PREFLIGHT_WARMUP, Plan, SMALL_IN_FLIGHT, SUBMIT_WARMUP,
    SUPPRESSED,
};

/// What the report compares against for one engine; `None`: no target.
struct Targets {
    msgs_per_sec: f64,
    /// At [`SMALL_IN_FLIGHT`] messages in flight.
    small_msgs_per_sec: Option<f64>,
    submit_ms: Option<f64>,
    preflight_ms: Option<f64>,
    rss_mb: Option<f64>,
}

impl Targets {
    fn of(engine: &Engine) -> Targets {
        let (msgs_per_sec, small_msgs_per_sec, submit_ms, preflight_ms, rss_mb) = match engine {
            Engine::Sqlite => (
                30_000.0,
                Some(20_000.0),
                Some(20.0),
                Some(250.0),
                Some(40.0),
            ),
            Engine::Postgres(_) => (10_000.0, None, None, None, None),
            Engine::Redis(_) => (20_000.0, None, None, None, None),
        };
        Targets {
            msgs_per_sec,
            small_msgs_per_sec,
            submit_ms,
            preflight_ms,
            rss_mb,
        }
    }
}

/// The uploads as a markdown table.
pub(crate) fn upload_report(uploads: &[Upload]) -> String {
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

pub(crate) fn report(
    plan: &Plan,
    settings: Option<&str>,
    rounds: &[Round],
    submit: &SubmitPhase,
    big: &SubmitPhase,
    passed: &[(String, String)],
    took: Duration,
) -> String {
    let rates_at = |small: bool| -> Vec<f64> {
        rounds
            .iter()
            .filter(|r| r.in_flight.is_some() == small)
            .map(|r| r.msgs_per_sec)
            .collect()
    };
    let (rates, small_rates) = (rates_at(false), rates_at(true));
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
    let _ = writeln!(w, "- herald: {}", crate::revision::herald_label());
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
        "- plan: {} rounds × {} messages ({} batches of {BATCH_SIZE}), each at herald's in-flight limit and at {SMALL_IN_FLIGHT}; {} timed submits after {SUBMIT_WARMUP} warm-up",
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
    if !small_rates.is_empty() {
        let small = median(&small_rates);
        let _ = writeln!(
            w,
            "| end-to-end delivery at {SMALL_IN_FLIGHT} in flight, messages/s | {} | min {} · max {} | {} |",
            thousands(small),
            thousands(min(&small_rates)),
            thousands(max(&small_rates)),
            against(small, targets.small_msgs_per_sec, true)
        );
    }
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
        "| round | in flight | seconds | messages/s | submits during delivery, ms | first delivery, ms | peak RSS, MB | herald CPU, s | bench CPU, s |{} other CPU, s | duplicates |",
        server.map_or(String::new(), |name| format!(" {name} CPU, s |"))
    );
    let _ = writeln!(
        w,
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|{}---:|---:|",
        if server.is_some() { "---:|" } else { "" }
    );
    for (i, r) in rounds.iter().enumerate() {
        let submits: Vec<String> = r.submit_ms.iter().map(|m| format!("{m:.0}")).collect();
        let _ = writeln!(
            w,
            "| {} | {} | {:.3} | {} | {} | {:.0} | {:.1} | {:.2} ({:.0}% of one core) | {:.2} |{} {:.2} | {} |",
            i / 2 + 1,
            r.in_flight
                .map_or_else(|| "default".into(), |n| n.to_string()),
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

/// The status webhooks' cost: the rounds at herald's own in-flight limit without
/// and with every kind of event subscribed by a local receiver, and how long after
/// its change each event arrived.
pub(crate) fn webhook_report(rounds: &[Round], with: &[Round]) -> String {
    let without: Vec<f64> = rounds
        .iter()
        .filter(|r| r.in_flight.is_none())
        .map(|r| r.msgs_per_sec)
        .collect();
    let rates: Vec<f64> = with.iter().map(|r| r.msgs_per_sec).collect();
    let hooks = with.iter().filter_map(|r| r.webhooks.as_ref());
    let latency: Vec<f64> = hooks
        .clone()
        .flat_map(|w| w.latency_ms.iter().copied())
        .collect();
    let all_in: Vec<f64> = hooks.clone().map(|w| w.secs).collect();
    let repeats: usize = hooks.map(|w| w.repeats).sum();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "\nStatus webhooks (every kind of event subscribed by one local receiver; same rounds, herald's own in-flight limit):\n"
    );
    let _ = writeln!(w, "| | median | spread |");
    let _ = writeln!(w, "|---|---:|---:|");
    let _ = writeln!(
        w,
        "| messages/s without webhooks | {} | {}–{} |",
        thousands(median(&without)),
        thousands(min(&without)),
        thousands(max(&without))
    );
    let _ = writeln!(
        w,
        "| messages/s with webhooks | {} ({:.0} % of without) | {}–{} |",
        thousands(median(&rates)),
        100.0 * median(&rates) / median(&without),
        thousands(min(&rates)),
        thousands(max(&rates))
    );
    let _ = writeln!(
        w,
        "| seconds until the last event arrived | {:.3} | {:.3}–{:.3} |",
        median(&all_in),
        min(&all_in),
        max(&all_in)
    );
    let _ = writeln!(
        w,
        "| settle → arrival, ms ({} events) | {:.0} (p99 {:.0}) | {:.0}–{:.0} |",
        thousands(latency.len() as f64),
        median(&latency),
        percentile(&latency, 99.0),
        min(&latency),
        max(&latency)
    );
    let _ = writeln!(w, "\nEvents posted more than once: {repeats}.");
    out
}
