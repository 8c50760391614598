//! The faulty provider: a local server in the webhook format (`POST /hook`, the
//! message id in `Idempotency-Key`) that answers by its [`Fault`] and records every
//! request by message id, so the bench can count repeats and attempts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

/// How the provider misbehaves, from the moment it is [armed](Provider::arm).
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Accepts everything.
    None,
    /// Answers `503` to this share of requests, at random.
    Random { share: f64 },
    /// Answers `503` to everything for this long, then accepts everything.
    Down { for_: Duration },
    /// Accepts `per_sec` requests a second (a token bucket holding a tenth of a
    /// second's worth) and answers the rest `429` with `Retry-After: 1`.
    Throttle { per_sec: f64 },
    /// Answers `503` to everything.
    FailAll,
    /// Never answers: the request waits until the provider is dropped.
    Hang,
}

/// What the provider did with every request.
#[derive(Default)]
pub struct Record {
    /// By message id: requests received, and how many of them were accepted (2xx).
    pub by_id: HashMap<String, (u32, u32)>,
    /// When each accepted request was answered, in order.
    pub accepted_at: Vec<Instant>,
    /// When the first `429` was answered.
    pub first_throttle: Option<Instant>,
}

/// A running faulty provider on 127.0.0.1; stops when dropped, releasing any
/// request it holds.
pub struct Provider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    fault: Fault,
    armed: OnceLock<Instant>,
    bucket: Mutex<Bucket>,
    record: Mutex<Record>,
    stop: CancellationToken,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Provider {
    pub async fn start(fault: Fault) -> anyhow::Result<Provider> {
        let shared = Arc::new(Shared {
            fault,
            armed: OnceLock::new(),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                at: Instant::now(),
            }),
            record: Mutex::new(Record::default()),
            stop: CancellationToken::new(),
        });
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the provider server")?;
        let addr = listener
            .local_addr()
            .context("reading the provider's address")?;
        let stop = shared.stop.clone();
        let task = tokio::spawn(async move {
            let serve =
                axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                eprintln!("the provider server stopped: {e}");
            }
        });
        Ok(Provider { addr, shared, task })
    }

    /// The `HERALD_PROVIDERS` value that points a `hook` webhook provider here.
    pub fn config(&self) -> String {
        format!(
            r#"[{{name="hook", kind="webhook", url="http://{}/hook"}}]"#,
            self.addr
        )
    }

    /// Starts the fault's clock (the outage of [`Fault::Down`] begins now) and
    /// returns the instant.
    pub fn arm(&self) -> Instant {
        *self.shared.armed.get_or_init(Instant::now)
    }

    /// When a [`Fault::Down`] provider came back, if it has.
    pub fn recovered_at(&self) -> Option<Instant> {
        match self.shared.fault {
            Fault::Down { for_ } => self.shared.armed.get().map(|at| *at + for_),
            _ => None,
        }
    }

    pub fn record(&self) -> MutexGuard<'_, Record> {
        self.shared.record()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        self.task.abort();
    }
}

impl Shared {
    fn record(&self) -> MutexGuard<'_, Record> {
        self.record
            .lock()
            .expect("no handler panics while holding the lock")
    }

    fn answer(&self, now: Instant) -> Answer {
        let armed = *self.armed.get_or_init(|| now);
        match self.fault {
            Fault::None => Answer::Accept,
            Fault::Random { share } if fastrand::f64() < share => Answer::Unavailable,
            Fault::Random { .. } => Answer::Accept,
            Fault::Down { for_ } if now < armed + for_ => Answer::Unavailable,
            Fault::Down { .. } => Answer::Accept,
            Fault::Throttle { per_sec } => {
                let mut bucket = self
                    .bucket
                    .lock()
                    .expect("no handler panics while holding the lock");
                let capacity = (per_sec / 10.0).max(1.0);
                let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
                bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
                bucket.at = now;
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    Answer::Accept
                } else {
                    Answer::Throttled
                }
            }
            Fault::FailAll => Answer::Unavailable,
            Fault::Hang => Answer::Hang,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Accept,
    Unavailable,
    Throttled,
    Hang,
}

/// The longest a hanging request is held, should the provider outlive its bench.
const HANG_MAX: Duration = Duration::from_secs(900);

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let id = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let now = Instant::now();
    let answer = shared.answer(now);
    {
        let mut record = shared.record();
        let counts = record.by_id.entry(id.clone()).or_default();
        counts.0 += 1;
        match answer {
            Answer::Accept => {
                counts.1 += 1;
                record.accepted_at.push(now);
            }
            Answer::Throttled => {
                record.first_throttle.get_or_insert(now);
            }
            Answer::Unavailable | Answer::Hang => {}
        }
    }
    match answer {
        Answer::Accept => (
            [(header::CONTENT_TYPE, "application/json")],
            format!(r#"{{"id":"{id}"}}"#),
        )
            .into_response(),
        Answer::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"unavailable"}"#,
        )
            .into_response(),
        Answer::Throttled => (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::RETRY_AFTER, "1"),
            ],
            r#"{"error":"rate_limited"}"#,
        )
            .into_response(),
        Answer::Hang => {
            tokio::select! {
                () = shared.stop.cancelled() => {}
                () = tokio::time::sleep(HANG_MAX) => {}
            }
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
