use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

use super::*;
use crate::provider::call::harness::{Seen, alike, configured, serve, sms, transient};

const KEY_ID: &str = "LTAI-test";
const SECRET: &str = "test-secret";
const DEFAULT_SIGN: &str = "Herald";

fn now() -> jiff::Timestamp {
    "2024-03-01T04:00:00Z".parse().expect("a timestamp")
}

#[test]
fn signature_matches_the_example_in_aliyuns_sms_documentation() {
    // The worked example of Aliyun's SMS "signature method" page: AccessKeyId
    // `testId`, AccessKeySecret `testSecret`, a GET of these parameters.
    let params = BTreeMap::from([
        ("AccessKeyId", "testId".to_string()),
        ("Action", "SendSms".into()),
        ("Format", "XML".into()),
        ("OutId", "123".into()),
        ("PhoneNumbers", "15300000001".into()),
        ("RegionId", "cn-hangzhou".into()),
        ("SignName", "阿里云短信测试专用".into()),
        ("SignatureMethod", "HMAC-SHA1".into()),
        (
            "SignatureNonce",
            "45e25e9b-0a6f-4070-8c85-2956eda1b466".into(),
        ),
        ("SignatureVersion", "1.0".into()),
        ("TemplateCode", "SMS_71390007".into()),
        ("TemplateParam", r#"{"customer":"test"}"#.into()),
        ("Timestamp", "2017-07-12T02:42:19Z".into()),
        ("Version", "2017-05-25".into()),
    ]);
    let string_to_sign = string_to_sign("GET", &canonicalize(&params));
    assert_eq!(
        string_to_sign,
        "GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26OutId%3D123\
         %26PhoneNumbers%3D15300000001%26RegionId%3Dcn-hangzhou%26SignName%3D%25E9%2598\
         %25BF%25E9%2587%258C%25E4%25BA%2591%25E7%259F%25AD%25E4%25BF%25A1%25E6%25B5%258B\
         %25E8%25AF%2595%25E4%25B8%2593%25E7%2594%25A8%26SignatureMethod%3DHMAC-SHA1\
         %26SignatureNonce%3D45e25e9b-0a6f-4070-8c85-2956eda1b466%26SignatureVersion%3D1.0\
         %26TemplateCode%3DSMS_71390007%26TemplateParam%3D%257B%2522customer%2522%253A\
         %2522test%2522%257D%26Timestamp%3D2017-07-12T02%253A42%253A19Z\
         %26Version%3D2017-05-25"
    );
    let signed = signature("testSecret", &string_to_sign);
    assert_eq!(signed, "zJDF+Lrzhj/ThnlvIToysFRq6t4=");
    // As it appears in the documented URL.
    assert_eq!(
        percent_encode(&signed),
        "zJDF%2BLrzhj%2FThnlvIToysFRq6t4%3D"
    );
}

#[test]
fn signature_matches_the_example_in_aliyuns_rpc_documentation() {
    // The example of Aliyun's general RPC signature page (ECS DescribeRegions):
    // AccessKeyId `testid`, AccessKeySecret `testsecret`.
    let params = BTreeMap::from([
        ("AccessKeyId", "testid".to_string()),
        ("Action", "DescribeRegions".into()),
        ("Format", "XML".into()),
        ("SignatureMethod", "HMAC-SHA1".into()),
        (
            "SignatureNonce",
            "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf".into(),
        ),
        ("SignatureVersion", "1.0".into()),
        ("Timestamp", "2016-02-23T12:46:24Z".into()),
        ("Version", "2014-05-26".into()),
    ]);
    let string_to_sign = string_to_sign("GET", &canonicalize(&params));
    assert_eq!(
        signature("testsecret", &string_to_sign),
        "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    );
}

#[test]
fn percent_encoding_keeps_only_unreserved_characters() {
    assert_eq!(percent_encode("a b*c~d-e_f.g"), "a%20b%2Ac~d-e_f.g");
    assert_eq!(percent_encode("+/=&,"), "%2B%2F%3D%26%2C");
    assert_eq!(percent_encode("派"), "%E6%B4%BE");
}

#[test]
fn mainland_numbers_lose_the_country_code_others_only_the_plus() {
    assert_eq!(aliyun_number("+8613800138000").unwrap(), "13800138000");
    assert_eq!(aliyun_number("+85261234567").unwrap(), "85261234567");
    assert_eq!(aliyun_number("+14155550100").unwrap(), "14155550100");
    assert!(matches!(
        aliyun_number("13800138000"),
        Err(Error::Undeliverable { .. })
    ));
}

#[test]
fn template_parameters_are_a_json_object_of_strings() {
    let vars = json!({"code": 1234, "name": "李"});
    let Value::Object(vars) = vars else {
        unreachable!()
    };
    assert_eq!(
        template_param(Some(&vars)).unwrap(),
        r#"{"code":"1234","name":"李"}"#
    );
    assert_eq!(template_param(None).unwrap(), "{}");
}

fn prepared<'a>(code: &'a str, params: &str, number: &str) -> Option<Prepared<'a>> {
    Some(Prepared {
        code,
        sign: DEFAULT_SIGN,
        number: number.into(),
        params: params.into(),
        batch: "batch-1".into(),
    })
}

#[test]
fn alike_messages_share_send_sms_and_the_others_of_a_template_send_batch_sms() {
    let mut all = vec![
        prepared("A", "{\"x\":\"1\"}", "1"),
        prepared("A", "{\"x\":\"2\"}", "2"),
        prepared("A", "{\"x\":\"1\"}", "3"),
        None,
        prepared("B", "{}", "4"),
        prepared("A", "{\"x\":\"3\"}", "5"),
    ];
    assert_eq!(
        plan(&all),
        vec![
            Request::Same(vec![0, 2]),
            Request::Varied(vec![1, 5]),
            Request::Same(vec![4]),
        ]
    );
    all.extend((0..250).map(|n| prepared("C", &format!("{{\"n\":\"{n}\"}}"), "9")));
    let sizes: Vec<usize> = plan(&all).iter().map(|r| r.indices().len()).collect();
    assert_eq!(sizes, vec![2, 2, 1, 100, 100, 50]);
}

#[test]
fn messages_of_two_batches_never_share_a_request() {
    let of_batch = |batch: &str, params: &str, number: &str| {
        prepared("A", params, number).map(|mut p| {
            p.batch = batch.into();
            p
        })
    };
    let all = vec![
        of_batch("b1", "{}", "1"),
        of_batch("b2", "{}", "2"),
        of_batch("b1", "{}", "3"),
        of_batch("b1", "{\"x\":\"1\"}", "4"),
        of_batch("b2", "{\"x\":\"2\"}", "5"),
    ];
    assert_eq!(
        plan(&all),
        // b1's alike pair, b1's other one alone, b2's two in their own request.
        vec![
            Request::Same(vec![0, 2]),
            Request::Same(vec![3]),
            Request::Varied(vec![4, 1]),
        ]
    );
}

#[test]
fn error_codes_are_classified_as_documented() {
    let now = now();
    assert!(matches!(
        classify("isv.MOBILE_NUMBER_ILLEGAL", "", now),
        Error::Undeliverable { .. }
    ));
    for code in [
        "isv.SMS_TEMPLATE_ILLEGAL",
        "isv.SMS_SIGNATURE_ILLEGAL",
        "isv.TEMPLATE_MISSING_PARAMETERS",
        "isv.INVALID_PARAMETERS",
        "isv.INVALID_JSON_PARAM",
        "isv.MOBILE_COUNT_OVER_LIMIT",
        "isv.BLACK_KEY_CONTROL_LIMIT",
        "isp.RAM_PERMISSION_DENY",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId.NotFound",
    ] {
        assert!(
            matches!(classify(code, "m", now), Error::Permanent { .. }),
            "{code}"
        );
    }
    let wait = |code| {
        let (_, wait, throttle) = transient(&classify(code, "m", now));
        (wait, throttle)
    };
    for code in [
        "isp.SYSTEM_ERROR",
        "SignatureNonceUsed",
        "ServiceUnavailable",
    ] {
        assert_eq!(wait(code), (None, false), "{code}");
    }
    assert_eq!(wait("Throttling.User"), (Some(1), true));
    // The account's daily quota: a throttle until midnight in China (12:00 there now).
    assert_eq!(wait("isv.DAY_LIMIT_CONTROL"), (Some(12 * 3600), true));
    assert_eq!(wait("isv.AMOUNT_NOT_ENOUGH"), (Some(600), false));
}

#[test]
fn a_numbers_frequency_cap_waits_for_the_window_aliyun_names() {
    let wait = |message| {
        let (_, wait, throttle) =
            transient(&classify("isv.BUSINESS_LIMIT_CONTROL", message, now()));
        (wait, throttle)
    };
    assert_eq!(wait("触发分钟级流控Permits:1"), (Some(60), false));
    assert_eq!(wait("触发小时级流控Permits:5"), (Some(3600), false));
    assert_eq!(wait("触发天级流控Permits:10"), (Some(12 * 3600), false));
    assert_eq!(wait("触发业务流控"), (Some(60), false));
}

#[test]
fn the_signature_mismatch_message_is_not_quoted() {
    let e = classify(
        "SignatureDoesNotMatch",
        "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&PhoneNumbers%3D13800138000",
        now(),
    );
    assert!(!e.to_string().contains("13800138000"), "{e}");
}

#[test]
fn configuration_reads_keys_and_defaults() {
    let crate::provider::ProviderKind::Aliyun(aliyun) = configured(
        r#"
            [[providers]]
            name = "ali"
            kind = "aliyun"
            channels = ["sms"]
            access_key_id = "LTAI-id"
            access_key_secret = "s3cret"
            sign_name = "Herald"
            "#,
    ) else {
        panic!("not aliyun");
    };
    assert_eq!(aliyun.region_id, "cn-hangzhou");
    assert_eq!(aliyun.endpoint, "https://dysmsapi.aliyuncs.com");
    assert_eq!(aliyun.access_key_secret.expose(), "s3cret");
    assert!(
        AliyunProvider::new("ali", &aliyun, &Channel::ALL, Duration::from_secs(1))
            .is_err_and(|e| e.contains("channels = [\"sms\"]"))
    );
}

// A local server that speaks Dysmsapi: it checks each request's signature with its
// own implementation of the documented algorithm and refuses mismatches as Aliyun
// does, then answers as `answer` says.

type Params = BTreeMap<String, String>;
type Answer = Box<dyn Fn(&Params) -> (StatusCode, Value) + Send + Sync>;

struct Dysmsapi {
    answer: Answer,
    /// Every request that arrived, signed well or not.
    hits: AtomicUsize,
    /// The parameters of every request that passed the checks.
    seen: Seen<Params>,
    nonces: Mutex<HashSet<String>>,
}

/// Aliyun's own percent-encoding as its documentation describes it: form-encode,
/// then `+` → `%20`, `*` → `%2A`, `%7E` → `~`.
fn pop_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
        .replace('*', "%2A")
        .replace("%7E", "~")
}

fn server_signature(params: &Params) -> (String, String) {
    let query = params
        .iter()
        .map(|(k, v)| format!("{}={}", pop_encode(k), pop_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let string_to_sign = format!("POST&{}&{}", pop_encode("/"), pop_encode(&query));
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{SECRET}&").as_bytes()).unwrap();
    mac.update(string_to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (string_to_sign, signature)
}

fn refusal(status: StatusCode, code: &str, message: &str) -> (StatusCode, String) {
    let body = json!({
        "RequestId": "8906582E-6722-409A-A6C4-0E7863B733A5",
        "HostId": "dysmsapi.aliyuncs.com",
        "Code": code,
        "Message": message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}"),
    });
    (status, body.to_string())
}

async fn dysmsapi(State(server): State<Arc<Dysmsapi>>, body: Bytes) -> (StatusCode, String) {
    server.hits.fetch_add(1, Ordering::SeqCst);
    let mut params: Params = form_urlencoded::parse(&body).into_owned().collect();
    let Some(signature) = params.remove("Signature") else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "MissingSignature",
            "Signature is mandatory for this action.",
        );
    };
    let (string_to_sign, expected) = server_signature(&params);
    if signature != expected {
        return refusal(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            &format!(
                "Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"
            ),
        );
    }
    let expect = [
        ("AccessKeyId", KEY_ID),
        ("Format", "JSON"),
        ("RegionId", "cn-hangzhou"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("Version", "2017-05-25"),
    ];
    for (name, value) in expect {
        if params.get(name).map(String::as_str) != Some(value) {
            return refusal(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                &format!("{name} is not {value}"),
            );
        }
    }
    let fresh = params.get("Timestamp").is_some_and(|t| {
        jiff::civil::DateTime::strptime("%Y-%m-%dT%H:%M:%SZ", t)
            .ok()
            .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .is_some_and(|z| {
                z.timestamp()
                    .duration_since(jiff::Timestamp::now())
                    .abs()
                    .as_secs()
                    < 900
            })
    });
    if !fresh {
        return refusal(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        );
    }
    let nonce = params.get("SignatureNonce").cloned().unwrap_or_default();
    if nonce.is_empty() || !server.nonces.lock().unwrap().insert(nonce) {
        return refusal(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        );
    }
    server.seen.lock().unwrap().push(params.clone());
    let (status, body) = (server.answer)(&params);
    (status, body.to_string())
}

/// Aliyun's answer to an accepted request; the `BizId` is made from the nonce so
/// tests can tell which request carried a message.
fn accepted(params: &Params) -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({"Message": "OK", "RequestId": "F655A8D5-B967-440B-8683-DAD6FF8DE990",
               "Code": "OK", "BizId": biz_id(params)}),
    )
}

fn biz_id(params: &Params) -> String {
    format!("9006197469364984^{}", params["SignatureNonce"])
}

async fn dysmsapi_server(
    secret: &str,
    answer: impl Fn(&Params) -> (StatusCode, Value) + Send + Sync + 'static,
) -> (AliyunProvider, Arc<Dysmsapi>) {
    let server = Arc::new(Dysmsapi {
        answer: Box::new(answer),
        hits: AtomicUsize::new(0),
        seen: Seen::default(),
        nonces: Mutex::new(HashSet::new()),
    });
    let app = axum::Router::new()
        .route("/", axum::routing::post(dysmsapi))
        .with_state(server.clone());
    let config = AliyunConfig {
        access_key_id: KEY_ID.into(),
        access_key_secret: Secret::new(secret),
        sign_name: Some(DEFAULT_SIGN.into()),
        region_id: default_region(),
        endpoint: serve(app).await,
    };
    let provider = AliyunProvider::new("ali", &config, &[Channel::Sms], Duration::from_secs(5))
        .expect("a valid configuration");
    (provider, server)
}

fn seen(server: &Dysmsapi) -> Vec<Params> {
    server.seen.lock().unwrap().clone()
}

#[tokio::test]
async fn one_message_is_one_signed_send_sms_request() {
    let (provider, server) = dysmsapi_server(SECRET, accepted).await;
    let receipt = provider
        .send(&sms("+8613800138000", Some("SMS_1"), json!({"code": 1234})))
        .await
        .expect("accepted");
    let mut signed = sms("+8613800138001", Some("SMS_1"), json!({}));
    signed.template.as_mut().unwrap().sign_name = Some("阿里云短信测试专用".into());
    provider.send(&signed).await.expect("accepted");

    let requests = seen(&server);
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(receipt.provider_message_id, Some(biz_id(first)));
    assert_eq!(first["Action"], "SendSms");
    assert_eq!(first["PhoneNumbers"], "13800138000");
    assert_eq!(first["SignName"], DEFAULT_SIGN);
    assert_eq!(first["TemplateCode"], "SMS_1");
    assert_eq!(first["TemplateParam"], r#"{"code":"1234"}"#);
    // The stored template's own sign wins; no variables, no TemplateParam.
    assert_eq!(requests[1]["SignName"], "阿里云短信测试专用");
    assert!(!requests[1].contains_key("TemplateParam"));
}

#[tokio::test]
async fn alike_messages_share_send_sms_and_the_others_send_batch_sms() {
    let (provider, server) = dysmsapi_server(SECRET, accepted).await;
    let mut messages: Vec<Message> = (0..250)
        .map(|i| {
            sms(
                &format!("+86138{i:08}"),
                Some("SMS_A"),
                json!({"code": "same"}),
            )
        })
        .collect();
    messages.push(sms("+85261234567", Some("SMS_A"), json!({"code": "same"})));
    messages.extend((0..150).map(|i| {
        sms(
            &format!("+86139{i:08}"),
            Some("SMS_A"),
            json!({"code": format!("c{i}")}),
        )
    }));
    messages.push(sms("+8613700000000", Some("SMS_B"), json!({})));

    let results = provider.send_many(&messages).await;

    let requests = seen(&server);
    let mut shapes: Vec<(String, usize)> = requests
        .iter()
        .map(|p| match p["Action"].as_str() {
            "SendSms" => ("SendSms".to_string(), p["PhoneNumbers"].split(',').count()),
            _ => {
                let numbers: Vec<String> = serde_json::from_str(&p["PhoneNumberJson"]).unwrap();
                (p["Action"].clone(), numbers.len())
            }
        })
        .collect();
    shapes.sort();
    assert_eq!(
        shapes,
        [
            ("SendBatchSms".to_string(), 50),
            ("SendBatchSms".to_string(), 100),
            ("SendSms".to_string(), 1),
            ("SendSms".to_string(), 251),
        ]
    );
    // Which request carried each number, and with what code variable.
    let mut carried: BTreeMap<String, (String, String)> = BTreeMap::new();
    for p in &requests {
        if p["Action"] == "SendSms" {
            let code = serde_json::from_str::<Value>(p.get("TemplateParam").map_or("{}", |s| s))
                .unwrap()["code"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            for n in p["PhoneNumbers"].split(',') {
                carried.insert(n.to_string(), (biz_id(p), code.clone()));
            }
        } else {
            let numbers: Vec<String> = serde_json::from_str(&p["PhoneNumberJson"]).unwrap();
            let signs: Vec<String> = serde_json::from_str(&p["SignNameJson"]).unwrap();
            let params: Vec<Value> = serde_json::from_str(&p["TemplateParamJson"]).unwrap();
            assert_eq!((signs.len(), params.len()), (numbers.len(), numbers.len()));
            assert!(signs.iter().all(|s| s == DEFAULT_SIGN));
            assert_eq!(p["TemplateCode"], "SMS_A");
            for (n, param) in numbers.iter().zip(&params) {
                carried.insert(
                    n.clone(),
                    (biz_id(p), param["code"].as_str().unwrap().into()),
                );
            }
        }
    }
    assert_eq!(carried["85261234567"].1, "same");
    for (message, result) in messages.iter().zip(&results) {
        let number = aliyun_number(&message.to).unwrap();
        let (biz, code) = &carried[&number];
        assert_eq!(
            result.as_ref().unwrap().provider_message_id.as_ref(),
            Some(biz)
        );
        let wanted = message
            .vars
            .as_ref()
            .unwrap()
            .get("code")
            .and_then(Value::as_str);
        assert_eq!(wanted.unwrap_or_default(), code, "{number}");
    }
}

#[tokio::test]
async fn an_invalid_number_fails_alone_and_the_others_are_sent_one_by_one() {
    let (provider, server) = dysmsapi_server(SECRET, |p| {
        if p["PhoneNumbers"].split(',').any(|n| n == "10000000000") {
            (
                StatusCode::OK,
                json!({"Message": "10000000000 invalid mobile number", "RequestId": "A",
                       "Code": "isv.MOBILE_NUMBER_ILLEGAL"}),
            )
        } else {
            accepted(p)
        }
    })
    .await;
    let numbers = [
        "+8613800000001",
        "+8610000000000",
        "+8613800000002",
        "+8613800000003",
    ];
    let messages: Vec<Message> = numbers
        .iter()
        .map(|n| sms(n, Some("SMS_A"), json!({"code": "1"})))
        .collect();

    let results = provider.send_many(&messages).await;

    assert!(
        matches!(&results[1], Err(Error::Undeliverable { reason }) if reason.contains("isv.MOBILE_NUMBER_ILLEGAL"))
    );
    for i in [0, 2, 3] {
        assert!(results[i].is_ok(), "{i}: {:?}", results[i]);
    }
    let requests = seen(&server);
    assert_eq!(requests.len(), 1 + numbers.len());
    assert_eq!(
        requests[0]["PhoneNumbers"].split(',').count(),
        numbers.len()
    );
    assert!(
        requests[1..]
            .iter()
            .all(|p| !p["PhoneNumbers"].contains(','))
    );
}

#[tokio::test]
async fn throttling_is_a_transient_throttle_for_every_message() {
    let (provider, _server) = dysmsapi_server(SECRET, |_| {
        (
            StatusCode::BAD_REQUEST,
            json!({"Code": "Throttling.User", "Message": "Request was denied due to user flow control.",
                   "RequestId": "B", "HostId": "dysmsapi.aliyuncs.com"}),
        )
    })
    .await;
    let messages = alike(3, "SMS_A", json!({"code": "1"}));
    for result in provider.send_many(&messages).await {
        let (reason, wait, throttle) = transient(result.as_ref().unwrap_err());
        assert!(reason.contains("Throttling.User"), "{reason}");
        assert_eq!((wait, throttle), (Some(THROTTLE_WAIT.as_secs()), true));
    }
}

#[tokio::test]
async fn a_numbers_frequency_cap_is_transient_with_its_window() {
    let (provider, _server) = dysmsapi_server(SECRET, |_| {
        (
            StatusCode::OK,
            json!({"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发小时级流控Permits:5", "RequestId": "C"}),
        )
    })
    .await;
    let error = provider
        .send(&sms("+8613800138000", Some("SMS_A"), json!({})))
        .await
        .unwrap_err();
    assert_eq!(transient(&error).1, Some(3600));
    assert!(!error.is_throttle());
    assert!(error.is_recipient_capped(), "{error:?}");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_as_aliyun_does_and_fails_every_message_permanently() {
    let (provider, server) = dysmsapi_server("not-the-secret", accepted).await;
    for result in provider.send_many(&alike(3, "SMS_A", json!({}))).await {
        match result {
            Err(Error::Permanent { reason }) => {
                assert!(reason.contains("SignatureDoesNotMatch"), "{reason}");
                assert!(!reason.contains("string to sign"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    // One request for the three, refused; no fallback.
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert!(seen(&server).is_empty());
}

#[tokio::test]
async fn server_errors_are_transient() {
    let (provider, _server) = dysmsapi_server(SECRET, |p| {
        if p["PhoneNumbers"] == "13800000001" {
            (StatusCode::INTERNAL_SERVER_ERROR, json!("busy"))
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"Code": "ServiceUnavailable", "Message": "The request has failed due to a temporary failure of the server.", "RequestId": "D"}),
            )
        }
    })
    .await;
    let results = provider
        .send_many(&[
            sms("+8613800000001", Some("SMS_A"), json!({})),
            sms("+8613800000002", Some("SMS_B"), json!({})),
        ])
        .await;
    let reason = |i: usize| transient(results[i].as_ref().unwrap_err()).0.to_string();
    assert_eq!(reason(0), "HTTP 500: \"busy\"");
    assert!(reason(1).contains("ServiceUnavailable"), "{}", reason(1));
}

#[tokio::test]
async fn a_template_without_a_code_is_refused_before_any_request() {
    let (provider, server) = dysmsapi_server(SECRET, accepted).await;
    let results = provider
        .send_many(&[
            sms("+8613800000001", None, json!({})),
            sms("13800000002", Some("SMS_A"), json!({})),
        ])
        .await;
    assert!(
        matches!(&results[0], Err(Error::Permanent { reason }) if reason.contains("needs a code for this provider"))
    );
    assert!(matches!(&results[1], Err(Error::Undeliverable { .. })));
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

/// Aliyun's `QuerySendDetails` answer (its documented sample's shape) listing
/// `records` as (phone, OutId).
fn details(records: &[(&str, &str)]) -> (StatusCode, Value) {
    let dtos: Vec<Value> = records
        .iter()
        .map(|(phone, out_id)| {
            json!({"ErrCode": "DELIVERED", "TemplateCode": "SMS_1", "OutId": out_id,
                   "ReceiveDate": "2024-03-01 12:00:03", "SendDate": "2024-03-01 12:00:00",
                   "PhoneNum": phone, "Content": "【Herald】Your code is 1234", "SendStatus": 3})
        })
        .collect();
    (
        StatusCode::OK,
        json!({"Code": "OK", "Message": "OK", "RequestId": "819BE656-D2E0-4858-8B21-B2E47708500B",
               "TotalCount": dtos.len(), "SmsSendDetailDTOs": {"SmsSendDetailDTO": dtos}}),
    )
}

fn china_today() -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
        .strftime("%Y%m%d")
        .to_string()
}

#[tokio::test]
async fn a_send_carries_its_batch_as_out_id_and_a_query_finds_it_by_out_id() {
    let message = sms("+8613800138000", Some("SMS_1"), json!({}));
    let batch = message.batch_id.to_string();
    let listed = batch.clone();
    let (provider, server) =
        dysmsapi_server(SECRET, move |params| match params["Action"].as_str() {
            "SendSms" => accepted(params),
            _ => details(&[("13800138000", "another-batch"), ("13800138000", &listed)]),
        })
        .await;
    provider.send(&message).await.expect("accepted");
    let lookup = provider.query(&message, now_ms()).await;
    assert_eq!(
        lookup,
        Lookup::Sent {
            provider_message_id: None
        }
    );
    let requests = seen(&server);
    assert_eq!(requests[0]["OutId"], batch);
    let query = &requests[1];
    assert_eq!(query["Action"], "QuerySendDetails");
    assert_eq!(query["PhoneNumber"], "13800138000");
    assert_eq!(query["SendDate"], china_today());
    assert_eq!(query["PageSize"], "50");
    assert_eq!(query["CurrentPage"], "1");
}

#[tokio::test]
async fn a_query_without_the_batchs_record_says_not_sent_after_each_day_since() {
    let (provider, server) =
        dysmsapi_server(SECRET, |_| details(&[("13800138000", "another-batch")])).await;
    let message = sms("+8613800138000", Some("SMS_1"), json!({}));
    let two_days_ago = now_ms() - 2 * 24 * 3600 * 1000;
    assert_eq!(
        provider.query(&message, two_days_ago).await,
        Lookup::NotSent
    );
    let dates: Vec<String> = seen(&server)
        .iter()
        .map(|p| p["SendDate"].clone())
        .collect();
    assert_eq!(dates.len(), 3, "{dates:?}");
    assert_eq!(dates[0], china_today());
}

#[tokio::test]
async fn a_refused_query_cannot_tell() {
    let (provider, _server) = dysmsapi_server("a-wrong-secret", accepted).await;
    let message = sms("+8613800138000", Some("SMS_1"), json!({}));
    match provider.query(&message, now_ms()).await {
        Lookup::CannotTell(why) => assert!(why.contains("SignatureDoesNotMatch"), "{why}"),
        other => panic!("{other:?}"),
    }
}

fn now_ms() -> i64 {
    crate::domain::now_ms()
}
