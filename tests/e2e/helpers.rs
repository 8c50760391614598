//! Shared test fixtures: a Herald on port 0 with a temp store, a local webhook
//! provider server that records what it receives, and waits on real conditions.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald::app::{self, Running};
use herald::config::Config;
use herald::domain::Secret;
use herald::provider::{ProviderConfig, ProviderKind};
use serde_json::Value;
use tempfile::TempDir;

/// How the provider server answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub delay: Duration,
    pub body: String,
}

impl Reply {
    pub fn ok() -> Self {
        Reply {
            status: 200,
            retry_after: None,
            delay: Duration::ZERO,
            body: String::new(),
        }
    }

    pub fn status(status: u16) -> Self {
        Reply {
            status,
            ..Reply::ok()
        }
    }

    pub fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = body.into();
        self
    }
}

/// One request the provider server received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `Idempotency-Key` header.
    pub key: String,
    pub signature: Option<String>,
    pub headers: HeaderMap,
    pub raw: Bytes,
    pub json: Value,
    pub at: Instant,
}

/// Decides the reply to request number `n` (0-based, across the server's life).
pub type Behaviour = Arc<dyn Fn(usize, &Value) -> Reply + Send + Sync>;

struct ServerState {
    received: Mutex<Vec<Received>>,
    behaviour: Mutex<Behaviour>,
}

/// A local webhook receiver on 127.0.0.1 that records every request.
#[derive(Clone)]
pub struct ProviderServer {
    pub url: String,
    state: Arc<ServerState>,
}

impl ProviderServer {
    /// Starts a server that answers `200 {"id": "p-<n>"}` until told otherwise.
    pub async fn start() -> Self {
        let state = Arc::new(ServerState {
            received: Mutex::new(Vec::new()),
            behaviour: Mutex::new(Arc::new(|n, _| {
                Reply::ok().body(&format!(r#"{{"id":"p-{n}"}}"#))
            })),
        });
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the provider server");
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("provider server")
        });
        ProviderServer {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    pub fn behave(&self, f: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static) {
        *self.state.behaviour.lock().unwrap() = Arc::new(f);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Each request's `to` and `body`, sorted.
    pub fn sent(&self) -> Vec<(String, String)> {
        let mut sent: Vec<(String, String)> = self
            .received()
            .iter()
            .map(|r| {
                (
                    r.json["to"].as_str().unwrap_or_default().into(),
                    r.json["body"].as_str().unwrap_or_default().into(),
                )
            })
            .collect();
        sent.sort();
        sent
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// A provider entry named `hook` that sends to this server.
    pub fn provider(&self, secret: Option<&str>) -> ProviderConfig {
        ProviderConfig {
            name: "hook".into(),
            kind: ProviderKind::Webhook {
                url: self.url.clone(),
                secret: secret.map(Secret::new),
            },
            channels: vec![herald::domain::Channel::Sms, herald::domain::Channel::Email],
            rate_per_sec: None,
            burst: None,
            segments_per_sec: None,
            segment_burst: None,
            per_recipient: Default::default(),
            price_per_message: None,
            price_per_segment: None,
            currency: None,
            daily_budget: None,
            budget_time_zone: None,
        }
    }
}

async fn receive(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let json: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (n, behaviour) = {
        let mut received = state.received.lock().unwrap();
        received.push(Received {
            key: header("idempotency-key").unwrap_or_default(),
            signature: header("x-herald-signature"),
            headers: headers.clone(),
            raw: raw.clone(),
            json: json.clone(),
            at: Instant::now(),
        });
        (received.len() - 1, state.behaviour.lock().unwrap().clone())
    };
    let reply = behaviour(n, &json);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    if let Some(after) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", after.parse().unwrap());
    }
    response
}

/// Serves `app` on 127.0.0.1 (a free port) for the rest of the test; answers its
/// base URL.
pub async fn serve_local(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local server");
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// An SMS-only provider `name` of `kind`, without limits.
pub fn sms_provider(name: &str, kind: ProviderKind) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        kind,
        channels: vec![herald::domain::Channel::Sms],
        ..ProviderConfig::log()
    }
}

/// A configuration for tests: port 0, a temp store, fast polls, retries and
/// circuit cool-downs.
pub fn test_config(store: &std::path::Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: herald::domain::StoreUrl::Sqlite(store.to_path_buf()),
        ..Config::default()
    };
    config.worker.poll_interval_ms = 20;
    config.worker.lease_ms = 5_000;
    config.worker.send_timeout_ms = 2_000;
    config.worker.shutdown_grace_ms = 5_000;
    config.retry.base_delay_ms = 20;
    config.retry.max_delay_ms = 2_000;
    // A provider failing repeatedly is probed again soon, as tests' providers
    // recover at once.
    config.circuit.cooldown_ms = 20;
    config.circuit.max_cooldown_ms = 200;
    config
}

/// The text of one scrape of `/metrics`.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the sample `series` (name and labels, as written); panics
    /// showing the scrape when there is none.
    pub fn sample(&self, series: &str) -> &str {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{}", self.0))
    }
}

/// A running in-process Herald and what a test needs to talk to it.
pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub running: Option<Running>,
    pub dir: TempDir,
}

/// Starts Herald with `test_config`, changed by `tweak`.
pub async fn spawn_app(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(&dir.path().join("store"));
    tweak(&mut config);
    let running = app::start(config).await.expect("herald starts");
    TestApp {
        url: running.url().expect("the API runs"),
        client: client(),
        running: Some(running),
        dir,
    }
}

pub fn client() -> reqwest::Client {
    herald::provider::http_client(Duration::from_secs(30)).expect("http client")
}

impl TestApp {
    /// POSTs JSON to `path`; returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.url)))
            .await
    }

    /// `method` with a JSON body: the status and the JSON answer (`Null` if none).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.client
                .request(method, format!("{}{path}", self.url))
                .json(body),
        )
        .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A scrape of `GET /metrics`: Prometheus's text format.
    pub async fn metrics(&self) -> Metrics {
        let response = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET /metrics");
        Metrics(response.text().await.unwrap())
    }

    /// Waits until the batch's state is `done` (or `cancelled`); returns the batch.
    pub async fn wait_finished(&self, batch_id: &str, within: Duration) -> Value {
        let path = format!("/v1/batches/{batch_id}");
        wait_for(within, &format!("batch {batch_id} to finish"), || async {
            let (_, batch) = self.get(&path).await;
            matches!(batch["state"].as_str(), Some("done" | "cancelled")).then_some(batch)
        })
        .await
    }

    /// Stops Herald and waits for it to finish shutting down.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
            running.wait().await.expect("clean shutdown");
        }
    }
}

/// Polls `check` every 20 ms until it yields a value; panics naming `what` after `within`.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A batch of `n` SMS recipients with distinct numbers and a `name` variable.
pub fn sms_batch(n: usize) -> Value {
    let recipients: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"to": format!("+86138{i:08}"), "vars": {"name": format!("n{i}")}, "ref": format!("r{i}")}))
        .collect();
    serde_json::json!({"channel": "sms", "template": {"body": "Hello {{name}}"}, "recipients": recipients})
}

/// Sends every channel to `provider`, which replaces the configured providers.
pub fn route_all_to(config: &mut Config, provider: ProviderConfig) {
    for channel in herald::domain::Channel::ALL {
        config.defaults.insert(channel, provider.name.clone());
    }
    config.providers = vec![provider];
}

/// An RFC 3339 time `offset_ms` milliseconds from now (in the past when negative).
pub fn rfc3339_from_now(offset_ms: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_millis(offset_ms)).to_string()
}

impl TestApp {
    /// POSTs a batch that must be accepted; returns its id.
    pub async fn submit(&self, batch: &Value) -> String {
        let (status, report) = self.post("/v1/batches", batch).await;
        assert_eq!(status, 202, "the batch was not accepted: {report}");
        report["batch_id"]
            .as_str()
            .expect("an accepted batch has an id")
            .to_string()
    }

    /// POSTs `body` as is, with `content_type` and `headers`; returns the status,
    /// the answer's headers and its JSON (`Null` when it is not JSON).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let json = response.json().await.unwrap_or(Value::Null);
        (status, headers, json)
    }

    /// Every message of a batch in index order, read page by page from the ledger.
    pub async fn messages(&self, batch_id: &str) -> Vec<Value> {
        let path = format!("/v1/batches/{batch_id}/messages?limit=1000");
        self.all_pages(&path, "messages", ("next_after", "after"))
            .await
    }

    /// Every item of a paged list: GETs `path` (which has a query), then again
    /// with `&{param}=` each page's `next` field until that is null, collecting each
    /// page's `items` array.
    async fn all_pages(&self, path: &str, items: &str, (next, param): (&str, &str)) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor = String::new();
        for _ in 0..10_000 {
            let (status, page) = self.get(&format!("{path}{cursor}")).await;
            assert_eq!(status, 200, "{page}");
            let listed = page[items]
                .as_array()
                .unwrap_or_else(|| panic!("no {items} in {page}"));
            all.extend(listed.iter().cloned());
            cursor = match &page[next] {
                Value::Null => return all,
                Value::String(s) => format!("&{param}={s}"),
                other => format!("&{param}={other}"),
            };
        }
        panic!("the pages of {path} never ended");
    }
}

impl TestApp {
    /// Every batch the API lists, newest first, read page by page from
    /// `GET /v1/batches` (batches still being staged are not listed).
    pub async fn batches(&self) -> Vec<Value> {
        self.all_pages(
            "/v1/batches?limit=100",
            "batches",
            ("next_before", "before"),
        )
        .await
    }

    /// How many batches the API lists and how many messages they hold in all.
    pub async fn stored(&self) -> (usize, u64) {
        let batches = self.batches().await;
        let messages = batches
            .iter()
            .map(|b| b["counts"]["total"].as_u64().expect("a batch has a total"))
            .sum();
        (batches.len(), messages)
    }

    /// The batches the API lists whose source is `source`, newest first.
    pub async fn batches_of(&self, source: &str) -> Vec<Value> {
        let mut batches = self.batches().await;
        batches.retain(|b| b["source"] == source);
        batches
    }
}

/// Form parameters as Twilio POSTs them to `url`, and their `X-Twilio-Signature`
/// with the auth token `twilio-token`: base64 HMAC-SHA1 of the URL, then each
/// parameter's name and value, sorted by name.
pub fn twilio_signed(url: &str, params: Vec<(&str, String)>) -> (String, String) {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let mut sorted = params.clone();
    sorted.sort();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"twilio-token").unwrap();
    mac.update(url.as_bytes());
    for (name, value) in &sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    (body, signature)
}
