//! The conformance suite's part for settling claims: leases, retries, releases and
//! failures.

use super::*;

pub(super) async fn an_expired_lease_is_claimed_again_and_the_old_lease_cannot_settle(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(3, 0, now_ms())).await;
    let first = q.claim("p", 10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(
        q.claim("p", 10, LEASE).await.unwrap().is_empty(),
        "leased messages are not due"
    );
    let second = claim_when_due(&q).await;
    let ids = |c: &[Claimed]| c.iter().map(|m| m.id.clone()).collect::<HashSet<_>>();
    assert_eq!(
        ids(&first),
        ids(&second),
        "the same messages, with the same ids, come back"
    );
    q.settle(settle_all(
        &first,
        Outcome::Failed {
            error: "late".into(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(
        counts(&q, id).await.sending,
        3,
        "a stale lease's settlement is ignored"
    );
    q.settle(settle_all(
        &second,
        Outcome::Sent {
            provider_message_id: Some("x".into()),
            segment_ids: Vec::new(),
        },
    ))
    .await
    .unwrap();
    let c = counts(&q, id).await;
    assert_eq!((c.sent, c.failed), (3, 0));
}

pub(super) async fn a_retry_waits_for_its_time_and_counts_an_attempt_a_release_does_not(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    accept(&q, batch(2, 0, now_ms())).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    let (a, b) = (&claimed[0], &claimed[1]);
    q.settle(vec![
        Settlement {
            lease: a.lease,
            outcome: Outcome::Retry {
                at_ms: now_ms() + 60_000,
                error: "503".into(),
            },
            sent_by: None,
        },
        Settlement {
            lease: b.lease,
            outcome: Outcome::Release {
                at_ms: now_ms(),
                error: None,
            },
            sent_by: None,
        },
    ])
    .await
    .unwrap();
    let again = q.claim("p", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1, "only the released message is due");
    assert_eq!(again[0].id, b.id);
    assert_eq!(again[0].attempts, 0, "a release is not an attempt");
    q.settle(settle_all(
        &again,
        Outcome::Retry {
            at_ms: now_ms(),
            error: "503".into(),
        },
    ))
    .await
    .unwrap();
    let third = q.claim("p", 10, LEASE).await.unwrap();
    assert_eq!(third[0].attempts, 1);
}

pub(super) async fn failures_are_recorded_and_retry_requeues_only_the_failed(store: TestStore) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(4, 0, now_ms())).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    let mut settlements = settle_all(
        &claimed[..2],
        Outcome::Failed {
            error: "HTTP 400: bad number".into(),
        },
    );
    settlements.extend(settle_all(
        &claimed[2..],
        Outcome::Sent {
            provider_message_id: None,
            segment_ids: Vec::new(),
        },
    ));
    q.settle(settlements).await.unwrap();
    let failed = q
        .messages(
            id,
            MessageQuery {
                state: Some(MessageState::Failed),
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.len(), 2);
    assert_eq!(
        failed[0].last_error.as_deref(),
        Some("HTTP 400: bad number")
    );
    assert_eq!(failed[0].attempts, 1);
    let retry = BatchAction::Retry {
        expires_at_ms: None,
    };
    let summary = q.control(id, retry).await.unwrap().unwrap();
    assert_eq!(
        (
            summary.counts.pending,
            summary.counts.sent,
            summary.counts.failed
        ),
        (2, 2, 0)
    );
    let again = q.claim("p", 10, LEASE).await.unwrap();
    let again_ids: HashSet<_> = again.iter().map(|c| c.id.clone()).collect();
    let failed_ids: HashSet<_> = failed.iter().map(|m| m.id.clone()).collect();
    assert_eq!(again_ids, failed_ids);
    assert!(
        again.iter().all(|c| c.attempts == 0),
        "a retried message gets a fresh budget"
    );
}
