//! Sends and status queries against the local Dysmsapi server: what each request
//! carries and how each of Aliyun's answers reaches the messages.

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use serde_json::json;

use super::server::*;
use super::*;
use crate::provider::call::harness::{alike, sms, transient};

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
