use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::provider::call::harness::{Seen, alike, configured, serve, sms, transient};

const SECRET_ID: &str = "AKIDtest";
const SECRET_KEY: &str = "test-secret-key";
const APP_ID: &str = "1400006666";
const DEFAULT_SIGN: &str = "腾讯云";

/// The request body of the example in Tencent Cloud's "Signature v3" page (CVM
/// `DescribeInstances`); the escapes are part of the payload as sent.
const DOC_PAYLOAD: &str =
    r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;

#[test]
fn signature_matches_the_example_in_tencent_clouds_documentation() {
    // Inputs of the documented example: SecretId AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE,
    // SecretKey Gu5t9xGARNpq86cd98joQYCN3EXAMPLE, timestamp 1551113065, service cvm,
    // signed headers content-type;host.
    let headers = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Host", "cvm.tencentcloudapi.com"),
    ];
    let payload = DOC_PAYLOAD.as_bytes();
    assert_eq!(
        hex::encode(Sha256::digest(payload)),
        "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    );
    let (canonical, _) = canonical_request(&headers, payload);
    assert_eq!(
        hex::encode(Sha256::digest(canonical.as_bytes())),
        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    );
    assert_eq!(
        authorization(
            "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            "cvm",
            1551113065,
            &headers,
            payload,
        ),
        "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, \
         SignedHeaders=content-type;host, \
         Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    );
}

#[test]
fn signature_matches_the_later_revision_that_signs_the_action_header() {
    // The page's later revision signs `x-tc-action` too and masks the keys: its
    // SecretId is AKIDz8krbsJ5yKBZQpn74WFkmLPx3******* and its SecretKey
    // Gu5t9xGARNpq86cd98joQYCN3******* — the signature it shows is of those strings.
    let headers = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Host", "cvm.tencentcloudapi.com"),
        ("X-TC-Action", "DescribeInstances"),
    ];
    let payload = DOC_PAYLOAD.as_bytes();
    let (canonical, signed) = canonical_request(&headers, payload);
    assert_eq!(signed, "content-type;host;x-tc-action");
    assert_eq!(
        hex::encode(Sha256::digest(canonical.as_bytes())),
        "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
    );
    assert_eq!(
        authorization(
            "AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******",
            "Gu5t9xGARNpq86cd98joQYCN3*******",
            "cvm",
            1551113065,
            &headers,
            payload,
        ),
        "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******/2019-02-25/cvm/tc3_request, \
         SignedHeaders=content-type;host;x-tc-action, \
         Signature=be4f67d323c78ab9acb7395e43c0dbcf822a9cfac32fea2449a7bc7726b770a3"
    );
}

fn vars(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("{other}"),
    }
}

#[test]
fn parameters_are_the_variables_numbered_from_one() {
    let params = |v| template_params(Some(&vars(v)));
    assert_eq!(
        params(
            json!({"2": 5, "1": "4370", "name": "Li", "10": "x", "3": "a", "4": "b", "5": "c",
                      "6": "d", "7": "e", "8": "f", "9": "g"})
        )
        .unwrap(),
        ["4370", "5", "a", "b", "c", "d", "e", "f", "g", "x"]
    );
    assert_eq!(params(json!({"name": "Li"})).unwrap(), Vec::<String>::new());
    assert_eq!(template_params(None).unwrap(), Vec::<String>::new());
    match params(json!({"1": "a", "3": "c"})) {
        Err(Error::Permanent { reason }) => assert!(reason.contains("`2` is missing"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // "01" is not the first parameter.
    assert!(params(json!({"01": "a"})).unwrap().is_empty());
}

#[test]
fn error_codes_are_classified_as_documented() {
    // 12:00 in China.
    let now: jiff::Timestamp = "2024-03-01T04:00:00Z".parse().unwrap();
    let wait = |code| {
        let (_, wait, throttle) = transient(&classify(code, "m", now));
        (wait, throttle)
    };
    let hour = 3600;
    let waits = [
        (
            "LimitExceeded.PhoneNumberThirtySecondLimit",
            Some(30),
            false,
        ),
        ("LimitExceeded.PhoneNumberOneHourLimit", Some(hour), false),
        (
            "LimitExceeded.PhoneNumberDailyLimit",
            Some(12 * hour),
            false,
        ),
        (
            "LimitExceeded.PhoneNumberSameContentDailyLimit",
            Some(12 * hour),
            false,
        ),
        ("LimitExceeded.AppDailyLimit", Some(12 * hour), true),
        ("RequestLimitExceeded", Some(1), true),
        ("RequestLimitExceeded.UinLimitExceeded", Some(1), true),
        (
            "FailedOperation.InsufficientBalanceInSmsPackage",
            Some(600),
            false,
        ),
        ("InternalError", None, false),
        ("InternalError.Timeout", None, false),
    ];
    for (code, hint, throttle) in waits {
        assert_eq!(wait(code), (hint, throttle), "{code}");
    }
    for code in [
        "InvalidParameterValue.IncorrectPhoneNumber",
        "FailedOperation.PhoneNumberInBlacklist",
    ] {
        assert!(
            matches!(classify(code, "m", now), Error::Undeliverable { .. }),
            "{code}"
        );
    }
    for code in [
        "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber",
        "LimitExceeded.PhoneNumberCountLimit",
        "FailedOperation.TemplateIncorrectOrUnapproved",
        "FailedOperation.SignatureIncorrectOrUnapproved",
        "AuthFailure.SignatureFailure",
        "AuthFailure.SecretIdNotFound",
        "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
    ] {
        assert!(
            matches!(classify(code, "m", now), Error::Permanent { .. }),
            "{code}"
        );
    }
}

#[test]
fn configuration_reads_keys_and_defaults() {
    let crate::provider::ProviderKind::Tencent(tencent) = configured(
        r#"
            [[providers]]
            name = "tc"
            kind = "tencent"
            channels = ["sms"]
            secret_id = "AKID-id"
            secret_key = "s3cret"
            sdk_app_id = "1400006666"
            sign_name = "腾讯云"
            "#,
    ) else {
        panic!("not tencent");
    };
    assert_eq!(tencent.region, "ap-guangzhou");
    assert_eq!(tencent.endpoint, "https://sms.tencentcloudapi.com");
    assert_eq!(tencent.sdk_app_id, "1400006666");
    let provider = TencentProvider::new("tc", &tencent, &[Channel::Sms], Duration::from_secs(1))
        .expect("valid");
    assert_eq!(provider.host, "sms.tencentcloudapi.com");
}

// A local server that speaks Tencent Cloud API 3.0 for SMS: it checks the
// Authorization header with its own implementation of TC3-HMAC-SHA256, refuses
// what Tencent refuses, and answers per number.

/// How the server answers a request that passed its checks.
#[derive(Clone, Copy)]
enum Mode {
    /// A `SendStatusSet` entry per number, with the code this gives.
    PerNumber(fn(&str) -> &'static str),
    /// `Response.Error` with this code.
    Refuse(&'static str),
    /// HTTP 500 without Tencent's format.
    Broken,
}

struct Sms {
    mode: Mode,
    /// The body of every request that passed the checks.
    seen: Seen<Value>,
    /// The status records `PullSmsSendStatusByPhoneNumber` finds.
    statuses: Mutex<Vec<Value>>,
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Checks the request as Tencent does and answers its action; `Err` is the error
/// code to answer.
fn check(headers: &HeaderMap, body: &[u8]) -> Result<String, &'static str> {
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

fn reply(response: Value) -> (StatusCode, String) {
    (StatusCode::OK, json!({ "Response": response }).to_string())
}

fn refused(code: &str) -> (StatusCode, String) {
    reply(json!({
        "Error": {"Code": code, "Message": format!("refused: {code}")},
        "RequestId": "ed93f3cb-f35e-473f-b9f3-0d451b8b79c6",
    }))
}

async fn send_sms(
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
fn pull_status(server: &Sms, request: Value) -> (StatusCode, String) {
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
fn status_record(number: &str, session_context: &str) -> Value {
    json!({"UserReceiveTime": 1_620_734_188, "CountryCode": "86",
           "SubscriberNumber": number.trim_start_matches("+86"), "PhoneNumber": number,
           "SerialNo": serial(number), "ReportStatus": "SUCCESS", "Description": "DELIVRD",
           "SessionContext": session_context})
}

fn serial(number: &str) -> String {
    format!("2028:{}", number.trim_start_matches('+'))
}

async fn sms_server(secret_key: &str, mode: Mode) -> (TencentProvider, Arc<Sms>) {
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

fn all_ok(_: &str) -> &'static str {
    "Ok"
}

fn seen(server: &Sms) -> Vec<Value> {
    server.seen.lock().unwrap().clone()
}

#[tokio::test]
async fn one_message_is_one_signed_request() {
    let (provider, server) = sms_server(SECRET_KEY, Mode::PerNumber(all_ok)).await;
    let message = sms(
        "+8613800138000",
        Some("1110"),
        json!({"1": "4370", "2": 5, "name": "not a parameter"}),
    );
    let receipt = provider.send(&message).await.expect("sent");
    assert_eq!(
        receipt.provider_message_id.as_deref(),
        Some("2028:8613800138000")
    );
    assert_eq!(
        seen(&server),
        [json!({
            "PhoneNumberSet": ["+8613800138000"],
            "SmsSdkAppId": APP_ID,
            "TemplateId": "1110",
            "SessionContext": message.batch_id.to_string(),
            "SignName": DEFAULT_SIGN,
            "TemplateParamSet": ["4370", "5"],
        })]
    );
}

#[tokio::test]
async fn a_batch_of_250_goes_in_requests_of_at_most_200_and_each_gets_its_serial() {
    let (provider, server) = sms_server(SECRET_KEY, Mode::PerNumber(all_ok)).await;
    let messages = alike(250, "1110", json!({"1": "1234"}));
    let results = provider.send_many(&messages).await;
    for (message, result) in messages.iter().zip(&results) {
        let receipt = result.as_ref().expect("sent");
        assert_eq!(receipt.provider_message_id, Some(serial(&message.to)));
    }
    let mut sizes: Vec<usize> = seen(&server)
        .iter()
        .map(|r| r["PhoneNumberSet"].as_array().unwrap().len())
        .collect();
    sizes.sort();
    assert_eq!(sizes, [50, 200]);
}

#[tokio::test]
async fn mainland_and_other_numbers_and_different_parameters_go_apart() {
    let (provider, server) = sms_server(SECRET_KEY, Mode::PerNumber(all_ok)).await;
    let messages = [
        sms("+8613800000001", Some("1110"), json!({"1": "a"})),
        sms("+85261234567", Some("1110"), json!({"1": "a"})),
        sms("+8613800000002", Some("1110"), json!({"1": "a"})),
        sms("+8613800000003", Some("1110"), json!({"1": "b"})),
    ];
    let results = provider.send_many(&messages).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut requests: Vec<(Vec<String>, Value)> = seen(&server)
        .into_iter()
        .map(|r| {
            let numbers = serde_json::from_value(r["PhoneNumberSet"].clone()).unwrap();
            (numbers, r["TemplateParamSet"].clone())
        })
        .collect();
    requests.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        requests,
        [
            (vec!["+85261234567".to_string()], json!(["a"])),
            (
                vec!["+8613800000001".to_string(), "+8613800000002".to_string()],
                json!(["a"])
            ),
            (vec!["+8613800000003".to_string()], json!(["b"])),
        ]
    );
}

#[tokio::test]
async fn per_number_errors_reach_their_own_messages() {
    fn code_for(number: &str) -> &'static str {
        match number {
            "+8613800000002" => "InvalidParameterValue.IncorrectPhoneNumber",
            "+8613800000003" => "LimitExceeded.PhoneNumberThirtySecondLimit",
            "+8613800000004" => "FailedOperation.PhoneNumberInBlacklist",
            _ => "Ok",
        }
    }
    let (provider, server) = sms_server(SECRET_KEY, Mode::PerNumber(code_for)).await;
    let messages: Vec<Message> = (1..=5)
        .map(|i| sms(&format!("+861380000000{i}"), Some("1110"), json!({})))
        .collect();
    let results = provider.send_many(&messages).await;
    assert_eq!(seen(&server).len(), 1);
    assert!(results[0].is_ok() && results[4].is_ok(), "{results:?}");
    assert!(
        matches!(&results[1], Err(Error::Undeliverable { reason }) if reason.contains("IncorrectPhoneNumber"))
    );
    let (_, wait, throttle) = transient(results[2].as_ref().unwrap_err());
    assert_eq!((wait, throttle), (Some(30), false));
    assert!(results[2].as_ref().unwrap_err().is_recipient_capped());
    assert!(
        matches!(&results[3], Err(Error::Undeliverable { reason }) if reason.contains("PhoneNumberInBlacklist"))
    );
}

#[tokio::test]
async fn a_wrong_key_fails_every_message_permanently() {
    let (provider, server) = sms_server("not-the-key", Mode::PerNumber(all_ok)).await;
    for result in provider.send_many(&alike(3, "1110", json!({}))).await {
        assert!(
            matches!(&result, Err(Error::Permanent { reason }) if reason.contains("AuthFailure.SignatureFailure")),
            "{result:?}"
        );
    }
    assert!(seen(&server).is_empty());
}

#[tokio::test]
async fn request_throttling_is_a_throttle_for_every_message() {
    let (provider, _server) = sms_server(SECRET_KEY, Mode::Refuse("RequestLimitExceeded")).await;
    for result in provider.send_many(&alike(3, "1110", json!({}))).await {
        let (reason, wait, throttle) = transient(result.as_ref().unwrap_err());
        assert!(reason.contains("RequestLimitExceeded"), "{reason}");
        assert_eq!((wait, throttle), (Some(THROTTLE_WAIT.as_secs()), true));
    }
}

#[tokio::test]
async fn server_errors_are_transient() {
    let (provider, _server) = sms_server(SECRET_KEY, Mode::Broken).await;
    let result = provider
        .send(&sms("+8613800000001", Some("1110"), json!({})))
        .await;
    let (reason, _, _) = transient(result.as_ref().unwrap_err());
    assert_eq!(reason, "HTTP 500: upstream went away");
}

#[tokio::test]
async fn messages_without_a_template_code_or_a_number_make_no_request() {
    let (provider, server) = sms_server(SECRET_KEY, Mode::PerNumber(all_ok)).await;
    let results = provider
        .send_many(&[
            sms("+8613800000001", None, json!({})),
            sms("8613800000002", Some("1110"), json!({})),
            sms("+8613800000003", Some("1110"), json!({"1": "a", "3": "c"})),
        ])
        .await;
    assert!(
        matches!(&results[0], Err(Error::Permanent { reason }) if reason.contains("needs a code"))
    );
    assert!(matches!(&results[1], Err(Error::Undeliverable { .. })));
    assert!(matches!(&results[2], Err(Error::Permanent { .. })));
    assert!(seen(&server).is_empty());
}

#[tokio::test]
async fn a_query_finds_the_attempt_by_its_batch_in_the_pulled_status_records() {
    let (provider, server) = sms_server(SECRET_KEY, Mode::PerNumber(all_ok)).await;
    let message = sms("+8613800138000", Some("1110"), json!({"1": "4370"}));
    let batch = message.batch_id.to_string();
    server.statuses.lock().unwrap().extend([
        status_record("+8613800138000", "another batch"),
        status_record("+8613800138001", &batch),
    ]);
    let since = jiff::Timestamp::now().as_millisecond() - 5_000;
    assert!(matches!(
        provider.query(&message, since).await,
        Lookup::CannotTell(_)
    ));
    server
        .statuses
        .lock()
        .unwrap()
        .push(status_record("+8613800138000", &batch));
    assert_eq!(
        provider.query(&message, since).await,
        Lookup::Sent {
            provider_message_id: Some("2028:8613800138000".into())
        }
    );
    let pulled = &seen(&server)[1];
    assert_eq!(pulled["PhoneNumber"], "+8613800138000");
    assert_eq!(pulled["Limit"], 100);
    assert_eq!(pulled["Offset"], 0);
    assert_eq!(pulled["BeginTime"], since / 1000 - 60);
}

#[tokio::test]
async fn a_refused_pull_cannot_tell() {
    let (provider, _server) = sms_server("a-wrong-key", Mode::PerNumber(all_ok)).await;
    let message = sms("+8613800138000", Some("1110"), json!({}));
    match provider.query(&message, 0).await {
        Lookup::CannotTell(why) => assert!(why.contains("AuthFailure"), "{why}"),
        other => panic!("{other:?}"),
    }
}
