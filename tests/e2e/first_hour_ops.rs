//! What a careful operator trips on in the first hour, over a real socket: a
//! finished batch refuses to be cancelled (API and CLI) and keeps its history,
//! its event stream still starts with `progress`, and a provider's error answer
//! that echoes the request leaves the message's text out of the ledger.

use std::time::Duration;

use serde_json::json;

use crate::events::events_until_closed;
use crate::helpers::{ProviderServer, Reply, TestApp, route_all_to, sms_batch, spawn_app};
use crate::process::{herald_command, output_within};

const FINISH: Duration = Duration::from_secs(10);

/// A batch of two SMS sent through the built-in log provider, finished.
async fn finished_batch(app: &TestApp) -> String {
    let id = app.submit(&sms_batch(2)).await;
    let batch = app.wait_finished(&id, FINISH).await;
    assert_eq!(batch["counts"]["sent"], 2, "{batch}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_finished_batch_is_refused_and_leaves_its_history() {
    let app = spawn_app(|_| {}).await;
    let id = finished_batch(&app).await;
    let (_, before) = app.get(&format!("/v1/batches/{id}")).await;

    let (status, refusal) = app
        .post(&format!("/v1/batches/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409, "{refusal}");
    assert_eq!(refusal["error"], "conflict");
    let message = refusal["message"].as_str().unwrap();
    assert!(
        message.contains("finished (2 sent") && message.contains("nothing to cancel"),
        "{message}"
    );

    let mut cancel = herald_command();
    cancel.args(["cancel", &id, "--server", &app.url]);
    let cli = output_within(cancel, Duration::from_secs(20)).await;
    assert!(!cli.status.success(), "herald cancel exited 0");
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(stderr.contains("nothing to cancel"), "{stderr}");

    let (_, after) = app.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(after["state"], "done", "{after}");
    assert_eq!(after["counts"], before["counts"]);
    assert_eq!(after["counts"]["cancelled"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_batchs_events_are_its_final_progress_then_end() {
    let app = spawn_app(|_| {}).await;
    let id = finished_batch(&app).await;
    let url = format!("{}/v1/batches/{id}/events", app.url);
    let events = events_until_closed(&app.client, &url, FINISH).await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["progress", "end"], "{events:?}");
    assert_eq!(events[0].1, events[1].1, "end repeats the final progress");
    assert_eq!(events[0].1["state"], "done");
    assert_eq!(events[0].1["counts"]["sent"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_echoing_the_request_keeps_the_code_out_of_the_ledger() {
    let server = ProviderServer::start().await;
    server.behave(|_, request| {
        // What some services do: the error answer carries the request back.
        let echo =
            json!({"error": "bad_request", "message": "template rejected", "request": request});
        Reply::status(400).body(&echo.to_string())
    });
    let app = spawn_app(|config| route_all_to(config, server.provider(None))).await;
    let batch = json!({
        "channel": "sms",
        "template": {"body": "Your code is {{code}}"},
        "recipients": [{"to": "+8613800000001", "vars": {"code": "99887"}}],
    });
    let id = app.submit(&batch).await;
    let done = app.wait_finished(&id, FINISH).await;
    assert_eq!(done["counts"]["failed"], 1, "{done}");
    assert!(
        server.received()[0].json.to_string().contains("99887"),
        "the provider was sent the code"
    );
    let messages = app.messages(&id).await;
    assert_eq!(
        messages[0]["last_error"], "HTTP 400: bad_request: template rejected",
        "{messages:?}"
    );
}
