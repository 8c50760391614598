//! CPU seconds from `/proc`: herald's, the bench's, the store server's and the
//! rest of the machine's, so a round run on a busy machine can be flagged.

use anyhow::{Context, ensure};

use crate::process::Herald;
use crate::store::Engine;

/// CPU seconds used so far, by part.
pub(crate) struct Cpu {
    herald: f64,
    bench: f64,
    /// The store's server processes on this machine; `None` for SQLite or when none runs here.
    server: Option<f64>,
    machine: f64,
}

/// CPU seconds used between two [`Cpu`] readings, by part.
pub(crate) struct CpuUse {
    pub(crate) herald: f64,
    pub(crate) bench: f64,
    pub(crate) server: Option<f64>,
    /// The rest of the machine: other load makes a round slower.
    pub(crate) other: f64,
}

impl Cpu {
    pub(crate) fn now(herald: &Herald, engine: &Engine) -> anyhow::Result<Cpu> {
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

    pub(crate) fn since(&self, earlier: &Cpu) -> CpuUse {
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
pub(crate) fn server_command(engine: &Engine) -> Option<&'static str> {
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
