//! Router tests without sockets: requests go through `router(state).oneshot(…)`
//! to a real store in a temp dir.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::route::routes;
use crate::auth::{Access, Tokens};
use crate::config::Config;
use crate::provider::Registry;
use crate::queue::Queue;

use super::*;

/// The API over a fresh embedded store (its directory lives as long as the guard),
/// with no workers: batches stay where intake put them.
pub(crate) async fn test_state() -> (AppState, tempfile::TempDir) {
    test_state_with(Config::default()).await
}

/// [`test_state`] with `config`'s providers, defaults and limits.
pub(crate) async fn test_state_with(config: Config) -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = Queue::open(
        &dir.path()
            .join("store")
            .display()
            .to_string()
            .parse()
            .expect("a store URL"),
    )
    .await
    .expect("open the store");
    let registry = Registry::build(
        &config.providers,
        &config.defaults,
        &config.failover,
        config.send_timeout(),
    )
    .expect("the built-in log provider");
    let metrics = crate::metrics::Metrics::new(
        registry
            .routes()
            .map(|r| (r.name.as_str(), r.channels.as_slice())),
    );
    (
        AppState::new(queue, registry, &config, metrics, CancellationToken::new()),
        dir,
    )
}

/// Sends `request` through the router; the status and the JSON answer (`Null` if none).
pub(crate) async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub(crate) fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("a request")
}

pub(crate) fn post_json(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("a request")
}

/// Submits a batch of `n` SMS recipients; its id.
pub(crate) async fn submit(router: &Router, n: usize) -> String {
    let recipients: Vec<Value> = (0..n)
        .map(|i| json!({"to": format!("+86138{i:08}")}))
        .collect();
    let batch = json!({"channel": "sms", "template": {"body": "Hi"}, "recipients": recipients});
    let (status, report) = call(router, post_json("/v1/batches", &batch)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{report}");
    report["batch_id"].as_str().expect("a batch id").to_owned()
}

#[tokio::test]
async fn batches_are_listed_newest_first_in_pages_that_say_where_the_next_starts() {
    let (state, _dir) = test_state().await;
    let router = router(state, 1 << 20);
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(submit(&router, n).await);
    }

    let (status, page) = call(&router, get("/v1/batches?limit=2")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed: Vec<&str> = page["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(page["batches"][0]["counts"]["total"], 3);
    assert_eq!(page["batches"][0]["state"], "queued");
    assert_eq!(page["next_before"], ids[1].as_str());

    let next = format!("/v1/batches?limit=2&before={}", ids[1]);
    let (_, page) = call(&router, get(&next)).await;
    assert_eq!(page["batches"].as_array().unwrap().len(), 1);
    assert_eq!(page["batches"][0]["id"], ids[0].as_str());
    assert_eq!(page["next_before"], Value::Null);

    let (_, page) = call(&router, get("/v1/batches")).await;
    assert_eq!(page["batches"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_bad_page_of_batches_is_refused_naming_the_field() {
    let (state, _dir) = test_state().await;
    let router = router(state, 1 << 20);
    for (uri, status, field) in [
        (
            "/v1/batches?limit=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit",
        ),
        (
            "/v1/batches?limit=101",
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit",
        ),
        (
            "/v1/batches?before=nope",
            StatusCode::UNPROCESSABLE_ENTITY,
            "before",
        ),
    ] {
        let (got, body) = call(&router, get(uri)).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert_eq!(body["field"], field, "{uri}: {body}");
    }
    let (got, body) = call(&router, get("/v1/batches?limit=many")).await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "malformed_request");
}

/// The events of an event stream as (event, data as JSON), read until it closes
/// or `max` events came, each within 5 s.
pub(crate) async fn read_events(body: Body, max: usize) -> Vec<(String, Value)> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut reader = crate::cli::EventReader::default();
    let mut events = Vec::new();
    while events.len() < max {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .expect("an event within 5 s");
        let Some(chunk) = chunk else { break };
        for event in reader.push(&chunk.expect("a chunk")) {
            let data = serde_json::from_str(&event.data).expect("one line of JSON");
            events.push((event.name, data));
        }
    }
    events
}

#[tokio::test]
async fn the_event_stream_sends_progress_at_once_then_end_when_the_batch_is_finished() {
    let (state, _dir) = test_state().await;
    let router = router(state, 1 << 20);
    let id = submit(&router, 3).await;
    let response = router
        .clone()
        .oneshot(get(&format!("/v1/batches/{id}/events")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let cancel = router.clone();
    let cancelled = id.clone();
    let events = tokio::spawn(async move { read_events(response.into_body(), 10).await });
    let (status, _) = call(
        &cancel,
        post_json(&format!("/v1/batches/{cancelled}/cancel"), &json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events = events.await.unwrap();
    let (first, data) = &events[0];
    assert_eq!(first, "progress");
    assert_eq!(data["id"], id.as_str());
    assert_eq!(data["counts"]["total"], 3);
    assert_eq!(data["rate_per_sec"], 0.0);
    assert_eq!(data["eta_seconds"], Value::Null);
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "end", "{events:?}");
    assert_eq!(data["state"], "cancelled");
    assert_eq!(data["counts"]["cancelled"], 3);
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|(e, _)| e == "progress")
    );
}

#[tokio::test]
async fn the_event_stream_of_an_unknown_batch_is_a_404() {
    let (state, _dir) = test_state().await;
    let router = router(state, 1 << 20);
    let unknown = crate::domain::BatchId::new();
    let (status, body) = call(&router, get(&format!("/v1/batches/{unknown}/events"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn the_event_stream_closes_when_the_server_stops() {
    let (state, _dir) = test_state().await;
    let stop = state.stop.clone();
    let router = router(state, 1 << 20);
    let id = submit(&router, 1).await;
    let response = router
        .oneshot(get(&format!("/v1/batches/{id}/events")))
        .await
        .unwrap();
    stop.cancel();
    let events = read_events(response.into_body(), 10).await;
    assert_eq!(
        events.len(),
        1,
        "the first progress, then closed: {events:?}"
    );
}

/// Methods probed on every route.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// A concrete path for a route's template: a fresh batch id, the action `pause`.
pub(crate) fn concrete(path: &str) -> String {
    path.replace("{id}", &crate::domain::BatchId::new().to_string())
        .replace("{action}", "pause")
}

/// Every route with its access and the methods it answers (those not answered
/// `405`), found by asking a router of that route alone.
pub(crate) async fn served() -> Vec<(&'static str, Access, Vec<Method>)> {
    let (state, _dir) = test_state().await;
    let mut served = Vec::new();
    for (path, access, handlers, _) in routes() {
        let alone = Router::new()
            .route(path, handlers)
            .with_state(state.clone());
        let mut methods = Vec::new();
        for method in METHODS {
            let request = Request::builder()
                .method(method.clone())
                .uri(concrete(path))
                .body(Body::empty())
                .unwrap();
            let response = alone.clone().oneshot(request).await.unwrap();
            if response.status() != StatusCode::METHOD_NOT_ALLOWED {
                methods.push(method);
            }
        }
        assert!(!methods.is_empty(), "{path} answers no method");
        served.push((path, access, methods));
    }
    served
}

#[tokio::test]
async fn every_protected_route_answers_401_without_a_right_token_and_serves_with_one() {
    let (mut state, _dir) = test_state().await;
    let (token, hash) = crate::auth::new_token().unwrap();
    state.tokens = Tokens::new(&[hash.into()]);
    let router = router(state, 1 << 20);
    let mut protected = 0;
    for (path, access, methods) in served().await {
        for method in methods {
            let uri = concrete(path);
            let request = |authorization: Option<&str>| {
                let mut request = Request::builder().method(method.clone()).uri(&uri);
                if let Some(value) = authorization {
                    request = request.header("authorization", value);
                }
                request.body(Body::empty()).unwrap()
            };
            let (without, body) = call(&router, request(None)).await;
            let (wrong, _) = call(&router, request(Some("Bearer herald_nope"))).await;
            let (right, _) = call(&router, request(Some(&format!("bearer {token}")))).await;
            assert_ne!(right, StatusCode::UNAUTHORIZED, "{method} {path}");
            match access {
                Access::Public => assert_ne!(without, StatusCode::UNAUTHORIZED, "{method} {path}"),
                Access::Token => {
                    protected += 1;
                    assert_eq!(without, StatusCode::UNAUTHORIZED, "{method} {path}");
                    assert_eq!(wrong, StatusCode::UNAUTHORIZED, "{method} {path}");
                    assert_eq!(body["error"], "unauthorized", "{method} {path}");
                    assert!(body["message"].as_str().unwrap().contains("Bearer"));
                }
            }
        }
    }
    // Every route of the batches, templates and suppressions, and /send-sms.
    assert!(protected >= 14, "{protected}");
}

#[tokio::test]
async fn without_configured_tokens_no_route_asks_for_one() {
    let (state, _dir) = test_state().await;
    let router = router(state, 1 << 20);
    let (status, body) = call(&router, get("/v1/batches")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Checks `text` is Prometheus's text format as far as Herald writes it: every
/// sample belongs to a family declared by `# TYPE` before it, and its value is a
/// number. Returns the samples by name and labels.
pub(crate) fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    let mut families = std::collections::HashSet::new();
    let mut samples = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declared.split_once(' ').expect("a name and a type");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            families.insert(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample and its value");
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| families.contains(*base))
            .unwrap_or(name);
        assert!(families.contains(family), "no # TYPE before {line}");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

struct Circuits;

impl crate::metrics::Section for Circuits {
    fn write(&self, out: &mut String) {
        out.push_str("# TYPE herald_provider_circuit_open gauge\n");
        out.push_str("herald_provider_circuit_open{provider=\"log\"} 0\n");
    }
}

#[tokio::test]
async fn metrics_count_accepted_messages_and_read_the_queue_depth_and_extra_sections() {
    let (state, _dir) = test_state().await;
    state.metrics.add_section(std::sync::Arc::new(Circuits));
    let router = router(state, 1 << 20);
    submit(&router, 3).await;
    let response = router.clone().oneshot(get("/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let samples = parse_metrics(std::str::from_utf8(&bytes).unwrap());
    let at = |series: &str| {
        samples
            .get(series)
            .copied()
            .unwrap_or_else(|| panic!("no {series}"))
    };
    assert_eq!(
        at(r#"herald_messages_accepted_total{provider="log",channel="sms"}"#),
        3.0
    );
    assert_eq!(
        at(r#"herald_messages_accepted_total{provider="log",channel="email"}"#),
        0.0
    );
    assert_eq!(
        at(r#"herald_messages_sent_total{provider="log",channel="sms"}"#),
        0.0
    );
    assert_eq!(at(r#"herald_queue_depth{provider="log"}"#), 3.0);
    assert_eq!(at(r#"herald_provider_circuit_open{provider="log"}"#), 0.0);
    assert_eq!(
        at(r#"herald_send_duration_seconds_bucket{provider="log",channel="sms",le="+Inf"}"#),
        0.0
    );
}

#[tokio::test]
async fn the_index_names_every_route_and_method_served_and_no_other() {
    let (state, _dir) = test_state().await;
    let (status, index) = call(&router(state, 1 << 20), get("/v1")).await;
    assert_eq!(status, StatusCode::OK, "{index}");
    assert_eq!(index["name"], "herald");
    assert_eq!(index["version"], env!("CARGO_PKG_VERSION"));
    let routes = index["routes"]
        .as_object()
        .expect("routes by `METHOD path`");
    for (route, summary) in routes {
        assert!(
            summary.as_str().is_some_and(|s| !s.is_empty()),
            "{route} has no summary"
        );
    }
    let listed: std::collections::BTreeSet<String> = routes.keys().cloned().collect();
    let served: std::collections::BTreeSet<String> = served()
        .await
        .into_iter()
        .flat_map(|(path, _, methods)| methods.into_iter().map(move |m| format!("{m} {path}")))
        .collect();
    assert_eq!(listed, served, "listed but not served, or the reverse");
}

/// A configuration whose `webhook.callback_secret` is set: batches may give a
/// `callback_url`.
fn signing_callbacks() -> Config {
    let mut config = Config::default();
    config.webhook.callback_secret = Some(
        crate::domain::SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("a secret"),
    );
    config
}

/// Every way a batch can give its `callback_url`, set to `url`.
fn callback_requests(url: &str) -> Vec<Request<Body>> {
    let encoded: String = form_urlencoded::byte_serialize(url.as_bytes()).collect();
    let batch = json!({"channel": "sms", "template": {"body": "Hi"},
        "recipients": [{"to": "+8613800000001"}], "callback_url": url});
    let options = json!({"channel": "sms", "template": {"body": "Hi"}, "callback_url": url});
    vec![
        post_json("/v1/batches", &batch),
        Request::post("/v1/batches")
            .header("content-type", "application/x-ndjson")
            .body(Body::from(format!(
                "{options}\n{{\"to\":\"+8613800000001\"}}\n"
            )))
            .expect("a request"),
        Request::post(format!(
            "/v1/batches?channel=sms&template=Hi&callback_url={encoded}"
        ))
        .header("content-type", "text/csv")
        .body(Body::from("to\n+8613800000001\n"))
        .expect("a request"),
        post_json(
            "/send-sms",
            &json!({"mobiles": ["+8613800000001"], "content": "Hi", "callback_url": url}),
        ),
        Request::post("/send-sms")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "mobiles[]=%2B8613800000001&content=Hi&callback_url={encoded}"
            )))
            .expect("a request"),
    ]
}

/// Sends each of [`callback_requests`]`(url)` to an API configured by `config`
/// and checks its status and, for a refusal, that it names `callback_url` and says
/// `saying`.
async fn check_callback_answers(config: Config, url: &str, status: StatusCode, saying: &str) {
    let (state, _dir) = test_state_with(config).await;
    let router = router(state, 1 << 20);
    for request in callback_requests(url) {
        let uri = request.uri().to_string();
        let (answered, body) = call(&router, request).await;
        assert_eq!(answered, status, "{uri}: {body}");
        if status.is_client_error() {
            assert_eq!(body["field"], "callback_url", "{uri}: {body}");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(message.contains(saying), "{uri}: {body}");
        }
    }
}

#[tokio::test]
async fn a_callback_url_is_refused_naming_it_while_no_callback_secret_signs_its_posts() {
    let (url, status) = (
        "https://app.example/herald",
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    check_callback_answers(Config::default(), url, status, "callback_secret").await;
}

#[tokio::test]
async fn a_callback_url_that_is_not_http_is_refused_naming_it_in_every_request_form() {
    let (url, status) = ("ftp://app.example/herald", StatusCode::UNPROCESSABLE_ENTITY);
    check_callback_answers(signing_callbacks(), url, status, "http or https").await;
}

#[tokio::test]
async fn a_callback_url_is_taken_in_every_request_form_when_a_secret_signs_its_posts() {
    let (url, status) = ("http://127.0.0.1:9/herald", StatusCode::ACCEPTED);
    check_callback_answers(signing_callbacks(), url, status, "").await;
}

mod window;
