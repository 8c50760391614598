//! Circuit breakers without a fallback: a provider that answers most requests is
//! never stopped, and one that was down gets its traffic back as soon as it
//! answers again, whatever the cool-down for providers with a fallback says.

use std::time::{Duration, Instant};

use herald::circuit::CircuitState;

use crate::helpers::{
    ProviderServer, Reply, TestApp, route_all_to, sms_batch, spawn_app, wait_for,
};

fn circuit(herald: &TestApp) -> CircuitState {
    let running = herald.running.as_ref().expect("Herald runs");
    running
        .circuits()
        .states()
        .into_iter()
        .find(|(name, _)| name == "hook")
        .map(|(_, state)| state)
        .expect("the provider has a circuit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failing_every_fifth_request_gets_every_message_through_without_a_stall() {
    let server = ProviderServer::start().await;
    server.behave(|n, _| {
        if n % 5 == 4 {
            Reply::status(503)
        } else {
            Reply::ok().body(&format!(r#"{{"id":"p-{n}"}}"#))
        }
    });
    let herald = spawn_app(|config| {
        route_all_to(config, server.provider(None));
        config.worker.max_in_flight = 50;
        config.retry.max_attempts = 10;
    })
    .await;
    let started = Instant::now();
    let id = herald.submit(&sms_batch(300)).await;
    let batch = herald.wait_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(batch["counts"]["sent"], 300, "{batch}");
    assert_eq!(circuit(&herald), CircuitState::Closed);
    let metrics = herald.metrics().await;
    assert_eq!(
        metrics.sample(r#"herald_provider_circuit_state{provider="hook",state="closed"}"#),
        "1"
    );
    eprintln!(
        "300 messages, every fifth request 503: all sent in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_back_from_an_outage_gets_its_messages_within_a_second_or_so() {
    let server = ProviderServer::start().await;
    server.behave(|_, _| Reply::status(503).body("down"));
    let herald = spawn_app(|config| {
        route_all_to(config, server.provider(None));
        config.retry.max_attempts = 1_000;
        // The cool-down of providers with a fallback, at its default: it must not
        // hold back one without.
        config.circuit.cooldown_ms = 30_000;
        config.circuit.max_cooldown_ms = 600_000;
    })
    .await;
    let id = herald.submit(&sms_batch(40)).await;
    wait_for(Duration::from_secs(10), "the circuit to open", || async {
        (circuit(&herald) != CircuitState::Closed).then_some(())
    })
    .await;
    // Down a while longer: probes keep failing, none stalls the next.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, summary) = herald.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(summary["counts"]["sent"], 0, "{summary}");

    server.behave(|n, _| Reply::ok().body(&format!(r#"{{"id":"p-{n}"}}"#)));
    let recovered = Instant::now();
    let first = wait_for(
        Duration::from_secs(10),
        "a request after the recovery",
        || {
            let received = server.received();
            async move { received.iter().find(|r| r.at >= recovered).map(|r| r.at) }
        },
    )
    .await;
    let resumed = first - recovered;
    assert!(
        resumed < Duration::from_secs(2),
        "resumed after {resumed:?}"
    );
    let batch = herald.wait_finished(&id, Duration::from_secs(10)).await;
    assert_eq!(batch["counts"]["sent"], 40, "{batch}");
    assert_eq!(circuit(&herald), CircuitState::Closed);
    eprintln!(
        "recovered: first request after {resumed:?}, all sent after {:?}",
        recovered.elapsed()
    );
}
