//! The pre-flight report: every recipient checked before anything is stored,
//! rejections grouped by reason, duplicates pointing at their first occurrence, and
//! dry runs that report without storing.

use serde_json::{Value, json};

use std::time::Duration;

use crate::helpers::{ProviderServer, TestApp, route_all_to, spawn_app, wait_for};

const FINISH: Duration = Duration::from_secs(10);

async fn app() -> TestApp {
    spawn_app(|config| config.worker.enabled = false).await
}

fn recipients(tos: &[&str]) -> Value {
    tos.iter()
        .map(|to| json!({"to": to, "vars": {"name": "Li"}}))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_recipient_is_rejected_as_a_duplicate_of_its_first_occurrence() {
    let app = app().await;
    let batch = json!({
        "channel": "sms",
        "template": {"body": "Hi {{ name }}"},
        "recipients": recipients(&[
            "+8613800000001",
            "+8613800000002",
            "+86 138 0000 0001",
            "12ab",
            "+8613800000002",
        ]),
    });
    let (status, report) = app.post("/v1/batches", &batch).await;
    assert_eq!(status, 202, "{report}");
    assert_eq!(report["accepted"], 2, "{report}");
    let rejected = report["rejected"].as_array().unwrap();
    let duplicates: Vec<(u64, u64)> = rejected
        .iter()
        .filter(|r| r["reason"] == "duplicate")
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["first_index"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(duplicates, [(2, 0), (4, 1)], "{report}");
    assert_eq!(
        report["rejections"],
        json!({
            "duplicate": {"count": 2, "indices": [2, 4]},
            "invalid_address": {"count": 1, "indices": [3]},
        }),
        "{report}"
    );
    let id = report["batch_id"].as_str().unwrap();
    let (_, batch) = app.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(batch["counts"]["total"], 2, "{batch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_like_a_submit_and_stores_nothing() {
    let app = app().await;
    let batch = json!({
        "channel": "sms",
        "template": {"body": "Hi {{ name }}"},
        "recipients": recipients(&["+8613800000001", "+8613800000001", "bad"]),
    });
    let (status, dry) = app.post("/v1/batches?dry_run=true", &batch).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert!(
        dry.get("batch_id").is_none(),
        "a dry run names no batch: {dry}"
    );
    let (status, real) = app.post("/v1/batches", &batch).await;
    assert_eq!(status, 202, "{real}");
    assert!(real.get("dry_run").is_none(), "{real}");
    for field in ["accepted", "rejected", "rejections"] {
        assert_eq!(dry[field], real[field], "{field}");
    }
    // Only the real submit was stored.
    assert_eq!(app.stored().await, (1, 1));

    let (status, refused) = app.post("/v1/batches?dry_run=maybe", &batch).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["field"], "dry_run", "{refused}");
}

/// Herald with Chinese numbers without a country code, prices and rates on the
/// log provider, and no workers (nothing is sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_previews_its_first_five_messages_as_sent_and_a_submit_does_not() {
    let app = app().await;
    let names = ["Li", "王", "Wang", "Zhao", "Qian", "Sun", "Zhou"];
    let batch = json!({
        "channel": "sms",
        "template": {"body": "Hi {{ name }}, {{ note }}"},
        "recipients": names.iter().enumerate().map(|(i, name)| {
            // The first lacks `note`: the preview lists accepted messages only.
            let vars = if i == 0 { json!({"name": name}) } else { json!({"name": name, "note": "x".repeat(160)}) };
            json!({"to": format!("+86138000000{i:02}"), "vars": vars})
        }).collect::<Vec<_>>(),
    });
    let (status, dry) = app.post("/v1/batches?dry_run=true", &batch).await;
    assert_eq!(status, 200, "{dry}");
    let preview = dry["preview"].as_array().expect("a preview");
    assert_eq!(preview.len(), 5, "{dry}");
    let indices: Vec<u64> = preview
        .iter()
        .map(|m| m["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [1, 2, 3, 4, 5]);
    assert_eq!(preview[0]["to"], "+8613800000001");
    assert_eq!(preview[0]["body"], format!("Hi 王, {}", "x".repeat(160)));
    assert_eq!(preview[0]["encoding"], "ucs2");
    assert_eq!(preview[0]["segments"], 3);
    assert_eq!(preview[1]["encoding"], "gsm7");
    assert_eq!(preview[1]["segments"], 2);
    assert!(preview[0].get("subject").is_none(), "{dry}");

    let (status, real) = app.post("/v1/batches", &batch).await;
    assert_eq!(status, 202, "{real}");
    assert!(
        real.get("preview").is_none(),
        "a stored batch's report keeps no bodies: {real}"
    );
}

async fn priced_app() -> TestApp {
    spawn_app(|config| {
        config.worker.enabled = false;
        config.recipients.default_region = Some("CN".parse().unwrap());
        let mut log = herald::provider::ProviderConfig::log();
        log.rate_per_sec = Some(100.0);
        log.segments_per_sec = Some(2.0);
        log.price_per_message = Some(0.01);
        log.price_per_segment = Some(0.04);
        log.currency = Some("CNY".into());
        config.providers = vec![log];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_segments_by_encoding_and_estimates_cost_and_time() {
    let app = priced_app().await;
    let long_latin = "x".repeat(200); // 2 GSM-7 segments
    let batch = json!({
        "channel": "sms",
        "template": {"body": "{{ text }}"},
        "recipients": [
            {"to": "13800138000", "vars": {"text": "Hello"}},
            {"to": "138 0013 8001", "vars": {"text": long_latin}},
            {"to": "+86 138-0013-8002", "vars": {"text": "您的验证码是1234"}},
            {"to": "+8613800138000", "vars": {"text": "again"}},
        ],
    });
    let (status, report) = app.post("/v1/batches?dry_run=true", &batch).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], 3, "{report}");
    // The fourth is the first written another way.
    assert_eq!(report["rejected"][0]["reason"], "duplicate", "{report}");
    assert_eq!(report["rejected"][0]["first_index"], 0, "{report}");
    assert_eq!(
        report["sms"],
        json!({
            "segments": 4,
            "gsm7": {"messages": 2, "segments": 3},
            "ucs2": {"messages": 1, "segments": 1},
        }),
        "{report}"
    );
    // 3 messages × 0.01 + 4 segments × 0.04.
    assert_eq!(report["cost"], json!({"amount": 0.19, "currency": "CNY"}));
    // 3 messages at 100/s take 0.03 s, but 4 segments at 2/s take 2 s.
    assert_eq!(report["eta_seconds"], 2.0, "{report}");
    assert_eq!(report["provider"], "log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eta_counts_the_messages_already_queued_on_the_provider() {
    let app = priced_app().await;
    let batch = json!({
        "channel": "sms",
        "template": {"body": "{{ text }}"},
        "recipients": [
            {"to": "13800138000", "vars": {"text": "Hello"}},
            {"to": "13800138001", "vars": {"text": "x".repeat(200)}},
            {"to": "13800138002", "vars": {"text": "您的验证码是1234"}},
        ],
    });
    let (_, first) = app.post("/v1/batches?dry_run=true", &batch).await;
    // 4 segments at 2 a second, with nothing queued.
    assert_eq!(first["eta_seconds"], 2.0, "{first}");
    let (status, stored) = app.post("/v1/batches", &batch).await;
    assert_eq!(status, 202, "{stored}");
    assert_eq!(stored["eta_seconds"], 2.0, "{stored}");
    // The stored batch's 3 messages wait ahead (the workers are off), taken at
    // this batch's segments per message: 8 segments at 2 a second.
    let (_, behind) = app.post("/v1/batches?dry_run=true", &batch).await;
    assert_eq!(behind["eta_seconds"], 4.0, "{behind}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_are_stored_in_e164_and_mailboxes_keep_their_names() {
    let app = priced_app().await;
    let (_, report) = app
        .post(
            "/v1/batches",
            &json!({
                "channel": "sms",
                "template": {"body": "hi"},
                "recipients": [{"to": "138 0013 8000"}, {"to": "+86 123"}],
            }),
        )
        .await;
    let id = report["batch_id"].as_str().unwrap();
    let messages = app.messages(id).await;
    assert_eq!(messages[0]["to"], "+8613800138000");
    assert_eq!(
        report["rejected"][0]["reason"], "invalid_address",
        "{report}"
    );

    let (status, report) = app
        .post(
            "/v1/batches",
            &json!({
                "channel": "email",
                "template": {"subject": "Hi", "body": "hi"},
                "recipients": [
                    {"to": "Li Wei <li@Example.COM>"},
                    {"to": "li@example.com"},
                    {"to": "ops@localhost"},
                    {"to": "x@y.com\r\nBcc: all@y.com"},
                ],
            }),
        )
        .await;
    assert_eq!(status, 202, "{report}");
    let reasons: Vec<&str> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["duplicate", "invalid_address", "invalid_address"]);
    let id = report["batch_id"].as_str().unwrap();
    assert_eq!(app.messages(id).await[0]["to"], "Li Wei <li@example.com>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_template_serves_batches_and_the_seed_request() {
    let server = ProviderServer::start().await;
    let app = spawn_app(|config| {
        config.recipients.default_region = Some("CN".parse().unwrap());
        route_all_to(config, server.provider(None));
    })
    .await;
    let template = json!({
        "id": "shipped",
        "channel": "sms",
        "body": "{{ name | default('Customer') }}: {{ content }}",
        "providers": {
            "aliyun": {"code": "SMS_123", "sign_name": "Shop"},
            "hook": {"code": "H_7"},
        },
    });
    let (status, created) = app.post("/v1/templates", &template).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["version"], 1);
    assert_eq!(created["providers"]["aliyun"]["code"], "SMS_123");
    let (status, again) = app.post("/v1/templates", &template).await;
    assert_eq!(status, 409, "{again}");

    let (status, report) = app
        .post(
            "/v1/batches",
            &json!({
                "channel": "sms",
                "template_id": "shipped",
                "recipients": [
                    {"to": "13800138000", "vars": {"name": "Li", "content": "on its way"}},
                    {"to": "13800138001", "vars": {"name": "Wang"}},
                ],
            }),
        )
        .await;
    assert_eq!(status, 202, "{report}");
    assert_eq!(report["rejected"][0]["variable"], "content", "{report}");
    app.wait_finished(report["batch_id"].as_str().unwrap(), FINISH)
        .await;

    // The seed's request names the stored template; its content fills `content`.
    let (status, _, seed) = app
        .post_raw(
            "/send-sms",
            "application/x-www-form-urlencoded",
            &[],
            "template_id=shipped&mobiles%5B%5D=13800138002&content=shipped+today",
        )
        .await;
    assert_eq!(status, 202, "{seed}");
    app.wait_finished(seed["batch_id"].as_str().unwrap(), FINISH)
        .await;
    let bodies = server.sent();
    assert_eq!(
        bodies,
        [
            ("+8613800138000".to_string(), "Li: on its way".to_string()),
            (
                "+8613800138002".to_string(),
                "Customer: shipped today".to_string()
            ),
        ]
    );
    // Providers that render the template themselves get its code and the vars.
    let received = server.received();
    assert_eq!(received[0].json["template"], json!({"code": "H_7"}));
    assert_eq!(
        received[0].json["vars"],
        json!({"name": "Li", "content": "on its way"})
    );
    assert_eq!(received[1].json["template"], json!({"code": "H_7"}));
    assert_eq!(received[1].json["vars"]["content"], "shipped today");

    let (status, replaced) = app
        .call(
            reqwest::Method::PUT,
            "/v1/templates/shipped",
            &json!({"channel": "sms", "body": "{{ content }}"}),
        )
        .await;
    assert_eq!(
        (status, &replaced["version"]),
        (200, &json!(2)),
        "{replaced}"
    );
    let (status, bad) = app
        .post(
            "/v1/templates",
            &json!({"id": "broken", "channel": "sms", "body": "{{ name"}),
        )
        .await;
    assert_eq!((status, &bad["field"]), (422, &json!("body")), "{bad}");
    let (status, wrong) = app
        .post(
            "/v1/batches",
            &json!({"channel": "email", "template_id": "shipped", "recipients": [{"to": "a@b.com"}]}),
        )
        .await;
    assert_eq!(
        (status, &wrong["field"]),
        (422, &json!("template_id")),
        "{wrong}"
    );
    let (status, _) = app
        .call(reqwest::Method::DELETE, "/v1/templates/shipped", &json!({}))
        .await;
    assert_eq!(status, 204);
    let (status, missing) = app.get("/v1/templates/shipped").await;
    assert_eq!(status, 404, "{missing}");
    let (status, unknown) = app
        .post(
            "/v1/batches",
            &json!({"channel": "sms", "template_id": "shipped", "recipients": [{"to": "13800138000"}]}),
        )
        .await;
    assert_eq!(
        (status, &unknown["field"]),
        (422, &json!("template_id")),
        "{unknown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressed_recipients_are_rejected_until_removed() {
    let app = priced_app().await;
    let (status, added) = app
        .post(
            "/v1/suppressions",
            &json!({"channel": "sms", "reason": "opted out", "addresses": ["138 0013 8000", "nope"]}),
        )
        .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["added"], 1, "{added}");
    assert_eq!(added["invalid"][0]["index"], 1, "{added}");

    // A CSV import, with a header, a BOM and a per-line reason.
    let csv = "\u{feff}address,reason\n+8613800138001,complaint\n\nbad-number\n";
    let (status, _, imported) = app
        .post_raw("/v1/suppressions?channel=sms", "text/csv", &[], csv)
        .await;
    assert_eq!(status, 200, "{imported}");
    assert_eq!(imported["added"], 1, "{imported}");
    assert_eq!(imported["invalid"][0]["line"], 4, "{imported}");

    // A GBK file, as Excel on Chinese Windows saves it, named by its charset.
    let (gbk, _, _) = encoding_rs::GBK.encode("+8613800138009,投诉\n");
    let (status, _, imported) = app
        .post_raw(
            "/v1/suppressions?channel=sms",
            "text/csv; charset=gbk",
            &[],
            gbk.into_owned(),
        )
        .await;
    assert_eq!((status, &imported["added"]), (200, &json!(1)), "{imported}");

    let (_, page) = app.get("/v1/suppressions?channel=sms").await;
    let listed: Vec<(&str, &str)> = page["suppressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["address"].as_str().unwrap(),
                s["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("+8613800138000", "opted out"),
            ("+8613800138001", "complaint"),
            ("+8613800138009", "投诉")
        ]
    );

    let batch = json!({
        "channel": "sms",
        "template": {"body": "hi"},
        "recipients": [{"to": "13800138000"}, {"to": "13800138002"}],
    });
    let (_, report) = app.post("/v1/batches", &batch).await;
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(report["rejected"][0]["reason"], "suppressed", "{report}");
    assert_eq!(report["rejected"][0]["index"], 0, "{report}");

    let (status, removed) = app
        .call(
            reqwest::Method::DELETE,
            "/v1/suppressions",
            &json!({"channel": "sms", "addresses": ["+8613800138000"]}),
        )
        .await;
    assert_eq!((status, &removed["removed"]), (200, &json!(1)), "{removed}");
    let (_, report) = app.post("/v1/batches", &batch).await;
    assert_eq!(report["accepted"], 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_can_refuse_recipients_sent_the_same_message_recently() {
    let app = spawn_app(|config| {
        config.worker.enabled = false;
        config.recipients.default_region = Some("CN".parse().unwrap());
        config.recipients.recent_window_secs = 3600;
    })
    .await;
    let batch = |body: &str, flag: bool| {
        json!({
            "channel": "sms",
            "template": {"body": body},
            "recipients": [{"to": "13800138000"}, {"to": "13800138001"}],
            "reject_recent_duplicates": flag,
        })
    };
    // The two of the first batch, and one more.
    let mut wider = batch("Sale today", true);
    wider["recipients"]
        .as_array_mut()
        .unwrap()
        .push(json!({"to": "13800138002"}));
    let (status, first) = app.post("/v1/batches", &batch("Sale today", false)).await;
    assert_eq!(status, 202, "{first}");
    // What a batch sends is remembered just after its answer.
    let second = wait_for(
        FINISH,
        "the first batch's sends to count as recent",
        || async {
            let (_, report) = app.post("/v1/batches?dry_run=true", &wider).await;
            (report["rejections"]["recent_duplicate"]["count"] == 2).then_some(report)
        },
    )
    .await;
    assert_eq!(
        second["rejections"]["recent_duplicate"]["indices"],
        json!([0, 1])
    );
    assert_eq!(
        second["accepted"], 1,
        "the third recipient is new: {second}"
    );

    // Without the flag, or with other content, nothing is refused.
    let (_, again) = app.post("/v1/batches", &batch("Sale today", false)).await;
    assert_eq!(again["accepted"], 2, "{again}");
    let (_, other) = app.post("/v1/batches", &batch("Sale tomorrow", true)).await;
    assert_eq!(other["accepted"], 2, "{other}");

    // With the window off, asking for the check is an error that says what to set.
    let off = spawn_app(|config| {
        config.worker.enabled = false;
        config.recipients.default_region = Some("CN".parse().unwrap());
        config.recipients.recent_window_secs = 0;
    })
    .await;
    let (status, refused) = off.post("/v1/batches", &batch("x", true)).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["field"], "reject_recent_duplicates", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_the_recipients_at_a_per_recipient_cap_now() {
    let server = ProviderServer::start().await;
    let app = spawn_app(|config| {
        let mut provider = server.provider(None);
        provider.per_recipient.per_day = Some(1);
        route_all_to(config, provider);
    })
    .await;
    let sent = json!({"channel": "sms", "template": {"body": "Hi {{ name }}"},
        "recipients": recipients(&["+8613800000001"])});
    let id = app.submit(&sent).await;
    app.wait_finished(&id, FINISH).await;

    let again = json!({"channel": "sms", "template": {"body": "Hi again {{ name }}"},
        "recipients": recipients(&["+8613800000001", "+8613800000002"])});
    let (status, report) = app.post("/v1/batches?dry_run=true", &again).await;

    assert_eq!(status, 200, "{report}");
    assert_eq!(report["held_by_recipient_caps"], 1, "{report}");
}
