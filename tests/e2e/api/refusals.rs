//! Every request `POST /v1/batches` refuses, with its status, error code and
//! field, and the proof that a refused request stores and sends nothing.

use serde_json::{Value, json};

use crate::helpers::{ProviderServer, TestApp, sms_batch};

use super::{FINISH, app_sending_to};

/// One request Herald must refuse, and how.
struct Refused {
    what: &'static str,
    body: String,
    idempotency_key: Option<String>,
    status: u16,
    error: &'static str,
    field: Option<&'static str>,
}

fn refused(
    what: &'static str,
    body: Value,
    status: u16,
    error: &'static str,
    field: &'static str,
) -> Refused {
    Refused {
        what,
        body: body.to_string(),
        idempotency_key: None,
        status,
        error,
        field: Some(field),
    }
}

/// Every kind of refusal `POST /v1/batches` makes (limits as in `app_sending_to`).
fn refused_requests() -> Vec<Refused> {
    let ok = |to: &str| json!({"to": to, "vars": {"name": "x"}});
    let sms = |recipients: Value| json!({"channel": "sms", "template": {"body": "Hi {{name}}"}, "recipients": recipients});
    let with = |key: &str, value: Value| {
        let mut batch = sms(json!([ok("+8613800000001")]));
        batch[key] = value;
        batch
    };
    let mut cases = vec![
        Refused {
            what: "not JSON",
            body: r#"{"channel": "sms", "recipients": ["#.into(),
            idempotency_key: None,
            status: 400,
            error: "malformed_request",
            field: None,
        },
        refused(
            "a number for an address",
            sms(json!([ok("+8613800000001"), {"to": 5}])),
            400,
            "malformed_request",
            "recipients[1].to",
        ),
        refused(
            "an unknown channel",
            with("channel", json!("fax")),
            400,
            "malformed_request",
            "channel",
        ),
        refused(
            "a text priority",
            with("priority", json!("high")),
            400,
            "malformed_request",
            "priority",
        ),
        refused(
            "vars that are not an object",
            sms(json!([{"to": "+8613800000001", "vars": [1]}])),
            400,
            "malformed_request",
            "recipients[0].vars",
        ),
        refused(
            "recipients that are not a list",
            sms(json!("+8613800000001")),
            400,
            "malformed_request",
            "recipients",
        ),
        refused(
            "no recipients",
            sms(json!([])),
            422,
            "invalid_field",
            "recipients",
        ),
        refused(
            "a priority above 100",
            with("priority", json!(101)),
            422,
            "invalid_field",
            "priority",
        ),
        refused(
            "a priority below -100",
            with("priority", json!(-101)),
            422,
            "invalid_field",
            "priority",
        ),
        refused(
            "a send_at that is no time",
            with("send_at", json!("tomorrow")),
            422,
            "invalid_field",
            "send_at",
        ),
        refused(
            "a send_at without an offset",
            with("send_at", json!("2030-01-01T08:00:00")),
            422,
            "invalid_field",
            "send_at",
        ),
        refused(
            "an unknown provider",
            with("provider", json!("carrier-pigeon")),
            422,
            "invalid_field",
            "provider",
        ),
        refused(
            "an e-mail without a subject",
            json!({"channel": "email", "template": {"body": "Hi"}, "recipients": [{"to": "li@example.com"}]}),
            422,
            "invalid_field",
            "template.subject",
        ),
        refused(
            "a template that does not compile",
            json!({"channel": "sms", "template": {"body": "Hi {{ name"}, "recipients": [ok("+8613800000001")]}),
            422,
            "invalid_field",
            "template.body",
        ),
        refused(
            "more recipients than the limit",
            sms(json!(
                (0..31)
                    .map(|i| ok(&format!("+86138{i:08}")))
                    .collect::<Vec<_>>()
            )),
            413,
            "too_large",
            "recipients",
        ),
    ];
    cases.push(Refused {
        what: "a body over the limit",
        body: sms(json!([{"to": "+8613800000001", "vars": {"name": "x".repeat(20 * 1024)}}]))
            .to_string(),
        idempotency_key: None,
        status: 413,
        error: "too_large",
        field: Some("body"),
    });
    cases.push(Refused {
        what: "an idempotency key that is too long",
        body: sms(json!([ok("+8613800000001")])).to_string(),
        idempotency_key: Some("k".repeat(256)),
        status: 422,
        error: "invalid_field",
        field: Some("Idempotency-Key"),
    });
    cases
}

async fn post_refused(app: &TestApp, case: &Refused) -> Value {
    let headers: Vec<(&str, &str)> = case
        .idempotency_key
        .iter()
        .map(|k| ("idempotency-key", k.as_str()))
        .collect();
    let (status, _, answer) = app
        .post_raw(
            "/v1/batches",
            "application/json",
            &headers,
            case.body.clone(),
        )
        .await;
    assert_eq!(status, case.status, "{}: {answer}", case.what);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_batch_names_its_error_code_and_field() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;

    for case in refused_requests() {
        let answer = post_refused(&app, &case).await;
        assert_eq!(answer["error"], case.error, "{}: {answer}", case.what);
        assert!(
            !answer["message"].as_str().unwrap_or("").is_empty(),
            "{}: {answer}",
            case.what
        );
        if let Some(field) = case.field {
            assert_eq!(answer["field"], field, "{}: {answer}", case.what);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_every_recipient_is_rejected_is_refused_with_the_rejections() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let batch = json!({
        "channel": "sms",
        "template": {"body": "Hi {{name}}"},
        "recipients": [{"to": "nope", "vars": {"name": "x"}}, {"to": "+8613800000001"}],
    });

    let (status, answer) = app.post("/v1/batches", &batch).await;

    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], "no_valid_recipients", "{answer}");
    let reasons: Vec<(u64, &str)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [(0, "invalid_address"), (1, "missing_variable")],
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_store_nothing() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    for case in refused_requests() {
        post_refused(&app, &case).await;
    }
    let (status, _) = app
        .post(
            "/v1/batches",
            &json!({"channel": "sms", "template": {"body": "x"}, "recipients": [{"to": "bad"}]}),
        )
        .await;
    assert_eq!(status, 422);

    let batch_id = app.submit(&sms_batch(2)).await;
    let batch = app.wait_finished(&batch_id, FINISH).await;

    assert_eq!(batch["counts"]["sent"], 2, "{batch}");
    let received = server.received();
    assert_eq!(
        received.len(),
        2,
        "only the accepted batch reaches the provider"
    );
    assert!(
        received
            .iter()
            .all(|r| r.json["batch_id"] == batch_id.as_str())
    );
}
