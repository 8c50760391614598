//! Providers that take many numbers a request, end to end: recipients with the same
//! text and parameters go out in full requests to local servers speaking Tencent
//! Cloud's and Aliyun's wire formats, while another provider's loop is busy with
//! slow sends of its own.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{ProviderServer, Reply, TestApp, spawn_app, wait_for};
use crate::receipts::{Dysmsapi, aliyun_provider, store_hi};
use crate::template_sms::{Seen, store_otp, tencent};
use herald::domain::Channel;
use herald::provider::ProviderConfig;

/// `n` recipients of the stored template `template`, all with the same variables.
fn identical(template: &str, n: usize, from: usize) -> Value {
    let recipients: Vec<Value> = (from..from + n)
        .map(|i| json!({"to": format!("+86138{i:08}"), "vars": {"1": "4321"}}))
        .collect();
    json!({"channel": "sms", "template_id": template, "recipients": recipients})
}

/// Submits 300 messages to the webhook provider `hook`, whose server answers each
/// after 150 ms, and waits until it is sending them: its loop holds most slots.
async fn keep_the_webhook_busy(herald: &TestApp, hook: &ProviderServer) -> String {
    hook.behave(|n, _| {
        Reply::ok()
            .body(&format!(r#"{{"id":"p-{n}"}}"#))
            .delayed(Duration::from_millis(150))
    });
    let recipients: Vec<Value> = (0..300)
        .map(|i| json!({"to": format!("+86139{i:08}")}))
        .collect();
    let batch = herald
        .submit(&json!({"channel": "sms", "provider": "hook",
                        "template": {"body": "busy"}, "recipients": recipients}))
        .await;
    wait_for(Duration::from_secs(10), "the webhook sending", || async {
        (hook.count() > 0).then_some(())
    })
    .await;
    batch
}

/// A Herald with `provider` (the SMS default) and the webhook `hook`.
async fn beside_a_webhook(provider: ProviderConfig) -> (TestApp, ProviderServer) {
    let hook = ProviderServer::start().await;
    let herald = spawn_app(|config| {
        config.defaults.insert(Channel::Sms, provider.name.clone());
        config.providers = vec![provider, hook.provider(None)];
    })
    .await;
    (herald, hook)
}

/// A Herald with the Tencent provider `tx` (the SMS default) and the webhook
/// `hook`, and the template "otp" with its Tencent code.
async fn tencent_herald() -> (TestApp, ProviderServer, Seen) {
    let (tx, seen) = tencent("tx").await;
    let (herald, hook) = beside_a_webhook(tx).await;
    store_otp(&herald, "tx").await;
    (herald, hook, seen)
}

/// How many numbers each of `requests` (Tencent `SendSms` bodies) carried, and
/// every number once.
fn numbers_per_request(requests: &[Value], expected: usize) -> Vec<usize> {
    let mut numbers: Vec<&str> = requests
        .iter()
        .flat_map(|r| r["PhoneNumberSet"].as_array().unwrap())
        .map(|n| n.as_str().unwrap())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), expected, "every number once: {requests:?}");
    requests
        .iter()
        .map(|r| r["PhoneNumberSet"].as_array().unwrap().len())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_recipients_go_to_tencent_in_full_requests_while_another_provider_is_busy() {
    let (herald, hook, seen) = tencent_herald().await;
    let busy = keep_the_webhook_busy(&herald, &hook).await;
    let batch = herald.submit(&identical("otp", 450, 0)).await;
    let done = herald.wait_finished(&batch, Duration::from_secs(30)).await;
    assert_eq!(done["counts"]["sent"], 450, "{done}");
    let sizes = numbers_per_request(&seen.lock().unwrap(), 450);
    // ⌈450 / 200⌉ = 3 full requests, and at most one more.
    assert!(sizes.len() <= 4, "requests of {sizes:?} numbers");
    assert!(hook.count() > 0);
    let busy = herald.wait_finished(&busy, Duration::from_secs(30)).await;
    assert_eq!(busy["counts"]["sent"], 300, "{busy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_identical_recipients_go_to_tencent_in_one_request() {
    let (herald, hook, seen) = tencent_herald().await;
    let _busy = keep_the_webhook_busy(&herald, &hook).await;
    for round in 0..3 {
        let before = seen.lock().unwrap().len();
        let batch = herald.submit(&identical("otp", 5, round * 5)).await;
        let done = herald.wait_finished(&batch, Duration::from_secs(10)).await;
        assert_eq!(done["counts"]["sent"], 5, "{done}");
        let requests = seen.lock().unwrap()[before..].to_vec();
        assert_eq!(
            numbers_per_request(&requests, 5),
            [5],
            "round {round}: {requests:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_recipients_go_to_aliyun_in_full_requests_while_another_provider_is_busy() {
    let server = Arc::new(Dysmsapi::default());
    let (herald, hook) = beside_a_webhook(aliyun_provider(server.clone()).await).await;
    store_hi(&herald).await;
    let busy = keep_the_webhook_busy(&herald, &hook).await;
    let batch = herald.submit(&identical("hi", 450, 0)).await;
    let done = herald.wait_finished(&batch, Duration::from_secs(30)).await;
    assert_eq!(done["counts"]["sent"], 450, "{done}");
    let sizes: Vec<usize> = server
        .sends
        .lock()
        .unwrap()
        .iter()
        .map(|(numbers, _)| numbers.len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 450, "{sizes:?}");
    // Aliyun takes 1,000 numbers a request, Herald 256 in flight: two claims.
    assert!(sizes.len() <= 2, "requests of {sizes:?} numbers");

    let before = server.sends.lock().unwrap().len();
    let batch = herald.submit(&identical("hi", 5, 1_000)).await;
    herald.wait_finished(&batch, Duration::from_secs(10)).await;
    assert_eq!(server.sends.lock().unwrap().len(), before + 1);
    herald.wait_finished(&busy, Duration::from_secs(30)).await;
}
