//! The `herald` executable as a process: a crash (SIGKILL) loses no accepted
//! message and repeats at most `max_in_flight` sends, each under its message id as
//! the idempotency key; SIGTERM and SIGINT stop accepting, let in-flight sends
//! finish within the grace period and record them; a bad configuration stops
//! `herald serve` with a message naming the setting. An API process and worker
//! processes share one store of each engine and survive a worker's SIGKILL.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ProviderServer, Received, Reply, TestApp, client, sms_batch, wait_for};
use crate::store::{Engine, Scratch};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_delivery_loses_no_message_and_repeats_at_most_max_in_flight() {
    const TOTAL: usize = 2_000;
    const MAX_IN_FLIGHT: usize = 32;
    let server = ProviderServer::start().await;
    server.behave(|n, _| ok(n).delayed(Duration::from_millis(10)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);
    let max_in_flight = MAX_IN_FLIGHT.to_string();
    let env = [
        ("HERALD_WORKER__MAX_IN_FLIGHT", max_in_flight.as_str()),
        ("HERALD_WORKER__LEASE_MS", "2500"),
        ("HERALD_WORKER__SEND_TIMEOUT_MS", "2000"),
    ];

    let herald = Herald::serve(&config, &env).await;
    let batch_id = herald.api.submit(&sms_batch(TOTAL)).await;
    received_at_least(&server, 300, FINISH).await;
    herald.kill();
    let delivered_before_the_crash = per_key(&server.received()).len();
    assert!(
        delivered_before_the_crash < TOTAL,
        "every message was delivered before the kill; the test needs the crash to interrupt delivery"
    );

    let herald = Herald::serve(&config, &env).await;
    let batch = herald.api.wait_finished(&batch_id, FINISH).await;

    assert_eq!(batch["state"], "done", "{batch}");
    assert_eq!(batch["counts"]["total"], TOTAL, "{batch}");
    assert_eq!(batch["counts"]["sent"], TOTAL, "{batch}");
    let ledger = herald.api.messages(&batch_id).await;
    let accepted = ids(&ledger);
    let expected: HashSet<String> = (0..TOTAL).map(|i| format!("{batch_id}-{i}")).collect();
    assert!(
        accepted == expected,
        "the ledger holds every accepted recipient as batch id + index: {}",
        difference(&expected, &accepted)
    );
    let received = server.received();
    for r in &received {
        assert_eq!(r.json["id"], r.key.as_str(), "key and payload id differ");
    }
    let keys: HashSet<String> = received.iter().map(|r| r.key.clone()).collect();
    assert!(
        keys == accepted,
        "every accepted message reaches the provider, and nothing else does: {}",
        difference(&accepted, &keys)
    );
    let repeats = received.len() - keys.len();
    assert!(
        repeats <= MAX_IN_FLIGHT,
        "{repeats} repeated sends after a crash, more than max_in_flight = {MAX_IN_FLIGHT}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_and_three_workers_share_a_sqlite_store_and_survive_a_worker_kill() {
    an_api_and_three_workers_survive_a_worker_kill("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_and_three_workers_share_a_postgres_store_and_survive_a_worker_kill() {
    an_api_and_three_workers_survive_a_worker_kill("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_and_three_workers_share_a_redis_store_and_survive_a_worker_kill() {
    an_api_and_three_workers_survive_a_worker_kill("redis").await;
}

/// A fresh store of `engine` (`sqlite`, `postgres`, `redis`), removed when dropped.
async fn scratch_store(engine: &str) -> (Engine, Scratch) {
    let engine = Engine::parse(engine).unwrap_or_else(|e| panic!("{e}"));
    let store = engine
        .scratch("e2e")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (engine, store)
}

/// One `herald api` and three `herald worker` processes share a fresh store of
/// `engine`; one worker is SIGKILLed after a few hundred deliveries. Every message
/// still reaches the provider, the batch reports all of them sent, repeats stay
/// within what the killed worker had in flight, and the other workers run on.
async fn an_api_and_three_workers_survive_a_worker_kill(engine: &str) {
    const TOTAL: usize = 1_500;
    const MAX_IN_FLIGHT: usize = 16;
    // Declared first, so dropped last: after every process using it is killed.
    let (engine, store) = scratch_store(engine).await;
    let server = ProviderServer::start().await;
    server.behave(|n, _| ok(n).delayed(Duration::from_millis(5)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);
    let max_in_flight = MAX_IN_FLIGHT.to_string();
    let env = [
        ("HERALD_STORE", store.url()),
        ("HERALD_WORKER__MAX_IN_FLIGHT", max_in_flight.as_str()),
        ("HERALD_WORKER__LEASE_MS", "2500"),
        ("HERALD_WORKER__SEND_TIMEOUT_MS", "2000"),
    ];
    let api = Herald::api(&config, &env).await;
    let (mut doomed, _) = spawn("worker", &config, &env);
    let mut survivors = [
        spawn("worker", &config, &env).0,
        spawn("worker", &config, &env).0,
    ];

    let batch_id = api.api.submit(&sms_batch(TOTAL)).await;
    received_at_least(&server, 300, FINISH).await;
    doomed.child.kill().expect("SIGKILL one worker");
    doomed.child.wait().expect("reap it");
    assert!(
        server.count() < TOTAL,
        "every message was delivered before the kill; the test needs the kill to interrupt delivery"
    );
    let batch = api.api.wait_finished(&batch_id, FINISH).await;

    assert_eq!(batch["counts"]["sent"], TOTAL, "{engine}: {batch}");
    let received = server.received();
    let keys = per_key(&received);
    let expected: HashSet<String> = (0..TOTAL).map(|i| format!("{batch_id}-{i}")).collect();
    let delivered: HashSet<String> = keys.keys().cloned().collect();
    assert!(
        delivered == expected,
        "{engine}: every message reached the provider: {}",
        difference(&expected, &delivered)
    );
    let repeats = received.len() - keys.len();
    assert!(
        repeats <= MAX_IN_FLIGHT,
        "{engine}: {repeats} repeats after killing one worker, more than its max_in_flight = {MAX_IN_FLIGHT}"
    );
    for survivor in &mut survivors {
        assert!(
            survivor.running(),
            "{engine}: worker {} stopped; its log:\n{}",
            survivor.pid(),
            survivor.log()
        );
        assert!(
            !survivor.log().contains("listening"),
            "a worker does not listen"
        );
    }
    assert!(
        api.process.log().contains("herald listening"),
        "the API process listens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_batch_survives_a_kill_9_right_after_the_202() {
    const TOTAL: usize = 200;
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);

    let herald = Herald::serve(&config, &[("HERALD_WORKER__ENABLED", "false")]).await;
    let batch_id = herald.api.submit(&sms_batch(TOTAL)).await;
    herald.kill();
    assert_eq!(server.count(), 0, "no worker ran before the kill");

    let herald = Herald::serve(&config, &[]).await;
    let (status, batch) = herald.api.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["counts"]["total"], TOTAL, "{batch}");
    let batch = herald.api.wait_finished(&batch_id, FINISH).await;
    assert_eq!(batch["state"], "done", "{batch}");
    assert_eq!(batch["counts"]["sent"], TOTAL, "{batch}");
    let keys = per_key(&server.received());
    assert_eq!(keys.len(), TOTAL);
    assert!(keys.values().all(|&n| n == 1), "no repeats without a crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_finishes_in_flight_sends_records_them_and_exits_0() {
    const TOTAL: usize = 20;
    let server = ProviderServer::start().await;
    server.behave(|n, _| ok(n).delayed(Duration::from_secs(1)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);
    let env = [
        ("HERALD_WORKER__MAX_IN_FLIGHT", "4"),
        ("HERALD_WORKER__LEASE_MS", "6000"),
        ("HERALD_WORKER__SEND_TIMEOUT_MS", "5000"),
        ("HERALD_WORKER__SHUTDOWN_GRACE_MS", "5000"),
    ];

    let mut herald = Herald::serve(&config, &env).await;
    let batch_id = herald.api.submit(&sms_batch(TOTAL)).await;
    received_at_least(&server, 4, FINISH).await;
    let in_flight: HashSet<String> = server.received().into_iter().map(|r| r.key).collect();
    herald.process.signal("TERM");

    // The sends take a second, so the listener must close while they finish.
    wait_for(
        Duration::from_secs(3),
        "herald to refuse new connections after SIGTERM",
        || async { TcpStream::connect(herald.addr).await.is_err().then_some(()) },
    )
    .await;
    assert!(
        herald.process.running(),
        "herald exited before its in-flight sends could finish"
    );
    // The sends end a second after they began: exiting then, not at the end of
    // the 5 s grace period.
    let status = herald
        .process
        .exit_within(Duration::from_secs(3), "SIGTERM")
        .await;
    assert!(status.success(), "herald exited with {status}");
    assert_eq!(
        server.count(),
        4,
        "no message is claimed once shutdown is asked for"
    );
    assert_eq!(in_flight.len(), 4);
    assert!(
        TcpStream::connect(herald.addr).await.is_err(),
        "nothing listens after exit"
    );

    server.behave(|n, _| ok(n));
    let herald = Herald::serve(&config, &env).await;
    let batch = herald.api.wait_finished(&batch_id, FINISH).await;
    assert_eq!(batch["counts"]["sent"], TOTAL, "{batch}");
    let received = server.received();
    assert_eq!(
        received.len(),
        TOTAL,
        "the sends finished during shutdown were recorded, so none is repeated: {:?}",
        per_key(&received)
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .collect::<Vec<_>>()
    );
    assert_eq!(per_key(&received).len(), TOTAL);
    let ledger = herald.api.messages(&batch_id).await;
    for m in ledger
        .iter()
        .filter(|m| in_flight.contains(m["id"].as_str().unwrap()))
    {
        assert_eq!(m["state"], "sent", "{m}");
        assert_eq!(m["attempts"], 1, "{m}");
        assert!(
            m["provider_message_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("p-")),
            "the receipt of a send finished during shutdown is kept: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_that_outlast_the_grace_period_are_abandoned_and_delivered_after_restart() {
    const TOTAL: usize = 20;
    const MAX_IN_FLIGHT: usize = 4;
    let server = ProviderServer::start().await;
    server.behave(|n, _| ok(n).delayed(Duration::from_secs(10)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);
    let env = [
        ("HERALD_WORKER__MAX_IN_FLIGHT", "4"),
        ("HERALD_WORKER__LEASE_MS", "1500"),
        ("HERALD_WORKER__SEND_TIMEOUT_MS", "1000"),
        ("HERALD_WORKER__SHUTDOWN_GRACE_MS", "500"),
    ];

    let mut herald = Herald::serve(&config, &env).await;
    let batch_id = herald.api.submit(&sms_batch(TOTAL)).await;
    received_at_least(&server, MAX_IN_FLIGHT, FINISH).await;
    let abandoned: HashSet<String> = server.received().into_iter().map(|r| r.key).collect();
    herald.process.signal("TERM");
    let status = herald
        .process
        .exit_within(Duration::from_secs(4), "SIGTERM with a 500 ms grace")
        .await;
    assert!(status.success(), "herald exited with {status}");
    assert_eq!(server.count(), MAX_IN_FLIGHT);

    server.behave(|n, _| ok(n));
    let herald = Herald::serve(&config, &env).await;
    let batch = herald.api.wait_finished(&batch_id, FINISH).await;

    assert_eq!(batch["state"], "done", "{batch}");
    assert_eq!(batch["counts"]["sent"], TOTAL, "{batch}");
    let received = server.received();
    let counts = per_key(&received);
    assert_eq!(counts.len(), TOTAL, "every message reached the provider");
    let repeats = received.len() - counts.len();
    assert!(
        repeats <= MAX_IN_FLIGHT,
        "{repeats} repeats, more than max_in_flight: {counts:?}"
    );
    for (key, n) in &counts {
        assert!(
            *n == 1 || abandoned.contains(key),
            "{key} was sent {n} times but was not in flight at shutdown"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_shuts_down_as_cleanly_as_sigterm() {
    let server = ProviderServer::start().await;
    server.behave(|n, _| ok(n).delayed(Duration::from_millis(300)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);

    let mut herald = Herald::serve(&config, &[("HERALD_WORKER__MAX_IN_FLIGHT", "2")]).await;
    let batch_id = herald.api.submit(&sms_batch(6)).await;
    received_at_least(&server, 2, FINISH).await;
    let in_flight: HashSet<String> = server.received().into_iter().map(|r| r.key).collect();
    herald.process.signal("INT");
    let status = herald
        .process
        .exit_within(Duration::from_secs(5), "SIGINT")
        .await;
    assert!(status.success(), "herald exited with {status}");
    assert_eq!(server.count(), 2);

    let herald = Herald::serve(&config, &[("HERALD_WORKER__ENABLED", "false")]).await;
    let ledger = herald.api.messages(&batch_id).await;
    assert_eq!(ledger.len(), 6);
    for m in &ledger {
        let id = m["id"].as_str().unwrap();
        if in_flight.contains(id) {
            assert_eq!(m["state"], "sent", "{m}");
            assert_eq!(m["attempts"], 1, "{m}");
        } else {
            assert_eq!(m["state"], "pending", "{m}");
            assert_eq!(m["attempts"], 0, "{m}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_progress_at_sigterm_is_answered_and_its_batch_kept() {
    const TOTAL: usize = 10;
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);
    let mut herald = Herald::serve(&config, &[("HERALD_WORKER__ENABLED", "false")]).await;
    let mut stream = TcpStream::connect(herald.addr).await.unwrap();
    // A first request on the connection proves Herald has accepted it.
    let host = herald.addr;
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, 200);
    let body = serde_json::to_vec(&sms_batch(TOTAL)).unwrap();
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first_half).await.unwrap();

    herald.process.signal("TERM");
    wait_for(
        Duration::from_secs(3),
        "herald to refuse new connections after SIGTERM",
        || async { TcpStream::connect(host).await.is_err().then_some(()) },
    )
    .await;
    stream.write_all(second_half).await.unwrap();
    let (status, report) = read_response(&mut stream).await;
    let status_of_exit = herald
        .process
        .exit_within(Duration::from_secs(3), "SIGTERM and the last request")
        .await;

    assert_eq!(status, 202, "{report}");
    assert!(
        status_of_exit.success(),
        "herald exited with {status_of_exit}"
    );
    let batch_id = report["batch_id"].as_str().expect("a batch id").to_string();
    let herald = Herald::serve(&config, &[]).await;
    let batch = herald.api.wait_finished(&batch_id, FINISH).await;
    assert_eq!(batch["counts"]["sent"], TOTAL, "{batch}");
    assert_eq!(per_key(&server.received()).len(), TOTAL);
}

/// Reads one HTTP/1.1 response with a `Content-Length` body: its status and JSON.
async fn read_response(stream: &mut TcpStream) -> (u16, Value) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse().expect("a content length"));
            if buffer.len() >= end + 4 + length {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("a status line");
                let json = serde_json::from_slice(&buffer[end + 4..end + 4 + length])
                    .unwrap_or(Value::Null);
                return (status, json);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .expect("read the response");
        assert!(
            n > 0,
            "the connection closed before a whole response: {buffer:?}"
        );
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// One way to get the configuration wrong, and what `herald serve` must say about it.
struct BadConfig {
    what: &'static str,
    /// The config file's text; `None`: the file given with `--config` does not exist.
    file: Option<String>,
    env: &'static [(&'static str, &'static str)],
    /// Substrings of stderr, compared case-insensitively (figment names environment
    /// keys in upper case).
    says: &'static [&'static str],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_stops_serve_with_a_message_naming_the_setting() {
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(write_config(dir.path(), &server)).unwrap();
    let cases = [
        BadConfig {
            what: "the default provider is not declared",
            file: Some(good.replace(r#"sms = "hook""#, r#"sms = "nope""#)),
            env: &[],
            says: &["`nope`", "default for sms", "not declared"],
        },
        BadConfig {
            what: "the lease is not longer than the send timeout",
            file: Some(good.clone()),
            env: &[
                ("HERALD_WORKER__LEASE_MS", "1000"),
                ("HERALD_WORKER__SEND_TIMEOUT_MS", "1000"),
            ],
            says: &["worker.lease_ms", "worker.send_timeout_ms"],
        },
        BadConfig {
            what: "an unknown store scheme",
            file: Some(good.clone()),
            env: &[("HERALD_STORE", "foo://x")],
            says: &["store", "foo://"],
        },
        BadConfig {
            what: "a number that is not one, from the environment",
            file: Some(good.clone()),
            env: &[("HERALD_WORKER__MAX_IN_FLIGHT", "lots")],
            says: &["worker.max_in_flight", "lots"],
        },
        BadConfig {
            what: "max_in_flight of zero",
            file: Some(good.clone()),
            env: &[("HERALD_WORKER__MAX_IN_FLIGHT", "0")],
            says: &["worker.max_in_flight"],
        },
        BadConfig {
            what: "a misspelt key in the file",
            file: Some(good.replace("poll_interval_ms", "poll_interval")),
            env: &[],
            says: &["worker.poll_interval", "unknown field"],
        },
        BadConfig {
            what: "a --config file that does not exist",
            file: None,
            env: &[],
            says: &["absent.toml", "does not exist"],
        },
    ];
    for case in cases {
        let path = match &case.file {
            Some(text) => {
                let path = dir.path().join("bad.toml");
                std::fs::write(&path, text).unwrap();
                path
            }
            None => dir.path().join("absent.toml"),
        };
        let mut command = herald_command();
        command
            .args(["serve", "--config"])
            .arg(&path)
            .envs(case.env.iter().copied());
        let output = output_within(command, Duration::from_secs(15)).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let what = case.what;
        assert!(
            !output.status.success() && output.status.code().is_some(),
            "{what}: herald serve exited with {}; stderr:\n{stderr}",
            output.status
        );
        for needle in case.says {
            assert!(
                stderr.to_lowercase().contains(&needle.to_lowercase()),
                "{what}: stderr does not mention {needle:?}:\n{stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_three_workers_on_sqlite() {
    a_rate_limit_holds_across_three_workers("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_three_workers_on_postgres() {
    a_rate_limit_holds_across_three_workers("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_three_workers_on_redis() {
    a_rate_limit_holds_across_three_workers("redis").await;
}

/// Three `herald worker` processes deliver through one provider limited to 200
/// messages/s: the provider never sees more than that, + 10 %, within any two
/// seconds, and the workers together still use the limit. Two seconds, not one: the
/// times are taken where the provider receives, and a worker held up between its
/// claim and its sends on a busy machine brings its messages into the next moment:
/// within one second, full runs of the suite saw 221 and 226 where 220 are allowed.
/// A limit the workers did not share would send three times the rate.
async fn a_rate_limit_holds_across_three_workers(engine: &str) {
    const TOTAL: usize = 600;
    const RATE: f64 = 200.0;
    // Declared first, so dropped last: after every process using it is killed.
    let (engine, store) = scratch_store(engine).await;
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);
    let providers = format!(
        r#"[{{name="hook", kind="webhook", url="{}", channels=["sms"], rate_per_sec={RATE}}}]"#,
        server.url
    );
    let env = [
        ("HERALD_STORE", store.url()),
        ("HERALD_PROVIDERS", providers.as_str()),
    ];
    let api = Herald::api(&config, &env).await;
    let _workers = [
        spawn("worker", &config, &env).0,
        spawn("worker", &config, &env).0,
        spawn("worker", &config, &env).0,
    ];
    let batch_id = api.api.submit(&sms_batch(TOTAL)).await;
    let batch = api.api.wait_finished(&batch_id, FINISH).await;
    assert_eq!(batch["counts"]["sent"], TOTAL, "{engine}: {batch}");

    let mut times: Vec<Instant> = server.received().iter().map(|r| r.at).collect();
    times.sort_unstable();
    assert_eq!(times.len(), TOTAL, "{engine}: no repeats");
    let window = Duration::from_secs(2);
    let busiest = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|&&t| t - times[i] < window)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest as f64 <= 2.0 * RATE * 1.1,
        "{engine}: the provider saw {busiest} messages within two seconds, over {RATE}/s + 10 %"
    );
    let span = times[TOTAL - 1] - times[0];
    let average = (TOTAL - 1) as f64 / span.as_secs_f64();
    eprintln!("{engine}: busiest two seconds {busiest} messages, average {average:.0}/s");
    assert!(
        average >= RATE * 0.8,
        "{engine}: the workers together sent only {average:.0}/s under a limit of {RATE}/s"
    );
}
