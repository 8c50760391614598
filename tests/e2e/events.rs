//! The event stream and the metrics over a real socket: a batch delivered through the
//! built-in log provider streams progress until `end`, and is counted in `/metrics`.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::{sms_batch, spawn_app};

/// Reads the `text/event-stream` at `url` until it closes, within `within`; its
/// events as (event, data).
pub async fn events_until_closed(
    client: &reqwest::Client,
    url: &str,
    within: Duration,
) -> Vec<(String, Value)> {
    let response = client.get(url).send().await.expect("the event stream");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut reader = herald::cli::EventReader::default();
    let mut events = Vec::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            for event in reader.push(&chunk.expect("a chunk")) {
                let data = serde_json::from_str(&event.data).expect("JSON");
                events.push((event.name, data));
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("the stream closes in time");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_through_the_log_provider_streams_progress_until_end() {
    let app = spawn_app(|_| {}).await;
    let (status, report) = app.post("/v1/batches", &sms_batch(200)).await;
    assert_eq!(status, 202, "{report}");
    let id = report["batch_id"].as_str().unwrap();
    let url = format!("{}/v1/batches/{id}/events", app.url);
    let events = events_until_closed(&app.client, &url, Duration::from_secs(20)).await;
    let (last, data) = events.last().expect("at least one event");
    assert_eq!(last, "end", "{events:?}");
    assert_eq!(data["state"], "done");
    assert_eq!(data["counts"]["sent"], 200);
    assert_eq!(data["eta_seconds"], 0.0);
    assert!(data["rate_per_sec"].is_number());
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|(name, data)| name == "progress" && data["id"] == id),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_workers_sent_and_how_long_it_took() {
    let app = spawn_app(|_| {}).await;
    let (status, report) = app.post("/v1/batches", &sms_batch(20)).await;
    assert_eq!(status, 202, "{report}");
    app.wait_finished(
        report["batch_id"].as_str().unwrap(),
        Duration::from_secs(10),
    )
    .await;
    let metrics = app.metrics().await;
    let sample = |series: &str| metrics.sample(series).to_owned();
    let labels = r#"{provider="log",channel="sms"}"#;
    assert_eq!(
        sample(&format!("herald_messages_accepted_total{labels}")),
        "20"
    );
    assert_eq!(sample(&format!("herald_messages_sent_total{labels}")), "20");
    assert_eq!(
        sample(&format!("herald_send_duration_seconds_count{labels}")),
        "20"
    );
    assert_eq!(sample(r#"herald_queue_depth{provider="log"}"#), "0");
    assert_eq!(
        sample(r#"herald_provider_circuit_state{provider="log",state="closed"}"#),
        "1"
    );
}
