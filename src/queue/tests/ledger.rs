//! The conformance suite's part for reading the ledger: batches newest first,
//! messages in index order.

use super::*;

pub(super) async fn batches_are_listed_newest_first_in_pages_without_those_being_staged(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let oldest = accept(&q, batch(3, 0, now_ms())).await;
    let middle = accept(&q, batch(1, 5, now_ms())).await;
    let newest = accept(&q, batch(2, 0, now_ms())).await;
    let claimed = q.claim("p", 1, LEASE).await.unwrap();
    q.settle(settle_all(
        &claimed,
        Outcome::Sent {
            provider_message_id: None,
            segment_ids: Vec::new(),
        },
    ))
    .await
    .unwrap();
    let staged = begin(&q, batch(0, 0, now_ms())).await;

    let ids = |page: &[BatchSummary]| page.iter().map(|b| b.id).collect::<Vec<_>>();
    let first = q.batches(None, 2).await.unwrap();
    assert_eq!(ids(&first), [newest, middle], "{url}");
    let rest = q.batches(Some(middle), 2).await.unwrap();
    assert_eq!(ids(&rest), [oldest], "{url}");
    assert!(
        q.batches(Some(oldest), 2).await.unwrap().is_empty(),
        "{url}"
    );
    assert!(q.batches(None, 0).await.unwrap().is_empty(), "{url}");

    // Each summary is what the batch's own read says.
    for summary in q.batches(None, 10).await.unwrap() {
        let alone = q
            .batch(summary.id)
            .await
            .unwrap()
            .expect("listed, so stored");
        assert_eq!(summary.counts, alone.counts, "{url}");
        assert_eq!(summary.priority, alone.priority, "{url}");
    }
    // Claims take the best priority first: the message sent was the middle one's.
    let middle_counts = q.batch(middle).await.unwrap().unwrap().counts;
    assert_eq!((middle_counts.total, middle_counts.sent), (1, 1), "{url}");
    staged.discard().await;
}

pub(super) async fn ledger_pages_follow_index_order_and_filter_by_state(store: TestStore) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(25, 0, now_ms())).await;
    let mut after = None;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = q
            .messages(
                id,
                MessageQuery {
                    state: None,
                    after,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|m| m.index);
        seen.extend(page.into_iter().map(|m| m.index));
    }
    assert_eq!(seen, (0..25).collect::<Vec<_>>());
    let sent = q
        .messages(
            id,
            MessageQuery {
                state: Some(MessageState::Sent),
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert!(sent.is_empty());
    assert!(q.batch(BatchId::new()).await.unwrap().is_none());
}
