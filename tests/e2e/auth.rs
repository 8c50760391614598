//! API tokens over a real socket: a server with tokens answers 401 without one,
//! serves with one (the event stream too), and Herald without tokens refuses to
//! listen beyond loopback.

use herald::auth::new_token;

use crate::helpers::{sms_batch, spawn_app, test_config};

#[tokio::test]
async fn without_tokens_herald_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("store"));
    config.listen = "0.0.0.0:0".parse().unwrap();
    let err = match herald::app::start(config).await {
        Ok(_) => panic!("started on 0.0.0.0 without tokens"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without API tokens")
            && err.contains("herald token"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_api_and_the_event_stream_need_one_and_health_does_not() {
    let (token, hash) = new_token().unwrap();
    let app = spawn_app(|config| config.auth.tokens = vec![hash.into()]).await;
    let url = |path: &str| format!("{}{path}", app.url);

    let refused = app
        .client
        .post(url("/v1/batches"))
        .json(&sms_batch(2))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");

    let accepted = app
        .client
        .post(url("/v1/batches"))
        .bearer_auth(&token)
        .json(&sms_batch(2))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let report: serde_json::Value = accepted.json().await.unwrap();
    let events = url(&format!(
        "/v1/batches/{}/events",
        report["batch_id"].as_str().unwrap()
    ));
    let without = app.client.get(&events).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let with = app
        .client
        .get(&events)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    assert_eq!(with.headers()["content-type"], "text/event-stream");

    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
}
