//! Delivery end to end: what the webhook provider receives, how each kind of
//! provider answer is retried or failed, the rate limit, delivery order, scheduled
//! sends, and many batches at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{
    ProviderServer, Reply, TestApp, rfc3339_from_now, route_all_to, sms_batch, spawn_app,
};

const FINISH: Duration = Duration::from_secs(10);

fn ok(n: usize) -> Reply {
    Reply::ok().body(&format!(r#"{{"id":"p-{n}"}}"#))
}

/// Herald delivering every channel to `server`, with `tweak` applied on top.
async fn app_sending_to(
    server: &ProviderServer,
    tweak: impl FnOnce(&mut herald::config::Config),
) -> TestApp {
    spawn_app(|config| {
        route_all_to(config, server.provider(None));
        tweak(config);
    })
    .await
}

/// Submits `batch`, waits until it is finished and returns its ledger.
async fn deliver(app: &TestApp, batch: &Value) -> Vec<Value> {
    let batch_id = app.submit(batch).await;
    app.wait_finished(&batch_id, FINISH).await;
    app.messages(&batch_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_carries_the_message_its_id_as_idempotency_key_and_a_valid_signature() {
    let server = ProviderServer::start().await;
    let app = spawn_app(|config| route_all_to(config, server.provider(Some("s3cret")))).await;
    let email = json!({
        "channel": "email",
        "template": {"subject": "For {{name}}", "body": "Dear {{name}}"},
        "recipients": [{"to": "li@example.com", "vars": {"name": "Li"}, "ref": "order-17"}],
    });

    let sms = deliver(&app, &sms_batch(3)).await;
    let email = deliver(&app, &email).await;

    let received = server.received();
    assert_eq!(received.len(), 4);
    let ledger: HashMap<&str, &Value> = sms
        .iter()
        .chain(&email)
        .map(|m| (m["id"].as_str().unwrap(), m))
        .collect();
    for r in &received {
        assert_eq!(
            r.json["id"],
            r.key.as_str(),
            "the Idempotency-Key is the payload id"
        );
        let message = ledger
            .get(r.key.as_str())
            .unwrap_or_else(|| panic!("{} is not in the ledger", r.key));
        assert_eq!(r.json["to"], message["to"]);
        assert_eq!(r.json["ref"], message["ref"]);
        assert!(
            r.key.starts_with(r.json["batch_id"].as_str().unwrap()),
            "{}",
            r.json
        );
        assert_eq!(message["state"], "sent");
        assert!(
            message["provider_message_id"]
                .as_str()
                .unwrap()
                .starts_with("p-"),
            "{message}"
        );

        let signature = r.signature.as_deref().expect("a signature header");
        let hex_mac = signature.strip_prefix("sha256=").expect("sha256= prefix");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(&r.raw);
        mac.verify_slice(&hex::decode(hex_mac).unwrap())
            .expect("the signature is HMAC-SHA256 of the raw body");
    }
    let sms_payload = received.iter().find(|r| r.json["ref"] == "r1").unwrap();
    assert_eq!(sms_payload.json["channel"], "sms");
    assert_eq!(sms_payload.json["to"], "+8613800000001");
    assert_eq!(sms_payload.json["body"], "Hello n1");
    assert!(sms_payload.json["subject"].is_null());
    let email_payload = received
        .iter()
        .find(|r| r.json["ref"] == "order-17")
        .unwrap();
    assert_eq!(email_payload.json["channel"], "email");
    assert_eq!(email_payload.json["subject"], "For Li");
    assert_eq!(email_payload.json["body"], "Dear Li");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_answers_503_for_a_while_loses_nothing() {
    let server = ProviderServer::start().await;
    server.behave(|n, _| {
        if n < 30 {
            Reply::status(503).body("busy")
        } else {
            ok(n)
        }
    });
    let app = app_sending_to(&server, |_| {}).await;

    let messages = deliver(&app, &sms_batch(20)).await;

    assert!(
        messages.iter().all(|m| m["state"] == "sent"),
        "{messages:?}"
    );
    let attempts: Vec<u64> = messages
        .iter()
        .map(|m| m["attempts"].as_u64().unwrap())
        .collect();
    assert!(attempts.iter().any(|&a| a > 1), "{attempts:?}");
    assert_eq!(
        attempts.iter().sum::<u64>(),
        50,
        "30 refusals and 20 successes: {attempts:?}"
    );
    assert_eq!(server.count(), 50);
    assert!(
        messages.iter().all(|m| m["last_error"].is_null()),
        "a sent message keeps no error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_delays_the_next_attempt_that_long() {
    let server = ProviderServer::start().await;
    server.behave(|n, _| {
        if n == 0 {
            Reply::status(429).retry_after("1")
        } else {
            ok(n)
        }
    });
    let app = app_sending_to(&server, |_| {}).await;

    let messages = deliver(&app, &sms_batch(1)).await;

    assert_eq!(messages[0]["state"], "sent", "{}", messages[0]);
    // The throttled request spent no attempt.
    assert_eq!(messages[0]["attempts"], 1, "{}", messages[0]);
    let received = server.received();
    assert_eq!(received.len(), 2);
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, before Retry-After"
    );
    assert!(gap < Duration::from_secs(3), "retried after {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_throttles_is_paced_down_instead_of_failing_messages() {
    // The provider takes 100 a second (in any sliding second) and answers 429,
    // without Retry-After, to the rest; Herald has no rate configured.
    const TAKES: usize = 100;
    let server = ProviderServer::start().await;
    let started = Instant::now();
    let answers: Arc<Mutex<Vec<(Duration, bool)>>> = Arc::default();
    let taken: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    {
        let answers = answers.clone();
        server.behave(move |_, _| {
            let now = Instant::now();
            let mut taken = taken.lock().unwrap();
            while taken
                .front()
                .is_some_and(|t| now - *t >= Duration::from_secs(1))
            {
                taken.pop_front();
            }
            let ok = taken.len() < TAKES;
            if ok {
                taken.push_back(now);
            }
            answers.lock().unwrap().push((now - started, ok));
            if ok {
                Reply::ok()
            } else {
                Reply::status(429).body("slow down")
            }
        });
    }
    let app = app_sending_to(&server, |config| config.retry.max_attempts = 30).await;

    let batch_id = app.submit(&sms_batch(500)).await;
    app.wait_finished(&batch_id, Duration::from_secs(30)).await;

    let messages = app.messages(&batch_id).await;
    assert!(
        messages.iter().all(|m| m["state"] == "sent"),
        "every message is sent"
    );
    let answers = answers.lock().unwrap().clone();
    // The first burst is refused by the hundreds; two halvings later the pace is
    // under the provider's rate and throttles are rare (a few at each probe past
    // it, about 4 % of the requests on a quiet machine, under 10 % on a loaded
    // one), not a stream of retries (most of the requests).
    let late: Vec<bool> = answers
        .iter()
        .filter(|(at, _)| *at > Duration::from_secs(3))
        .map(|(_, ok)| *ok)
        .collect();
    let refused_late = late.iter().filter(|ok| !**ok).count();
    assert!(
        refused_late * 100 <= late.len() * 15,
        "{refused_late} of {} requests throttled after the first 3 s; {} requests in all",
        late.len(),
        answers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_fails_at_once_with_the_providers_reason() {
    let server = ProviderServer::start().await;
    server.behave(|_, _| Reply::status(400).body("invalid number"));
    let app = app_sending_to(&server, |_| {}).await;

    let messages = deliver(&app, &sms_batch(1)).await;

    let m = &messages[0];
    assert_eq!(m["state"], "failed", "{m}");
    assert_eq!(m["attempts"], 1, "{m}");
    let error = m["last_error"].as_str().unwrap();
    assert!(
        error.contains("400") && error.contains("invalid number"),
        "{error}"
    );
    assert_eq!(server.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_the_provider_calls_invalid_is_suppressed_for_later_batches() {
    let server = ProviderServer::start().await;
    // The second recipient of `sms_batch` is the one the provider refuses.
    server.behave(|_, message| {
        if message["to"] == "+8613800000001" {
            Reply::status(422).body(r#"{"error":"invalid_recipient","detail":"unassigned number"}"#)
        } else {
            Reply::ok()
        }
    });
    let app = app_sending_to(&server, |_| {}).await;

    let messages = deliver(&app, &sms_batch(3)).await;

    let states: Vec<&str> = messages
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["sent", "failed", "sent"], "{messages:?}");
    assert_eq!(messages[1]["attempts"], 1, "{}", messages[1]);
    let (_, list) = app.get("/v1/suppressions?channel=sms").await;
    let entries = list["suppressions"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["address"], "+8613800000001", "{list}");
    let reason = entries[0]["reason"].as_str().unwrap();
    assert!(reason.contains("unassigned number"), "{reason}");

    // The next batch to that number is refused before anything is sent.
    let sent_before = server.count();
    let (status, report) = app.post("/v1/batches", &sms_batch(2)).await;
    assert_eq!(status, 202, "{report}");
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(
        report["rejections"]["suppressed"]["indices"],
        json!([1]),
        "{report}"
    );
    let batch_id = report["batch_id"].as_str().unwrap();
    app.wait_finished(batch_id, FINISH).await;
    assert_eq!(server.count(), sent_before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_fail_the_message_after_max_attempts() {
    let server = ProviderServer::start().await;
    server.behave(|_, _| Reply::status(500).body("down"));
    let app = app_sending_to(&server, |config| config.retry.max_attempts = 3).await;

    let messages = deliver(&app, &sms_batch(2)).await;

    for m in &messages {
        assert_eq!(m["state"], "failed", "{m}");
        assert_eq!(m["attempts"], 3, "{m}");
        let error = m["last_error"].as_str().unwrap();
        assert!(
            error.contains("500") && error.contains("3 attempts"),
            "{error}"
        );
    }
    assert_eq!(server.count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_slower_than_the_timeout_is_retried() {
    let server = ProviderServer::start().await;
    server.behave(|n, _| {
        if n == 0 {
            ok(n).delayed(Duration::from_millis(1_500))
        } else {
            ok(n)
        }
    });
    let app = app_sending_to(&server, |config| config.worker.send_timeout_ms = 300).await;

    let messages = deliver(&app, &sms_batch(1)).await;

    assert_eq!(messages[0]["state"], "sent", "{}", messages[0]);
    assert_eq!(messages[0]["attempts"], 2, "{}", messages[0]);
    assert_eq!(
        messages[0]["provider_message_id"], "p-1",
        "the answer that arrived in time counts"
    );
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].key, received[1].key,
        "the retry carries the same idempotency key"
    );
    assert!(
        received[1].at - received[0].at < Duration::from_millis(1_500),
        "retried before the slow answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_every_second_and_waiting_is_no_attempt() {
    const RATE: usize = 20;
    const BURST: usize = 2;
    let server = ProviderServer::start().await;
    let app = spawn_app(|config| {
        let mut provider = server.provider(None);
        provider.rate_per_sec = Some(RATE as f64);
        route_all_to(config, provider);
    })
    .await;

    let messages = deliver(&app, &sms_batch(50)).await;

    assert!(
        messages
            .iter()
            .all(|m| m["state"] == "sent" && m["attempts"] == 1),
        "{messages:?}"
    );
    let times: Vec<Instant> = server.received().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 50);
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .filter(|t| **t - *start < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= RATE + BURST,
            "{in_window} sends in the second after send {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_by_priority_then_send_at_then_arrival() {
    let server = ProviderServer::start().await;
    let mut intake = app_sending_to(&server, |config| config.worker.enabled = false).await;
    let batch = |priority: i64, send_at: Option<String>| {
        let mut batch = sms_batch(2);
        batch["priority"] = json!(priority);
        if let Some(at) = send_at {
            batch["send_at"] = json!(at);
        }
        batch
    };
    let first_plain = intake.submit(&batch(0, None)).await;
    let urgent = intake.submit(&batch(10, None)).await;
    let overdue = intake
        .submit(&batch(0, Some(rfc3339_from_now(-60_000))))
        .await;
    let low = intake.submit(&batch(-5, None)).await;
    let urgent_overdue = intake
        .submit(&batch(10, Some(rfc3339_from_now(-600_000))))
        .await;
    let second_plain = intake.submit(&batch(0, None)).await;
    intake.stop().await;
    let store = intake.dir.path().join("store");

    let worker = app_sending_to(&server, |config| {
        config.store = herald::domain::StoreUrl::Sqlite(store.to_path_buf());
        config.worker.max_in_flight = 1;
    })
    .await;

    let order = [
        urgent_overdue,
        urgent,
        overdue,
        first_plain,
        second_plain,
        low,
    ];
    for batch_id in &order {
        worker.wait_finished(batch_id, FINISH).await;
    }
    let expected: Vec<String> = order
        .iter()
        .flat_map(|batch_id| [format!("{batch_id}-0"), format!("{batch_id}-1")])
        .collect();
    let seen: Vec<String> = server.received().into_iter().map(|r| r.key).collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_send_at_is_not_delivered_before_its_time() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server, |_| {}).await;
    let mut batch = sms_batch(3);
    let due = Instant::now() + Duration::from_millis(1_200);
    batch["send_at"] = json!(rfc3339_from_now(1_200));

    let batch_id = app.submit(&batch).await;

    let (_, waiting) = app.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(waiting["state"], "queued", "{waiting}");
    assert_eq!(waiting["counts"]["pending"], 3, "{waiting}");
    let done = app.wait_finished(&batch_id, FINISH).await;
    assert_eq!(done["counts"]["sent"], 3, "{done}");
    let send_at: jiff::Timestamp = done["send_at"].as_str().unwrap().parse().unwrap();
    // The stored send_at keeps milliseconds; the RFC 3339 text had nanoseconds.
    let slack = Duration::from_millis(2);
    for r in server.received() {
        assert!(r.at + slack >= due, "sent {:?} early", due - r.at);
    }
    for m in app.messages(&batch_id).await {
        let sent_at: jiff::Timestamp = m["sent_at"].as_str().unwrap().parse().unwrap();
        assert!(sent_at >= send_at, "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_batches_at_once_are_each_delivered_exactly_once() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server, |_| {}).await;
    let batch = |b: usize| {
        let recipients: Vec<Value> = (0..200)
            .map(|i| json!({"to": format!("+861390{b}{i:06}"), "vars": {"name": format!("b{b}-{i}")}}))
            .collect();
        json!({"channel": "sms", "template": {"body": "Hello {{name}}"}, "recipients": recipients})
    };

    let batches: Vec<Value> = (0..5).map(batch).collect();
    let ids = tokio::join!(
        app.submit(&batches[0]),
        app.submit(&batches[1]),
        app.submit(&batches[2]),
        app.submit(&batches[3]),
        app.submit(&batches[4]),
    );

    for batch_id in [ids.0, ids.1, ids.2, ids.3, ids.4] {
        let done = app.wait_finished(&batch_id, FINISH).await;
        assert_eq!(done["counts"]["sent"], 200, "{done}");
    }
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for r in server.received() {
        *per_key.entry(r.key).or_default() += 1;
    }
    assert_eq!(per_key.len(), 1_000);
    assert!(
        per_key.values().all(|&n| n == 1),
        "some message was sent twice"
    );
    let bodies: std::collections::HashSet<String> = server
        .received()
        .iter()
        .map(|r| r.json["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bodies.len(), 1_000, "each recipient got its own rendering");
}
