//! The local webhook provider: answers at once and records every message id.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;

/// The local webhook provider: answers `200 {"id":…}` at once and records the
/// `Idempotency-Key` (the message id) of every request.
pub(crate) struct Provider {
    addr: SocketAddr,
    pub(crate) sink: Arc<Sink>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
pub(crate) struct Sink {
    pub(crate) count: AtomicUsize,
    keys: Mutex<Vec<String>>,
    first: Mutex<Option<Instant>>,
}

impl Sink {
    /// The distinct ids received, and how many requests repeated one.
    pub(crate) fn distinct(&self) -> (HashSet<String>, usize) {
        let keys = self
            .keys
            .lock()
            .expect("no handler panics while holding the lock");
        let seen: HashSet<String> = keys.iter().cloned().collect();
        let duplicates = keys.len() - seen.len();
        (seen, duplicates)
    }

    pub(crate) fn first_at(&self) -> Option<Instant> {
        *self
            .first
            .lock()
            .expect("no handler panics while holding the lock")
    }
}

impl Provider {
    pub(crate) async fn start() -> anyhow::Result<Provider> {
        let sink = Arc::new(Sink::default());
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(sink.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the provider server")?;
        let addr = listener
            .local_addr()
            .context("reading the provider's address")?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                eprintln!("the provider server stopped: {e}");
            }
        });
        Ok(Provider { addr, sink, task })
    }

    /// The `HERALD_PROVIDERS` value that points a `hook` webhook provider here;
    /// `extra` is more of the entry's settings (`rate_per_sec=500, …`) or empty.
    pub(crate) fn config(&self, extra: &str) -> String {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        };
        format!(
            r#"[{{name="hook", kind="webhook", url="http://{}/hook"{extra}}}]"#,
            self.addr
        )
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(sink): State<Arc<Sink>>,
    headers: HeaderMap,
    _body: Bytes,
) -> impl IntoResponse {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let n = sink.count.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        *sink
            .first
            .lock()
            .expect("no handler panics while holding the lock") = Some(Instant::now());
    }
    sink.keys
        .lock()
        .expect("no handler panics while holding the lock")
        .push(key);
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"id":"p-{n}"}}"#),
    )
}
