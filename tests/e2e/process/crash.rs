//! A crash (SIGKILL) of `herald serve`: no accepted message is lost, at most
//! `max_in_flight` sends are repeated, each under its message id as the
//! idempotency key, and the restarted process takes the crashed sends at once,
//! asking a provider that can be asked about them before sending any again.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{ProviderServer, sms_batch, wait_for};
use crate::receipts::{Dysmsapi, serve_dysmsapi, store_hi};

use super::{FINISH, Herald, difference, ids, ok, per_key, received_at_least, write_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_delivery_loses_no_message_and_repeats_at_most_max_in_flight() {
    const TOTAL: usize = 2_000;
    const MAX_IN_FLIGHT: usize = 32;
    let server = ProviderServer::start().await;
    server.behave(|n, _| ok(n).delayed(Duration::from_millis(10)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);
    let max_in_flight = MAX_IN_FLIGHT.to_string();
    let env = [
        ("HERALD_WORKER__MAX_IN_FLIGHT", max_in_flight.as_str()),
        ("HERALD_WORKER__LEASE_MS", "2500"),
        ("HERALD_WORKER__SEND_TIMEOUT_MS", "2000"),
    ];

    let herald = Herald::serve(&config, &env).await;
    let batch_id = herald.api.submit(&sms_batch(TOTAL)).await;
    received_at_least(&server, 300, FINISH).await;
    herald.kill();
    let delivered_before_the_crash = per_key(&server.received()).len();
    assert!(
        delivered_before_the_crash < TOTAL,
        "every message was delivered before the kill; the test needs the crash to interrupt delivery"
    );

    let herald = Herald::serve(&config, &env).await;
    let batch = herald.api.wait_finished(&batch_id, FINISH).await;

    assert_eq!(batch["state"], "done", "{batch}");
    assert_eq!(batch["counts"]["total"], TOTAL, "{batch}");
    assert_eq!(batch["counts"]["sent"], TOTAL, "{batch}");
    let ledger = herald.api.messages(&batch_id).await;
    let accepted = ids(&ledger);
    let expected: HashSet<String> = (0..TOTAL).map(|i| format!("{batch_id}-{i}")).collect();
    assert!(
        accepted == expected,
        "the ledger holds every accepted recipient as batch id + index: {}",
        difference(&expected, &accepted)
    );
    let received = server.received();
    for r in &received {
        assert_eq!(r.json["id"], r.key.as_str(), "key and payload id differ");
    }
    let keys: HashSet<String> = received.iter().map(|r| r.key.clone()).collect();
    assert!(
        keys == accepted,
        "every accepted message reaches the provider, and nothing else does: {}",
        difference(&accepted, &keys)
    );
    let repeats = received.len() - keys.len();
    assert!(
        repeats <= MAX_IN_FLIGHT,
        "{repeats} repeated sends after a crash, more than max_in_flight = {MAX_IN_FLIGHT}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_batch_survives_a_kill_9_right_after_the_202() {
    const TOTAL: usize = 200;
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);

    let herald = Herald::serve(&config, &[("HERALD_WORKER__ENABLED", "false")]).await;
    let batch_id = herald.api.submit(&sms_batch(TOTAL)).await;
    herald.kill();
    assert_eq!(server.count(), 0, "no worker ran before the kill");

    let herald = Herald::serve(&config, &[]).await;
    let (status, batch) = herald.api.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["counts"]["total"], TOTAL, "{batch}");
    let batch = herald.api.wait_finished(&batch_id, FINISH).await;
    assert_eq!(batch["state"], "done", "{batch}");
    assert_eq!(batch["counts"]["sent"], TOTAL, "{batch}");
    let keys = per_key(&server.received());
    assert_eq!(keys.len(), TOTAL);
    assert!(keys.values().all(|&n| n == 1), "no repeats without a crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_kill_9_asks_aliyun_about_the_crashed_sends_at_once_and_sends_none_twice()
{
    const TOTAL: usize = 4;
    const LEASE_MS: u64 = 10_000;
    let server = Arc::new(Dysmsapi::default());
    server.stall_all.store(true, Ordering::SeqCst);
    let endpoint = serve_dysmsapi(server.clone()).await;
    let hook = ProviderServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &hook);
    let providers = format!(
        r#"[{{name="ali", kind="aliyun", channels=["sms"], access_key_id="LTAI-e2e",
             access_key_secret="e2e-secret", sign_name="Herald", endpoint="{endpoint}"}}]"#
    );
    let lease = LEASE_MS.to_string();
    let env = [
        ("HERALD_PROVIDERS", providers.as_str()),
        ("HERALD_DEFAULTS__SMS", "ali"),
        ("HERALD_WORKER__LEASE_MS", lease.as_str()),
        ("HERALD_WORKER__SEND_TIMEOUT_MS", "30000"),
    ];

    let herald = Herald::serve(&config, &env).await;
    store_hi(&herald.api).await;
    let recipients: Vec<_> = (0..TOTAL)
        .map(|i| json!({"to": format!("+86138{i:08}")}))
        .collect();
    let batch_id = herald
        .api
        .submit(&json!({"channel": "sms", "template_id": "hi", "recipients": recipients}))
        .await;
    // Every number's request reached Aliyun, and none was answered yet.
    let sent_numbers = || -> usize { server.sends.lock().unwrap().iter().map(|s| s.0.len()).sum() };
    wait_for(FINISH, "every number's SendSms to arrive", || {
        std::future::ready((sent_numbers() == TOTAL).then_some(()))
    })
    .await;
    herald.kill();
    server.stall_all.store(false, Ordering::SeqCst);
    let requests = server.sends.lock().unwrap().len();

    let restarted = Instant::now();
    let herald = Herald::serve(&config, &env).await;
    let batch = herald.api.wait_finished(&batch_id, FINISH).await;
    let took = restarted.elapsed();

    assert_eq!(batch["counts"]["sent"], TOTAL, "{batch}");
    assert!(
        took < Duration::from_millis(LEASE_MS),
        "the restarted process waited {took:?} for its own old leases of {LEASE_MS} ms"
    );
    assert_eq!(
        server.sends.lock().unwrap().len(),
        requests,
        "Aliyun had every crashed send: none was sent again"
    );
    assert!(
        *server.queries.lock().unwrap() >= TOTAL,
        "each crashed send was asked about"
    );
    for message in herald.api.messages(&batch_id).await {
        assert_eq!(message["state"], "sent", "{message}");
        assert_eq!(message["attempts"], 0, "asking is no attempt: {message}");
    }
    assert_eq!(hook.count(), 0, "nothing went elsewhere");
}
