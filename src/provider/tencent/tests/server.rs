//! A local server that speaks Tencent Cloud API 3.0 for SMS: it checks the
//! Authorization header with its own implementation of TC3-HMAC-SHA256, refuses
//! what Tencent refuses, and answers per number.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::provider::call::harness::{Seen, serve};

/// How the server answers a request that passed its checks.
#[derive(Clone, Copy)]
pub(super) enum Mode {
    /// A `SendStatusSet` entry per number, with the code this gives.
    PerNumber(fn(&str) -> &'static str),
    /// `Response.Error` with this code.
    Refuse(&'static str),
    /// HTTP 500 without Tencent's format.
    Broken,
}

pub(super) struct Sms {
    mode: Mode,
    /// The body of every request that passed the checks.
    seen: Seen<Value>,
    /// The status records `PullSmsSendStatusByPhoneNumber` finds.
    pub(super) statuses: Mutex<Vec<Value>>,
}

pub(super) fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Checks the request as Tencent does and answers its action; `Err` is the error
/// code to answer.
pub(super) fn check(headers: &HeaderMap, body: &[u8]) -> Result<String, &'static str> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let auth = header("authorization");
    let rest = auth
        .strip_prefix("TC3-HMAC-SHA256 ")
        .ok_or("AuthFailure.InvalidAuthorization")?;
    let mut credential = "";
    let mut signed_headers = "";
    let mut signature = "";
    for part in rest.split(", ") {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = v,
            Some(("SignedHeaders", v)) => signed_headers = v,
            Some(("Signature", v)) => signature = v,
            _ => return Err("AuthFailure.InvalidAuthorization"),
        }
    }
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 4 || scope[0] != SECRET_ID {
        return Err("AuthFailure.SecretIdNotFound");
    }
    let timestamp: i64 = header("x-tc-timestamp")
        .parse()
        .map_err(|_| "MissingParameter")?;
    if (jiff::Timestamp::now().as_second() - timestamp).abs() > 300 {
        return Err("AuthFailure.SignatureExpire");
    }
    let date = jiff::Timestamp::from_second(timestamp)
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string();
    if scope[1] != date || scope[2] != "sms" || scope[3] != "tc3_request" {
        return Err("AuthFailure.SignatureFailure");
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"content-type") || !names.contains(&"host") {
        return Err("AuthFailure.SignatureFailure");
    }
    let mut canonical = String::from("POST\n/\n\n");
    for name in &names {
        canonical += &format!("{name}:{}\n", header(name).trim().to_lowercase());
    }
    canonical += &format!("\n{signed_headers}\n{}", hex::encode(Sha256::digest(body)));
    let to_sign = format!(
        "TC3-HMAC-SHA256\n{timestamp}\n{date}/sms/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = hmac(
        &hmac(&hmac(format!("TC3{SECRET_KEY}").as_bytes(), &date), "sms"),
        "tc3_request",
    );
    if hex::encode(hmac(&key, &to_sign)) != signature {
        return Err("AuthFailure.SignatureFailure");
    }
    let expected = [
        ("x-tc-version", "2021-01-11"),
        ("x-tc-region", "ap-guangzhou"),
        ("content-type", "application/json; charset=utf-8"),
    ];
    if expected.iter().any(|(name, value)| header(name) != *value) {
        return Err("InvalidParameter");
    }
    match header("x-tc-action") {
        action @ ("SendSms" | "PullSmsSendStatusByPhoneNumber") => Ok(action.to_string()),
        _ => Err("InvalidAction"),
    }
}

pub(super) fn reply(response: Value) -> (StatusCode, String) {
    (StatusCode::OK, json!({ "Response": response }).to_string())
}

pub(super) fn refused(code: &str) -> (StatusCode, String) {
    reply(json!({
        "Error": {"Code": code, "Message": format!("refused: {code}")},
        "RequestId": "ed93f3cb-f35e-473f-b9f3-0d451b8b79c6",
    }))
}

pub(super) async fn send_sms(
    State(server): State<Arc<Sms>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let action = match check(&headers, &body) {
        Ok(action) => action,
        Err(code) => return refused(code),
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return refused("FailedOperation.FailResolvePacket");
    };
    if action == "PullSmsSendStatusByPhoneNumber" {
        return pull_status(&server, request);
    }
    let numbers: Vec<String> = request["PhoneNumberSet"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if numbers.is_empty() {
        return refused("MissingParameter.EmptyPhoneNumberSet");
    }
    if numbers.len() > 200 {
        return refused("LimitExceeded.PhoneNumberCountLimit");
    }
    let mainland = numbers.iter().filter(|n| n.starts_with("+86")).count();
    if mainland != 0 && mainland != numbers.len() {
        return refused("UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber");
    }
    if request["SmsSdkAppId"] != APP_ID {
        return refused("UnauthorizedOperation.SmsSdkAppIdVerifyFail");
    }
    server.seen.lock().unwrap().push(request.clone());
    match server.mode {
        Mode::Broken => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "upstream went away".into(),
        ),
        Mode::Refuse(code) => refused(code),
        Mode::PerNumber(code_for) => {
            let statuses: Vec<Value> = numbers
                .iter()
                .map(|n| {
                    let code = code_for(n);
                    json!({
                        "SerialNo": serial(n), "PhoneNumber": n, "Fee": 1, "SessionContext": "",
                        "Code": code,
                        "Message": if code == "Ok" { "send success".to_string() } else { format!("failed: {code}") },
                        "IsoCode": if n.starts_with("+86") { "CN" } else { "HK" },
                    })
                })
                .collect();
            reply(
                json!({"SendStatusSet": statuses, "RequestId": "a0aabda6-cf91-4f3e-a81f-9198114a2279"}),
            )
        }
    }
}

/// `PullSmsSendStatusByPhoneNumber`: the records of the number, as documented.
pub(super) fn pull_status(server: &Sms, request: Value) -> (StatusCode, String) {
    for field in ["BeginTime", "Offset", "Limit"] {
        if !request[field].is_i64() {
            return refused("MissingParameter");
        }
    }
    if request["SmsSdkAppId"] != APP_ID {
        return refused("UnauthorizedOperation.SmsSdkAppIdVerifyFail");
    }
    server.seen.lock().unwrap().push(request.clone());
    let set: Vec<Value> = server
        .statuses
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s["PhoneNumber"] == request["PhoneNumber"])
        .cloned()
        .collect();
    reply(json!({"PullSmsSendStatusSet": set, "RequestId": "b5b2f9d4-5bb0-4e0a-9d7e-7a3f4e2b1c11"}))
}

/// A status record as Tencent's pull lists it.
pub(super) fn status_record(number: &str, session_context: &str) -> Value {
    json!({"UserReceiveTime": 1_620_734_188, "CountryCode": "86",
           "SubscriberNumber": number.trim_start_matches("+86"), "PhoneNumber": number,
           "SerialNo": serial(number), "ReportStatus": "SUCCESS", "Description": "DELIVRD",
           "SessionContext": session_context})
}

pub(super) fn serial(number: &str) -> String {
    format!("2028:{}", number.trim_start_matches('+'))
}

pub(super) async fn sms_server(secret_key: &str, mode: Mode) -> (TencentProvider, Arc<Sms>) {
    let server = Arc::new(Sms {
        mode,
        seen: Seen::default(),
        statuses: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/", axum::routing::post(send_sms))
        .with_state(server.clone());
    let config = TencentConfig {
        secret_id: SECRET_ID.into(),
        secret_key: Secret::new(secret_key),
        sdk_app_id: APP_ID.into(),
        sign_name: Some(DEFAULT_SIGN.into()),
        region: default_region(),
        endpoint: serve(app).await,
    };
    let provider = TencentProvider::new("tc", &config, &[Channel::Sms], Duration::from_secs(5))
        .expect("a valid configuration");
    (provider, server)
}

pub(super) fn all_ok(_: &str) -> &'static str {
    "Ok"
}

pub(super) fn seen(server: &Sms) -> Vec<Value> {
    server.seen.lock().unwrap().clone()
}
