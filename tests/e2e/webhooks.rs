//! Status webhooks end to end: batches sent through a local webhook provider, their
//! events posted to local receivers on 127.0.0.1 (a configured endpoint and a
//! batch's `callback_url`), signed, verified with the `standardwebhooks` package;
//! receivers that fail and recover; the retry window, the API and replay; a
//! shutdown and a kill -9 mid-posting.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::config::{Config, WebhookConfig};
use herald::domain::{HttpUrl, SigningSecret};
use herald::queue::Kinds;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::helpers::{
    ProviderServer, Received, Reply, TestApp, rfc3339_from_now, route_all_to, sms_batch, spawn_app,
    wait_for,
};

const APP_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CALLBACK_SECRET: &str = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY";
/// The webhook provider's secret, which signs its delivery receipts.
const PROVIDER_SECRET: &str = "s3cret";

/// Herald sending through `provider`, posting every event to `receiver` as the
/// endpoint `app`, and signing batches' callbacks; `tweak` changes the rest.
async fn herald_posting_to(
    provider: &ProviderServer,
    receiver: &ProviderServer,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    spawn_app(|config| {
        route_all_to(config, provider.provider(Some(PROVIDER_SECRET)));
        config.webhooks = vec![WebhookConfig {
            name: "app".into(),
            url: HttpUrl::parse(&receiver.url).expect("a URL"),
            secret: SigningSecret::parse(APP_SECRET).expect("a secret"),
            events: Kinds::all(),
            channels: None,
            sources: None,
        }];
        config.webhook.callback_secret =
            Some(SigningSecret::parse(CALLBACK_SECRET).expect("a secret"));
        tweak(config);
    })
    .await
}

/// Every event of `requests`, in order.
fn events(requests: &[Received]) -> Vec<Value> {
    requests
        .iter()
        .flat_map(|r| r.json.as_array().expect("a JSON array of events").clone())
        .collect()
}

/// The events received, by id; each id's events must all be equal.
fn by_id(events: &[Value]) -> BTreeMap<String, Value> {
    let mut by_id = BTreeMap::new();
    for event in events {
        let id = event["id"].as_str().expect("an event id").to_string();
        if let Some(seen) = by_id.insert(id.clone(), event.clone()) {
            assert_eq!(seen, *event, "event {id} changed between posts");
        }
    }
    by_id
}

/// Verifies every request with the `standardwebhooks` package
/// (`tests/webhook/verify.py`), under `secret`: how many verified, or what the
/// package said of the first that did not. Panics when the package is missing.
fn standardwebhooks_verify(secret: &str, requests: &[Received]) -> Result<usize, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhook/verify.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test installs it and standardwebhooks)");
    let mut stdin = child.stdin.take().expect("piped stdin");
    for request in requests {
        let header = |name: &str| request.headers[name].to_str().expect("ASCII").to_string();
        let line = json!({
            "secret": secret,
            "headers": {
                "webhook-id": header("webhook-id"),
                "webhook-timestamp": header("webhook-timestamp"),
                "webhook-signature": header("webhook-signature"),
            },
            "body": std::str::from_utf8(&request.raw).expect("a UTF-8 body"),
        });
        writeln!(stdin, "{line}").expect("write to verify.py");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("verify.py ran");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(3), "{stderr}");
    if !out.status.success() {
        return Err(stderr);
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

/// A receipt from the webhook provider, signed as it signs them.
async fn receipt(herald: &TestApp, body: Value) {
    let body = body.to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(PROVIDER_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let headers = [("x-herald-signature", signature.as_str())];
    let (status, _, answer) = herald
        .post_raw("/v1/receipts/hook", "application/json", &headers, body)
        .await;
    assert_eq!(status, 200, "{answer}");
}

/// Waits until `server` has received events with every id of `ids`.
async fn wait_for_events(server: &ProviderServer, ids: &[String]) -> BTreeMap<String, Value> {
    wait_for(
        Duration::from_secs(20),
        &format!("events {ids:?}"),
        || async {
            let got = by_id(&events(&server.received()));
            ids.iter().all(|id| got.contains_key(id)).then_some(got)
        },
    )
    .await
}

/// Runs `test` with a fresh store of each engine, one after the other.
async fn on_every_engine(test: impl AsyncFn(&str)) {
    for name in ["sqlite", "postgres", "redis"] {
        let engine = crate::store::Engine::parse(name).expect("an engine");
        let scratch = engine.scratch("webhooks").await.expect("a scratch store");
        test(scratch.url()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_event_reaches_the_receivers_signed_as_standard_webhooks_on_every_engine() {
    on_every_engine(every_kind_of_event_reaches_the_receivers).await;
}

/// Sends batches stored in `store` whose messages end in every way, and checks
/// the events both receivers get.
async fn every_kind_of_event_reaches_the_receivers(store: &str) {
    let provider = ProviderServer::start().await;
    // The third recipient is refused for good: `message.failed`.
    // The third recipient is refused for good: `message.failed`; another is
    // refused for now until its deadline passes: `message.expired`.
    provider.behave(|n, json| match json["to"].as_str() {
        Some("+8613800000002") => Reply::status(400).body(r#"{"error":"rejected"}"#),
        Some("+8613800000099") => Reply::status(503),
        _ => Reply::ok().body(&format!(r#"{{"id":"p-{n}"}}"#)),
    });
    let receiver = ProviderServer::start().await;
    let callback = ProviderServer::start().await;
    let herald = herald_posting_to(&provider, &receiver, |config| {
        config.store = store.parse().expect("a store URL");
        config.retry.max_attempts = 1_000;
    })
    .await;

    let mut batch = sms_batch(3);
    batch["callback_url"] = json!(callback.url);
    let sent = herald.submit(&batch).await;
    herald.wait_finished(&sent, Duration::from_secs(10)).await;
    let ledger = herald.messages(&sent).await;
    let provider_id = |i: usize| {
        ledger[i]["provider_message_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    receipt(
        &herald,
        json!([{"id": provider_id(0), "status": "delivered", "code": "DELIVRD"},
               {"id": provider_id(1), "status": "undelivered", "code": "UNDELIV"}]),
    )
    .await;
    let provider_id = provider_id(0);

    let mut later = sms_batch(1);
    later["send_at"] = json!(rfc3339_from_now(3_600_000));
    let cancelled = herald.submit(&later).await;
    let (status, answer) = herald
        .post(&format!("/v1/batches/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let expiring = herald
        .submit(
            &json!({"channel": "sms", "template": {"body": "Hi"}, "valid_for": 1,
                        "recipients": [{"to": "+8613800000099"}]}),
        )
        .await;

    let id = |batch: &str, suffix: &str| format!("{batch}{suffix}");
    let expected = [
        id(&sent, "-0.sent"),
        id(&sent, "-0.delivered"),
        id(&sent, "-1.sent"),
        id(&sent, "-1.undelivered"),
        id(&sent, "-2.failed"),
        id(&sent, ".finished"),
        id(&cancelled, "-0.cancelled"),
        id(&cancelled, ".finished"),
        id(&expiring, "-0.expired"),
        id(&expiring, ".finished"),
    ];
    let got = wait_for_events(&receiver, &expected).await;
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        expected.iter().cloned().collect(),
        "exactly the expected events"
    );

    let delivered = &got[&id(&sent, "-0.delivered")];
    assert_eq!(delivered["type"], "message.delivered");
    assert_eq!(delivered["batch_id"], sent.as_str());
    assert_eq!(delivered["message_id"], format!("{sent}-0"));
    assert_eq!(delivered["to"], "+8613800000000");
    assert_eq!(delivered["ref"], "r0");
    assert_eq!(delivered["provider"], "hook");
    assert_eq!(delivered["provider_message_id"], provider_id.as_str());
    assert_eq!(delivered["code"], "DELIVRD");
    assert_eq!(delivered["channel"], "sms");
    assert!(delivered["at_ms"].as_i64().unwrap() > 0, "{delivered}");
    let undelivered = &got[&id(&sent, "-1.undelivered")];
    assert_eq!(undelivered["type"], "message.undelivered");
    assert_eq!(undelivered["code"], "UNDELIV");
    let expired = &got[&id(&expiring, "-0.expired")];
    assert_eq!(expired["type"], "message.expired");
    assert!(
        expired["code"].as_str().unwrap_or_default().contains("503"),
        "{expired}"
    );
    let failed = &got[&id(&sent, "-2.failed")];
    assert_eq!(failed["type"], "message.failed");
    assert!(failed["code"].as_str().unwrap().contains("400"), "{failed}");
    assert_eq!(
        got[&id(&cancelled, "-0.cancelled")]["type"],
        "message.cancelled"
    );
    let finished = &got[&id(&sent, ".finished")];
    assert_eq!(finished["type"], "batch.finished");
    assert_eq!(finished["counts"]["total"], 3);
    assert_eq!(finished["counts"]["failed"], 1);

    // The callback gets its own batch's events, and only those.
    let own = [
        id(&sent, "-0.sent"),
        id(&sent, "-0.delivered"),
        id(&sent, "-1.sent"),
        id(&sent, "-1.undelivered"),
        id(&sent, "-2.failed"),
        id(&sent, ".finished"),
    ];
    let called = wait_for_events(&callback, &own).await;
    assert_eq!(called.len(), own.len(), "{called:?}");

    for request in receiver.received().iter().chain(&callback.received()) {
        assert_eq!(request.headers["content-type"], "application/json");
        let webhook_id = request.headers["webhook-id"].to_str().unwrap();
        assert!(webhook_id.starts_with("msg_"), "{webhook_id}");
    }
    let (posted, called) = (receiver.received(), callback.received());
    assert_eq!(
        standardwebhooks_verify(APP_SECRET, &posted),
        Ok(posted.len())
    );
    assert_eq!(
        standardwebhooks_verify(CALLBACK_SECRET, &called),
        Ok(called.len())
    );
    // Not a check that passes anything: another secret, or a body changed by a
    // byte, does not verify.
    let refused = standardwebhooks_verify(CALLBACK_SECRET, &posted[..1]).unwrap_err();
    assert!(refused.contains("does not verify"), "{refused}");
    let mut tampered = posted[0].clone();
    let mut body = tampered.raw.to_vec();
    body[1] ^= 1;
    tampered.raw = body.into();
    assert!(standardwebhooks_verify(APP_SECRET, &[tampered]).is_err());
}

/// A receiver that answers 500 while `down` is set and 200 after, keeping the ids
/// of the events in the requests it took.
fn flaky(receiver: &ProviderServer, down: &Arc<AtomicBool>) -> Arc<Mutex<Vec<String>>> {
    let taken = Arc::new(Mutex::new(Vec::new()));
    let (failing, kept) = (down.clone(), taken.clone());
    receiver.behave(move |_, json| {
        if failing.load(Ordering::SeqCst) {
            return Reply::status(500);
        }
        let ids = json.as_array().into_iter().flatten();
        kept.lock()
            .unwrap()
            .extend(ids.map(|e| e["id"].as_str().unwrap_or_default().to_string()));
        Reply::ok()
    });
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_then_recovers_gets_every_event_with_the_same_ids() {
    let provider = ProviderServer::start().await;
    let receiver = ProviderServer::start().await;
    let down = Arc::new(AtomicBool::new(true));
    let taken = flaky(&receiver, &down);
    let herald = herald_posting_to(&provider, &receiver, |_| {}).await;
    let batch = herald.submit(&sms_batch(5)).await;
    herald.wait_finished(&batch, Duration::from_secs(10)).await;
    wait_for(Duration::from_secs(10), "two refused posts", || async {
        (receiver.count() >= 2).then_some(())
    })
    .await;
    let refused = by_id(&events(&receiver.received()));
    assert!(!refused.is_empty());
    down.store(false, Ordering::SeqCst);

    let mut expected: BTreeSet<String> = (0..5).map(|i| format!("{batch}-{i}.sent")).collect();
    expected.insert(format!("{batch}.finished"));
    wait_for(Duration::from_secs(20), "every event taken", || async {
        let taken: BTreeSet<String> = taken.lock().unwrap().iter().cloned().collect();
        (taken == expected).then_some(())
    })
    .await;
    let all = by_id(&events(&receiver.received()));
    assert_eq!(
        all.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "the same event ids before and after the outage, and no other"
    );
    assert!(
        refused.keys().all(|id| expected.contains(id)),
        "the refused events were posted again under their own ids"
    );

    let metrics = wait_for(Duration::from_secs(5), "nothing pending", || async {
        let metrics = herald.metrics().await;
        (metrics.sample("herald_webhook_events_pending{endpoint=\"app\"}") == "0")
            .then_some(metrics)
    })
    .await;
    assert_eq!(
        metrics.sample("herald_webhook_events_posted_total{endpoint=\"app\"}"),
        "6"
    );
    assert_eq!(
        metrics.sample("herald_webhook_events_failed{endpoint=\"app\"}"),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_retry_window_an_event_is_failed_listed_and_replayed_on_every_engine() {
    on_every_engine(failed_events_are_listed_and_replayed).await;
}

/// With a receiver down past the retry window, on `store`: the events are failed,
/// listed and counted, and replayed on request once it is back.
async fn failed_events_are_listed_and_replayed(store: &str) {
    let provider = ProviderServer::start().await;
    let receiver = ProviderServer::start().await;
    let down = Arc::new(AtomicBool::new(true));
    let taken = flaky(&receiver, &down);
    let herald = herald_posting_to(&provider, &receiver, |config| {
        config.store = store.parse().expect("a store URL");
        config.webhook.retry_for = Duration::from_secs(2);
    })
    .await;
    let batch = herald.submit(&sms_batch(1)).await;
    let sent = format!("{batch}-0.sent");
    let path = "/v1/webhooks/app/deliveries?state=failed";
    let failed = wait_for(Duration::from_secs(15), "both events failed", || async {
        let (_, page) = herald.get(path).await;
        (page["deliveries"].as_array().map_or(0, Vec::len) == 2).then_some(page)
    })
    .await;
    for delivery in failed["deliveries"].as_array().unwrap() {
        assert_eq!(delivery["state"], "failed", "{delivery}");
        assert!(delivery["attempts"].as_u64().unwrap() >= 1, "{delivery}");
        let error = delivery["last_error"].as_str().unwrap();
        assert!(error.contains("500"), "{delivery}");
    }
    let (status, listed) = herald.get("/v1/webhooks").await;
    assert_eq!(status, 200, "{listed}");
    let app = &listed["endpoints"][0];
    assert_eq!(
        (&app["name"], &app["failed"], &app["pending"]),
        (&json!("app"), &json!(2), &json!(0))
    );
    let metrics = herald.metrics().await;
    assert_eq!(
        metrics.sample("herald_webhook_events_failed{endpoint=\"app\"}"),
        "2"
    );

    down.store(false, Ordering::SeqCst);
    let replay = |body: Value| {
        let herald = &herald;
        async move { herald.post("/v1/webhooks/app/replay", &body).await }
    };
    assert_eq!(
        replay(json!({"failed": true})).await,
        (200, json!({"replayed": 2}))
    );
    wait_for(
        Duration::from_secs(10),
        "the replayed events taken",
        || async { (taken.lock().unwrap().len() == 2).then_some(()) },
    )
    .await;
    assert_eq!(
        replay(json!({"event_id": sent})).await,
        (200, json!({"replayed": 1}))
    );
    wait_for(
        Duration::from_secs(10),
        "the one event taken again",
        || async {
            let taken = taken.lock().unwrap();
            (taken.iter().filter(|id| **id == sent).count() == 2).then_some(())
        },
    )
    .await;
    // The receiver has it; Herald records it posted when the answer is read.
    wait_for(Duration::from_secs(10), "both events posted", || async {
        let (_, posted) = herald.get("/v1/webhooks/app/deliveries?state=posted").await;
        (posted["deliveries"].as_array().map_or(0, Vec::len) == 2).then_some(())
    })
    .await;

    let (status, answer) = replay(json!({"event_id": "no-such-event"})).await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = replay(json!({})).await;
    assert_eq!(
        (status, &answer["field"]),
        (422, &json!("event_id")),
        "{answer}"
    );
    let (status, answer) = herald.get("/v1/webhooks/nobody/deliveries").await;
    assert_eq!(status, 404, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_posting_loses_no_event() {
    const TOTAL: usize = 300;
    let provider = ProviderServer::start().await;
    let receiver = ProviderServer::start().await;
    receiver.behave(|_, _| Reply::ok().delayed(Duration::from_millis(20)));
    let dir = tempfile::tempdir().unwrap();
    let config = crate::process::write_config(dir.path(), &provider);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[webhooks]]\nname = \"app\"\nurl = \"{}\"\nsecret = \"{APP_SECRET}\"\n",
        receiver.url
    ));
    std::fs::write(&config, text).unwrap();
    // Small posts, so that the kill falls among them. What the crash left claimed
    // is due again at once: on the embedded store the leases were the dead
    // process's, in its memory (the short timeout keeps a server store's short).
    let env = [
        ("HERALD_WEBHOOK__BATCH_SIZE", "10"),
        ("HERALD_WEBHOOK__TIMEOUT", "1"),
    ];

    let herald = crate::process::Herald::serve(&config, &env).await;
    let batch = herald.api.submit(&sms_batch(TOTAL)).await;
    wait_for(Duration::from_secs(30), "a few posts", || async {
        (receiver.count() >= 5).then_some(())
    })
    .await;
    herald.kill();
    let before = by_id(&events(&receiver.received())).len();

    let mut expected: BTreeSet<String> = (0..TOTAL).map(|i| format!("{batch}-{i}.sent")).collect();
    expected.insert(format!("{batch}.finished"));
    let herald = crate::process::Herald::serve(&config, &env).await;
    let got = wait_for(Duration::from_secs(60), "every event", || async {
        let got: BTreeSet<String> = by_id(&events(&receiver.received())).into_keys().collect();
        got.is_superset(&expected).then_some(got)
    })
    .await;
    assert_eq!(got, expected, "every event, and no other");
    assert!(
        before < expected.len(),
        "the kill came before the last post"
    );
    let metrics = wait_for(Duration::from_secs(20), "nothing pending", || async {
        let metrics = herald.api.metrics().await;
        (metrics.sample("herald_webhook_events_pending{endpoint=\"app\"}") == "0")
            .then_some(metrics)
    })
    .await;
    assert_eq!(
        metrics.sample("herald_webhook_events_failed{endpoint=\"app\"}"),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_lets_the_posts_in_flight_finish_and_records_them_posted() {
    let provider = ProviderServer::start().await;
    let receiver = ProviderServer::start().await;
    receiver.behave(|_, _| Reply::ok().delayed(Duration::from_millis(700)));
    let mut herald = herald_posting_to(&provider, &receiver, |_| {}).await;
    let store = herald.dir.path().join("store");
    let batch = herald.submit(&sms_batch(1)).await;
    wait_for(Duration::from_secs(10), "a post in flight", || async {
        (receiver.count() >= 1).then_some(())
    })
    .await;
    herald.stop().await;
    let in_flight = by_id(&events(&receiver.received()[..1]));
    assert!(
        in_flight.contains_key(&format!("{batch}-0.sent")),
        "{in_flight:?}"
    );

    // Restarted on the same store, before any lease could lapse: what was in
    // flight at the shutdown is recorded posted, not left claimed.
    let restarted = herald_posting_to(&provider, &receiver, |config| {
        config.store = herald::domain::StoreUrl::Sqlite(store.clone());
    })
    .await;
    let (_, page) = restarted
        .get("/v1/webhooks/app/deliveries?state=posted")
        .await;
    let posted: BTreeSet<&str> = page["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event"]["id"].as_str().unwrap())
        .collect();
    for id in in_flight.keys() {
        assert!(posted.contains(id.as_str()), "{id} not posted: {page}");
    }
}
