//! What a careful operator trips on in the first hour, over a real socket: a
//! finished batch refuses to be cancelled (API and CLI) and keeps its history,
//! and its event stream still starts with `progress`.

use std::time::Duration;

use serde_json::json;

use crate::events::events_until_closed;
use crate::helpers::{TestApp, sms_batch, spawn_app};
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
