//! SIGTERM and SIGINT: herald stops accepting, lets in-flight sends finish within
//! the grace period and records them, abandons what outlasts it to lease expiry,
//! and answers a request already in progress.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ProviderServer, sms_batch, wait_for};

use super::{FINISH, Herald, ok, per_key, received_at_least, write_config};

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
