//! Router tests without sockets: requests go through `router(state).oneshot(…)`
//! to a real store in a temp dir.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;

/// The API over a fresh embedded store (its directory lives as long as the guard),
/// with no workers: batches stay where intake put them.
pub(crate) async fn test_state() -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = Queue::open(&dir.path().join("store").display().to_string())
        .await
        .expect("open the store");
    let config = Config::default();
    let registry = Registry::build(&config.providers, &config.defaults, config.send_timeout())
        .expect("the built-in log provider");
    (AppState::new(queue, registry, &config), dir)
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
