//! Real requests through the router, and their answers, checked against the
//! schemas the document gives for them.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::document;
use super::schema::{check, resolve};
use crate::api::router;
use crate::api::tests::{call, concrete, get, post_json, read_events, test_state, test_state_with};

/// Sends `request` (to an operation of route `path`) and checks the answer fits
/// the JSON schema the document gives for its status, and, when it was
/// accepted, that a JSON request fits the documented request body; the answer.
async fn fits(router: &Router, path: &str, request: Request<Body>) -> Value {
    let doc = document();
    let method = request.method().as_str().to_lowercase();
    let operation = &doc["paths"][path][&method];
    let (parts, body) = request.into_parts();
    let sent = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let is_json = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/json");
    let request = Request::from_parts(parts, Body::from(sent.clone()));
    let (status, body) = call(router, request).await;
    // An operation that takes no body ignores the one it is sent.
    if status.is_success() && is_json && operation.get("requestBody").is_some() {
        let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} documents no JSON request"
        );
        let sent: Value = serde_json::from_slice(&sent).unwrap();
        check(&doc, schema, &sent, "request")
            .unwrap_or_else(|e| panic!("{method} {path} {status}: {e}"));
    }
    let mut response = &operation["responses"][status.as_str()];
    if let Some(reference) = response["$ref"].as_str() {
        response = resolve(&doc, reference);
    }
    assert!(
        response.is_object(),
        "{method} {path} answers {status}, which is not documented: {body}"
    );
    if let Some(schema) = response["content"]
        .get("application/json")
        .map(|c| &c["schema"])
    {
        check(&doc, schema, &body, "answer")
            .unwrap_or_else(|e| panic!("{method} {path} {status}: {e}"));
    }
    body
}

fn request(method: Method, uri: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn real_answers_fit_the_documented_schemas() {
    let (state, _dir) = test_state().await;
    let router = router(state, 1 << 20);
    let batch = json!({
        "channel": "sms",
        "template": {"body": "Hi {{name}}"},
        "recipients": [{"to": "+8613800000001", "vars": {"name": "Li"}, "ref": "a"}, {"to": "12ab"}],
    });
    let report = fits(&router, "/v1/batches", post_json("/v1/batches", &batch)).await;
    fits(
        &router,
        "/v1/batches",
        post_json("/v1/batches?dry_run=true", &batch),
    )
    .await;
    fits(
        &router,
        "/v1/batches",
        post_json("/v1/batches", &json!({"channel": "fax"})),
    )
    .await;
    let id = report["batch_id"].as_str().unwrap();
    fits(&router, "/v1/batches", get("/v1/batches?limit=1")).await;
    fits(&router, "/v1/batches", get("/v1/batches?before=x")).await;
    fits(
        &router,
        "/v1/batches/{id}",
        get(&format!("/v1/batches/{id}")),
    )
    .await;
    fits(
        &router,
        "/v1/batches/{id}",
        get(&concrete("/v1/batches/{id}")),
    )
    .await;
    fits(
        &router,
        "/v1/batches/{id}/messages",
        get(&format!("/v1/batches/{id}/messages")),
    )
    .await;
    fits(
        &router,
        "/v1/batches/{id}/{action}",
        post_json(&format!("/v1/batches/{id}/cancel"), &json!({})),
    )
    .await;
    fits(
        &router,
        "/v1/batches/{id}/{action}",
        post_json(&format!("/v1/batches/{id}/pause"), &json!({})),
    )
    .await;

    let stream = router
        .clone()
        .oneshot(get(&format!("/v1/batches/{id}/events")))
        .await
        .unwrap();
    let events = read_events(stream.into_body(), 1).await;
    let doc = document();
    let event = &doc["paths"]["/v1/batches/{id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"];
    let progress = &event["properties"]["data"]["contentSchema"];
    check(&doc, progress, &events[0].1, "event").unwrap();

    let template = json!({"id": "hello", "channel": "sms", "body": "Hi {{name}}", "providers": {"ali": {"code": "SMS_1"}}});
    fits(
        &router,
        "/v1/templates",
        post_json("/v1/templates", &template),
    )
    .await;
    fits(
        &router,
        "/v1/templates",
        post_json("/v1/templates", &template),
    )
    .await;
    fits(&router, "/v1/templates", get("/v1/templates")).await;
    fits(&router, "/v1/templates/{id}", get("/v1/templates/hello")).await;
    fits(
        &router,
        "/v1/templates/{id}",
        request(
            Method::PUT,
            "/v1/templates/hello",
            json!({"channel": "email", "subject": "S", "body": "B"}),
        ),
    )
    .await;
    fits(
        &router,
        "/v1/templates/{id}",
        request(Method::DELETE, "/v1/templates/hello", Value::Null),
    )
    .await;
    fits(&router, "/v1/templates/{id}", get("/v1/templates/hello")).await;

    let addresses =
        json!({"channel": "sms", "addresses": ["+8613800000009", "nope"], "reason": "opted out"});
    fits(
        &router,
        "/v1/suppressions",
        post_json("/v1/suppressions", &addresses),
    )
    .await;
    fits(
        &router,
        "/v1/suppressions",
        get("/v1/suppressions?channel=sms"),
    )
    .await;
    fits(
        &router,
        "/v1/suppressions",
        request(
            Method::DELETE,
            "/v1/suppressions",
            json!({"channel": "sms", "addresses": ["+8613800000009"]}),
        ),
    )
    .await;

    let seed = Request::post("/send-sms")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("mobiles[]=%2B8613800000002&content=Hello"))
        .unwrap();
    fits(&router, "/send-sms", seed).await;
    fits(&router, "/healthz", get("/healthz")).await;
    fits(&router, "/v1", get("/v1")).await;
    fits(&router, "/", get("/")).await;
    fits(&router, "/assets/{name}", get("/assets/app.js")).await;
    fits(&router, "/assets/{name}", get("/assets/app.css")).await;
    fits(&router, "/assets/{name}", get("/assets/nothing.txt")).await;
    fits(
        &router,
        "/v1/receipts/{provider}",
        post_json("/v1/receipts/nobody", &json!([])),
    )
    .await;
    fits(
        &router,
        "/v1/receipts/{provider}",
        post_json("/v1/receipts/log", &json!([])),
    )
    .await;
}

/// A provider config from its JSON form (as `herald.toml` would give it).
fn provider(config: Value) -> crate::provider::ProviderConfig {
    serde_json::from_value(config).expect("a provider's configuration")
}

/// `X-Herald-Signature` of `body` with the secret `s3cret`, as a receiver signs.
fn webhook_signature(body: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn receipt_answers_fit_the_documented_schemas() {
    // Never sent to: these routers have no workers.
    let providers = vec![
        provider(json!({
            "name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/", "secret": "s3cret",
        })),
        provider(json!({
            "name": "ali", "kind": "aliyun", "channels": ["sms"],
            "access_key_id": "LTAI", "access_key_secret": "k", "endpoint": "http://127.0.0.1:9",
        })),
        provider(json!({
            "name": "tc", "kind": "tencent", "channels": ["sms"], "secret_id": "AKID",
            "secret_key": "k", "sdk_app_id": "1400000000", "endpoint": "http://127.0.0.1:9",
        })),
        provider(json!({
            "name": "twilio", "kind": "twilio", "channels": ["sms"], "account_sid": "AC1",
            "auth_token": "t", "from": "+15005550001", "base_url": "http://127.0.0.1:9",
            "status_callback_url": "https://herald.example/v1/receipts/twilio",
        })),
    ];
    let config = crate::config::Config {
        providers,
        ..crate::config::Config::default()
    };
    let (state, _dir) = test_state_with(config).await;
    let router = router(state, 1 << 20);
    let path = "/v1/receipts/{provider}";
    let signed = |body: &str, signature: &str| {
        Request::post("/v1/receipts/hook")
            .header("content-type", "application/json")
            .header("x-herald-signature", signature)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let body = json!([{"id": "p-1", "status": "delivered", "code": "DELIVRD"}]).to_string();
    let signature = webhook_signature(&body);
    let tally = fits(&router, path, signed(&body, &signature)).await;
    assert_eq!(tally["held"], 1, "{tally}");
    fits(&router, path, signed(&body, "sha256=00")).await;
    let bad = r#"{"id": "p-1", "status": "sent"}"#;
    let signature = webhook_signature(bad);
    fits(&router, path, signed(bad, &signature)).await;

    let aliyun = json!([{"phone_number": "13800138000", "success": true, "err_code": "DELIVERED", "biz_id": "1^0"}]);
    let answer = fits(&router, path, post_json("/v1/receipts/ali", &aliyun)).await;
    assert_eq!(answer["code"], 0, "{answer}");
    let tencent = json!([{"nationcode": "86", "mobile": "13800138000", "report_status": "SUCCESS", "errmsg": "DELIVRD", "sid": "5000:1"}]);
    let answer = fits(&router, path, post_json("/v1/receipts/tc", &tencent)).await;
    assert_eq!(answer["result"], 0, "{answer}");
    let unsigned = Request::post("/v1/receipts/twilio")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("MessageSid=SM1&MessageStatus=delivered"))
        .unwrap();
    fits(&router, path, unsigned).await;
}

#[tokio::test]
async fn webhook_answers_fit_the_documented_schemas() {
    let mut config = crate::config::Config::default();
    config.webhooks = vec![crate::config::WebhookConfig {
        name: "app".into(),
        url: crate::domain::HttpUrl::parse("http://127.0.0.1:9/events").unwrap(),
        secret: crate::domain::SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap(),
        events: crate::queue::Kinds::all(),
        channels: None,
        sources: None,
    }];
    let (state, _dir) = test_state_with(config).await;
    let router = router(state, 1 << 20);
    // A batch due later, cancelled: its message's `message.cancelled` and its
    // `batch.finished` wait for the endpoint.
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600)).to_string();
    let batch = json!({"channel": "sms", "template": {"body": "Hi"}, "send_at": later,
        "recipients": [{"to": "+8613800000001", "ref": "a"}]});
    let (_, report) = call(&router, post_json("/v1/batches", &batch)).await;
    let id = report["batch_id"].as_str().unwrap();
    call(
        &router,
        post_json(&format!("/v1/batches/{id}/cancel"), &json!({})),
    )
    .await;

    let listed = fits(&router, "/v1/webhooks", get("/v1/webhooks")).await;
    assert_eq!(listed["endpoints"][0]["pending"], 2, "{listed}");
    let path = "/v1/webhooks/{endpoint}/deliveries";
    let page = fits(&router, path, get("/v1/webhooks/app/deliveries?limit=1")).await;
    assert_eq!(
        page["deliveries"][0]["event"]["type"], "batch.finished",
        "{page}"
    );
    let before = page["next_before"].as_i64().expect("a next page");
    let next = format!("/v1/webhooks/app/deliveries?state=pending&before={before}");
    let page = fits(&router, path, get(&next)).await;
    let cancelled = &page["deliveries"][0]["event"];
    assert_eq!(cancelled["type"], "message.cancelled", "{page}");
    assert_eq!(cancelled["ref"], "a", "{page}");
    fits(&router, path, get("/v1/webhooks/app/deliveries?state=lost")).await;
    fits(&router, path, get("/v1/webhooks/nobody/deliveries")).await;

    let path = "/v1/webhooks/{endpoint}/replay";
    let event = json!({"event_id": cancelled["id"]});
    let replayed = fits(&router, path, post_json("/v1/webhooks/app/replay", &event)).await;
    assert_eq!(replayed["replayed"], 1, "{replayed}");
    let failed = json!({"failed": true});
    fits(&router, path, post_json("/v1/webhooks/app/replay", &failed)).await;
    let unknown = json!({"event_id": "nothing"});
    fits(
        &router,
        path,
        post_json("/v1/webhooks/app/replay", &unknown),
    )
    .await;
    fits(
        &router,
        path,
        post_json("/v1/webhooks/app/replay", &json!({"all": true})),
    )
    .await;
}
