//! The document is as strict as the server: each request the server refuses for
//! its shape (a missing field, an empty text, two fields that exclude each other)
//! is refused by the document too, and what JSON Schema allows, the server takes.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use super::document;
use super::schema::check;
use crate::api::router;
use crate::api::tests::{call, get, post_json, submit, test_state};

fn json_request(method: &str, uri: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("a request")
}

/// The JSON request body schema of `method path`.
fn request_schema<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let schema =
        &doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} documents no JSON body");
    schema
}

/// The query or path parameter `name` of `method path`.
fn parameter<'a>(doc: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter `{name}`"))
}

#[tokio::test]
async fn a_body_the_server_refuses_for_its_shape_the_document_refuses_too() {
    let (state, _dir) = test_state().await;
    let router = router(state, 1 << 20);
    let batch = submit(&router, 1).await;
    let to = json!([{"to": "+8613800138000"}]);
    let cases: Vec<(&str, &str, String, Value)> = vec![
        (
            "post",
            "/v1/templates",
            "/v1/templates".into(),
            json!({"channel": "sms", "body": "Hi"}),
        ),
        (
            "post",
            "/v1/templates",
            "/v1/templates".into(),
            json!({"id": "a b", "channel": "sms", "body": "Hi"}),
        ),
        (
            "post",
            "/v1/templates",
            "/v1/templates".into(),
            json!({"id": "t", "channel": "sms", "body": " \n"}),
        ),
        (
            "post",
            "/v1/templates",
            "/v1/templates".into(),
            json!({"id": "t", "channel": "email", "body": "Hi"}),
        ),
        (
            "post",
            "/v1/templates",
            "/v1/templates".into(),
            json!({"id": "t", "channel": "email", "subject": null, "body": "Hi"}),
        ),
        (
            "post",
            "/v1/templates",
            "/v1/templates".into(),
            json!({"id": "t", "channel": "sms", "body": "Hi", "providers": {"": {}}}),
        ),
        (
            "put",
            "/v1/templates/{id}",
            "/v1/templates/t".into(),
            json!({"id": "u", "channel": "sms", "body": "Hi"}),
        ),
        (
            "post",
            "/v1/batches",
            "/v1/batches".into(),
            json!({"channel": "sms", "recipients": to}),
        ),
        (
            "post",
            "/v1/batches",
            "/v1/batches".into(),
            json!({"channel": "sms", "template": {"body": "Hi"}, "template_id": "t", "recipients": to}),
        ),
        (
            "post",
            "/v1/batches",
            "/v1/batches".into(),
            json!({"channel": "sms", "template": null, "recipients": to}),
        ),
        (
            "post",
            "/v1/batches",
            "/v1/batches".into(),
            json!({"channel": "sms", "template": {"body": ""}, "recipients": to}),
        ),
        (
            "post",
            "/v1/batches",
            "/v1/batches".into(),
            json!({"channel": "email", "template": {"body": "Hi"}, "recipients": [{"to": "a@example.com"}]}),
        ),
        (
            "post",
            "/v1/batches",
            "/v1/batches".into(),
            json!({"channel": "sms", "template": {"body": "Hi"}, "recipients": []}),
        ),
        (
            "post",
            "/v1/batches",
            "/v1/batches".into(),
            json!({"channel": "sms", "template": {"body": "Hi"}}),
        ),
        (
            "post",
            "/v1/batches",
            "/v1/batches".into(),
            json!({"channel": "sms", "template": {"body": "Hi"}, "recipients": to, "priority": 4.5}),
        ),
        (
            "post",
            "/v1/batches",
            "/v1/batches".into(),
            json!({"channel": "sms", "template": {"body": "Hi"}, "recipients": to, "valid_for": crate::domain::MAX_VALID_FOR_SECS + 1}),
        ),
        (
            "post",
            "/v1/batches",
            "/v1/batches".into(),
            json!({"channel": "email", "template": {"body": "Hi", "subject": "Hi\r\nBcc: x@example.com"}, "recipients": [{"to": "a@example.com"}]}),
        ),
        (
            "post",
            "/v1/templates",
            "/v1/templates".into(),
            json!({"id": "t", "channel": "email", "subject": "Hi\nthere", "body": "Hi"}),
        ),
        (
            "post",
            "/v1/batches",
            "/v1/batches".into(),
            json!({"channel": "sms", "template": {"body": "Hi"}, "recipients": to, "valid_for": 60, "expires_at": "2099-01-01T00:00:00Z"}),
        ),
        (
            "post",
            "/v1/batches",
            "/v1/batches".into(),
            json!({"channel": "sms", "template": {"body": "Hi"}, "recipients": [{"to": "+8613800138000", "ref": "r".repeat(257)}]}),
        ),
        (
            "post",
            "/v1/batches/{id}/{action}",
            format!("/v1/batches/{batch}/retry"),
            json!({"valid_for": 60, "expires_at": "2099-01-01T00:00:00Z"}),
        ),
        (
            "delete",
            "/v1/suppressions",
            "/v1/suppressions".into(),
            json!({"channel": "sms", "addresses": [""]}),
        ),
        (
            "delete",
            "/v1/suppressions",
            "/v1/suppressions".into(),
            json!({"channel": "sms", "addresses": ["  "]}),
        ),
        (
            "post",
            "/send-sms",
            "/send-sms".into(),
            json!({"mobiles": ["+8613800138000"], "content": ""}),
        ),
        (
            "post",
            "/send-sms",
            "/send-sms".into(),
            json!({"mobiles": ["+8613800138000"]}),
        ),
        (
            "post",
            "/send-sms",
            "/send-sms".into(),
            json!({"mobiles": [], "content": "Hi"}),
        ),
        (
            "post",
            "/send-sms",
            "/send-sms".into(),
            json!({"mobiles": " , ", "content": "Hi"}),
        ),
    ];
    let doc = document();
    for (method, path, uri, body) in cases {
        let (status, answer) = call(&router, json_request(method, &uri, &body)).await;
        assert!(
            [StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY].contains(&status),
            "{method} {uri} {body}: the server answers {status} {answer}"
        );
        assert!(
            check(&doc, request_schema(&doc, path, method), &body, "request").is_err(),
            "{method} {path}: the server refuses {body} ({answer}) but the document allows it"
        );
    }
}

#[tokio::test]
async fn a_query_the_server_refuses_the_document_refuses_too() {
    let (state, _dir) = test_state().await;
    let router = router(state, 1 << 20);
    let doc = document();

    let (status, _) = call(&router, get("/v1/suppressions")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        parameter(&doc, "/v1/suppressions", "get", "channel")["required"],
        true
    );
    let csv = Request::post("/v1/suppressions")
        .header("content-type", "text/csv")
        .body(Body::from("+8613800138000\n"))
        .expect("a request");
    let (status, _) = call(&router, csv).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        parameter(&doc, "/v1/suppressions", "post", "channel")["required"],
        true
    );
    // A CSV batch takes its options from the query, the channel first.
    let csv = Request::post("/v1/batches?template=Hi")
        .header("content-type", "text/csv")
        .body(Body::from("to\n+8613800138000\n"))
        .expect("a request");
    let (status, _) = call(&router, csv).await;
    assert!(status.is_client_error(), "{status}");
    let channel = parameter(&doc, "/v1/batches", "post", "channel");
    assert_eq!(channel["required"], true);
    assert!(
        channel["schema"].get("type").is_none_or(|t| !t.is_null()),
        "{channel}"
    );

    let keyed = Request::post("/v1/batches")
        .header("content-type", "application/json")
        .header("idempotency-key", "a b")
        .body(Body::from(
            json!({"channel": "sms", "template": {"body": "Hi"}, "recipients": [{"to": "+8613800138000"}]})
                .to_string(),
        ))
        .expect("a request");
    let (status, _) = call(&router, keyed).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let key = &parameter(&doc, "/v1/batches", "post", "Idempotency-Key")["schema"];
    assert!(check(&doc, key, &json!("a b"), "Idempotency-Key").is_err());

    let (status, _) = call(&router, get("/v1/batches?before=abc")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        parameter(&doc, "/v1/batches", "get", "before")["schema"]["format"],
        "uuid"
    );

    let batch = submit(&router, 1).await;
    let (status, _) = call(
        &router,
        get(&format!("/v1/batches/{batch}/messages?after=4294967296")),
    )
    .await;
    assert!(status.is_client_error(), "{status}");
    let after = &parameter(&doc, "/v1/batches/{id}/messages", "get", "after")["schema"];
    assert!(check(&doc, after, &json!(4_294_967_296_u64), "after").is_err());
}

#[tokio::test]
async fn whole_numbers_written_with_a_fraction_are_taken_as_json_schema_allows() {
    let (state, _dir) = test_state().await;
    let router = router(state, 1 << 20);
    let doc = document();
    let batch = json!({"channel": "sms", "template": {"body": "Hi"}, "recipients": [{"to": "+8613800138000"}], "priority": 4.0, "valid_for": 600.0});
    check(
        &doc,
        request_schema(&doc, "/v1/batches", "post"),
        &batch,
        "batch",
    )
    .unwrap();
    let (status, report) = call(&router, post_json("/v1/batches", &batch)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{report}");
    let id = report["batch_id"].as_str().unwrap();
    let (_, view) = call(&router, get(&format!("/v1/batches/{id}"))).await;
    assert_eq!(view["priority"], 4, "{view}");
}

#[tokio::test]
async fn an_sms_job_naming_an_email_template_sends_its_content_as_the_text() {
    let (state, _dir) = test_state().await;
    let router = router(state, 1 << 20);
    let template = json!({"id": "welcome", "channel": "email", "subject": "Hi", "body": "Welcome"});
    let (status, _) = call(&router, post_json("/v1/templates", &template)).await;
    assert_eq!(status, StatusCode::CREATED);
    let job = json!({"template_id": "welcome", "mobiles": ["+8613800138000"], "content": "Your code is 1234"});
    let (status, answer) = call(&router, post_json("/send-sms", &job)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["success"], true, "{answer}");
}

#[test]
fn a_store_outage_is_documented_as_503_with_retry_after_where_the_store_is_used() {
    let doc = document();
    let unavailable = &doc["components"]["responses"]["Unavailable"];
    assert_eq!(unavailable["headers"]["Retry-After"]["required"], true);
    for (path, method) in [
        ("/v1/batches", "post"),
        ("/v1/batches/{id}", "get"),
        ("/v1/templates", "post"),
        ("/v1/suppressions", "get"),
        ("/send-sms", "post"),
        ("/v1/receipts/{provider}", "post"),
    ] {
        assert_eq!(
            doc["paths"][path][method]["responses"]["503"]["$ref"],
            "#/components/responses/Unavailable",
            "{method} {path}"
        );
    }
    assert!(
        doc["paths"]["/healthz"]["get"]["responses"]
            .get("503")
            .is_none()
    );
}
