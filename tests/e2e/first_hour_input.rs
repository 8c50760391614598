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
        assert_eq!(status, 422, "{what}: {answer}");
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

/// The answer to a raw request: status and body text.
async fn raw(app: &TestApp, method: reqwest::Method, path: &str) -> (u16, String) {
    let response = app
        .client
        .request(method, format!("{}{path}", app.url))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn every_error_of_every_route_is_json_with_a_stable_code() {
    let app = app().await;
    for (method, path, status, code) in [
        (reqwest::Method::GET, "/no/such/route", 404, "not_found"),
        (
            reqwest::Method::DELETE,
            "/v1/batches",
            405,
            "method_not_allowed",
        ),
        (reqwest::Method::PUT, "/healthz", 405, "method_not_allowed"),
        (
            reqwest::Method::GET,
            "/v1/batches/%FF%FE",
            400,
            "malformed_request",
        ),
        (reqwest::Method::GET, "/assets/nothing.js", 404, "not_found"),
    ] {
        let (answered, text) = raw(&app, method.clone(), path).await;
        assert_eq!(answered, status, "{method} {path}: {text}");
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} answered {text:?}, not JSON: {e}"));
        assert_eq!(body["error"], code, "{method} {path}: {body}");
        assert!(
            !body["message"].as_str().unwrap_or_default().is_empty(),
            "{method} {path}: {body}"
        );
    }
}

#[tokio::test]
async fn batch_bodies_of_a_type_herald_does_not_read_are_refused_with_415() {
    let app = app().await;
    let batch = crate::helpers::sms_batch(1).to_string();
    for content_type in [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
    ] {
        let (status, _, answer) = app
            .post_raw("/v1/batches", content_type, &[], batch.clone())
            .await;
        assert_eq!(status, 415, "{content_type}: {answer}");
        assert_eq!(answer["error"], "unsupported_media_type", "{answer}");
    }
    assert!(app.batches().await.is_empty(), "nothing is stored");
    for (path, body) in [
        ("/v1/templates", json!({"id": "t", "body": "Hi"})),
        (
            "/v1/suppressions",
            json!({"channel": "sms", "addresses": ["+8613800000001"]}),
        ),
    ] {
        let (status, _, answer) = app
            .post_raw(path, "text/plain", &[], body.to_string())
            .await;
        assert_eq!(status, 415, "{path}: {answer}");
        assert_eq!(answer["error"], "unsupported_media_type", "{answer}");
    }
    let (status, _, answer) = app
        .post_raw("/v1/batches", "application/json; charset=utf-8", &[], batch)
        .await;
    assert_eq!(status, 202, "JSON is still read: {answer}");
}

#[tokio::test]
async fn input_herald_cannot_take_as_given_is_refused_naming_what() {
    let app = app().await;
    let csv = |query: &str, body: &str| {
        let path = format!("/v1/batches?channel=sms&{query}");
        let body = body.to_owned();
        let app = &app;
        async move { app.post_raw(&path, "text/csv", &[], body).await }
    };
    let (status, _, answer) = csv("template=Hi%FF%FE", "to\n+8613800000001\n").await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "template", "{answer}");

    let (status, _, answer) = csv(
        "template=Hi+%7B%7Bname%7D%7D",
        "to,name\n+8613800000001,L\0i\n",
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "line 2", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("NUL"),
        "{answer}"
    );

    let (status, _, answer) = csv(
        "template=Hi",
        "to,name,TO\n+8613800000001,Li,+8613800000002\n",
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "line 1", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("twice"),
        "{answer}"
    );

    let batch = crate::helpers::sms_batch(1).to_string();
    let (status, _, answer) = app
        .post_raw(
            "/v1/batches",
            "application/json",
            &[("idempotency-key", "a\tb")],
            batch.clone(),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "Idempotency-Key", "{answer}");

    for send_at in [
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2001-01-01T00:00:00Z",
    ] {
        let mut batch = crate::helpers::sms_batch(1);
        batch["send_at"] = json!(send_at);
        let (status, answer) = app.post("/v1/batches", &batch).await;
        assert_eq!(status, 422, "{send_at}: {answer}");
        assert_eq!(answer["field"], "send_at", "{answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("ten years ahead"),
            "{send_at}: {answer}"
        );
    }
    assert!(app.batches().await.is_empty(), "nothing was stored");

    let mut batch = crate::helpers::sms_batch(1);
    batch["send_at"] = json!(crate::helpers::rfc3339_from_now(3_600_000));
    app.submit(&batch).await;
}

/// Runs `herald ARGS`, bounded in time: whether it succeeded, and what it printed.
async fn herald(args: &[&str]) -> (bool, String, String) {
    let mut command = crate::process::herald_command();
    command.args(args);
    let output = crate::process::output_within(command, std::time::Duration::from_secs(20)).await;
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_and_the_server_refuse_the_same_csv_files_with_the_same_words() {
    let app = app().await;
    for (file, line) in [
        ("to,name\n+8613800000001,\"Li\n", 2),
        ("to,name\n+8613800000001,Li\n\n+8613800000002\n", 4),
        ("to,name\n+8613800000001,L\0i\n", 2),
        ("to,name,To\n+8613800000001,Li,x\n", 1),
        ("to,name\n+8613800000001,\"Li\"x\"\n", 2),
    ] {
        let (status, _, answer) = app
            .post_raw("/v1/batches?channel=sms&template=Hi", "text/csv", &[], file)
            .await;
        assert_eq!(status, 422, "{file:?}: {answer}");
        assert_eq!(
            answer["field"],
            format!("line {line}"),
            "{file:?}: {answer}"
        );
        let said = answer["message"].as_str().unwrap();

        let path = app.dir.path().join("recipients.csv");
        std::fs::write(&path, file).unwrap();
        let (success, stdout, stderr) = herald(&[
            "send",
            "--channel",
            "sms",
            "--template",
            "Hi",
            "--csv",
            path.to_str().unwrap(),
            "--server",
            &app.url,
        ])
        .await;
        assert!(!success, "{file:?}: the CLI sent it: {stdout}");
        assert!(
            stderr.contains(&format!("recipients.csv {said}")),
            "{file:?}: the CLI says {stderr:?}, the server {said:?}"
        );
    }
    assert!(app.batches().await.is_empty(), "nothing was stored");
}

#[tokio::test]
async fn a_taken_address_says_to_choose_another_with_listen() {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(&dir.path().join("store"));
    config.listen = app.url.trim_start_matches("http://").parse().unwrap();
    let err = match herald::app::start(config).await {
        Ok(_) => panic!("started on an address another server holds"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("--listen") && err.contains("in use"), "{err}");
}

#[tokio::test]
async fn the_cli_takes_a_unique_prefix_of_a_batch_id_and_refuses_an_ambiguous_one() {
    let app = app().await;
    let first = app.submit(&crate::helpers::sms_batch(1)).await;
    let second = app.submit(&crate::helpers::sms_batch(2)).await;
    let status = |id: String| {
        let url = app.url.clone();
        async move { herald(&["status", &id, "--server", &url, "--json"]).await }
    };

    for id in [&first, &second] {
        let short = format!("{}…", &id[..id.len() - 4]);
        let (success, stdout, stderr) = status(short.clone()).await;
        assert!(success, "{short}: {stderr}");
        let batch: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(batch["id"], id.as_str(), "{short}");
    }

    let mut common = 0;
    while first.as_bytes()[common] == second.as_bytes()[common] {
        common += 1;
    }
    if common >= 8 {
        let (success, _, stderr) = status(first[..common].to_owned()).await;
        assert!(!success);
        assert!(stderr.contains("more than one batch"), "{stderr}");
    }
    let (success, _, stderr) = status(first[..4].to_owned()).await;
    assert!(!success);
    assert!(stderr.contains("8 or more characters"), "{stderr}");
    let (success, _, stderr) = status("ffffffff".to_owned()).await;
    assert!(!success);
    assert!(
        stderr.contains("no batch id starts with `ffffffff`"),
        "{stderr}"
    );
}

/// `count` texts drawn from `strategy`, the same on every run.
fn draw<S: proptest::strategy::Strategy>(strategy: S, count: usize) -> Vec<S::Value> {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// Pieces of JSON, NDJSON and CSV text, valid and broken.
fn pieces() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    proptest::collection::vec(
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            "\"",
            ",",
            ":",
            "\n",
            "\\",
            "\0",
            "\u{feff}",
            "é",
            " ",
            "\"to\":",
            "\"+8613800000001\"",
            "\"vars\":",
            "{\"name\":",
            "\"recipients\":",
            "[[[[[[[[[[[[[[[[",
            "]]]]]]]]]]]]]]]]",
            "1e999",
            "-0",
            "null",
            "to,name",
            "+8613800000001,\"Li",
            "{{name}}",
            "{%",
            "%}",
        ]),
        0..80,
    )
    .prop_map(|parts| parts.concat())
}

#[tokio::test]
async fn any_body_of_any_type_gets_an_answer_and_every_refusal_is_json() {
    let app = app().await;
    let options = r#"{"channel": "sms", "template": {"body": "Hi {{name}}"}}"#;
    let valid = r#"{"channel": "sms", "template": {"body": "Hi {{name}}"}, "recipients": ["#;
    for (i, text) in draw(pieces(), 96).into_iter().enumerate() {
        let (content_type, path, body) = match i % 4 {
            0 => ("application/json", "/v1/batches?dry_run=true", text),
            1 => (
                "application/json",
                "/v1/batches?dry_run=true",
                format!("{valid}{text}"),
            ),
            2 => (
                "application/x-ndjson",
                "/v1/batches?dry_run=true",
                format!("{options}\n{text}"),
            ),
            _ => (
                "text/csv",
                "/v1/batches?channel=sms&template=Hi+%7B%7Bname%7D%7D&dry_run=true",
                format!("to,name\n{text}"),
            ),
        };
        let (status, _, answer) = app.post_raw(path, content_type, &[], body.clone()).await;
        assert!(
            status == 200 || (400..500).contains(&status),
            "{content_type} {body:?}: answered {status} {answer}"
        );
        if status != 200 {
            assert!(
                answer["error"].is_string(),
                "{content_type} {body:?}: {answer}"
            );
        }
    }
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200, "the server is still up");
}
