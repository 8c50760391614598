//! Aliyun: the pure parts (signatures, numbers, parameters, request plans, error
//! codes, configuration); `server` is a local Dysmsapi and `send` the exchanges
//! with it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::provider::call::harness::{configured, transient};

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

mod send;
mod server;
