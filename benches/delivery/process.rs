//! The `herald serve` child process the bench measures: started with a fresh
//! store and a free port, waited on, and read for its peak RSS.

use std::fs::File;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::STARTUP_TIMEOUT;
use crate::store::{Engine, Scratch};

/// A `herald serve` child process with a fresh store of its own; killed when
/// dropped, and then its store removed.
pub(crate) struct Herald {
    child: Child,
    pub(crate) url: String,
    /// Its working directory, with its log.
    dir: TempDir,
    /// Removed after the child is killed (fields drop after `Drop::drop`).
    _store: Scratch,
}

impl Herald {
    pub(crate) async fn start(
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
        let mut command = Command::new(crate::revision::herald_bin());
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/healthz` answers, or fails with herald's own words.
    pub(crate) async fn wait_ready(&self, client: &reqwest::Client) -> anyhow::Result<()> {
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

    pub(crate) fn check_alive(&self) -> anyhow::Result<()> {
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
    pub(crate) fn peak_rss_mb(&self) -> anyhow::Result<f64> {
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
