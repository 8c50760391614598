//! Messages whose sending window opens later than their batch is due: each is
//! stored due at its own time, so it is not claimed before.

use super::*;

pub(super) async fn a_message_due_later_than_its_batch_waits_for_its_own_time_whole_or_staged(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let now = now_ms();
    let later = now + 3_600_000;
    // One batch stored whole, one staged in chunks: message 1 of each waits.
    let whole = TestBatch::sms(3).due(1, later).due(2, now - 1_000).build();
    let whole_id = accept(&q, whole).await;
    let mut staged = TestBatch::sms(3).due(1, later).build();
    let messages = std::mem::take(&mut staged.messages);
    let staged_id = staged.id;
    let mut staging = begin(&q, staged).await;
    for chunk in messages.chunks(2) {
        staging.add(chunk.to_vec()).await.unwrap();
    }
    q.commit(staging, json!({"accepted": 3}), 3).await.unwrap();

    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    let mut ids: Vec<String> = claimed.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    let mut expected = vec![
        message_id(whole_id, 0),
        message_id(whole_id, 2),
        message_id(staged_id, 0),
        message_id(staged_id, 2),
    ];
    expected.sort();
    assert_eq!(ids, expected, "the waiting messages were claimed early");
    // They wait pending, counted as such.
    assert_eq!(counts(&q, whole_id).await.pending, 1);
    assert_eq!(counts(&q, staged_id).await.pending, 1);
    assert_eq!(q.pending("p", 10).await.unwrap(), 2);
}

pub(super) async fn a_waiting_message_outlives_a_restart_and_is_claimed_when_its_time_comes(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let soon = now_ms() + 1_500;
    let id = accept(&q, TestBatch::sms(2).due(1, soon).build()).await;
    assert_eq!(q.claim("p", 10, LEASE).await.unwrap().len(), 1);
    drop(q);

    let reopened = Queue::open(&url.parse().expect("a store URL"))
        .await
        .unwrap();
    let claimed = claim_when_due(&reopened).await;
    assert!(now_ms() >= soon, "claimed before its time");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, message_id(id, 1));
}
