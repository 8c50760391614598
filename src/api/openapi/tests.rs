//! The document held to the router: its routes, security, parameters and
//! references, and real requests and answers checked against its schemas.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::super::tests::{
    call, concrete, get, post_json, read_events, served, test_state, test_state_with,
};
use super::super::{Access, router};
use axum::Router;

/// The document as served.
fn document() -> Value {
    serde_json::from_str(&super::DOCUMENT).expect("the document is JSON")
}

#[tokio::test]
async fn the_document_describes_every_route_and_method_served_and_no_other() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut served_operations = BTreeSet::new();
    for (path, access, methods) in served().await {
        for method in methods {
            let operation = &doc["paths"][path][method.as_str().to_lowercase()];
            assert!(
                operation.is_object(),
                "{method} {path} is not in the document"
            );
            assert!(operation["responses"].is_object(), "{method} {path}");
            // Protected operations take the document's bearer security; public
            // ones say they need none.
            match access {
                Access::Public => {
                    assert_eq!(operation["security"], json!([]), "{method} {path}")
                }
                Access::Token => {
                    assert!(operation.get("security").is_none(), "{method} {path}")
                }
            }
            served_operations.insert((path.to_owned(), method.as_str().to_lowercase()));
        }
    }
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                documented.insert((path.clone(), method.clone()));
            }
        }
    }
    assert_eq!(
        documented, served_operations,
        "documented but not served, or the reverse"
    );
}

#[tokio::test]
async fn the_document_is_served_with_the_version() {
    let (state, _dir) = test_state().await;
    let (status, doc) = call(&router(state, 1 << 20), get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
}

/// What `#/components/…/name` points at.
fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference.trim_start_matches('#');
    let target = doc.pointer(pointer).unwrap_or(&Value::Null);
    assert!(!target.is_null(), "`{reference}` points at nothing");
    target
}

/// Keywords that only annotate: they constrain nothing `check` must test.
const ANNOTATIONS: [&str; 5] = ["description", "title", "format", "default", "examples"];

/// Checks `value` against `schema` (JSON Schema 2020-12). A keyword it does not
/// know fails the test rather than being skipped, so what the document states
/// is what is checked.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(format!("{at}: {value} is refused by `false`")),
        Value::Object(schema) => schema,
        other => panic!("{at}: {other} is not a schema"),
    };
    for keyword in schema.keys() {
        assert!(
            ANNOTATIONS.contains(&keyword.as_str())
                || [
                    "$ref",
                    "oneOf",
                    "anyOf",
                    "allOf",
                    "type",
                    "enum",
                    "const",
                    "required",
                    "properties",
                    "additionalProperties",
                    "items",
                    "minimum",
                    "maximum",
                    "minLength",
                    "maxLength",
                ]
                .contains(&keyword.as_str()),
            "{at}: the check does not know `{keyword}`"
        );
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        check(doc, resolve(doc, reference), value, at)?;
    }
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        let fitting = alternatives
            .iter()
            .filter(|alternative| check(doc, alternative, value, at).is_ok())
            .count();
        if fitting != 1 {
            return Err(format!(
                "{at}: {value} fits {fitting} of the oneOf alternatives, not one"
            ));
        }
    }
    if let Some(alternatives) = schema.get("anyOf").and_then(Value::as_array)
        && !alternatives
            .iter()
            .any(|alternative| check(doc, alternative, value, at).is_ok())
    {
        return Err(format!("{at}: {value} fits none of the anyOf alternatives"));
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(doc, part, value, at)?;
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            many => many
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect(),
        };
        let fits = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            other => panic!("unknown type {other}"),
        });
        if !fits {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        return Err(format!("{at}: {value} is not {constant}"));
    }
    if let Some(number) = value.as_f64() {
        if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64)
            && number < minimum
        {
            return Err(format!("{at}: {value} is below {minimum}"));
        }
        if let Some(maximum) = schema.get("maximum").and_then(Value::as_f64)
            && number > maximum
        {
            return Err(format!("{at}: {value} is above {maximum}"));
        }
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|min| length < min)
            || schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|max| length > max)
        {
            return Err(format!("{at}: {value} has a length out of bounds"));
        }
    }
    if let Some(object) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().unwrap();
            if !object.contains_key(name) {
                return Err(format!("{at}: `{name}` is missing"));
            }
        }
        let properties = schema.get("properties");
        for (key, field) in object {
            let at = format!("{at}.{key}");
            match (
                properties.and_then(|p| p.get(key)),
                schema.get("additionalProperties"),
            ) {
                (Some(property), _) => check(doc, property, field, &at)?,
                (None, Some(additional)) => check(doc, additional, field, &at)
                    .map_err(|e| format!("{e} ({at} is not in the schema's properties)"))?,
                (None, None) => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

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
    let progress = &doc["paths"]["/v1/batches/{id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"];
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
fn provider(config: Value) -> crate::config::ProviderConfig {
    serde_json::from_value(config).expect("a provider's configuration")
}

/// `X-Herald-Signature` of `body` with the secret `s3cret`, as a receiver signs.
fn webhook_signature(body: &str) -> String {
    use hmac::Mac;
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

#[test]
fn every_path_parameter_is_declared_and_every_reference_resolves() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let mut in_path: Vec<&str> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        in_path.sort_unstable();
        for (method, operation) in item.as_object().unwrap() {
            let mut declared: Vec<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .inspect(|p| assert_eq!(p["required"], true, "{method} {path}: {p}"))
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            declared.sort_unstable();
            assert_eq!(declared, in_path, "{method} {path}");
        }
    }
    fn references<'a>(value: &'a Value, into: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    into.push(reference);
                }
                map.values().for_each(|v| references(v, into));
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, into)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    references(&doc, &mut all);
    assert!(all.len() > 20, "{all:?}");
    for reference in all {
        resolve(&doc, reference);
    }
}

#[tokio::test]
async fn the_documented_batch_answer_lists_every_field_a_report_has_and_no_other() {
    use crate::intake::{Cost, EncodingCount, Group, Preview, Rejection, Report, SmsSummary};
    // Every optional part present: the fields a report can have.
    let rejection = Rejection {
        index: 1,
        to: "+8613800000000".into(),
        reason: "duplicate".into(),
        variable: Some("name".into()),
        first_index: Some(0),
        detail: "the same as recipient 0".into(),
    };
    let report = Report {
        batch_id: Some(crate::domain::BatchId::new().to_string()),
        dry_run: true,
        accepted: 1,
        rejected: vec![rejection],
        rejections: [(
            "duplicate".to_owned(),
            Group {
                count: 1,
                indices: vec![1],
            },
        )]
        .into(),
        provider: "log".into(),
        sms: Some(SmsSummary {
            segments: 1,
            gsm7: EncodingCount {
                messages: 1,
                segments: 1,
            },
            ucs2: EncodingCount::default(),
        }),
        cost: Some(Cost {
            amount: 0.05,
            currency: Some("CNY".into()),
        }),
        eta_seconds: Some(0.1),
        preview: vec![Preview {
            index: 0,
            to: "+8613800000001".into(),
            subject: Some("S".into()),
            body: "Hi".into(),
            encoding: Some(crate::sms::Encoding::Gsm7),
            segments: Some(1),
        }],
    };
    let written = serde_json::to_value(&report).unwrap();
    let doc = document();
    let documented =
        resolve(
            &doc,
            doc["paths"]["/v1/batches"]["post"]["responses"]["202"]["content"]["application/json"]
                ["schema"]["$ref"]
                .as_str()
                .unwrap(),
        );
    let fields: BTreeSet<&String> = written.as_object().unwrap().keys().collect();
    let properties: BTreeSet<&String> = documented["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(fields, properties);
    assert_eq!(documented["additionalProperties"], false);
    check(&doc, documented, &written, "report").unwrap();
    // A field the type does not have is refused, nested ones too.
    let mut extra = written.clone();
    extra["sms"]["gsm7"]["bits"] = json!(7);
    assert!(check(&doc, documented, &extra, "report").is_err());
}
