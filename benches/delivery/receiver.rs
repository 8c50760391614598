//! The local status-webhook receiver: takes every POST of events at once and
//! records, per event, its id and how long after the change it tells of (its
//! `at_ms`) it arrived.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use serde_json::Value;

/// A signing secret for the bench's endpoint (the receiver does not check it:
/// the tests do).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receiver, on 127.0.0.1; stopped when dropped.
pub(crate) struct Receiver {
    addr: SocketAddr,
    pub(crate) events: Arc<Events>,
    task: tokio::task::JoinHandle<()>,
}

/// What arrived: per event id, the milliseconds from its change to its arrival
/// (the first time; repeats are counted apart).
#[derive(Default)]
pub(crate) struct Events {
    latency_ms: Mutex<HashMap<String, f64>>,
    repeats: Mutex<usize>,
}

impl Events {
    /// How many distinct events arrived.
    pub(crate) fn count(&self) -> usize {
        self.latency_ms.lock().expect("no handler panics").len()
    }

    /// Each distinct event's latency, and how many arrived more than once.
    pub(crate) fn latencies(&self) -> (HashMap<String, f64>, usize) {
        let latency = self.latency_ms.lock().expect("no handler panics").clone();
        (latency, *self.repeats.lock().expect("no handler panics"))
    }
}

impl Receiver {
    pub(crate) async fn start() -> anyhow::Result<Receiver> {
        let events = Arc::new(Events::default());
        let router = axum::Router::new()
            .route("/events", axum::routing::post(receive))
            .with_state(events.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the webhook receiver")?;
        let addr = listener
            .local_addr()
            .context("reading the receiver's address")?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                eprintln!("the webhook receiver stopped: {e}");
            }
        });
        Ok(Receiver { addr, events, task })
    }

    /// The `HERALD_WEBHOOKS` value: one endpoint here wanting every kind of event.
    pub(crate) fn config(&self) -> String {
        format!(
            r#"[{{name="bench", url="http://{}/events", secret="{SECRET}"}}]"#,
            self.addr
        )
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(events): State<Arc<Events>>, body: Bytes) -> &'static str {
    let now = jiff::Timestamp::now().as_millisecond();
    let posted: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
    let mut latency = events.latency_ms.lock().expect("no handler panics");
    let mut repeats = 0;
    for event in posted {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        let at = event["at_ms"].as_i64().unwrap_or(now);
        if latency.insert(id, (now - at) as f64).is_some() {
            repeats += 1;
        }
    }
    drop(latency);
    *events.repeats.lock().expect("no handler panics") += repeats;
    "ok"
}
