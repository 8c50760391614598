//! The herald processes of one crash run, on one store: `herald serve`, or
//! `herald api` and `herald worker`s, each on 127.0.0.1, each killable with
//! SIGKILL. The binary is `BENCH_HERALD` when set (to measure another build, such
//! as an older commit's), else this package's own.

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long herald may take to answer `/healthz`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// One herald process; SIGKILLed when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Starts `herald SUBCOMMAND` in `dir` (its log goes to `dir/NAME.log`) with
    /// `settings` (`HERALD_…` names and values).
    pub fn start(
        subcommand: &str,
        name: &str,
        dir: &Path,
        settings: &[(String, String)],
    ) -> anyhow::Result<Process> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))
            .context("opening herald's log file")?;
        let child = Command::new(crate::revision::herald_bin())
            .arg(subcommand)
            // No stray herald.toml from the working directory.
            .current_dir(dir)
            .envs(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HERALD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting `{} {subcommand}`",
                    crate::revision::herald_bin().display()
                )
            })?;
        Ok(Process { child })
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().context("SIGKILL herald")?;
        self.child.wait().context("reaping herald")?;
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `url/healthz` answers.
pub async fn wait_ready(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("herald did not answer {url}/healthz within {STARTUP_TIMEOUT:?}")
}

/// A port nothing listens on right now (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
