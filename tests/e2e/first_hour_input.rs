//! What a new user's first inputs meet: no input makes a handler panic, every
//! error is JSON with a stable code, and input Herald cannot read faithfully is
//! refused with a clear 4xx instead of being sent altered.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Herald without workers: the tests look at answers and what is stored.
async fn app() -> TestApp {
    spawn_app(|config| config.worker.enabled = false).await
}

/// `{"x": [[[ … "deep" … ]]]}` with `levels` arrays inside the object.
fn deep_vars(levels: usize) -> Value {
    let text = format!(
        r#"{{"x": {}"deep"{}}}"#,
        "[".repeat(levels),
        "]".repeat(levels)
    );
    serde_json::from_str::<Value>(&text).unwrap_or_else(|_| {
        // serde_json's own limit: build the value by hand.
        let mut v = json!("deep");
        for _ in 0..levels {
            v = Value::Array(vec![v]);
        }
        json!({ "x": v })
    })
}

#[tokio::test]
async fn deeply_nested_vars_are_refused_naming_the_recipient_in_every_body() {
    let app = app().await;
    let raw = |levels: usize| {
        format!(
            r#"{{"to": "+8613800000002", "vars": {{"x": {}"deep"{}}}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    let options = r#"{"channel": "sms", "template": {"body": "Hi {{x}}"}}"#;
    let json_body = |padding: usize| {
        format!(
            r#"{{"channel": "sms", "template": {{"body": "Hi {{{{x}}}}"}}, "recipients": [{{"to": "+8613800000001", "vars": {{"x": "{}"}}}}, {}]}}"#,
            "p".repeat(padding),
            raw(127)
        )
    };
    for (what, path, content_type, body) in [
        ("JSON", "/v1/batches", "application/json", json_body(0)),
        (
            "dry run",
            "/v1/batches?dry_run=true",
            "application/json",
            json_body(0),
        ),
        (
            "JSON over 1 MiB",
            "/v1/batches",
            "application/json",
            json_body(1 << 21),
        ),
        (
            "NDJSON",
            "/v1/batches",
            "application/x-ndjson",
            format!(
                "{options}\n{}\n{}\n",
                r#"{"to": "+8613800000001"}"#,
                raw(127)
            ),
        ),
    ] {
        let (status, _, answer) = app.post_raw(path, content_type, &[], body).await;
        assert!(
            (400..500).contains(&status),
            "{what}: answered {status} {answer}"
        );
        let said = answer.to_string();
        assert!(
            said.contains("recipients[1].vars") || said.contains("line 3"),
            "{what}: the answer names the recipient: {answer}"
        );
        assert!(said.contains("nested"), "{what}: {answer}");
    }
    let shallow = json!({"channel": "sms", "template": {"body": "Hi {{x}}"},
        "recipients": [{"to": "+8613800000001", "vars": deep_vars(30)}]});
    let (status, answer) = app.post("/v1/batches?dry_run=true", &shallow).await;
    assert_eq!(status, 200, "vars nested 31 deep are read: {answer}");
}
