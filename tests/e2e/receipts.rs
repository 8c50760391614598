//! Delivery receipts and unknown outcomes, end to end: batches sent through local
//! servers that speak the webhook's, Aliyun's and Twilio's wire formats, then the
//! providers' receipts POSTed to `/v1/receipts/{name}` as each provider sends them,
//! and a send whose answer never comes that Herald asks Aliyun about instead of
//! sending twice, also when the send went through a fallback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

use crate::helpers::{
    ProviderServer, Reply, TestApp, route_all_to, sms_batch, spawn_app, twilio_signed, wait_for,
};
use herald::domain::Channel;
use herald::domain::Secret;
use herald::provider::{AliyunConfig, ProviderConfig, ProviderKind, TwilioConfig};

const SECRET: &str = "receipt-secret";

fn signed(body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends SMS through `provider`, the only one configured.
fn sms_through(config: &mut herald::config::Config, provider: ProviderConfig) {
    config.defaults.insert(Channel::Sms, provider.name.clone());
    config.providers = vec![provider];
}

/// The provider's id of message `i` of a ledger.
fn provider_id(ledger: &[Value], i: usize) -> String {
    ledger[i]["provider_message_id"]
        .as_str()
        .expect("a sent message has the provider's id")
        .to_string()
}

impl TestApp {
    async fn counts(&self, batch_id: &str) -> Value {
        let (status, batch) = self.get(&format!("/v1/batches/{batch_id}")).await;
        assert_eq!(status, 200, "{batch}");
        batch["counts"].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhook_receipts_move_the_batch_counts_once_each() {
    let server = ProviderServer::start().await;
    let herald = spawn_app(|config| route_all_to(config, server.provider(Some(SECRET)))).await;
    let batch_id = herald.submit(&sms_batch(4)).await;
    herald
        .wait_finished(&batch_id, Duration::from_secs(10))
        .await;
    let ledger = herald.messages(&batch_id).await;
    let id = |i: usize| provider_id(&ledger, i);

    let body = json!([
        {"id": id(0), "status": "delivered", "code": "DELIVRD", "at": "2025-06-01T08:30:00Z"},
        {"id": id(1), "status": "delivered"},
        {"id": id(2), "status": "undelivered", "code": "invalid_recipient", "to": ledger[2]["to"]},
        {"id": "never-sent", "status": "delivered"}
    ])
    .to_string();
    let post = |body: String, signature: Option<String>| {
        let herald = &herald;
        async move {
            let headers: Vec<(&str, String)> = signature
                .map(|s| vec![("x-herald-signature", s)])
                .unwrap_or_default();
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let (status, _, answer) = herald
                .post_raw("/v1/receipts/hook", "application/json", &headers, body)
                .await;
            (status, answer)
        }
    };
    let (status, answer) = post(body.clone(), Some(signed(&body))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"received": 4, "applied": 3, "unchanged": 0, "held": 1, "ambiguous": 0})
    );
    let counts = herald.counts(&batch_id).await;
    assert_eq!(
        (
            &counts["sent"],
            &counts["delivered"],
            &counts["undelivered"],
            &counts["total"]
        ),
        (&json!(1), &json!(2), &json!(1), &json!(4)),
        "{counts}"
    );
    // The same receipts again change nothing.
    let (_, answer) = post(body.clone(), Some(signed(&body))).await;
    assert_eq!(answer["unchanged"], 3, "{answer}");
    assert_eq!(herald.counts(&batch_id).await, counts);

    let ledger = herald.messages(&batch_id).await;
    assert_eq!(ledger[0]["state"], "delivered");
    assert_eq!(ledger[0]["receipt_code"], "DELIVRD");
    assert_eq!(ledger[0]["receipt_at"], "2025-06-01T08:30:00Z");
    assert_eq!(ledger[2]["state"], "undelivered");
    // The receiver said the number cannot receive: it is suppressed.
    let (_, listed) = herald.get("/v1/suppressions?channel=sms").await;
    let suppressed: Vec<&str> = listed["suppressions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["address"].as_str())
        .collect();
    assert_eq!(suppressed, [ledger[2]["to"].as_str().unwrap()], "{listed}");

    // Refusals are JSON and say why.
    let (status, answer) = post(body.clone(), None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("unauthorized")),
        "{answer}"
    );
    let (status, answer) = post(body.clone(), Some(signed("something else"))).await;
    assert_eq!(status, 401, "{answer}");
    let bad = r#"[{"id":"x","status":"sent"}]"#.to_string();
    let (status, answer) = post(bad.clone(), Some(signed(&bad))).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["field"], "receipts[0].status", "{answer}");
    let (status, _, answer) = herald
        .post_raw("/v1/receipts/nobody", "application/json", &[], "[]")
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("nobody"),
        "{answer}"
    );
    let (status, _, answer) = herald
        .post_raw("/v1/receipts/log", "application/json", &[], "[]")
        .await;
    assert_eq!(status, 404, "{answer}");
}

/// A local Dysmsapi: `SendSms` answers one `BizId` per request (the first request
/// stalls past Herald's send timeout when `stall_first`), and `QuerySendDetails`
/// lists what was sent to a number, with its `OutId`, as Aliyun documents.
#[derive(Default)]
pub struct Dysmsapi {
    pub(crate) stall_first: bool,
    /// While set, every `SendSms` request stalls as the first one does.
    pub(crate) stall_all: std::sync::atomic::AtomicBool,
    /// Each `SendSms` request's numbers and `OutId`.
    pub(crate) sends: Mutex<Vec<(Vec<String>, String)>>,
    pub(crate) queries: Mutex<usize>,
}

async fn dysmsapi(State(server): State<Arc<Dysmsapi>>, body: String) -> String {
    let params: std::collections::HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    assert!(params.contains_key("Signature"), "unsigned: {params:?}");
    match params["Action"].as_str() {
        "SendSms" => {
            let n = {
                let mut sends = server.sends.lock().unwrap();
                sends.push((
                    params["PhoneNumbers"]
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                    params["OutId"].clone(),
                ));
                sends.len()
            };
            if (server.stall_first && n == 1)
                || server.stall_all.load(std::sync::atomic::Ordering::SeqCst)
            {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            crate::dysmsapi::sent(&format!("900619746936498{n}^0"))
        }
        "QuerySendDetails" => {
            *server.queries.lock().unwrap() += 1;
            let number = &params["PhoneNumber"];
            let sends = server.sends.lock().unwrap();
            let out_ids = sends
                .iter()
                .filter(|(numbers, _)| numbers.contains(number))
                .map(|(_, out_id)| out_id.as_str());
            crate::dysmsapi::send_details(number, out_ids)
        }
        other => panic!("unexpected action {other}"),
    }
}

/// Starts `server` on loopback; answers its endpoint URL.
pub(crate) async fn serve_dysmsapi(server: Arc<Dysmsapi>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/", post(dysmsapi)).with_state(server);
    tokio::spawn(async move { axum::serve(listener, app).await });
    endpoint
}

/// Starts `server` on loopback; answers the provider "ali" sending SMS through it.
pub async fn aliyun_provider(server: Arc<Dysmsapi>) -> ProviderConfig {
    let endpoint = serve_dysmsapi(server).await;
    let mut ali = ProviderConfig::log();
    ali.name = "ali".into();
    ali.kind = ProviderKind::Aliyun(AliyunConfig {
        access_key_id: "LTAI-e2e".into(),
        access_key_secret: Secret::new("e2e-secret"),
        sign_name: Some("Herald".into()),
        region_id: "cn-hangzhou".into(),
        endpoint,
    });
    ali.channels = vec![Channel::Sms];
    ali
}

/// A Herald sending SMS through `server` alone, with the template "hi".
async fn aliyun_herald(server: Arc<Dysmsapi>) -> TestApp {
    let ali = aliyun_provider(server).await;
    let herald = spawn_app(|config| {
        sms_through(config, ali);
        config.worker.send_timeout_ms = 300;
    })
    .await;
    store_hi(&herald).await;
    herald
}

/// Stores the template "hi", whose code at "ali" is `SMS_1`.
pub async fn store_hi(herald: &TestApp) {
    let (status, created) = herald
        .post(
            "/v1/templates",
            &json!({"id": "hi", "channel": "sms", "body": "Hi",
                    "providers": {"ali": {"code": "SMS_1"}}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_receipt_pushes_are_matched_by_biz_id_and_number_and_answered_as_aliyun_expects() {
    let server = Arc::new(Dysmsapi::default());
    let herald = aliyun_herald(server.clone()).await;
    let recipients: Vec<Value> = (0..3)
        .map(|i| json!({"to": format!("+86138{i:08}")}))
        .collect();
    let batch_id = herald
        .submit(&json!({"channel": "sms", "template_id": "hi", "recipients": recipients}))
        .await;
    herald
        .wait_finished(&batch_id, Duration::from_secs(10))
        .await;
    let ledger = herald.messages(&batch_id).await;
    let biz = |i: usize| provider_id(&ledger, i);
    // Aliyun's SmsReport push: numbers without +86, China time.
    let push = json!([
        {"phone_number": "13800000000", "send_time": "2025-06-01 16:30:00",
         "report_time": "2025-06-01 16:30:05", "success": true, "err_code": "DELIVERED",
         "err_msg": "用户接收成功", "sms_size": "1", "biz_id": biz(0), "out_id": batch_id},
        {"phone_number": "13800000001", "send_time": "2025-06-01 16:30:00",
         "report_time": "2025-06-01 16:30:06", "success": false, "err_code": "MK:0001",
         "err_msg": "失败", "sms_size": "1", "biz_id": biz(1), "out_id": batch_id}
    ])
    .to_string();
    for _ in 0..2 {
        let (status, _, answer) = herald
            .post_raw("/v1/receipts/ali", "application/json", &[], push.clone())
            .await;
        assert_eq!(status, 200);
        assert_eq!(answer, json!({"code": 0, "msg": "接收成功"}));
    }
    let counts = herald.counts(&batch_id).await;
    assert_eq!(
        (
            &counts["sent"],
            &counts["delivered"],
            &counts["undelivered"]
        ),
        (&json!(1), &json!(1), &json!(1)),
        "{counts}"
    );
    let ledger = herald.messages(&batch_id).await;
    assert_eq!(ledger[1]["receipt_code"], "MK:0001");
    assert_eq!(ledger[0]["receipt_at"], "2025-06-01T08:30:05Z");
    let (status, _, answer) = herald
        .post_raw(
            "/v1/receipts/ali",
            "application/json",
            &[],
            r#"[{"biz_id": 5}]"#,
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["field"], "[0].biz_id", "{answer}");
}

/// Sends the template "hi" to one number, whose first send `server` takes without
/// answering; checks that it ends sent, with one send and Aliyun asked about it.
/// Answers the batch id and the ledger.
async fn send_hi_once(herald: &TestApp, server: &Dysmsapi) -> (String, Vec<Value>) {
    let batch_id = herald
        .submit(&json!({"channel": "sms", "template_id": "hi",
                        "recipients": [{"to": "+8613800000000"}]}))
        .await;
    let batch = herald
        .wait_finished(&batch_id, Duration::from_secs(10))
        .await;
    assert_eq!(batch["counts"]["sent"], 1, "{batch}");
    assert_eq!(server.sends.lock().unwrap().len(), 1, "sent once");
    assert!(*server.queries.lock().unwrap() >= 1, "asked about");
    let ledger = herald.messages(&batch_id).await;
    (batch_id, ledger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_without_an_answer_is_asked_about_and_not_sent_twice() {
    let server = Arc::new(Dysmsapi {
        stall_first: true,
        ..Dysmsapi::default()
    });
    let herald = aliyun_herald(server.clone()).await;
    let (batch_id, ledger) = send_hi_once(&herald, &server).await;
    assert_eq!(ledger[0]["state"], "sent", "{}", ledger[0]);
    assert_eq!(
        ledger[0]["attempts"], 1,
        "asking is not an attempt: {}",
        ledger[0]
    );
    assert_eq!(
        server.sends.lock().unwrap()[0].1,
        batch_id,
        "OutId is the batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_without_an_answer_through_a_fallback_is_asked_of_the_fallback_and_not_sent_twice() {
    let first = ProviderServer::start().await;
    first.behave(|_, _| crate::helpers::Reply::status(503));
    let server = Arc::new(Dysmsapi {
        stall_first: true,
        ..Dysmsapi::default()
    });
    let ali = aliyun_provider(server.clone()).await;
    let herald = spawn_app(|config| {
        let mut hook = first.provider(None);
        hook.name = "first".into();
        hook.channels = vec![Channel::Sms];
        config.providers = vec![hook, ali];
        config
            .failover
            .insert(Channel::Sms, vec!["first".into(), "ali".into()]);
        config.worker.send_timeout_ms = 300;
        config.retry.base_delay_ms = 50;
        config.retry.max_attempts = 10;
        config.circuit.min_calls = 2;
        config.circuit.cooldown_ms = 1_000;
        config.circuit.max_cooldown_ms = 1_000;
    })
    .await;
    store_hi(&herald).await;
    // `first` fails twice and its circuit opens; the message goes through "ali",
    // which takes it but never answers. Before the next attempt, `first` (the
    // message's own provider, which cannot tell) and "ali" are asked: "ali" has it.
    let (_, ledger) = send_hi_once(&herald, &server).await;
    assert_eq!(ledger[0]["provider"], "ali", "{}", ledger[0]);
    assert!(
        first.count() >= 2,
        "`first` is tried until its circuit opens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_webhook_send_is_unknown_then_sent_again_with_the_same_key() {
    let server = ProviderServer::start().await;
    server.behave(|n, _| {
        let reply = crate::helpers::Reply::ok().body(&format!(r#"{{"id":"p-{n}"}}"#));
        if n == 0 {
            reply.delayed(Duration::from_secs(2))
        } else {
            reply
        }
    });
    let herald = spawn_app(|config| {
        route_all_to(config, server.provider(None));
        config.worker.send_timeout_ms = 300;
        // The unknown outcome lasts 1 to 2 s: long enough to be seen.
        config.retry.base_delay_ms = 2_000;
    })
    .await;
    let batch_id = herald.submit(&sms_batch(1)).await;
    let unknown = wait_for(
        Duration::from_secs(5),
        "the outcome to be unknown",
        || async {
            let counts = herald.counts(&batch_id).await;
            (counts["unknown"] == 1).then_some(counts)
        },
    )
    .await;
    assert_eq!(unknown["sending"], 0, "{unknown}");
    let batch = herald
        .wait_finished(&batch_id, Duration::from_secs(10))
        .await;
    assert_eq!(batch["counts"]["sent"], 1, "{batch}");
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].key, received[1].key, "one idempotency key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_status_callbacks_are_verified_and_only_final_statuses_count() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(Mutex::new(0usize));
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            post(|State(sent): State<Arc<Mutex<usize>>>| async move {
                let n = {
                    let mut sent = sent.lock().unwrap();
                    *sent += 1;
                    *sent
                };
                (
                    axum::http::StatusCode::CREATED,
                    json!({"sid": format!("SM{n:032}"), "status": "queued"}).to_string(),
                )
            }),
        )
        .with_state(sent);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let callback = "https://herald.example/v1/receipts/tw";
    let herald = spawn_app(|config| {
        let mut tw = ProviderConfig::log();
        tw.name = "tw".into();
        tw.kind = ProviderKind::Twilio(TwilioConfig {
            account_sid: "AC00000000000000000000000000000001".into(),
            auth_token: Some(Secret::new("twilio-token")),
            api_key_sid: None,
            api_key_secret: None,
            from: Some("+15005550006".into()),
            messaging_service_sid: None,
            base_url: Some(base_url),
            status_callback_url: Some(callback.into()),
            inbound_url: None,
        });
        tw.channels = vec![Channel::Sms];
        sms_through(config, tw);
    })
    .await;
    let batch_id = herald.submit(&sms_batch(2)).await;
    herald
        .wait_finished(&batch_id, Duration::from_secs(10))
        .await;
    let ledger = herald.messages(&batch_id).await;
    let callback_of = |i: usize, status: &str, error: Option<&str>| {
        let mut params = vec![
            (
                "AccountSid",
                "AC00000000000000000000000000000001".to_string(),
            ),
            (
                "MessageSid",
                ledger[i]["provider_message_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            ("MessageStatus", status.to_string()),
            ("To", ledger[i]["to"].as_str().unwrap().to_string()),
            ("ApiVersion", "2010-04-01".to_string()),
        ];
        if let Some(code) = error {
            params.push(("ErrorCode", code.to_string()));
        }
        twilio_signed(callback, params)
    };
    for (i, status, error) in [
        (0, "sent", None),
        (0, "delivered", None),
        (1, "undelivered", Some("30005")),
    ] {
        let (body, signature) = callback_of(i, status, error);
        let (code, _, answer) = herald
            .post_raw(
                "/v1/receipts/tw",
                "application/x-www-form-urlencoded",
                &[("x-twilio-signature", &signature)],
                body,
            )
            .await;
        assert_eq!(code, 204, "{answer}");
    }
    let counts = herald.counts(&batch_id).await;
    assert_eq!(
        (&counts["delivered"], &counts["undelivered"]),
        (&json!(1), &json!(1)),
        "{counts}"
    );
    // 30005, unknown destination handset: the number is suppressed.
    let (_, listed) = herald.get("/v1/suppressions?channel=sms").await;
    assert_eq!(
        listed["suppressions"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    let (body, _) = callback_of(0, "delivered", None);
    let (code, _, answer) = herald
        .post_raw(
            "/v1/receipts/tw",
            "application/x-www-form-urlencoded",
            &[("x-twilio-signature", "bm90IGEgc2lnbmF0dXJl")],
            body,
        )
        .await;
    assert_eq!(code, 401, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receiver_that_answers_without_an_id_names_messages_by_their_herald_id() {
    let server = ProviderServer::start().await;
    server.behave(|_, _| crate::helpers::Reply::ok().body("ok"));
    let herald = spawn_app(|config| route_all_to(config, server.provider(Some(SECRET)))).await;
    let batch_id = herald.submit(&sms_batch(1)).await;
    herald
        .wait_finished(&batch_id, Duration::from_secs(10))
        .await;
    let ledger = herald.messages(&batch_id).await;
    assert_eq!(ledger[0]["provider_message_id"], ledger[0]["id"]);
    let body = json!({"id": ledger[0]["id"], "status": "delivered"}).to_string();
    let (status, _, answer) = herald
        .post_raw(
            "/v1/receipts/hook",
            "application/json",
            &[("x-herald-signature", &signed(&body))],
            body,
        )
        .await;
    assert_eq!((status, &answer["applied"]), (200, &json!(1)), "{answer}");
    assert_eq!(herald.counts(&batch_id).await["delivered"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_receipt_before_the_send_is_recorded_suppresses_on_every_engine() {
    for name in ["sqlite", "postgres", "redis"] {
        let engine = crate::store::Engine::parse(name).unwrap();
        let scratch = engine.scratch("early").await.unwrap();
        let server = ProviderServer::start().await;
        // The receiver answers late, with an id it chose: its receipt comes first.
        server.behave(|_, json| {
            let to = json["to"].as_str().unwrap_or_default();
            Reply::ok()
                .body(&json!({"id": format!("early-{to}")}).to_string())
                .delayed(Duration::from_millis(500))
        });
        let herald = spawn_app(|config| {
            config.store = scratch.url().parse().unwrap();
            route_all_to(config, server.provider(Some(SECRET)));
        })
        .await;
        let batch = herald.submit(&sms_batch(1)).await;
        wait_for(Duration::from_secs(10), "the send to be made", || async {
            (server.count() > 0).then_some(())
        })
        .await;
        let to = server.received()[0].json["to"]
            .as_str()
            .unwrap()
            .to_string();
        let body = json!([{"id": format!("early-{to}"), "status": "undelivered",
                           "code": "invalid_recipient"}])
        .to_string();
        let (status, _, answer) = herald
            .post_raw(
                "/v1/receipts/hook",
                "application/json",
                &[("x-herald-signature", signed(&body).as_str())],
                body.clone(),
            )
            .await;
        assert_eq!(
            (status, &answer["held"]),
            (200, &json!(1)),
            "{name}: {answer}"
        );
        herald.wait_finished(&batch, Duration::from_secs(10)).await;
        let counts = herald.counts(&batch).await;
        assert_eq!(counts["undelivered"], 1, "{name}: {counts}");
        // The held receipt, applied as the send was recorded, suppressed the number.
        let listed = wait_for(Duration::from_secs(10), "the suppression", || async {
            let (_, listed) = herald.get("/v1/suppressions?channel=sms").await;
            (listed["suppressions"].as_array()?.len() == 1).then_some(listed)
        })
        .await;
        assert_eq!(listed["suppressions"][0]["address"], to, "{name}: {listed}");
        assert_eq!(
            listed["suppressions"][0]["reason"], "hook: undelivered (invalid_recipient)",
            "{name}: {listed}"
        );
        let (status, report) = herald
            .post(
                "/v1/batches",
                &json!({"channel": "sms", "template": {"body": "again"},
                        "recipients": [{"to": "+8613912345678"}, {"to": to}]}),
            )
            .await;
        assert_eq!(status, 202, "{name}: {report}");
        assert_eq!(
            (
                &report["rejected"][0]["index"],
                &report["rejected"][0]["reason"]
            ),
            (&json!(1), &json!("suppressed")),
            "{name}: {report}"
        );
    }
}
