//! Throttles wait, deadlines end the wait: a Tencent-format provider that
//! throttles its first requests fails nothing, even with two attempts; a provider
//! that fails every request or never answers ends a batch with a short deadline
//! `expired`, with the last error, and a retry with a fresh deadline sends it;
//! bad deadline fields are 400s naming the field; `/send-sms` gets the default.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use crate::helpers::{
    ProviderServer, Reply, TestApp, rfc3339_from_now, route_all_to, sms_batch, spawn_app,
};
use crate::template_sms::{sent_answer, store_otp, tencent_at};
use herald::domain::Channel;

const FINISH: Duration = Duration::from_secs(30);

/// Tencent Cloud's `SendSms`, answering `RequestLimitExceeded` to the first
/// `throttled` requests and sending every number of the later ones.
async fn throttling_send_sms(
    State((seen, throttled)): State<(Arc<AtomicUsize>, usize)>,
    body: String,
) -> String {
    let n = seen.fetch_add(1, Ordering::SeqCst);
    if n < throttled {
        return json!({"Response": {"Error": {"Code": "RequestLimitExceeded",
            "Message": "request limit exceeded"}, "RequestId": format!("r{n}")}})
        .to_string();
    }
    sent_answer(&serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_throttles_its_first_20_requests_fails_none_of_5_with_two_attempts() {
    let seen = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/", post(throttling_send_sms))
        .with_state((seen.clone(), 20));
    let tc = tencent_at("tc", app).await;
    let herald = spawn_app(|config| {
        config.providers = vec![tc];
        config.defaults.insert(Channel::Sms, "tc".into());
        config.retry.max_attempts = 2;
        // Tencent's throttle says a second; waiting a tenth keeps the test short.
        config.retry.max_delay_ms = 100;
    })
    .await;
    store_otp(&herald, "tc").await;
    // Each its own code: one request per number.
    let recipients: Vec<Value> = (0..5)
        .map(|i| json!({"to": format!("+86138{i:08}"), "vars": {"1": format!("{i}{i}{i}")}}))
        .collect();
    let batch_id = herald
        .submit(&json!({"channel": "sms", "template_id": "otp", "recipients": recipients}))
        .await;
    let batch = herald.wait_finished(&batch_id, FINISH).await;
    assert_eq!(batch["counts"]["sent"], 5, "{batch}");
    assert_eq!(batch["counts"]["failed"], 0, "{batch}");
    assert!(seen.load(Ordering::SeqCst) > 20, "the throttles were met");
    for m in herald.messages(&batch_id).await {
        assert_eq!(m["state"], "sent", "{m}");
        assert_eq!(m["attempts"], 1, "throttles spend no attempt: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_fails_every_request_ends_the_batch_expired_and_a_retry_sends_it() {
    let server = ProviderServer::start().await;
    server.behave(|_, _| Reply::status(503));
    let herald = spawn_app(|config| {
        route_all_to(config, server.provider(None));
        // Attempts would last longer than the deadline.
        config.retry.max_attempts = 1_000;
        config.retry.max_delay_ms = 50;
    })
    .await;
    let mut batch = sms_batch(5);
    batch["valid_for"] = json!(1);
    let (status, report) = herald.post("/v1/batches", &batch).await;
    assert_eq!(status, 202, "{report}");
    assert!(report["expires_at"].is_string(), "{report}");
    let batch_id = report["batch_id"].as_str().unwrap().to_owned();
    let done = herald.wait_finished(&batch_id, FINISH).await;
    assert_eq!(done["counts"]["expired"], 5, "{done}");
    assert_eq!(done["counts"]["failed"], 0, "{done}");
    assert_eq!(done["expires_at"], report["expires_at"], "{done}");
    let (status, page) = herald
        .get(&format!("/v1/batches/{batch_id}/messages?state=expired"))
        .await;
    assert_eq!(status, 200, "{page}");
    let expired = page["messages"].as_array().unwrap();
    assert_eq!(expired.len(), 5, "{page}");
    for m in expired {
        assert!(
            m["last_error"].as_str().unwrap_or("").contains("503"),
            "the last error is kept: {m}"
        );
    }
    let tried = server.count();
    assert!(tried >= 5, "{tried}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.count(), tried, "nothing is sent after the deadline");

    server.behave(|_, _| Reply::ok());
    let (status, retried) = herald
        .post(
            &format!("/v1/batches/{batch_id}/retry"),
            &json!({"valid_for": 30}),
        )
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_ne!(retried["expires_at"], report["expires_at"], "{retried}");
    let done = herald.wait_finished(&batch_id, FINISH).await;
    assert_eq!(done["counts"]["sent"], 5, "{done}");
    assert_eq!(done["counts"]["expired"], 0, "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_answers_ends_the_batch_expired_with_the_last_error() {
    let server = ProviderServer::start().await;
    server.behave(|_, _| Reply::ok().delayed(Duration::from_secs(60)));
    let herald = spawn_app(|config| {
        route_all_to(config, server.provider(None));
        config.worker.send_timeout_ms = 300;
        config.worker.lease_ms = 1_000;
        config.retry.max_attempts = 1_000;
    })
    .await;
    let mut batch = sms_batch(3);
    batch["expires_at"] = json!(rfc3339_from_now(1_000));
    let batch_id = herald.submit(&batch).await;
    let done = herald.wait_finished(&batch_id, FINISH).await;
    assert_eq!(done["counts"]["expired"], 3, "{done}");
    assert_eq!(done["counts"]["sent"], 0, "{done}");
    for m in herald.messages(&batch_id).await {
        assert_eq!(m["state"], "expired", "{m}");
        // The HTTP client's timeout and the worker's, both the send timeout, race:
        // either one's words are the silence's.
        let error = m["last_error"].as_str().unwrap_or("");
        assert!(
            error.contains("timed out") || error.contains("no answer within 300 ms"),
            "{m}"
        );
    }
}

/// POSTs `batch` and expects a 400 naming `field`.
async fn refused(herald: &TestApp, path: &str, body: &Value, field: &str) {
    let (status, answer) = herald.post(path, body).await;
    assert_eq!(status, 400, "{body} → {answer}");
    assert_eq!(answer["field"], field, "{body} → {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deadline_fields_are_400s_naming_the_field() {
    let server = ProviderServer::start().await;
    let herald = spawn_app(|config| route_all_to(config, server.provider(None))).await;
    let with = |fields: Value| {
        let mut batch = sms_batch(2);
        for (k, v) in fields.as_object().unwrap() {
            batch[k] = v.clone();
        }
        batch
    };
    let cases = [
        (
            json!({"valid_for": 60, "expires_at": rfc3339_from_now(60_000)}),
            "valid_for",
        ),
        (json!({"valid_for": 0}), "valid_for"),
        (json!({"valid_for": -5}), "valid_for"),
        (
            json!({"expires_at": rfc3339_from_now(-1_000)}),
            "expires_at",
        ),
        (json!({"expires_at": "tomorrow"}), "expires_at"),
        (
            json!({"send_at": rfc3339_from_now(120_000), "expires_at": rfc3339_from_now(60_000)}),
            "expires_at",
        ),
    ];
    for (fields, field) in cases {
        refused(&herald, "/v1/batches", &with(fields), field).await;
    }
    // A CSV upload's options in the query string, and a retry's body.
    let (status, _, answer) = herald
        .post_raw(
            "/v1/batches?channel=sms&template=Hi&valid_for=0",
            "text/csv",
            &[],
            "to\n+8613800000001\n",
        )
        .await;
    assert_eq!(
        (status, &answer["field"]),
        (400, &json!("valid_for")),
        "{answer}"
    );
    let batch_id = herald.submit(&sms_batch(1)).await;
    herald.wait_finished(&batch_id, FINISH).await;
    let retry = format!("/v1/batches/{batch_id}/retry");
    refused(
        &herald,
        &retry,
        &json!({"valid_for": 5, "expires_at": rfc3339_from_now(60_000)}),
        "valid_for",
    )
    .await;
    refused(
        &herald,
        &retry,
        &json!({"expires_at": rfc3339_from_now(-1)}),
        "expires_at",
    )
    .await;
    assert_eq!(server.count(), 1, "nothing of a refused batch was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_sms_and_batches_without_a_deadline_get_the_configured_default() {
    let server = ProviderServer::start().await;
    let herald = spawn_app(|config| {
        route_all_to(config, server.provider(None));
        config.recipients.default_region = Some("CN".parse().unwrap());
        config.valid_for.sms = Some(3_600);
        config.valid_for.providers.insert("hook".into(), 600);
    })
    .await;
    let deadline_in = |batch: &Value| {
        let at: jiff::Timestamp = batch["expires_at"].as_str().unwrap().parse().unwrap();
        at.duration_since(jiff::Timestamp::now()).as_secs()
    };
    let (status, _, seed) = herald
        .post_raw(
            "/send-sms",
            "application/x-www-form-urlencoded",
            &[],
            "template_id=1&mobiles%5B%5D=13800000001&content=hello",
        )
        .await;
    assert_eq!(status, 202, "{seed}");
    let batch = herald
        .wait_finished(seed["batch_id"].as_str().unwrap(), FINISH)
        .await;
    let left = deadline_in(&batch);
    assert!(
        (590..=600).contains(&left),
        "the provider's default wins: {batch}"
    );
    // A batch's own deadline wins over the defaults.
    let mut own = sms_batch(1);
    own["valid_for"] = json!(7_200);
    let (status, report) = herald.post("/v1/batches", &own).await;
    assert_eq!(status, 202, "{report}");
    let left = deadline_in(&report);
    assert!((7_190..=7_200).contains(&left), "{report}");
}
