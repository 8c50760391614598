//! Replies, end to end: each provider's inbound request POSTed to
//! `/v1/inbound/{name}` in its own documented format — signed, badly signed and
//! posted twice — then the replies ledger, the suppression list, the messages an
//! opt-out cancels and the auto-reply it gets.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

use crate::helpers::{
    ProviderServer, TestApp, rfc3339_from_now, route_all_to, spawn_app, twilio_signed, wait_for,
};
use herald::domain::{Channel, Secret};
use herald::provider::{AliyunConfig, ProviderConfig, ProviderKind, TencentConfig, TwilioConfig};

pub(crate) const SECRET: &str = "inbound-secret";

/// `body`'s signature by the webhook provider's secret [`SECRET`], as its
/// receiver signs a request.
pub(crate) fn signed(body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl TestApp {
    /// Every reply in the ledger, oldest first.
    async fn replies(&self, query: &str) -> Vec<Value> {
        let (status, page) = self.get(&format!("/v1/replies?limit=1000{query}")).await;
        assert_eq!(status, 200, "{page}");
        page["replies"].as_array().unwrap().clone()
    }

    /// The SMS suppression list as (address, reason) pairs.
    async fn sms_suppressions(&self) -> Vec<(String, String)> {
        let (status, listed) = self.get("/v1/suppressions?channel=sms").await;
        assert_eq!(status, 200, "{listed}");
        listed["suppressions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["address"].as_str().unwrap().to_owned(),
                    s["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// POSTs a webhook reply body signed with `signature`.
    pub(crate) async fn webhook_reply(&self, body: &str, signature: &str) -> (u16, Value) {
        let (status, _, answer) = self
            .post_raw(
                "/v1/inbound/hook",
                "application/json",
                &[("x-herald-signature", signature)],
                body.to_owned(),
            )
            .await;
        (status, answer)
    }
}

/// An SMS provider of `kind` named `name` that sends nothing in these tests.
fn provider(name: &str, kind: ProviderKind) -> ProviderConfig {
    let mut p = ProviderConfig::log();
    p.name = name.into();
    p.kind = kind;
    p.channels = vec![Channel::Sms];
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_replies_are_stored_once_linked_to_the_message_they_answer_and_stop_suppresses() {
    let server = ProviderServer::start().await;
    let herald = spawn_app(|config| route_all_to(config, server.provider(Some(SECRET)))).await;
    let batch_id = herald
        .submit(&json!({"channel": "sms", "template": {"body": "Your order shipped"},
            "recipients": [{"to": "+8613800000000", "ref": "order-17"}, {"to": "+15005550006", "ref": "order-18"}]}))
        .await;
    herald
        .wait_finished(&batch_id, Duration::from_secs(10))
        .await;

    let thanks = r#"{"id":"in-1","from":"+8613800000000","to":"+15550001111","body":"Thanks!","at":"2025-06-01T08:30:00Z"}"#;
    let (status, answer) = herald.webhook_reply(thanks, &signed(thanks)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"received": 1, "recorded": 1, "repeated": 0}));
    // Posted again: stored once.
    let (status, answer) = herald.webhook_reply(thanks, &signed(thanks)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"received": 1, "recorded": 0, "repeated": 1}));
    // Badly signed, or not signed: refused, nothing stored.
    let forged = thanks.replace("in-1", "in-2");
    let (status, answer) = herald.webhook_reply(&forged, &signed(thanks)).await;
    assert_eq!(
        (status, &answer["error"]),
        (401, &json!("unauthorized")),
        "{answer}"
    );
    let (status, _, _) = herald
        .post_raw("/v1/inbound/hook", "application/json", &[], forged.clone())
        .await;
    assert_eq!(status, 401);

    let stop = r#"[{"id":"in-3","from":"+15005550006","body":" Stop. "}]"#;
    let (status, answer) = herald.webhook_reply(stop, &signed(stop)).await;
    assert_eq!(status, 200, "{answer}");

    let replies = herald.replies("").await;
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0]["body"], "Thanks!");
    assert_eq!(replies[0]["keyword"], Value::Null);
    assert_eq!(replies[0]["sent_at"], "2025-06-01T08:30:00Z");
    assert_eq!(replies[0]["answers"]["batch_id"], json!(batch_id));
    assert_eq!(
        replies[0]["answers"]["message_id"],
        json!(format!("{batch_id}-0"))
    );
    assert_eq!(replies[0]["answers"]["ref"], "order-17");
    assert_eq!(replies[1]["keyword"], "opt_out");
    assert_eq!(replies[1]["answers"]["ref"], "order-18");
    let stop_id = replies[1]["id"].as_str().unwrap();
    assert_eq!(
        herald.sms_suppressions().await,
        [(
            "+15005550006".to_owned(),
            format!("replied STOP (reply {stop_id})")
        )]
    );
    // Paging and the sender filter.
    let (_, page) = herald.get("/v1/replies?limit=1").await;
    let next = page["next_after"]
        .as_i64()
        .expect("a full page names the next");
    let rest = herald.replies(&format!("&after={next}")).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["id"], replies[1]["id"]);
    let from = herald.replies("&from=%2B8613800000000").await;
    assert_eq!(from.len(), 1);
    assert_eq!(from[0]["id"], replies[0]["id"]);
    // A malformed reply names its field.
    let bad = r#"[{"id":"in-4","from":"5550006","body":"x"}]"#;
    let (status, answer) = herald.webhook_reply(bad, &signed(bad)).await;
    assert_eq!(
        (status, &answer["field"]),
        (400, &json!("replies[0].from")),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_cancels_the_messages_still_queued_to_the_number_and_gets_its_auto_reply_once() {
    let server = ProviderServer::start().await;
    let herald = spawn_app(|config| {
        route_all_to(config, server.provider(Some(SECRET)));
        config.replies.sms.opt_out_reply = Some("You will get no more messages.".into());
    })
    .await;
    // Due in a while: still queued when the STOP comes.
    let batch_id = herald
        .submit(
            &json!({"channel": "sms", "template": {"body": "Sale!"}, "send_at": rfc3339_from_now(1500),
            "recipients": [{"to": "+15005550006"}, {"to": "+15005550007"}]}),
        )
        .await;
    let stop = r#"{"id":"in-1","from":"+15005550006","body":"STOP"}"#;
    for _ in 0..2 {
        let (status, answer) = herald.webhook_reply(stop, &signed(stop)).await;
        assert_eq!(status, 200, "{answer}");
    }
    herald
        .wait_finished(&batch_id, Duration::from_secs(10))
        .await;
    let ledger = herald.messages(&batch_id).await;
    assert_eq!(ledger[0]["state"], "cancelled", "{ledger:?}");
    assert!(
        ledger[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("suppressed: replied STOP (reply r"),
        "{ledger:?}"
    );
    assert_eq!(ledger[1]["state"], "sent", "{ledger:?}");
    // The auto-reply goes to the number that opted out, once for the reply posted twice.
    let auto = wait_for(Duration::from_secs(10), "the auto-reply", || async {
        let sent = server.sent();
        sent.iter()
            .any(|(to, body)| to == "+15005550006" && body == "You will get no more messages.")
            .then_some(sent)
    })
    .await;
    assert_eq!(
        auto,
        [
            (
                "+15005550006".to_owned(),
                "You will get no more messages.".to_owned()
            ),
            ("+15005550007".to_owned(), "Sale!".to_owned()),
        ]
    );
    assert_eq!(herald.batches_of("auto-reply").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_incoming_messages_are_checked_by_signature_and_stored_once() {
    let inbound_url = "https://herald.example/v1/inbound/tw";
    let herald = spawn_app(|config| {
        config.providers = vec![provider(
            "tw",
            ProviderKind::Twilio(TwilioConfig {
                account_sid: "AC00000000000000000000000000000001".into(),
                auth_token: Some(Secret::new("twilio-token")),
                api_key_sid: None,
                api_key_secret: None,
                from: Some("+15005550001".into()),
                messaging_service_sid: None,
                base_url: Some("http://127.0.0.1:9".into()),
                status_callback_url: None,
                inbound_url: Some(inbound_url.into()),
            }),
        )];
    })
    .await;
    // Twilio's incoming-message parameters, signed as Twilio signs them.
    let incoming = |sid: &str, body: &str| {
        let params = [
            ("AccountSid", "AC00000000000000000000000000000001"),
            ("ApiVersion", "2010-04-01"),
            ("Body", body),
            ("From", "+14155550123"),
            ("MessageSid", sid),
            ("NumMedia", "0"),
            ("SmsMessageSid", sid),
            ("To", "+15005550001"),
        ];
        twilio_signed(
            inbound_url,
            params.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        )
    };
    let post = |body: String, signature: String| {
        let herald = &herald;
        async move {
            let (status, headers, _) = herald
                .post_raw(
                    "/v1/inbound/tw",
                    "application/x-www-form-urlencoded",
                    &[("x-twilio-signature", &signature)],
                    body,
                )
                .await;
            (status, headers)
        }
    };
    let (body, signature) = incoming("SM1", "ＳＴＯＰ");
    for _ in 0..2 {
        let (status, headers) = post(body.clone(), signature.clone()).await;
        assert_eq!(status, 200);
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/xml")
        );
    }
    let (other, _) = incoming("SM2", "hello");
    let (status, _) = post(other, signature).await;
    assert_eq!(status, 401, "a signature of another body");
    let replies = herald.replies("").await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(
        (
            &replies[0]["from"],
            &replies[0]["to"],
            &replies[0]["keyword"]
        ),
        (
            &json!("+14155550123"),
            &json!("+15005550001"),
            &json!("opt_out")
        )
    );
    assert_eq!(herald.sms_suppressions().await.len(), 1);
    let (body, signature) = incoming("SM3", "start");
    assert_eq!(post(body, signature).await.0, 200);
    assert_eq!(herald.sms_suppressions().await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_and_tencent_replies_are_read_in_their_formats_and_answered_as_they_expect() {
    let herald = spawn_app(|config| {
        config.providers = vec![
            provider(
                "ali",
                ProviderKind::Aliyun(AliyunConfig {
                    access_key_id: "LTAI-e2e".into(),
                    access_key_secret: Secret::new("e2e-secret"),
                    sign_name: Some("Herald".into()),
                    region_id: "cn-hangzhou".into(),
                    endpoint: "http://127.0.0.1:9".into(),
                }),
            ),
            provider(
                "tc",
                ProviderKind::Tencent(TencentConfig {
                    secret_id: "AKID-e2e".into(),
                    secret_key: Secret::new("e2e-secret"),
                    sdk_app_id: "1400006666".into(),
                    sign_name: Some("Herald".into()),
                    region: "ap-guangzhou".into(),
                    endpoint: "http://127.0.0.1:9".into(),
                }),
            ),
        ];
    })
    .await;
    let uplink = r#"[{"phone_number":"13800138000","send_time":"2025-06-01 16:30:00","content":"TD",
        "sign_name":"Herald","dest_code":"1234","sequence_id":1234567890}]"#;
    for _ in 0..2 {
        let (status, _, answer) = herald
            .post_raw("/v1/inbound/ali", "application/json", &[], uplink)
            .await;
        assert_eq!(
            (status, answer),
            (200, json!({"code": 0, "msg": "接收成功"}))
        );
    }
    let reply = r#"{"extend":"","mobile":"13900139000","nationcode":"86","sign":"Herald",
        "text":"退订。","time":1748766600}"#;
    for _ in 0..2 {
        let (status, _, answer) = herald
            .post_raw("/v1/inbound/tc", "application/json", &[], reply)
            .await;
        assert_eq!(
            (status, answer),
            (200, json!({"result": 0, "errmsg": "OK"}))
        );
    }
    let (status, _, answer) = herald
        .post_raw("/v1/inbound/tc", "application/json", &[], r#"{"text":"x"}"#)
        .await;
    assert_eq!(status, 400, "{answer}");

    let replies = herald.replies("").await;
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(
        (
            &replies[0]["provider"],
            &replies[0]["from"],
            &replies[0]["to"],
            &replies[0]["sent_at"]
        ),
        (
            &json!("ali"),
            &json!("+8613800138000"),
            &json!("1234"),
            &json!("2025-06-01T08:30:00Z")
        )
    );
    assert_eq!(
        (
            &replies[1]["provider"],
            &replies[1]["from"],
            &replies[1]["keyword"]
        ),
        (&json!("tc"), &json!("+8613900139000"), &json!("opt_out"))
    );
    let suppressed: Vec<String> = herald
        .sms_suppressions()
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(suppressed, ["+8613800138000", "+8613900139000"]);
    // Providers that take no replies are a 404, as for receipts.
    let (status, _, answer) = herald
        .post_raw("/v1/inbound/log", "application/json", &[], "[]")
        .await;
    assert_eq!(status, 404, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_and_the_cancel_of_an_opt_out_are_posted_to_the_application_as_events() {
    let provider = ProviderServer::start().await;
    let receiver = ProviderServer::start().await;
    let herald = spawn_app(|config| {
        route_all_to(config, provider.provider(Some(SECRET)));
        config.webhooks = vec![herald::config::WebhookConfig {
            name: "app".into(),
            url: herald::domain::HttpUrl::parse(&receiver.url).expect("a URL"),
            secret: herald::domain::SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .expect("a secret"),
            events: herald::queue::Kinds::all(),
            channels: None,
            sources: None,
        }];
    })
    .await;
    let sent = herald
        .submit(
            &json!({"channel": "sms", "template": {"body": "Your order shipped"},
            "recipients": [{"to": "+15005550006", "ref": "order-17"}]}),
        )
        .await;
    herald.wait_finished(&sent, Duration::from_secs(10)).await;
    let queued = herald
        .submit(&json!({"channel": "sms", "template": {"body": "Sale!"}, "send_at": rfc3339_from_now(1500),
            "recipients": [{"to": "+15005550006", "ref": "promo-1"}]}))
        .await;
    let stop = r#"{"id":"in-1","from":"+15005550006","body":"stop"}"#;
    for _ in 0..2 {
        let (status, answer) = herald.webhook_reply(stop, &signed(stop)).await;
        assert_eq!(status, 200, "{answer}");
    }
    herald.wait_finished(&queued, Duration::from_secs(10)).await;
    let events = wait_for(
        Duration::from_secs(10),
        "the reply and cancel events",
        || async {
            let events: Vec<Value> = receiver
                .received()
                .iter()
                .flat_map(|r| r.json.as_array().cloned().unwrap_or_default())
                .collect();
            let has = |kind: &str| events.iter().any(|e| e["type"] == kind);
            (has("reply") && has("message.cancelled")).then_some(events)
        },
    )
    .await;
    let replies: Vec<&Value> = events.iter().filter(|e| e["type"] == "reply").collect();
    assert_eq!(
        replies.len(),
        1,
        "posted once for a reply posted twice: {events:?}"
    );
    let reply = replies[0];
    assert!(
        reply["id"].as_str().unwrap().starts_with("reply.r"),
        "{reply}"
    );
    assert_eq!(reply["batch_id"], json!(sent), "{reply}");
    assert_eq!(reply["data"]["body"], "stop", "{reply}");
    assert_eq!(reply["data"]["keyword"], "opt_out", "{reply}");
    assert_eq!(reply["data"]["answers"]["ref"], "order-17", "{reply}");
    let cancel = events
        .iter()
        .find(|e| e["type"] == "message.cancelled")
        .unwrap();
    assert_eq!(cancel["batch_id"], json!(queued), "{cancel}");
    assert_eq!(cancel["ref"], "promo-1", "{cancel}");
    assert!(
        cancel["code"]
            .as_str()
            .unwrap()
            .starts_with("suppressed: replied STOP (reply r"),
        "{cancel}"
    );
}
