//! The HTTP API end to end: the accept report, every refusal with its status, code
//! and field, idempotency, the ledger, batch control and the seed's `/send-sms`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    ProviderServer, Reply, TestApp, rfc3339_from_now, route_all_to, sms_batch, spawn_app, wait_for,
};

const FINISH: Duration = Duration::from_secs(10);

/// Herald delivering every channel to `server`, with small limits the refusal tests reach.
async fn app_sending_to(server: &ProviderServer) -> TestApp {
    spawn_app(|config| {
        route_all_to(config, server.provider(None));
        // The seed's requests carry Chinese mobiles without a country code.
        config.recipients.default_region = Some("CN".parse().unwrap());
        config.limits.max_recipients = 30;
        config.limits.max_body_bytes = 16 * 1024;
        config.limits.max_upload_bytes = 16 * 1024;
    })
    .await
}

/// How many requests the provider received for each message id.
fn deliveries(server: &ProviderServer) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for received in server.received() {
        *counts.entry(received.key).or_insert(0) += 1;
    }
    counts
}

/// The ids of a batch's messages in the given state, from the ledger.
fn ids_in_state(messages: &[Value], state: &str) -> HashSet<String> {
    messages
        .iter()
        .filter(|m| m["state"] == state)
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_invalid_recipients_reports_each_index_and_reason() {
    let app = spawn_app(|config| config.worker.enabled = false).await;
    let batch = json!({
        "channel": "sms",
        "template": {"body": "Hi {{ name }}, you have {{ points + 1 }} points"},
        "recipients": [
            {"to": "+8613800000000", "vars": {"name": "Li", "points": 1}, "ref": "a"},
            {"to": "12ab", "vars": {"name": "Wang", "points": 2}},
            {"to": "+8613800000002", "vars": {"points": 3}},
            {"to": "+8613800000003", "vars": {"name": "Zhao", "points": "many"}},
            {"to": "+86 138-0000-0004", "vars": {"name": "Qian", "points": 41}, "ref": "e"},
            {"to": "+8613800000005", "vars": {"name": "Sun", "points": 0}, "ref": "r".repeat(300)},
        ],
    });

    let (status, report) = app.post("/v1/batches", &batch).await;

    assert_eq!(status, 202, "{report}");
    assert_eq!(report["accepted"], 2, "{report}");
    let rejected = report["rejected"].as_array().unwrap();
    let summary: Vec<(u64, &str, &str)> = rejected
        .iter()
        .map(|r| {
            let index = r["index"].as_u64().unwrap();
            (
                index,
                r["to"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "12ab", "invalid_address"),
            (2, "+8613800000002", "missing_variable"),
            (3, "+8613800000003", "render_failed"),
            (5, "+8613800000005", "invalid_ref"),
        ],
        "{report}"
    );
    assert_eq!(
        rejected[1]["variable"], "name",
        "the missing variable is named"
    );
    assert!(rejected[0].get("variable").is_none(), "{report}");
    for r in rejected {
        assert!(!r["detail"].as_str().unwrap().is_empty(), "{r}");
    }

    let batch_id = report["batch_id"].as_str().unwrap();
    let (status, view) = app.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["counts"]["total"], 2, "{view}");
    assert_eq!(view["state"], "queued", "{view}");
    assert_eq!(view["source"], "api", "{view}");
    let messages = app.messages(batch_id).await;
    let stored: Vec<(u64, &str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["index"].as_u64().unwrap(),
                m["to"].as_str().unwrap(),
                m["ref"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stored,
        [(0, "+8613800000000", "a"), (4, "+8613800000004", "e")],
        "messages keep their index in the submitted list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variable_missing_inside_an_expression_is_reported_as_missing_and_named() {
    let app = spawn_app(|config| config.worker.enabled = false).await;
    let batch = json!({
        "channel": "sms",
        "template": {"body": "You have {{ points + 1 }} points"},
        "recipients": [
            {"to": "+8613800000000", "vars": {"points": 1}},
            {"to": "+8613800000001", "vars": {}},
        ],
    });

    let (status, report) = app.post("/v1/batches", &batch).await;

    assert_eq!(status, 202, "{report}");
    let rejected = &report["rejected"][0];
    assert_eq!(rejected["index"], 1, "{report}");
    assert_eq!(rejected["reason"], "missing_variable", "{report}");
    assert_eq!(rejected["variable"], "points", "{report}");
}

/// One request Herald must refuse, and how.
struct Refused {
    what: &'static str,
    body: String,
    idempotency_key: Option<String>,
    status: u16,
    error: &'static str,
    field: Option<&'static str>,
}

fn refused(
    what: &'static str,
    body: Value,
    status: u16,
    error: &'static str,
    field: &'static str,
) -> Refused {
    Refused {
        what,
        body: body.to_string(),
        idempotency_key: None,
        status,
        error,
        field: Some(field),
    }
}

/// Every kind of refusal `POST /v1/batches` makes (limits as in `app_sending_to`).
fn refused_requests() -> Vec<Refused> {
    let ok = |to: &str| json!({"to": to, "vars": {"name": "x"}});
    let sms = |recipients: Value| json!({"channel": "sms", "template": {"body": "Hi {{name}}"}, "recipients": recipients});
    let with = |key: &str, value: Value| {
        let mut batch = sms(json!([ok("+8613800000001")]));
        batch[key] = value;
        batch
    };
    let mut cases = vec![
        Refused {
            what: "not JSON",
            body: r#"{"channel": "sms", "recipients": ["#.into(),
            idempotency_key: None,
            status: 400,
            error: "malformed_request",
            field: None,
        },
        refused(
            "a number for an address",
            sms(json!([ok("+8613800000001"), {"to": 5}])),
            400,
            "malformed_request",
            "recipients[1].to",
        ),
        refused(
            "an unknown channel",
            with("channel", json!("fax")),
            400,
            "malformed_request",
            "channel",
        ),
        refused(
            "a text priority",
            with("priority", json!("high")),
            400,
            "malformed_request",
            "priority",
        ),
        refused(
            "vars that are not an object",
            sms(json!([{"to": "+8613800000001", "vars": [1]}])),
            400,
            "malformed_request",
            "recipients[0].vars",
        ),
        refused(
            "recipients that are not a list",
            sms(json!("+8613800000001")),
            400,
            "malformed_request",
            "recipients",
        ),
        refused(
            "no recipients",
            sms(json!([])),
            422,
            "invalid_field",
            "recipients",
        ),
        refused(
            "a priority above 100",
            with("priority", json!(101)),
            422,
            "invalid_field",
            "priority",
        ),
        refused(
            "a priority below -100",
            with("priority", json!(-101)),
            422,
            "invalid_field",
            "priority",
        ),
        refused(
            "a send_at that is no time",
            with("send_at", json!("tomorrow")),
            422,
            "invalid_field",
            "send_at",
        ),
        refused(
            "a send_at without an offset",
            with("send_at", json!("2030-01-01T08:00:00")),
            422,
            "invalid_field",
            "send_at",
        ),
        refused(
            "an unknown provider",
            with("provider", json!("carrier-pigeon")),
            422,
            "invalid_field",
            "provider",
        ),
        refused(
            "an e-mail without a subject",
            json!({"channel": "email", "template": {"body": "Hi"}, "recipients": [{"to": "li@example.com"}]}),
            422,
            "invalid_field",
            "template.subject",
        ),
        refused(
            "a template that does not compile",
            json!({"channel": "sms", "template": {"body": "Hi {{ name"}, "recipients": [ok("+8613800000001")]}),
            422,
            "invalid_field",
            "template.body",
        ),
        refused(
            "more recipients than the limit",
            sms(json!(
                (0..31)
                    .map(|i| ok(&format!("+86138{i:08}")))
                    .collect::<Vec<_>>()
            )),
            413,
            "too_large",
            "recipients",
        ),
    ];
    cases.push(Refused {
        what: "a body over the limit",
        body: sms(json!([{"to": "+8613800000001", "vars": {"name": "x".repeat(20 * 1024)}}]))
            .to_string(),
        idempotency_key: None,
        status: 413,
        error: "too_large",
        field: Some("body"),
    });
    cases.push(Refused {
        what: "an idempotency key that is too long",
        body: sms(json!([ok("+8613800000001")])).to_string(),
        idempotency_key: Some("k".repeat(256)),
        status: 422,
        error: "invalid_field",
        field: Some("Idempotency-Key"),
    });
    cases
}

async fn post_refused(app: &TestApp, case: &Refused) -> Value {
    let headers: Vec<(&str, &str)> = case
        .idempotency_key
        .iter()
        .map(|k| ("idempotency-key", k.as_str()))
        .collect();
    let (status, _, answer) = app
        .post_raw(
            "/v1/batches",
            "application/json",
            &headers,
            case.body.clone(),
        )
        .await;
    assert_eq!(status, case.status, "{}: {answer}", case.what);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_batch_names_its_error_code_and_field() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;

    for case in refused_requests() {
        let answer = post_refused(&app, &case).await;
        assert_eq!(answer["error"], case.error, "{}: {answer}", case.what);
        assert!(
            !answer["message"].as_str().unwrap_or("").is_empty(),
            "{}: {answer}",
            case.what
        );
        if let Some(field) = case.field {
            assert_eq!(answer["field"], field, "{}: {answer}", case.what);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_every_recipient_is_rejected_is_refused_with_the_rejections() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let batch = json!({
        "channel": "sms",
        "template": {"body": "Hi {{name}}"},
        "recipients": [{"to": "nope", "vars": {"name": "x"}}, {"to": "+8613800000001"}],
    });

    let (status, answer) = app.post("/v1/batches", &batch).await;

    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], "no_valid_recipients", "{answer}");
    let reasons: Vec<(u64, &str)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [(0, "invalid_address"), (1, "missing_variable")],
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_store_nothing() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    for case in refused_requests() {
        post_refused(&app, &case).await;
    }
    let (status, _) = app
        .post(
            "/v1/batches",
            &json!({"channel": "sms", "template": {"body": "x"}, "recipients": [{"to": "bad"}]}),
        )
        .await;
    assert_eq!(status, 422);

    let batch_id = app.submit(&sms_batch(2)).await;
    let batch = app.wait_finished(&batch_id, FINISH).await;

    assert_eq!(batch["counts"]["sent"], 2, "{batch}");
    let received = server.received();
    assert_eq!(
        received.len(),
        2,
        "only the accepted batch reaches the provider"
    );
    assert!(
        received
            .iter()
            .all(|r| r.json["batch_id"] == batch_id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_idempotency_key_answers_the_same_and_sends_once() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let body = sms_batch(3).to_string();
    let key = [("idempotency-key", "order-17")];

    let (first_status, first_headers, first) = app
        .post_raw("/v1/batches", "application/json", &key, body.clone())
        .await;
    let (again_status, again_headers, again) = app
        .post_raw("/v1/batches", "application/json", &key, body)
        .await;

    assert_eq!((first_status, again_status), (202, 202), "{first} {again}");
    assert_eq!(again, first, "a replay answers exactly as the first time");
    assert!(first_headers.get("idempotent-replayed").is_none());
    assert_eq!(again_headers.get("idempotent-replayed").unwrap(), "true");
    let batch_id = first["batch_id"].as_str().unwrap();
    let batch = app.wait_finished(batch_id, FINISH).await;
    assert_eq!(batch["counts"]["total"], 3, "{batch}");
    assert_eq!(batch["counts"]["sent"], 3, "{batch}");
    let deliveries = deliveries(&server);
    assert_eq!(deliveries.len(), 3, "{deliveries:?}");
    assert!(deliveries.values().all(|&n| n == 1), "{deliveries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_with_a_different_body_conflicts_and_stores_nothing() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let key = [("idempotency-key", "order-18")];
    let (status, _, first) = app
        .post_raw(
            "/v1/batches",
            "application/json",
            &key,
            sms_batch(2).to_string(),
        )
        .await;
    assert_eq!(status, 202, "{first}");

    let (status, headers, answer) = app
        .post_raw(
            "/v1/batches",
            "application/json",
            &key,
            sms_batch(3).to_string(),
        )
        .await;

    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "conflict", "{answer}");
    assert!(headers.get("idempotent-replayed").is_none());
    let batch = app
        .wait_finished(first["batch_id"].as_str().unwrap(), FINISH)
        .await;
    assert_eq!(batch["counts"]["sent"], 2, "{batch}");
    assert_eq!(
        server.count(),
        2,
        "only the first request's messages are sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_idempotency_key_store_one_batch() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let body = sms_batch(4).to_string();
    let post = || {
        app.post_raw(
            "/v1/batches",
            "application/json",
            &[("idempotency-key", "race")],
            body.clone(),
        )
    };

    let answers = tokio::join!(post(), post(), post(), post(), post());

    let answers = [answers.0, answers.1, answers.2, answers.3, answers.4];
    assert!(
        answers.iter().all(|(status, _, _)| *status == 202),
        "{:?}",
        answers.iter().map(|a| &a.2).collect::<Vec<_>>()
    );
    let ids: HashSet<&str> = answers
        .iter()
        .map(|(_, _, a)| a["batch_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every answer names the same batch: {ids:?}");
    let replays = answers
        .iter()
        .filter(|(_, h, _)| h.get("idempotent-replayed").is_some())
        .count();
    assert_eq!(replays, 4, "all but one answer are replays");
    let batch_id = ids.into_iter().next().unwrap();
    app.wait_finished(batch_id, FINISH).await;
    let deliveries = deliveries(&server);
    assert_eq!(deliveries.len(), 4, "{deliveries:?}");
    assert!(deliveries.values().all(|&n| n == 1), "{deliveries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_pages_by_state_with_next_after() {
    let server = ProviderServer::start().await;
    server.behave(|n, json| {
        let index: u32 = json["ref"].as_str().unwrap()[1..].parse().unwrap();
        if index % 2 == 1 {
            Reply::status(400).body("unknown subscriber")
        } else {
            Reply::ok().body(&format!(r#"{{"id":"p-{n}"}}"#))
        }
    });
    let app = app_sending_to(&server).await;
    let batch_id = app.submit(&sms_batch(25)).await;
    let batch = app.wait_finished(&batch_id, FINISH).await;
    assert_eq!(
        (
            batch["counts"]["sent"].as_u64(),
            batch["counts"]["failed"].as_u64()
        ),
        (Some(13), Some(12)),
        "{batch}"
    );
    let app = &app;
    let page = |query: &str| {
        let path = format!("/v1/batches/{batch_id}/messages?{query}");
        async move { app.get(&path).await }
    };
    let indices = |page: &Value| -> Vec<u64> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["index"].as_u64().unwrap())
            .collect()
    };

    let (status, first) = page("state=failed&limit=5").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(indices(&first), [1, 3, 5, 7, 9]);
    assert_eq!(first["next_after"], 9);
    let (_, second) = page("state=failed&limit=5&after=9").await;
    assert_eq!(indices(&second), [11, 13, 15, 17, 19]);
    assert_eq!(second["next_after"], 19);
    let (_, last) = page("state=failed&limit=5&after=19").await;
    assert_eq!(indices(&last), [21, 23]);
    assert!(
        last["next_after"].is_null(),
        "a short page is the last: {last}"
    );

    let (_, sent) = page("state=sent&limit=1000").await;
    assert_eq!(indices(&sent), (0..25).step_by(2).collect::<Vec<_>>());
    let (_, everything) = page("limit=10&after=19").await;
    assert_eq!(indices(&everything), [20, 21, 22, 23, 24]);

    for m in last["messages"].as_array().unwrap() {
        assert_eq!(m["state"], "failed", "{m}");
        assert_eq!(m["attempts"], 1, "{m}");
        assert!(m["last_error"].as_str().unwrap().contains("400"), "{m}");
        assert!(m["sent_at"].is_null(), "{m}");
    }
    for m in sent["messages"].as_array().unwrap() {
        assert_eq!(m["provider"], "hook", "{m}");
        assert!(
            m["provider_message_id"].as_str().unwrap().starts_with("p-"),
            "{m}"
        );
        assert!(m["last_error"].is_null(), "{m}");
        assert!(m["sent_at"].is_string(), "{m}");
        assert_eq!(m["id"], format!("{batch_id}-{}", m["index"]), "{m}");
    }

    for (query, field) in [
        ("state=lost", "state"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ] {
        let (status, answer) = page(query).await;
        assert_eq!(status, 422, "{query}: {answer}");
        assert_eq!(answer["field"], field, "{query}: {answer}");
    }
    let (status, answer) = page("limit=ten").await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "malformed_request", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_batch_sends_nothing_until_resumed() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let due = rfc3339_from_now(1_000);
    let mut held = sms_batch(5);
    held["send_at"] = json!(due);
    let mut witness = sms_batch(3);
    witness["send_at"] = json!(due);
    let held_id = app.submit(&held).await;
    let witness_id = app.submit(&witness).await;

    let (status, paused) = app
        .post(&format!("/v1/batches/{held_id}/pause"), &json!({}))
        .await;

    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["state"], "paused", "{paused}");
    assert_eq!(paused["counts"]["paused"], 5, "{paused}");
    // The witness, due at the same time, shows the workers have been past the due time.
    app.wait_finished(&witness_id, FINISH).await;
    let (_, still) = app.get(&format!("/v1/batches/{held_id}")).await;
    assert_eq!(still["state"], "paused", "{still}");
    assert_eq!(still["counts"]["paused"], 5, "{still}");
    assert!(
        server
            .received()
            .iter()
            .all(|r| r.json["batch_id"] != held_id.as_str()),
        "a paused batch reached the provider"
    );

    let (status, resumed) = app
        .post(&format!("/v1/batches/{held_id}/resume"), &json!({}))
        .await;

    assert_eq!(status, 200, "{resumed}");
    assert_ne!(resumed["state"], "paused", "{resumed}");
    let done = app.wait_finished(&held_id, FINISH).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["counts"]["sent"], 5, "{done}");
    assert_eq!(server.count(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_never_sends_its_remaining_messages() {
    let server = ProviderServer::start().await;
    server.behave(|n, _| {
        Reply::ok()
            .body(&format!(r#"{{"id":"p-{n}"}}"#))
            .delayed(Duration::from_millis(50))
    });
    let app = spawn_app(|config| {
        route_all_to(config, server.provider(None));
        config.worker.max_in_flight = 1;
    })
    .await;
    let batch_id = app.submit(&sms_batch(30)).await;
    wait_for(FINISH, "the first sends", || async {
        (server.count() >= 3).then_some(())
    })
    .await;

    let (status, cancelling) = app
        .post(&format!("/v1/batches/{batch_id}/cancel"), &json!({}))
        .await;

    assert_eq!(status, 200, "{cancelling}");
    assert!(
        matches!(
            cancelling["state"].as_str(),
            Some("cancelling" | "cancelled")
        ),
        "{cancelling}"
    );
    let batch = app.wait_finished(&batch_id, FINISH).await;
    assert_eq!(batch["state"], "cancelled", "{batch}");
    let counts = &batch["counts"];
    assert_eq!(
        counts["sent"].as_u64().unwrap() + counts["cancelled"].as_u64().unwrap(),
        30,
        "{batch}"
    );
    assert!(counts["cancelled"].as_u64().unwrap() >= 20, "{batch}");
    // A later batch going through shows the workers kept running past the cancelled messages.
    let later = app.submit(&sms_batch(1)).await;
    app.wait_finished(&later, FINISH).await;
    let messages = app.messages(&batch_id).await;
    let sent = ids_in_state(&messages, "sent");
    let delivered: HashSet<String> = server
        .received()
        .into_iter()
        .filter(|r| r.json["batch_id"] == batch_id.as_str())
        .map(|r| r.key)
        .collect();
    assert_eq!(
        delivered, sent,
        "exactly the messages the ledger calls sent reached the provider"
    );
    assert!(ids_in_state(&messages, "cancelled").is_disjoint(&delivered));

    for action in ["pause", "resume", "retry"] {
        let (status, answer) = app
            .post(&format!("/v1/batches/{batch_id}/{action}"), &json!({}))
            .await;
        assert_eq!(status, 409, "{action}: {answer}");
        assert_eq!(answer["error"], "conflict", "{action}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_resends_exactly_the_failed_messages() {
    let server = ProviderServer::start().await;
    let refusing = Arc::new(AtomicBool::new(true));
    let refuse = refusing.clone();
    server.behave(move |n, json| {
        let index: u32 = json["ref"].as_str().unwrap()[1..].parse().unwrap();
        if refuse.load(Ordering::SeqCst) && index.is_multiple_of(3) {
            Reply::status(400).body("number not reachable")
        } else {
            Reply::ok().body(&format!(r#"{{"id":"p-{n}"}}"#))
        }
    });
    let app = app_sending_to(&server).await;
    let batch_id = app.submit(&sms_batch(9)).await;
    let batch = app.wait_finished(&batch_id, FINISH).await;
    assert_eq!(
        (
            batch["counts"]["sent"].as_u64(),
            batch["counts"]["failed"].as_u64()
        ),
        (Some(6), Some(3)),
        "{batch}"
    );
    let failed = ids_in_state(&app.messages(&batch_id).await, "failed");
    let expected: HashSet<String> = [0, 3, 6]
        .iter()
        .map(|i| format!("{batch_id}-{i}"))
        .collect();
    assert_eq!(failed, expected);
    refusing.store(false, Ordering::SeqCst);

    let (status, retried) = app
        .post(&format!("/v1/batches/{batch_id}/retry"), &json!({}))
        .await;

    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["counts"]["failed"], 0, "{retried}");
    assert_eq!(retried["counts"]["sent"], 6, "{retried}");
    let batch = app.wait_finished(&batch_id, FINISH).await;
    assert_eq!(batch["counts"]["sent"], 9, "{batch}");
    let deliveries = deliveries(&server);
    assert_eq!(deliveries.len(), 9);
    for (id, n) in &deliveries {
        let want = if failed.contains(id) { 2 } else { 1 };
        assert_eq!(*n, want, "{id} was sent {n} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_sms_form_posts_queue_one_sms_per_mobile_with_content_as_body() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let form = "template_id=1&mobiles%5B%5D=13800000001&mobiles%5B%5D=13800000002&mobiles%5B%5D=x1&content=Your+order+has+shipped%21";

    let (status, _, answer) = app
        .post_raw(
            "/send-sms",
            "application/x-www-form-urlencoded; charset=UTF-8",
            &[],
            form,
        )
        .await;

    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(answer["template_id"], "1", "{answer}");
    assert_eq!(answer["rejected"][0]["index"], 2, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("2 messages queued"),
        "{answer}"
    );
    let batch_id = answer["batch_id"].as_str().unwrap();
    let batch = app.wait_finished(batch_id, FINISH).await;
    assert_eq!(batch["source"], "send-sms", "{batch}");
    assert_eq!(batch["counts"]["sent"], 2, "{batch}");
    let sent = server.sent();
    assert_eq!(
        sent,
        [
            (
                "+8613800000001".to_string(),
                "Your order has shipped!".to_string()
            ),
            (
                "+8613800000002".to_string(),
                "Your order has shipped!".to_string()
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_sms_json_takes_a_mobile_list_or_a_comma_separated_string() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let requests = [
        json!({"template_id": 7, "mobiles": ["13800000001", 13800000002_u64], "content": "{{ not a template }}"}),
        json!({"template_id": "7", "mobiles": "13800000003, 13800000004", "content": "{{ not a template }}"}),
    ];

    for request in requests {
        let (status, _, answer) = app
            .post_raw("/send-sms", "application/json", &[], request.to_string())
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["success"], true, "{answer}");
        assert_eq!(answer["template_id"], "7", "{answer}");
        let batch = app
            .wait_finished(answer["batch_id"].as_str().unwrap(), FINISH)
            .await;
        assert_eq!(batch["counts"]["sent"], 2, "{batch}");
    }

    let mut to: Vec<String> = server
        .received()
        .iter()
        .map(|r| r.json["to"].as_str().unwrap().into())
        .collect();
    to.sort();
    assert_eq!(
        to,
        [
            "+8613800000001",
            "+8613800000002",
            "+8613800000003",
            "+8613800000004"
        ]
    );
    assert!(
        server
            .received()
            .iter()
            .all(|r| r.json["body"] == "{{ not a template }}"),
        "content is sent as is"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_sms_errors_say_success_false_with_the_field() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let form = "application/x-www-form-urlencoded";
    let cases: [(&str, &str, u16, &str, Option<&str>); 7] = [
        (
            form,
            "template_id=1&content=hi",
            422,
            "invalid_field",
            Some("mobiles"),
        ),
        (
            form,
            "mobiles%5B%5D=13800000001",
            422,
            "invalid_field",
            Some("content"),
        ),
        (
            form,
            "mobiles%5B%5D=13800000001&content=+++",
            422,
            "invalid_field",
            Some("content"),
        ),
        (
            form,
            "mobiles%5B%5D=abc&content=hi",
            422,
            "no_valid_recipients",
            None,
        ),
        (
            "application/json",
            r#"{"mobiles": [true], "content": "hi"}"#,
            422,
            "invalid_field",
            Some("mobiles[0]"),
        ),
        (
            "application/json",
            r#"{"mobiles": {"a": 1}, "content": "hi"}"#,
            422,
            "invalid_field",
            Some("mobiles"),
        ),
        (
            "application/json",
            r#"{"mobiles": ["13800000001"], "#,
            400,
            "malformed_request",
            None,
        ),
    ];

    for (content_type, body, status, error, field) in cases {
        let (got, _, answer) = app.post_raw("/send-sms", content_type, &[], body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["success"], false, "{body}: {answer}");
        assert_eq!(answer["error"], error, "{body}: {answer}");
        assert!(
            !answer["message"].as_str().unwrap_or("").is_empty(),
            "{body}: {answer}"
        );
        if let Some(field) = field {
            assert_eq!(answer["field"], field, "{body}: {answer}");
        }
    }

    let too_large = format!(
        "mobiles%5B%5D=13800000001&content={}",
        "x".repeat(20 * 1024)
    );
    let (status, _, answer) = app.post_raw("/send-sms", form, &[], too_large).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["success"], false, "{answer}");
    assert_eq!(answer["error"], "too_large", "{answer}");

    let batch_id = app.submit(&sms_batch(1)).await;
    app.wait_finished(&batch_id, FINISH).await;
    assert_eq!(server.count(), 1, "no refused /send-sms request was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_batches_and_actions_are_404_json() {
    let app = spawn_app(|config| config.worker.enabled = false).await;
    let unknown = "0190f5c2-7d3a-7c4e-9b1a-2f3e4d5c6b7a";
    let batch_id = app.submit(&sms_batch(1)).await;

    let gets = [
        format!("/v1/batches/{unknown}"),
        "/v1/batches/not-a-batch-id".to_string(),
        format!("/v1/batches/{unknown}/messages"),
    ];
    for path in &gets {
        let (status, answer) = app.get(path).await;
        assert_eq!(status, 404, "{path}: {answer}");
        assert_eq!(answer["error"], "not_found", "{path}: {answer}");
    }
    let posts = [
        format!("/v1/batches/{unknown}/pause"),
        format!("/v1/batches/{unknown}/cancel"),
        format!("/v1/batches/{unknown}/retry"),
        format!("/v1/batches/{batch_id}/explode"),
    ];
    for path in &posts {
        let (status, answer) = app.post(path, &json!({})).await;
        assert_eq!(status, 404, "{path}: {answer}");
        assert_eq!(answer["error"], "not_found", "{path}: {answer}");
    }
    let (status, _) = app.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(status, 200, "the batch itself exists");
}
