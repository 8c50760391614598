//! The conformance suite's part for searching across batches: by recipient and
//! by ref, newest first in pages, narrowed by state and creation time, never
//! showing a batch being staged or a message that is gone.

use super::*;

const ADDRESS: &str = "+8613900000001";

fn query(to: Option<&str>, reference: Option<&str>, limit: u32) -> SearchQuery {
    SearchQuery {
        to: to.map(str::to_owned),
        reference: reference.map(str::to_owned),
        limit,
        ..SearchQuery::default()
    }
}

/// The (batch, index) of each message found.
fn places(found: &[Found]) -> Vec<(BatchId, u32)> {
    found
        .iter()
        .map(|f| (f.batch_id, f.message.index))
        .collect()
}

pub(super) async fn a_search_by_recipient_pages_newest_first_across_batches_without_staged_ones(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let first = accept(&q, batch_to(&[ADDRESS, "+8613900000002", ADDRESS])).await;
    let second = accept(&q, batch_to(&["+8613900000003", ADDRESS])).await;
    let staged = begin(&q, batch_to(&[ADDRESS])).await;
    let third = accept(&q, batch_to(&[ADDRESS])).await;

    let mut pages = Vec::new();
    let mut before = None;
    for _ in 0..10 {
        let page = q
            .search(SearchQuery {
                before,
                ..query(Some(ADDRESS), None, 2)
            })
            .await
            .unwrap();
        let full = page.len() == 2;
        before = page.last().map(|f| f.position);
        pages.push(places(&page));
        if !full {
            break;
        }
    }
    assert_eq!(
        pages,
        [
            vec![(third, 0), (second, 1)],
            vec![(first, 2), (first, 0)],
            vec![]
        ],
        "{url}"
    );
    let one = q.search(query(Some(ADDRESS), None, 1)).await.unwrap();
    let found = &one[0].message;
    assert_eq!(
        (
            found.id.as_str(),
            found.to.as_str(),
            found.reference.as_deref()
        ),
        (message_id(third, 0).as_str(), ADDRESS, Some("r0")),
        "{url}"
    );
    assert_eq!(found.state, MessageState::Pending, "{url}");
    assert!(
        q.search(query(Some("+8613900000009"), None, 10))
            .await
            .unwrap()
            .is_empty(),
        "{url}"
    );
    staged.discard().await;
    assert_eq!(
        q.search(query(Some(ADDRESS), None, 10))
            .await
            .unwrap()
            .len(),
        4,
        "{url}: a discarded staging leaves nothing to find"
    );
}

pub(super) async fn a_search_by_ref_narrows_by_recipient_state_and_creation_time(store: TestStore) {
    let (q, url, _guard) = store;
    // Every test batch's message `i` has the ref `r{i}`.
    let first = accept(&q, batch_to(&[ADDRESS, "+8613900000002"])).await;
    let claimed = q.claim("p", 1, LEASE).await.unwrap();
    q.settle(settle_all(
        &claimed,
        Outcome::Sent {
            provider_message_id: Some("pid".into()),
            segment_ids: Vec::new(),
        },
    ))
    .await
    .unwrap();
    let second = accept(&q, batch_to(&["+8613900000002", ADDRESS])).await;

    let by_ref = q.search(query(None, Some("r0"), 10)).await.unwrap();
    assert_eq!(places(&by_ref), [(second, 0), (first, 0)], "{url}");
    let both = q
        .search(query(Some(ADDRESS), Some("r1"), 10))
        .await
        .unwrap();
    assert_eq!(places(&both), [(second, 1)], "{url}");
    let sent = q
        .search(SearchQuery {
            state: Some(MessageState::Sent),
            ..query(Some(ADDRESS), None, 10)
        })
        .await
        .unwrap();
    assert_eq!(places(&sent), [(first, 0)], "{url}");
    assert_eq!(
        sent[0].message.provider_message_id.as_deref(),
        Some("pid"),
        "{url}"
    );

    let created = by_ref[1].message.created_at_ms;
    let window = |since_ms, until_ms| SearchQuery {
        since_ms,
        until_ms,
        ..query(Some(ADDRESS), None, 10)
    };
    assert_eq!(
        q.search(window(Some(created), None)).await.unwrap().len(),
        2,
        "{url}: `since` is inclusive"
    );
    assert!(
        q.search(window(Some(now_ms() + 60_000), None))
            .await
            .unwrap()
            .is_empty(),
        "{url}"
    );
    assert!(
        q.search(window(None, Some(by_ref[1].message.created_at_ms)))
            .await
            .unwrap()
            .is_empty(),
        "{url}: `until` is exclusive"
    );
    assert!(
        q.search(query(None, None, 10)).await.unwrap().is_empty(),
        "{url}: a search names a recipient or a ref"
    );
}

pub(super) async fn a_mailbox_with_a_display_name_is_found_by_its_address(store: TestStore) {
    let (q, url, _guard) = store;
    let id = accept(
        &q,
        TestBatch::sms_to(&["Zhang San <zs@example.com>", "zs@example.com"])
            .channel(Channel::Email)
            .build(),
    )
    .await;
    let found = q
        .search(query(Some("zs@example.com"), None, 10))
        .await
        .unwrap();
    assert_eq!(places(&found), [(id, 1), (id, 0)], "{url}");
    assert_eq!(found[1].message.to, "Zhang San <zs@example.com>", "{url}");
}
