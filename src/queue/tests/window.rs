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

/// A window of one hour that opens two hours from now in Shanghai, where the
/// suite's numbers (`+86…`) are.
fn window_opening_later() -> String {
    let shanghai = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let hour = jiff::Timestamp::now().to_zoned(shanghai).hour();
    format!("{:02}:00-{:02}:00", (hour + 2) % 24, (hour + 3) % 24)
}

pub(super) async fn a_message_claimed_outside_its_window_goes_back_with_no_attempt_spent(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    // Queued due now (a backlog, a retry), but its window is closed.
    let closed = TestBatch::sms(2)
        .window(&window_opening_later(), "UTC")
        .build();
    let closed_id = accept(&q, closed).await;
    let open = TestBatch::sms(1).window("00:00-24:00", "UTC").build();
    let open_id = accept(&q, open).await;

    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [message_id(open_id, 0)]);
    assert_eq!(counts(&q, closed_id).await.pending, 2);
    let records = q
        .messages(
            closed_id,
            MessageQuery {
                state: None,
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert!(records.iter().all(|m| m.attempts == 0), "{records:?}");

    // Held until the opening, on this handle and on a fresh one.
    assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty());
    let reopened = Queue::open(&url.parse().expect("a store URL"))
        .await
        .unwrap();
    assert!(reopened.claim("p", 10, LEASE).await.unwrap().is_empty());
}
