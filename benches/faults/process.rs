//! A `herald serve` child process on 127.0.0.1 with a fresh SQLite store of its
//! own, and the few API calls the fault bench makes to it. The process part is
//! the delivery bench's (`benches/delivery.rs`), cut to the embedded store.

use std::fs::File;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use tempfile::TempDir;

/// How long herald may take to answer `/healthz` after it is started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running herald; killed when dropped, and then its store removed.
pub struct Herald {
    child: Child,
    pub url: String,
    /// Its working directory, with its log and its store.
    dir: TempDir,
}

impl Herald {
    /// Starts herald with `settings` (`HERALD_…` name and value, later ones win)
    /// over its own listen address, store and log level.
    pub fn start(settings: &[(String, String)]) -> anyhow::Result<Herald> {
        let dir = tempfile::tempdir().context("creating herald's working directory")?;
        let port = free_port()?;
        let log =
            File::create(dir.path().join("herald.log")).context("creating herald's log file")?;
        let child = Command::new(crate::revision::herald_bin())
            .arg("serve")
            // No stray herald.toml from the working directory.
            .current_dir(dir.path())
            .envs(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HERALD_STORE", dir.path().join("store"))
            .env("HERALD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting `herald serve`")?;
        Ok(Herald {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        })
    }

    /// Waits until `/healthz` answers, or fails with herald's own words.
    pub async fn wait_ready(&self, client: &reqwest::Client) -> anyhow::Result<()> {
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

    pub fn check_alive(&self) -> anyhow::Result<()> {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // A child that exited stays a zombie (state Z) until it is reaped.
        let state = stat
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

    /// `POST /v1/batches`; the batch id, once every recipient was accepted.
    pub async fn submit(
        &self,
        client: &reqwest::Client,
        body: Vec<u8>,
        recipients: usize,
    ) -> anyhow::Result<String> {
        let response = client
            .post(format!("{}/v1/batches", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("POST /v1/batches")?;
        let status = response.status();
        let text = response.text().await.context("reading the submit answer")?;
        ensure!(
            status == reqwest::StatusCode::ACCEPTED,
            "POST /v1/batches answered {status}: {}",
            text.chars().take(300).collect::<String>()
        );
        let report: Value = serde_json::from_str(&text).context("the submit answer is not JSON")?;
        ensure!(
            report["accepted"] == recipients,
            "not every recipient was accepted: {}",
            text.chars().take(300).collect::<String>()
        );
        report["batch_id"]
            .as_str()
            .map(String::from)
            .context("the submit answer has no batch_id")
    }

    /// `GET {path}` as JSON.
    pub async fn get(&self, client: &reqwest::Client, path: &str) -> anyhow::Result<Value> {
        let response = client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        ensure!(status.is_success(), "GET {path} answered {status}");
        response
            .json()
            .await
            .with_context(|| format!("GET {path}: the answer is not JSON"))
    }

    /// Every message of a batch (`GET /v1/batches/{id}/messages`, page by page).
    pub async fn messages(
        &self,
        client: &reqwest::Client,
        batch: &str,
    ) -> anyhow::Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut after = None;
        // Bounded: each page is 1,000 messages and a batch is far smaller than 10^7.
        for _ in 0..10_000 {
            let page = self
                .get(
                    client,
                    &match after {
                        None => format!("/v1/batches/{batch}/messages?limit=1000"),
                        Some(n) => format!("/v1/batches/{batch}/messages?limit=1000&after={n}"),
                    },
                )
                .await?;
            if let Some(messages) = page["messages"].as_array() {
                all.extend(messages.iter().cloned());
            }
            match page["next_after"].as_u64() {
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
        bail!("batch {batch} lists more than 10,000 pages of messages")
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
