//! Tencent Cloud SMS: the pure parts (signatures, parameters, error codes,
//! configuration); `server` is a local Tencent Cloud SMS API and `send` the
//! exchanges with it.

use serde_json::{Value, json};

use super::*;
use crate::provider::call::harness::{configured, transient};

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

mod send;
mod server;
