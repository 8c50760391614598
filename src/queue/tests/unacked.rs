//! The conformance suite's part for the markers of ingested items not yet
//! acknowledged to their source.

use super::*;

pub(super) async fn unacked_markers_are_found_oldest_first_by_source_and_body_and_expire_after_a_day(
    store: TestStore,
) {
    let now = crate::domain::now_ms();
    let day = 24 * 60 * 60 * 1000;
    let marker = |source: &str, hash: &str, key: &str| Unacked {
        source: source.into(),
        hash: hash.into(),
        key: key.into(),
    };
    let (q, url, _guard) = store;
    let old = marker("ingest:a", "h1", "k0");
    q.records().mark_unacked(&old, now - 2 * day).await.unwrap();
    assert_eq!(
        q.records()
            .unacked("ingest:a", "h1", now - 2 * day, 10)
            .await
            .unwrap(),
        ["k0"],
        "{url}"
    );
    q.records()
        .mark_unacked(&marker("ingest:a", "h1", "k2"), now)
        .await
        .unwrap();
    q.records()
        .mark_unacked(&marker("ingest:a", "h1", "k1"), now - 10)
        .await
        .unwrap();
    // Marking again changes nothing.
    q.records()
        .mark_unacked(&marker("ingest:a", "h1", "k1"), now)
        .await
        .unwrap();
    q.records()
        .mark_unacked(&marker("ingest:a", "h2", "k3"), now)
        .await
        .unwrap();
    q.records()
        .mark_unacked(&marker("ingest:b", "h1", "k4"), now)
        .await
        .unwrap();
    assert_eq!(
        q.records()
            .unacked("ingest:a", "h1", now, 10)
            .await
            .unwrap(),
        ["k1", "k2"],
        "{url}"
    );
    assert_eq!(
        q.records().unacked("ingest:a", "h1", now, 1).await.unwrap(),
        ["k1"],
        "{url}"
    );
    assert_eq!(
        q.records()
            .unacked("ingest:b", "h1", now, 10)
            .await
            .unwrap(),
        ["k4"],
        "{url}"
    );
    // The marker older than a day was deleted by the new ones.
    assert_eq!(
        q.records()
            .unacked("ingest:a", "h1", now - 2 * day, 10)
            .await
            .unwrap(),
        ["k1", "k2"],
        "{url}"
    );
    q.records()
        .unmark_unacked(&marker("ingest:a", "h1", "k1"))
        .await
        .unwrap();
    q.records()
        .unmark_unacked(&marker("ingest:a", "h1", "k1"))
        .await
        .unwrap();
    assert_eq!(
        q.records()
            .unacked("ingest:a", "h1", now, 10)
            .await
            .unwrap(),
        ["k2"],
        "{url}"
    );
    assert_eq!(
        q.records()
            .unacked("ingest:a", "h2", now, 10)
            .await
            .unwrap(),
        ["k3"],
        "{url}"
    );
    assert!(
        q.records()
            .unacked("ingest:c", "h1", now, 10)
            .await
            .unwrap()
            .is_empty(),
        "{url}"
    );
}
