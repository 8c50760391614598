//! The conformance suite's part for accepting batches: whole, staged in chunks or
//! discarded, and idempotent.

use super::*;

pub(super) async fn an_accepted_batch_is_stored_whole_and_survives_reopening(store: TestStore) {
    let (q, url, _guard) = store;
    let id = accept(&q, batch(250, 0, now_ms())).await;
    drop(q);
    let reopened = Queue::open(&url.parse().expect("a store URL"))
        .await
        .unwrap();
    let c = counts(&reopened, id).await;
    assert_eq!((c.total, c.pending), (250, 250));
    let page = reopened
        .messages(
            id,
            MessageQuery {
                state: None,
                after: None,
                limit: 1000,
            },
        )
        .await
        .unwrap();
    let indices: Vec<u32> = page.iter().map(|m| m.index).collect();
    assert_eq!(indices, (0..250).collect::<Vec<_>>());
}

pub(super) async fn a_batch_stored_in_chunks_is_invisible_until_committed_then_whole(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let mut whole = batch(2_500, 0, now_ms());
    // Index 7 was rejected: a gap in the indices.
    whole.messages.remove(7);
    let messages = std::mem::take(&mut whole.messages);
    let id = whole.id;
    let mut staging = begin(&q, whole).await;
    for chunk in messages.chunks(1_000) {
        staging.add(chunk.to_vec()).await.unwrap();
    }
    // Staged messages are neither claimable nor in the ledger.
    assert!(q.claim("p", 100, LEASE).await.unwrap().is_empty());
    assert!(q.batch(id).await.unwrap().is_none());

    let accepted = q
        .commit(staging, json!({"accepted": 2_499}), 2_500)
        .await
        .unwrap();
    assert_eq!(accepted, Accepted::New(id));
    let reopened = Queue::open(&url.parse().expect("a store URL"))
        .await
        .unwrap();
    let c = counts(&reopened, id).await;
    assert_eq!((c.total, c.pending), (2_499, 2_499));
    let mut claimed = Vec::new();
    for _ in 0..10 {
        let more = reopened.claim("p", 1_000, LEASE).await.unwrap();
        if more.is_empty() {
            break;
        }
        claimed.extend(more);
    }
    let mut ids: Vec<String> = claimed.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2_499);
    assert!(!ids.contains(&message_id(id, 7)));
}

pub(super) async fn a_discarded_staging_leaves_nothing_and_the_next_batch_is_unaffected(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let mut first = batch(50, 0, now_ms());
    let messages = std::mem::take(&mut first.messages);
    let abandoned = first.id;
    let mut staging = begin(&q, first).await;
    staging.add(messages).await.unwrap();
    staging.discard().await;
    let kept = accept(&q, batch(5, 0, now_ms())).await;
    assert!(q.batch(abandoned).await.unwrap().is_none());
    assert_eq!(q.claim("p", 100, LEASE).await.unwrap().len(), 5);
    assert_eq!(counts(&q, kept).await.sending, 5);
}

pub(super) async fn staging_with_a_used_idempotency_key_answers_with_the_first_batch(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let mut first = TestBatch::sms(3).idempotency("k-1", "h").build();
    let messages = std::mem::take(&mut first.messages);
    let id = first.id;
    let mut staging = begin(&q, first).await;
    staging.add(messages).await.unwrap();
    q.commit(staging, json!({"accepted": 3}), 3).await.unwrap();

    let again = TestBatch::sms(3).idempotency("k-1", "h").build();
    match q.begin(again, Arrival::Streamed).await.unwrap() {
        Begun::Answered(Accepted::Replayed { id: seen, report }) => {
            assert_eq!(seen, id);
            assert_eq!(report, json!({"accepted": 3}));
        }
        _ => panic!("expected the first batch's answer"),
    }
    let other = TestBatch::sms(3).idempotency("k-1", "another").build();
    assert!(matches!(
        q.begin(other, Arrival::Streamed).await,
        Err(Error::Conflict(_))
    ));
}

pub(super) async fn an_idempotency_key_replays_the_same_request_and_refuses_a_different_one(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let keyed = |hash: &str| TestBatch::sms(3).idempotency("k-1", hash).build();
    let first = keyed("h1");
    let first_id = first.id;
    assert_eq!(q.accept(first).await.unwrap(), Accepted::New(first_id));
    match q.accept(keyed("h1")).await.unwrap() {
        Accepted::Replayed { id, report } => {
            assert_eq!(id, first_id);
            assert_eq!(report, json!({"accepted": 3}));
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    assert!(matches!(
        q.accept(keyed("h2")).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        q.claim("p", 100, LEASE).await.unwrap().len(),
        3,
        "nothing was stored twice"
    );
}

pub(super) async fn concurrent_accepts_with_one_idempotency_key_store_one_batch(store: TestStore) {
    let (q, _url, _guard) = store;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let b = TestBatch::sms(50).idempotency("race", "h").build();
            q.accept(b).await.unwrap()
        }));
    }
    let mut stored = Vec::new();
    let mut replayed = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Accepted::New(id) => stored.push(id),
            Accepted::Replayed { id, .. } => replayed.push(id),
        }
    }
    assert_eq!(stored.len(), 1, "exactly one accept stores the batch");
    assert!(
        replayed.iter().all(|id| *id == stored[0]),
        "the others replay it"
    );
    assert_eq!(q.claim("p", 1000, LEASE).await.unwrap().len(), 50);
}

pub(super) async fn recipients_refused_at_intake_leave_gaps_in_the_indices(store: TestStore) {
    let (q, _url, _guard) = store;
    let mut b = batch(10, 0, now_ms());
    b.messages.retain(|m| [0, 2, 9].contains(&m.index));
    let batch_id = b.id;
    let id = accept(&q, b).await;
    assert_eq!(counts(&q, id).await.total, 3);
    let page = |after| {
        q.messages(
            id,
            MessageQuery {
                state: None,
                after,
                limit: 10,
            },
        )
    };
    let all = page(None).await.unwrap();
    assert_eq!(all.iter().map(|m| m.index).collect::<Vec<_>>(), [0, 2, 9]);
    assert_eq!(all[1].id, crate::domain::message_id(batch_id, 2));
    assert_eq!(all[1].to, "+8613800000002");
    let rest = page(Some(2)).await.unwrap();
    assert_eq!(rest.iter().map(|m| m.index).collect::<Vec<_>>(), [9]);
    let mut claimed: Vec<String> = q
        .claim("p", 10, LEASE)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    claimed.sort();
    let expected: Vec<String> = [0, 2, 9]
        .map(|i| crate::domain::message_id(batch_id, i))
        .into();
    assert_eq!(claimed, expected);
}
