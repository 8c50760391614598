//! The `herald` executable as a process: a crash (SIGKILL) loses no accepted
//! message and repeats at most `max_in_flight` sends, each under its message id as
//! the idempotency key; SIGTERM and SIGINT stop accepting, let in-flight sends
//! finish within the grace period and record them; a bad configuration stops
//! `herald serve` with a message naming the setting. An API process and worker
//! processes share one store of each engine and survive a worker's SIGKILL.
//! This file holds the harness the parts share: a `herald` child process that is
//! killed when dropped, its config file, and the provider's delivery counts.

mod config;
mod crash;
mod shutdown;
mod workers;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{ProviderServer, Received, Reply, TestApp, client, wait_for};

/// How long a process may take to start and answer `/healthz`.
const START: Duration = Duration::from_secs(20);
const FINISH: Duration = Duration::from_secs(30);

/// `herald` with an environment of its own: no inherited `HERALD_…` or `RUST_LOG`
/// variable can change what a test means, and logs are at `info`.
pub(crate) fn herald_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.env("HERALD_LOG", "info");
    command
}

/// Runs `command` to completion with no input; the child is killed if it is still
/// running after `within` (or the test fails first).
pub(crate) async fn output_within(command: Command, within: Duration) -> Output {
    let mut command = tokio::process::Command::from(command);
    command.stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(within, command.output()).await {
        Ok(output) => output.expect("run herald"),
        Err(_) => panic!("herald did not exit within {within:?}: {command:?}"),
    }
}

/// A child process, killed with SIGKILL when dropped, whatever the test did; its
/// standard error is collected and shown if the test is failing.
struct Process {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends `signal` (`TERM`, `INT`, …) with kill(1): the crate forbids `unsafe`.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid());
    }

    /// Waits for the process to exit; panics with its log if it is still running after `within`.
    async fn exit_within(&mut self, within: Duration, what: &str) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "herald (pid {}) still running {within:?} after {what}; its log:\n{}",
                self.pid(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("poll the child").is_none()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            let tail = &log[log.len().saturating_sub(200)..];
            eprintln!(
                "--- herald (pid {}) log, last {} lines ---\n{}",
                self.child.id(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// A running `herald serve`.
pub(crate) struct Herald {
    process: Process,
    addr: SocketAddr,
    /// [`TestApp`]'s request helpers aimed at the process; its `running` is `None`
    /// and its temp dir unused (the store lives in the test's own dir, across restarts).
    pub(crate) api: TestApp,
}

impl Herald {
    /// Runs `herald serve --config CONFIG` with `env` on top (the file listens on
    /// port 0), reads the bound address from its JSON log and waits for `/healthz`.
    pub(crate) async fn serve(config: &Path, env: &[(&str, &str)]) -> Herald {
        Self::start("serve", config, env).await
    }

    /// The same for `herald api`: the API without workers.
    async fn api(config: &Path, env: &[(&str, &str)]) -> Herald {
        Self::start("api", config, env).await
    }

    async fn start(subcommand: &str, config: &Path, env: &[(&str, &str)]) -> Herald {
        let (process, rx) = spawn(subcommand, config, env);
        let addr = match tokio::time::timeout(START, rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!(
                "herald never logged `herald listening` with an `addr` field; its log:\n{}",
                process.log()
            ),
        };
        let api = TestApp {
            url: format!("http://{addr}"),
            client: client(),
            running: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let healthz = format!("{}/healthz", api.url);
        wait_for(START, "GET /healthz to answer 200", || async {
            let response = api.client.get(&healthz).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        Herald { process, addr, api }
    }

    /// SIGKILL: no shutdown code runs.
    pub(crate) fn kill(mut self) {
        self.process.child.kill().expect("SIGKILL herald");
        self.process.child.wait().expect("reap herald");
    }
}

/// Starts `herald SUBCOMMAND --config CONFIG` with `env` on top, collecting its JSON
/// log; the receiver yields the address once it logs `herald listening`.
fn spawn(
    subcommand: &str,
    config: &Path,
    env: &[(&str, &str)],
) -> (Process, tokio::sync::oneshot::Receiver<SocketAddr>) {
    let mut child = herald_command()
        .args(["--log-format", "json", subcommand, "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start herald {subcommand}: {e}"));
    let stderr = child.stderr.take().expect("stderr is piped");
    let process = Process {
        child,
        log: Arc::default(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let log = process.log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = listening_addr(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr);
            }
            log.lock().unwrap().push(line);
        }
    });
    (process, rx)
}

/// The `addr` of the `herald listening` JSON log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let entry: Value = serde_json::from_str(line).ok()?;
    let fields = &entry["fields"];
    if !fields["message"].as_str()?.contains("listening") {
        return None;
    }
    fields["addr"].as_str()?.parse().ok()
}

/// Writes `DIR/herald.toml`: port 0, the store in `DIR/store`, SMS to `server`,
/// fast polls and retries. Each test sets its worker limits through `HERALD_…`.
pub(crate) fn write_config(dir: &Path, server: &ProviderServer) -> PathBuf {
    let store = dir.join("store");
    let text = format!(
        r#"listen = "127.0.0.1:0"
store = {store:?}

[defaults]
sms = "hook"

[worker]
poll_interval_ms = 20

[retry]
base_delay_ms = 20
max_delay_ms = 500

[[providers]]
name = "hook"
kind = "webhook"
url = "{url}"
channels = ["sms"]
"#,
        store = store.display().to_string(),
        url = server.url,
    );
    let path = dir.join("herald.toml");
    std::fs::write(&path, text).expect("write herald.toml");
    path
}

/// `200 {"id": "p-<n>"}`: the provider's id lands in the ledger.
fn ok(n: usize) -> Reply {
    Reply::ok().body(&format!(r#"{{"id":"p-{n}"}}"#))
}

/// How many requests the provider received for each Idempotency-Key.
fn per_key(received: &[Received]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in received {
        *counts.entry(r.key.clone()).or_insert(0) += 1;
    }
    counts
}

/// A short description of how two id sets differ, for assertion messages.
fn difference(expected: &HashSet<String>, actual: &HashSet<String>) -> String {
    let mut missing: Vec<_> = expected.difference(actual).collect();
    let mut unexpected: Vec<_> = actual.difference(expected).collect();
    missing.sort();
    unexpected.sort();
    format!(
        "{} missing (first: {:?}), {} unexpected (first: {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        unexpected.len(),
        unexpected.iter().take(5).collect::<Vec<_>>()
    )
}

fn ids(messages: &[Value]) -> HashSet<String> {
    messages
        .iter()
        .map(|m| m["id"].as_str().expect("a message id").to_string())
        .collect()
}

/// Waits until `server` has received at least `n` requests.
async fn received_at_least(server: &ProviderServer, n: usize, within: Duration) {
    wait_for(
        within,
        &format!("the provider to receive {n} requests"),
        || std::future::ready((server.count() >= n).then_some(())),
    )
    .await;
}
