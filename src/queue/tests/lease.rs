//! Leases: renewal while a send is in progress, and what a lapsed lease's message
//! comes back as.

use super::*;

pub(super) async fn a_renewed_lease_outlives_its_term_and_then_lapses_when_renewal_stops(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let short = Duration::from_millis(300);
    accept(&q, batch(3, 0, now_ms())).await;
    let claimed = q.claim("p", 10, short).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let leases: Vec<Lease> = claimed.iter().map(|c| c.lease).collect();
    let started = std::time::Instant::now();
    // Renewed every 100 ms for three terms: never due again meanwhile.
    while started.elapsed() < short * 3 {
        assert_eq!(q.renew(leases.clone(), short).await.unwrap(), 3);
        assert!(
            q.claim("p", 10, LEASE).await.unwrap().is_empty(),
            "a renewed lease is not due after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = claim_when_due(&q).await;
    assert_eq!(again.len(), 3, "once renewal stops, the lease lapses");
    assert!(
        started.elapsed() >= short * 3,
        "the renewals held the lease"
    );
}

pub(super) async fn a_lost_lease_is_not_renewed_back_nor_a_settled_one(store: TestStore) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(3, 0, now_ms())).await;
    let first = q.claim("p", 10, Duration::from_millis(50)).await.unwrap();
    assert_eq!(first.len(), 3);
    let second = claim_when_due(&q).await;
    assert_eq!(second.len(), 3);
    let stale: Vec<Lease> = first.iter().map(|c| c.lease).collect();
    assert_eq!(
        q.renew(stale, Duration::from_secs(60)).await.unwrap(),
        0,
        "leases taken over by another claim are not renewed"
    );
    // The new holder settles one, and its lease on the others lapses soon.
    let current: Vec<Lease> = second.iter().map(|c| c.lease).collect();
    q.settle(settle_all(
        &second[..1],
        Outcome::Sent {
            provider_message_id: None,
            segment_ids: Vec::new(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(
        q.renew(current.clone(), Duration::from_millis(50))
            .await
            .unwrap(),
        2,
        "a settled message's lease is gone"
    );
    let third = claim_when_due(&q).await;
    assert_eq!(third.len(), 2);
    assert_eq!(q.renew(current, LEASE).await.unwrap(), 0);
    q.settle(settle_all(
        &second,
        Outcome::Failed {
            error: "late".into(),
        },
    ))
    .await
    .unwrap();
    let c = counts(&q, id).await;
    assert_eq!(
        (c.sent, c.sending, c.failed),
        (1, 2, 0),
        "the third claim still holds the two"
    );
}

pub(super) async fn a_message_whose_lease_lapsed_comes_back_as_an_unknown_outcome_since_its_claim(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let before = now_ms();
    accept(&q, batch(2, 0, now_ms())).await;
    let first = q.claim("p", 1, Duration::from_millis(50)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].unknown_since_ms, None,
        "a first claim knows nothing"
    );
    let claimed_at = now_ms();
    let fresh = q.claim("p", 10, LEASE).await.unwrap();
    assert_eq!(fresh.len(), 1);
    assert_eq!(
        fresh[0].unknown_since_ms, None,
        "a first claim knows nothing"
    );
    let lapsed = claim_when_due(&q).await;
    assert_eq!(lapsed.len(), 1);
    assert_eq!(lapsed[0].id, first[0].id);
    let since = lapsed[0]
        .unknown_since_ms
        .expect("a lapsed lease's message is an unknown outcome");
    assert!(
        (before..=claimed_at).contains(&since),
        "unknown since its claim: {since} not in {before}..={claimed_at}"
    );
    assert_eq!(lapsed[0].attempts, 0, "a lapsed lease counts no attempt");
}
