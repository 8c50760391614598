//! Sends and status pulls against the local Tencent Cloud SMS server: what each
//! request carries and how each of Tencent's answers reaches the messages.

use serde_json::json;

use super::server::*;
use super::*;
use crate::provider::call::harness::{alike, sms, transient};

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
