//! The conformance suite's part for deliveries once recorded: claimed under a
//! lease, settled, listed, replayed, counted and pruned.

use std::collections::HashMap;

use super::outbox::{kinds, ms, recorded, sent, sent_events, settle_each, subscribed};
use super::*;

pub(super) async fn deliveries_are_claimed_exclusively_and_a_lapsed_lease_is_claimed_again(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    sent_events(&q, 20).await;
    let now = now_ms();
    let claimers: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..20 {
                    let got = q.claim_deliveries(3, LEASE, now).await.unwrap();
                    if got.is_empty() {
                        break;
                    }
                    mine.extend(got.into_iter().map(|d| d.event.id));
                }
                mine
            })
        })
        .collect();
    let mut ids = Vec::new();
    for claimer in claimers {
        ids.extend(claimer.await.unwrap());
    }
    let distinct: HashSet<_> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), 20, "each delivery claimed once");
    assert_eq!(distinct.len(), 20);
    assert!(q.claim_deliveries(10, LEASE, now).await.unwrap().is_empty());
    let lapsed = now + ms(LEASE);
    let again = q.claim_deliveries(100, LEASE, lapsed).await.unwrap();
    assert_eq!(again.len(), 20, "a lapsed lease makes a delivery due again");
    assert!(again.iter().all(|d| d.attempts == 0));
}

pub(super) async fn settlements_post_retry_or_fail_and_a_lapsed_lease_settles_nothing(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    sent_events(&q, 3).await;
    let now = now_ms();
    let first = q.claim_deliveries(10, LEASE, now).await.unwrap();
    let first_at = first[0].first_at_ms;
    let later = now + ms(LEASE);
    let second = q.claim_deliveries(10, LEASE, later).await.unwrap();
    assert_eq!((first.len(), second.len()), (3, 3));
    let stale = first
        .iter()
        .map(|d| (d.key, DeliveryOutcome::Posted))
        .collect();
    q.settle_deliveries(stale, later).await.unwrap();
    let pending = q
        .deliveries(None, Some(DeliveryState::Pending), None, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 3, "a lapsed lease's settlement is ignored");
    let retry_at = later + 60_000;
    let outcomes = [
        DeliveryOutcome::Posted,
        DeliveryOutcome::Retry {
            at_ms: retry_at,
            error: "HTTP 503".into(),
        },
        DeliveryOutcome::Failed {
            error: "HTTP 410".into(),
        },
    ];
    let settled = second.iter().map(|d| d.key).zip(outcomes).collect();
    q.settle_deliveries(settled, later + 1).await.unwrap();
    let by_id: HashMap<String, DeliveryRecord> = recorded(&q, "crm")
        .await
        .into_iter()
        .map(|d| (d.event.id.clone(), d))
        .collect();
    let state = |i: usize| &by_id[&second[i].event.id];
    assert_eq!(state(0).state, DeliveryState::Posted);
    assert_eq!(state(0).posted_at_ms, Some(later + 1));
    assert_eq!(state(0).attempts, 1);
    assert_eq!(state(1).state, DeliveryState::Pending);
    assert_eq!(state(1).due_at_ms, Some(retry_at));
    assert_eq!(state(1).last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(state(2).state, DeliveryState::Failed);
    assert_eq!(state(2).last_error.as_deref(), Some("HTTP 410"));
    assert!(
        q.claim_deliveries(10, LEASE, retry_at - 1)
            .await
            .unwrap()
            .is_empty(),
        "a retry waits for its time"
    );
    let retried = q.claim_deliveries(10, LEASE, retry_at).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].event.id, second[1].event.id);
    assert_eq!(retried[0].attempts, 1);
    assert_eq!(
        retried[0].first_at_ms, first_at,
        "the window counts from the record"
    );
}

pub(super) async fn deliveries_are_listed_newest_first_in_pages_and_by_state(store: TestStore) {
    let (q, _url, _guard) = store;
    let sent_only = kinds(&[EventKind::Sent]);
    subscribed(&q, 5, &[("crm", sent_only), ("other", sent_only)]).await;
    settle_each(&q, sent).await;
    let mut seen = Vec::new();
    let mut before = None;
    for _ in 0..5 {
        let page = q.deliveries(Some("crm"), None, before, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.seq);
        seen.extend(page);
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|d| d.endpoint == "crm"));
    assert!(seen.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    assert_eq!(
        seen.iter()
            .map(|d| &d.event.id)
            .collect::<HashSet<_>>()
            .len(),
        5
    );
    assert_eq!(q.deliveries(None, None, None, 100).await.unwrap().len(), 10);
    let claimed = q.claim_deliveries(100, LEASE, now_ms()).await.unwrap();
    let settled = claimed
        .iter()
        .map(|d| {
            let outcome = if d.endpoint == "crm" && d.event.message_id != seen[0].event.message_id {
                DeliveryOutcome::Failed { error: "no".into() }
            } else {
                DeliveryOutcome::Posted
            };
            (d.key, outcome)
        })
        .collect();
    q.settle_deliveries(settled, now_ms()).await.unwrap();
    let in_state = |state| {
        let q = q.clone();
        async move {
            q.deliveries(Some("crm"), Some(state), None, 100)
                .await
                .unwrap()
        }
    };
    assert_eq!(in_state(DeliveryState::Failed).await.len(), 4);
    let posted = in_state(DeliveryState::Posted).await;
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].event.id, seen[0].event.id);
    assert!(in_state(DeliveryState::Pending).await.is_empty());
}

pub(super) async fn replay_makes_one_event_or_every_failed_one_due_again_afresh(store: TestStore) {
    let (q, _url, _guard) = store;
    sent_events(&q, 3).await;
    let claimed = q.claim_deliveries(10, LEASE, now_ms()).await.unwrap();
    let posted_id = claimed[0].event.id.clone();
    let settled = claimed
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let outcome = if i == 0 {
                DeliveryOutcome::Posted
            } else {
                DeliveryOutcome::Failed {
                    error: "HTTP 500".into(),
                }
            };
            (d.key, outcome)
        })
        .collect();
    q.settle_deliveries(settled, now_ms()).await.unwrap();
    assert_eq!(
        q.replay_deliveries("other", Replay::Failed, now_ms())
            .await
            .unwrap(),
        0
    );
    let now = now_ms() + 5_000;
    assert_eq!(
        q.replay_deliveries("crm", Replay::Failed, now)
            .await
            .unwrap(),
        2
    );
    let again = q.claim_deliveries(10, LEASE, now).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(
        again
            .iter()
            .all(|d| d.attempts == 0 && d.first_at_ms == now),
        "attempts and window start over"
    );
    assert!(again.iter().all(|d| d.event.id != posted_id));
    let replay_one = Replay::Event(posted_id.clone());
    assert_eq!(
        q.replay_deliveries("crm", replay_one, now).await.unwrap(),
        1
    );
    let nothing = Replay::Event("no such event".into());
    assert_eq!(q.replay_deliveries("crm", nothing, now).await.unwrap(), 0);
    let one = q.claim_deliveries(10, LEASE, now).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].event.id, posted_id);
}

pub(super) async fn delivery_counts_are_pending_and_failed_per_endpoint(store: TestStore) {
    let (q, _url, _guard) = store;
    assert!(q.delivery_counts().await.unwrap().is_empty());
    subscribed(
        &q,
        2,
        &[("crm", Kinds::all()), ("audit", kinds(&[EventKind::Sent]))],
    )
    .await;
    settle_each(&q, sent).await;
    assert_eq!(
        q.delivery_counts().await.unwrap(),
        vec![("audit".to_owned(), 2, 0), ("crm".to_owned(), 3, 0)]
    );
    let claimed = q.claim_deliveries(100, LEASE, now_ms()).await.unwrap();
    let settled = claimed
        .iter()
        .map(|d| match d.endpoint.as_str() {
            "audit" => (d.key, DeliveryOutcome::Failed { error: "no".into() }),
            _ => (d.key, DeliveryOutcome::Posted),
        })
        .collect();
    q.settle_deliveries(settled, now_ms()).await.unwrap();
    assert_eq!(
        q.delivery_counts().await.unwrap(),
        vec![("audit".to_owned(), 0, 2)]
    );
}

pub(super) async fn pruning_deletes_only_deliveries_posted_before_the_cutoff(store: TestStore) {
    let (q, _url, _guard) = store;
    sent_events(&q, 4).await;
    let now = now_ms();
    let claimed = q.claim_deliveries(10, LEASE, now).await.unwrap();
    let posted = |ds: &[Delivery]| {
        ds.iter()
            .map(|d| (d.key, DeliveryOutcome::Posted))
            .collect()
    };
    q.settle_deliveries(posted(&claimed[..2]), now)
        .await
        .unwrap();
    q.settle_deliveries(posted(&claimed[2..3]), now + 10_000)
        .await
        .unwrap();
    let failed = vec![(
        claimed[3].key,
        DeliveryOutcome::Failed { error: "no".into() },
    )];
    q.settle_deliveries(failed, now).await.unwrap();
    assert_eq!(
        q.prune_deliveries(now + 5_000, 1).await.unwrap(),
        1,
        "up to the limit"
    );
    assert_eq!(q.prune_deliveries(now + 5_000, 100).await.unwrap(), 1);
    assert_eq!(q.prune_deliveries(now + 5_000, 100).await.unwrap(), 0);
    assert_eq!(q.prune_deliveries(now + 20_000, 100).await.unwrap(), 1);
    let left = q.deliveries(None, None, None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state, DeliveryState::Failed, "failed ones are kept");
}

pub(super) async fn a_replay_while_a_post_is_in_flight_makes_that_post_settle_nothing(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    sent_events(&q, 2).await;
    let now = now_ms();
    let claimed = q.claim_deliveries(10, LEASE, now).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let replayed = Replay::Event(claimed[0].event.id.clone());
    assert_eq!(q.replay_deliveries("crm", replayed, now).await.unwrap(), 1);
    let settled = claimed
        .iter()
        .map(|d| (d.key, DeliveryOutcome::Posted))
        .collect();
    q.settle_deliveries(settled, now).await.unwrap();
    let again = q.claim_deliveries(10, LEASE, now).await.unwrap();
    assert_eq!(again.len(), 1, "the replayed delivery is posted again");
    assert_eq!(again[0].event.id, claimed[0].event.id);
    let posted = q
        .deliveries(None, Some(DeliveryState::Posted), None, 10)
        .await
        .unwrap();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].event.id, claimed[1].event.id);
}
