//! The `Idempotency-Key` header: a replay answers as the first request did and
//! sends once; the key with another body conflicts; racing requests store one batch.

use std::collections::HashSet;

use crate::helpers::{ProviderServer, sms_batch};

use super::{FINISH, app_sending_to, deliveries};

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
