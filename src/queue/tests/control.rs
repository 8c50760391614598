//! The conformance suite's part for controlling a batch: pause, resume, cancel.

use super::*;

pub(super) async fn pause_holds_messages_resume_releases_them_cancel_ends_them(store: TestStore) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(5, 0, now_ms())).await;
    let in_flight = q.claim("p", 1, LEASE).await.unwrap();
    let paused = q.control(id, BatchAction::Pause).await.unwrap().unwrap();
    assert_eq!((paused.counts.paused, paused.counts.sending), (4, 1));
    assert!(
        q.claim("p", 10, LEASE).await.unwrap().is_empty(),
        "a paused batch is not claimed"
    );
    q.settle(settle_all(
        &in_flight,
        Outcome::Retry {
            at_ms: now_ms(),
            error: "503".into(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(
        counts(&q, id).await.paused,
        5,
        "a retry inside a paused batch stays paused"
    );
    let resumed = q.control(id, BatchAction::Resume).await.unwrap().unwrap();
    assert_eq!(resumed.counts.pending, 5);
    let two = q.claim("p", 2, LEASE).await.unwrap();
    let cancelled = q.control(id, BatchAction::Cancel).await.unwrap().unwrap();
    assert_eq!(
        (cancelled.counts.cancelled, cancelled.counts.sending),
        (3, 2)
    );
    assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty());
    q.settle(settle_all(
        &two,
        Outcome::Release {
            at_ms: now_ms(),
            error: None,
        },
    ))
    .await
    .unwrap();
    assert_eq!(
        counts(&q, id).await.cancelled,
        5,
        "released messages of a cancelled batch are cancelled"
    );
    assert!(matches!(
        q.control(id, BatchAction::Resume).await,
        Err(Error::Conflict(_))
    ));
    assert!(
        q.control(BatchId::new(), BatchAction::Pause)
            .await
            .unwrap()
            .is_none()
    );
}

pub(super) async fn an_expired_lease_in_a_paused_batch_comes_back_paused(store: TestStore) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(2, 0, now_ms())).await;
    let leased = q.claim("p", 10, Duration::from_millis(30)).await.unwrap();
    assert_eq!(leased.len(), 2);
    q.control(id, BatchAction::Pause).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while counts(&q, id).await.paused < 2 {
        // Engines notice expired leases when claiming.
        assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty());
        assert!(
            std::time::Instant::now() < deadline,
            "the expired leases never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counts(&q, id).await.sending, 0);
    q.control(id, BatchAction::Resume).await.unwrap();
    let again = q.claim("p", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(
        again.iter().all(|c| c.attempts == 0),
        "an expired lease is not an attempt"
    );
}

pub(super) async fn a_cancelled_batch_can_be_cancelled_again_but_not_retried(store: TestStore) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(2, 0, now_ms())).await;
    q.control(id, BatchAction::Cancel).await.unwrap();
    let again = q.control(id, BatchAction::Cancel).await.unwrap().unwrap();
    assert_eq!(again.control, BatchControl::Cancelled);
    assert_eq!(again.counts.cancelled, 2);
    for action in [
        BatchAction::Retry {
            expires_at_ms: None,
        },
        BatchAction::Pause,
        BatchAction::Resume,
    ] {
        assert!(
            matches!(q.control(id, action).await, Err(Error::Conflict(_))),
            "{action:?} on a cancelled batch"
        );
    }
}

pub(super) async fn pause_and_resume_put_each_message_back_in_its_own_providers_queue(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let mut b = batch(10, 0, now_ms());
    // Recipients 0, 3 and 9 were rejected at intake.
    b.messages.retain(|m| ![0, 3, 9].contains(&m.index));
    for m in &mut b.messages {
        if m.index % 2 == 0 {
            m.provider = "other".into();
        }
    }
    let id = accept(&q, b).await;
    let page = q
        .messages(
            id,
            MessageQuery {
                state: None,
                after: Some(1),
                limit: 3,
            },
        )
        .await
        .unwrap();
    let indices: Vec<u32> = page.iter().map(|m| m.index).collect();
    assert_eq!(indices, vec![2, 4, 5], "paging skips the gaps");
    assert_eq!(page[0].id, crate::domain::message_id(id, 2));
    assert_eq!(counts(&q, id).await.total, 7);
    q.control(id, BatchAction::Pause).await.unwrap();
    q.control(id, BatchAction::Resume).await.unwrap();
    let p: Vec<String> = q
        .claim("p", 10, LEASE)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let other = q.claim("other", 10, LEASE).await.unwrap();
    let expected_p: HashSet<String> = [1, 5, 7].map(|i| crate::domain::message_id(id, i)).into();
    assert_eq!(p.into_iter().collect::<HashSet<_>>(), expected_p);
    assert_eq!(other.len(), 4);
    assert_eq!(counts(&q, id).await.sending, 7);
}

/// Every control but those named in `allowed`, each refused with a reason that
/// contains `why`, leaving the batch's summary as it was.
async fn refused_all_but(q: &Queue, id: BatchId, allowed: &[BatchAction], why: &str) {
    let before = q.batch(id).await.unwrap().unwrap();
    for action in [
        BatchAction::Pause,
        BatchAction::Resume,
        BatchAction::Cancel,
        BatchAction::Retry {
            expires_at_ms: None,
        },
    ] {
        if allowed.contains(&action) {
            continue;
        }
        match q.control(id, action).await {
            Err(Error::Conflict(reason)) => {
                assert!(reason.contains(why), "{action:?}: {reason}")
            }
            other => panic!("{action:?} on a finished batch answered {other:?}"),
        }
        let after = q.batch(id).await.unwrap().unwrap();
        assert_eq!(
            (after.control, after.counts, after.expires_at_ms),
            (before.control, before.counts, before.expires_at_ms),
            "{action:?} changed a finished batch"
        );
    }
}

pub(super) async fn a_finished_batch_refuses_every_control_and_keeps_its_history(store: TestStore) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(2, 0, now_ms())).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    let sent = Outcome::Sent {
        provider_message_id: None,
        segment_ids: Vec::new(),
    };
    q.settle(settle_all(&claimed, sent)).await.unwrap();
    refused_all_but(
        &q,
        id,
        &[],
        "finished (2 sent, 0 failed, 0 expired, 0 cancelled)",
    )
    .await;
    let summary = q.batch(id).await.unwrap().unwrap();
    assert_eq!(batch_state(summary.control, &summary.counts), "done");
    assert_eq!((summary.counts.sent, summary.counts.cancelled), (2, 0));
}

pub(super) async fn a_batch_that_ended_expired_can_only_be_retried(store: TestStore) {
    let (q, _url, _guard) = store;
    let deadline = now_ms() + 100;
    let id = accept(&q, TestBatch::sms(1).expires_at(deadline).build()).await;
    for _ in 0..100 {
        if now_ms() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty());
    assert_eq!(counts(&q, id).await.expired, 1);
    let retry = BatchAction::Retry {
        expires_at_ms: None,
    };
    refused_all_but(&q, id, &[retry], "1 expired").await;
    let retried = q.control(id, retry).await.unwrap().unwrap();
    assert_eq!(retried.counts.pending, 1);
}

pub(super) async fn a_paused_batch_that_finished_can_be_resumed_but_not_cancelled(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(2, 0, now_ms())).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    q.control(id, BatchAction::Pause).await.unwrap();
    let failed = Outcome::Failed {
        error: "HTTP 400".into(),
    };
    q.settle(settle_all(&claimed, failed)).await.unwrap();
    let retry = BatchAction::Retry {
        expires_at_ms: None,
    };
    refused_all_but(&q, id, &[BatchAction::Resume, retry], "2 failed").await;
    let resumed = q.control(id, BatchAction::Resume).await.unwrap().unwrap();
    assert_eq!(resumed.control, BatchControl::Active);
    assert_eq!(batch_state(resumed.control, &resumed.counts), "done");
}
