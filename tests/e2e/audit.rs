//! The audit trail over a real socket: every operator action through the API is
//! recorded with the name of the token that asked for it, its target and its
//! result; a refused token is recorded without the token; no secret is listed.

use herald::auth::{ApiToken, new_token};
use herald::config::WebhookConfig;
use herald::domain::{HttpUrl, SigningSecret};
use herald::queue::Kinds;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, sms_batch, spawn_app};

const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `method path` with `token`: the status and the JSON answer.
async fn call(app: &TestApp, token: &str, method: Method, path: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .request(method, format!("{}{path}", app.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `ok` for a success, else the status: what an entry's `result` says.
fn result_of(status: u16) -> String {
    if status < 300 {
        "ok".into()
    } else {
        status.to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operator_action_is_recorded_with_the_tokens_name_and_no_secret() {
    let (ops, ops_hash) = new_token().unwrap();
    let (bare, bare_hash) = new_token().unwrap();
    let bare_name = bare_hash.to_string()[..15].to_owned();
    let app = spawn_app(|config| {
        config.auth.tokens = vec![ApiToken::named("ops", ops_hash), bare_hash.into()];
        config.webhooks = vec![WebhookConfig {
            name: "app".into(),
            url: HttpUrl::parse("http://127.0.0.1:9/hook").expect("a URL"),
            secret: SigningSecret::parse(HOOK_SECRET).expect("a secret"),
            events: Kinds::all(),
            channels: None,
            sources: None,
        }];
    })
    .await;

    // (action, target, result) in the order done.
    let mut done: Vec<(String, String, String, String)> = Vec::new();
    let mut expect = |actor: &str, action: &str, target: &str, status: u16| {
        done.push((
            actor.into(),
            action.into(),
            target.into(),
            result_of(status),
        ));
    };

    let (status, report) = call(&app, &ops, Method::POST, "/v1/batches", sms_batch(2)).await;
    assert_eq!(status, 202, "{report}");
    let batch = report["batch_id"].as_str().unwrap().to_owned();
    expect("ops", "submit", &batch, status);
    let dry = call(
        &app,
        &ops,
        Method::POST,
        "/v1/batches?dry_run=true",
        sms_batch(1),
    )
    .await;
    assert_eq!(dry.0, 200, "a dry run stores nothing and is not recorded");
    for action in ["pause", "resume", "cancel", "retry"] {
        let path = format!("/v1/batches/{batch}/{action}");
        let (status, _) = call(&app, &bare, Method::POST, &path, json!({})).await;
        expect(&bare_name, action, &batch, status);
    }
    let template = json!({"id": "welcome", "channel": "sms", "body": "Hi {{name}}"});
    let (status, _) = call(&app, &ops, Method::POST, "/v1/templates", template.clone()).await;
    assert_eq!(status, 201);
    expect("ops", "template.create", "welcome", status);
    let (status, _) = call(&app, &ops, Method::POST, "/v1/templates", template.clone()).await;
    assert_eq!(status, 409, "a second create conflicts");
    expect("ops", "template.create", "welcome", status);
    let (status, _) = call(&app, &ops, Method::PUT, "/v1/templates/welcome", template).await;
    expect("ops", "template.update", "welcome", status);
    let (status, _) = call(
        &app,
        &ops,
        Method::DELETE,
        "/v1/templates/welcome",
        json!({}),
    )
    .await;
    assert_eq!(status, 204);
    expect("ops", "template.delete", "welcome", status);
    let addresses = json!({"channel": "sms", "addresses": ["+8613800000001"]});
    let (status, _) = call(
        &app,
        &ops,
        Method::POST,
        "/v1/suppressions",
        addresses.clone(),
    )
    .await;
    assert_eq!(status, 200);
    expect("ops", "suppression.add", "+8613800000001", status);
    let (status, _) = call(&app, &ops, Method::DELETE, "/v1/suppressions", addresses).await;
    assert_eq!(status, 200);
    expect("ops", "suppression.remove", "+8613800000001", status);
    let replay = json!({"failed": true});
    let (status, _) = call(&app, &ops, Method::POST, "/v1/webhooks/app/replay", replay).await;
    assert_eq!(status, 200);
    expect("ops", "webhook.replay", "app", status);
    let wrong = format!("{ops}x");
    let (status, _) = call(&app, &wrong, Method::POST, "/v1/batches", sms_batch(1)).await;
    assert_eq!(status, 401);
    expect("unknown", "token.rejected", "POST /v1/batches", status);

    let (status, page) = call(&app, &ops, Method::GET, "/v1/audit?limit=100", Value::Null).await;
    assert_eq!(status, 200, "{page}");
    let listed: Vec<(String, String, String, String)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap_or_default().to_owned();
            (
                field("actor"),
                field("action"),
                field("target"),
                field("result"),
            )
        })
        .collect();
    assert_eq!(listed, done);
    let text = page.to_string();
    for secret in [ops.as_str(), bare.as_str(), wrong.as_str(), HOOK_SECRET] {
        assert!(!text.contains(secret), "a secret is listed: {text}");
    }

    let (_, submits) = call(
        &app,
        &ops,
        Method::GET,
        "/v1/audit?action=submit",
        Value::Null,
    )
    .await;
    assert_eq!(submits["entries"].as_array().unwrap().len(), 1, "{submits}");
    let path = format!("/v1/audit?actor={bare_name}&limit=2");
    let (_, first) = call(&app, &ops, Method::GET, &path, Value::Null).await;
    let before = first["next_before"].as_i64().expect("a next page");
    let path = format!("/v1/audit?actor={bare_name}&limit=2&before={before}");
    let (_, second) = call(&app, &ops, Method::GET, &path, Value::Null).await;
    let actions = |page: &Value| -> Vec<String> {
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(actions(&first), ["retry", "cancel"]);
    assert_eq!(actions(&second), ["resume", "pause"]);
    let (status, refused) = call(
        &app,
        &ops,
        Method::GET,
        "/v1/audit?action=nuke",
        Value::Null,
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["field"], "action", "{refused}");
}
