//! Failover between providers: a channel's failover list, each provider behind a
//! circuit breaker. A provider that keeps failing has its messages sent through
//! the next one, which the ledger names; after it recovers, a probe message
//! closes its circuit and its traffic comes back. Template providers get their
//! own template code across the failover.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Metrics, ProviderServer, Reply, TestApp, serve_local, sms_batch, sms_provider, spawn_app,
    wait_for,
};
use crate::template_sms::tencent;
use herald::circuit::CircuitState;
use herald::config::Config;
use herald::domain::Channel;
use herald::domain::Secret;
use herald::provider::{AliyunConfig, ProviderConfig, ProviderKind};

/// Opens when half of at least 2 calls failed, probes after 300 ms (then 600 ms).
fn quick_circuits(config: &mut Config) {
    config.circuit.min_calls = 2;
    config.circuit.cooldown_ms = 300;
    config.circuit.max_cooldown_ms = 600;
}

fn named(server: &ProviderServer, name: &str) -> ProviderConfig {
    let mut provider = server.provider(None);
    provider.name = name.into();
    provider.channels = vec![Channel::Sms];
    provider
}

fn circuit(herald: &TestApp, provider: &str) -> CircuitState {
    let running = herald.running.as_ref().expect("Herald runs");
    running
        .circuits()
        .states()
        .into_iter()
        .find(|(name, _)| name == provider)
        .map(|(_, state)| state)
        .expect("every provider has a circuit")
}

/// The sample of `provider`'s circuit `state` in a scrape of `/metrics`: 1 or 0.
fn scraped_circuit(metrics: &Metrics, provider: &str, state: &str) -> u8 {
    let series =
        format!(r#"herald_provider_circuit_state{{provider="{provider}",state="{state}"}}"#);
    metrics.sample(&series).parse().expect("a 0 or 1")
}

/// The ledger's provider of each message of a finished batch, all of them sent.
async fn senders(herald: &TestApp, batch: &Value) -> Vec<String> {
    let id = herald.submit(batch).await;
    herald.wait_finished(&id, Duration::from_secs(20)).await;
    herald
        .messages(&id)
        .await
        .iter()
        .map(|m| {
            assert_eq!(m["state"], "sent", "{m}");
            m["provider"].as_str().expect("a provider").to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_fails_over_to_the_next_and_gets_its_traffic_back_after_a_probe() {
    let first = ProviderServer::start().await;
    let second = ProviderServer::start().await;
    first.behave(|_, _| Reply::status(503).body("down for maintenance"));
    let herald = spawn_app(|config| {
        config.providers = vec![named(&first, "first"), named(&second, "second")];
        config
            .failover
            .insert(Channel::Sms, vec!["first".into(), "second".into()]);
        quick_circuits(config);
    })
    .await;

    // While `first` answers 503, its circuit opens and the batch goes through
    // `second`; every message is sent once, and the ledger names `second`.
    let batch = sms_batch(20);
    let sent_by = senders(&herald, &batch).await;
    assert!(sent_by.iter().all(|p| p == "second"), "{sent_by:?}");
    assert_eq!(second.count(), 20, "each message once");
    assert!(
        first.count() >= 2,
        "`first` is tried until its circuit opens"
    );
    assert_ne!(circuit(&herald, "first"), CircuitState::Closed);
    assert_eq!(circuit(&herald, "second"), CircuitState::Closed);
    // /metrics shows it (open, or half-open once the cool-down is over); nothing is
    // left to send, so no probe can close it meanwhile.
    let metrics = herald.metrics().await;
    assert_eq!(scraped_circuit(&metrics, "first", "closed"), 0);
    assert_eq!(
        scraped_circuit(&metrics, "first", "open")
            + scraped_circuit(&metrics, "first", "half_open"),
        1
    );
    assert_eq!(scraped_circuit(&metrics, "second", "closed"), 1);

    // `first` recovers. Once its cool-down is over, one probe message goes through
    // it (the rest of the batch meanwhile through `second`); its success closes
    // the circuit.
    first.behave(|n, _| Reply::ok().body(&format!(r#"{{"id":"first-{n}"}}"#)));
    wait_for(Duration::from_secs(5), "the cool-down to end", || async {
        (circuit(&herald, "first") == CircuitState::HalfOpen).then_some(())
    })
    .await;
    let sent_by = senders(&herald, &sms_batch(20)).await;
    assert!(sent_by.iter().any(|p| p == "first"), "{sent_by:?}");
    assert_eq!(circuit(&herald, "first"), CircuitState::Closed);
    let metrics = herald.metrics().await;
    assert_eq!(scraped_circuit(&metrics, "first", "closed"), 1);

    // With the circuit closed, traffic is back on `first`.
    let before = second.count();
    let sent_by = senders(&herald, &sms_batch(20)).await;
    assert!(sent_by.iter().all(|p| p == "first"), "{sent_by:?}");
    assert_eq!(second.count(), before, "`second` got none of it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_circuit_open_holds_the_messages_unattempted_until_one_closes() {
    let first = ProviderServer::start().await;
    let second = ProviderServer::start().await;
    for server in [&first, &second] {
        server.behave(|_, _| Reply::status(503));
    }
    let herald = spawn_app(|config| {
        config.providers = vec![named(&first, "first"), named(&second, "second")];
        config
            .failover
            .insert(Channel::Sms, vec!["first".into(), "second".into()]);
        config.retry.max_attempts = 100;
        quick_circuits(config);
        config.circuit.max_cooldown_ms = 300;
    })
    .await;
    let id = herald.submit(&sms_batch(10)).await;
    wait_for(Duration::from_secs(10), "both circuits to open", || async {
        let open = |p| circuit(&herald, p) != CircuitState::Closed;
        (open("first") && open("second")).then_some(())
    })
    .await;
    // Both down: the messages wait, none failed.
    let (_, summary) = herald.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(summary["counts"]["failed"], 0, "{summary}");
    // `second` comes back: a probe closes its circuit and the batch goes through it.
    second.behave(|_, _| Reply::ok());
    herald.wait_finished(&id, Duration::from_secs(20)).await;
    let ledger = herald.messages(&id).await;
    assert!(
        ledger
            .iter()
            .all(|m| m["state"] == "sent" && m["provider"] == "second"),
        "{ledger:?}"
    );
}

/// A local Aliyun endpoint that is down: every request answers 503.
async fn aliyun_down(name: &str) -> ProviderConfig {
    let app = Router::new().fallback(|| async {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"Code":"ServiceUnavailable","Message":"down","RequestId":"r"}"#,
        )
    });
    let kind = ProviderKind::Aliyun(AliyunConfig {
        access_key_id: "LTAIe2e".into(),
        access_key_secret: Secret::new("e2e-secret"),
        sign_name: Some("AliSign".into()),
        region_id: "cn-hangzhou".into(),
        endpoint: serve_local(app).await,
    });
    sms_provider(name, kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_template_fails_over_with_the_fallbacks_own_code_and_sign() {
    let ali = aliyun_down("ali").await;
    let (tc, seen) = tencent("tc").await;
    let herald = spawn_app(|config| {
        config.providers = vec![ali, tc];
        config
            .failover
            .insert(Channel::Sms, vec!["ali".into(), "tc".into()]);
        // Probes of Aliyun count attempts of the messages that wait for it.
        config.retry.max_attempts = 100;
        quick_circuits(config);
    })
    .await;
    for (id, providers) in [
        (
            "otp",
            json!({"ali": {"code": "SMS_100", "sign_name": "AliSign"},
                   "tc": {"code": "1234567", "sign_name": "TcSign"}}),
        ),
        ("ali-only", json!({"ali": {"code": "SMS_200"}})),
    ] {
        let (status, created) = herald
            .post(
                "/v1/templates",
                &json!({"id": id, "channel": "sms", "body": "Your code is {{ 1 }}",
                        "providers": providers}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
    }
    let batch = |template: &str, first: usize| {
        let recipients: Vec<Value> = (first..first + 6)
            .map(|i| json!({"to": format!("+86138{i:08}"), "vars": {"1": "4321"}}))
            .collect();
        json!({"channel": "sms", "template_id": template, "recipients": recipients})
    };
    let ali_only = herald.submit(&batch("ali-only", 100)).await;
    let otp = herald.submit(&batch("otp", 0)).await;
    herald.wait_finished(&otp, Duration::from_secs(20)).await;

    // Sent through Tencent Cloud, with Tencent's code and sign for the template.
    for m in herald.messages(&otp).await {
        assert_eq!(
            (&m["state"], &m["provider"]),
            (&json!("sent"), &json!("tc"))
        );
        let to = m["to"].as_str().unwrap();
        assert_eq!(m["provider_message_id"], format!("serial-{to}"), "{m}");
    }
    let requests = seen.lock().unwrap().clone();
    let mut numbers: Vec<String> = Vec::new();
    for r in &requests {
        assert_eq!(
            (&r["TemplateId"], &r["SignName"]),
            (&json!("1234567"), &json!("TcSign"))
        );
        assert_eq!(r["TemplateParamSet"], json!(["4321"]), "{r}");
        numbers.extend(
            r["PhoneNumberSet"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.to_string()),
        );
    }
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 6, "{requests:?}");

    // The template Tencent has no code for cannot fail over: its messages wait for
    // Aliyun, none failed, none sent to Tencent.
    let (_, summary) = herald.get(&format!("/v1/batches/{ali_only}")).await;
    assert_eq!(summary["counts"]["failed"], 0, "{summary}");
    assert_eq!(summary["counts"]["sent"], 0, "{summary}");
    assert!(
        !requests
            .iter()
            .any(|r| r["PhoneNumberSet"].to_string().contains("+8613800000100")),
        "{requests:?}"
    );
}
