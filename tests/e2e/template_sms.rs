//! A provider that sends its own pre-approved templates, end to end: a stored
//! template with the provider's code, a batch naming it, and a local server that
//! speaks Tencent Cloud's `SendSms` and records each request. Many numbers with the
//! same parameters go in one request; the ledger keeps each number's serial number.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{Value, json};

use crate::helpers::{TestApp, serve_local, sms_provider, spawn_app};
use herald::domain::Channel;
use herald::domain::Secret;
use herald::provider::{ProviderConfig, ProviderKind, TencentConfig};

/// Every `SendSms` request the server received, as JSON.
pub type Seen = Arc<Mutex<Vec<Value>>>;

/// Tencent Cloud's `SendSms`, as a local server answers it: each number sent,
/// with serial number `serial-<number>`, when the request is signed with secret id
/// `AKIDe2e` (see [`tencent`]).
async fn send_sms(State(seen): State<Seen>, headers: HeaderMap, body: String) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let signed = header("authorization").starts_with("TC3-HMAC-SHA256 Credential=AKIDe2e/");
    if header("x-tc-action") != "SendSms" || header("x-tc-version") != "2021-01-11" || !signed {
        return json!({"Response": {"Error": {"Code": "AuthFailure.SignatureFailure",
            "Message": "unexpected request"}, "RequestId": "r"}})
        .to_string();
    }
    seen.lock().unwrap().push(request.clone());
    let statuses: Vec<Value> = request["PhoneNumberSet"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|number| {
            json!({"SerialNo": format!("serial-{}", number.as_str().unwrap_or("")),
                   "PhoneNumber": number, "Fee": 1, "SessionContext": "", "Code": "Ok",
                   "Message": "send success", "IsoCode": "CN"})
        })
        .collect();
    json!({"Response": {"SendStatusSet": statuses, "RequestId": "r"}}).to_string()
}

/// A local Tencent Cloud SMS server, and a provider `name` sending to it.
pub async fn tencent(name: &str) -> (ProviderConfig, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/", post(send_sms))
        .with_state(seen.clone());
    let kind = ProviderKind::Tencent(TencentConfig {
        secret_id: "AKIDe2e".into(),
        secret_key: Secret::new("e2e-secret"),
        sdk_app_id: "1400000001".into(),
        sign_name: None,
        region: "ap-guangzhou".into(),
        endpoint: serve_local(app).await,
    });
    (sms_provider(name, kind), seen)
}

/// Stores the template "otp" (`Your code is {{ 1 }}`), whose code at "tx" is
/// `1234567`, signed `Herald`.
pub async fn store_otp(herald: &TestApp) {
    let (status, created) = herald
        .post(
            "/v1/templates",
            &json!({"id": "otp", "channel": "sms", "body": "Your code is {{ 1 }}",
                    "providers": {"tx": {"code": "1234567", "sign_name": "Herald"}}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_templates_code_and_vars_reach_the_provider_many_numbers_a_request() {
    let (tx, seen) = tencent("tx").await;
    let herald = spawn_app(|config| {
        config.providers = vec![tx];
        config.defaults.insert(Channel::Sms, "tx".into());
    })
    .await;

    store_otp(&herald).await;
    // Five numbers share code 4321; two get 9999.
    let recipients: Vec<Value> = (0..7)
        .map(|i| {
            let code = if i < 5 { "4321" } else { "9999" };
            json!({"to": format!("+86138{i:08}"), "vars": {"1": code}})
        })
        .collect();
    let (status, report) = herald
        .post(
            "/v1/batches",
            &json!({"channel": "sms", "template_id": "otp", "recipients": recipients}),
        )
        .await;
    assert_eq!(status, 202, "{report}");
    let batch_id = report["batch_id"].as_str().unwrap();
    herald
        .wait_finished(batch_id, Duration::from_secs(10))
        .await;

    let ledger = herald.messages(batch_id).await;
    for m in &ledger {
        assert_eq!(m["state"], "sent", "{m}");
        assert_eq!(
            m["provider_message_id"],
            format!("serial-{}", m["to"].as_str().unwrap()),
            "{m}"
        );
    }
    let requests = seen.lock().unwrap().clone();
    let mut by_code: Vec<(Value, usize)> = requests
        .iter()
        .map(|r| {
            assert_eq!(r["TemplateId"], "1234567", "{r}");
            assert_eq!(r["SignName"], "Herald", "{r}");
            assert_eq!(r["SmsSdkAppId"], "1400000001", "{r}");
            (
                r["TemplateParamSet"].clone(),
                r["PhoneNumberSet"].as_array().unwrap().len(),
            )
        })
        .collect();
    by_code.sort_by_key(|(_, n)| *n);
    // Claims may split the batch, but every number went once, with its own code.
    let total: usize = by_code.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 7, "{requests:?}");
    assert!(
        requests.len() <= 4,
        "one request per claim and code: {requests:?}"
    );
    assert!(
        by_code
            .iter()
            .any(|(params, n)| *params == json!(["4321"]) && *n >= 2),
        "numbers sharing parameters share a request: {requests:?}"
    );
}
