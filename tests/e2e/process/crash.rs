//! A crash (SIGKILL) of `herald serve`: no accepted message is lost, and at most
//! `max_in_flight` sends are repeated, each under its message id as the
//! idempotency key.

use std::collections::HashSet;
use std::time::Duration;

use crate::helpers::{ProviderServer, sms_batch};

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
