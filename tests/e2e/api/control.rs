//! Batch control: pause and resume, cancel, retry of the failed messages, and a
//! 404 in JSON for an unknown batch or action.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    ProviderServer, Reply, rfc3339_from_now, route_all_to, sms_batch, spawn_app, wait_for,
};

use super::{FINISH, app_sending_to, deliveries};

/// The ids of a batch's messages in the given state, from the ledger.
fn ids_in_state(messages: &[Value], state: &str) -> HashSet<String> {
    messages
        .iter()
        .filter(|m| m["state"] == state)
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
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
