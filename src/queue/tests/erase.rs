//! The conformance suite's part for erasing a person: queued messages cancelled
//! with their events, the address hashed in messages, replies and reply events,
//! the suppression list left as it is, sends in flight waited for.

use super::*;

const ADDRESS: &str = "+8613900000001";
const OTHER: &str = "+8613900000002";

fn to(address: &str) -> SearchQuery {
    SearchQuery {
        to: Some(address.to_owned()),
        limit: 100,
        ..SearchQuery::default()
    }
}

pub(super) async fn erasing_cancels_queued_messages_hashes_the_rest_and_keeps_the_suppression(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let sent = accept(&q, batch_to(&[ADDRESS, OTHER])).await;
    super::receipts::send_all(&q, |i| format!("SM{i}")).await;
    let queued = accept(
        &q,
        TestBatch::sms_to(&[ADDRESS, OTHER])
            .subscribed(&[("crm", Kinds::all())])
            .build(),
    )
    .await;
    let reply = NewReply {
        id: crate::provider::reply_id("p", "k1"),
        provider: "p".into(),
        from: ADDRESS.into(),
        to: Some("+15550001111".into()),
        body: "who is this?".into(),
        sent_at_ms: None,
        keyword: None,
    };
    q.record_replies(vec![reply], vec!["global".into()])
        .await
        .unwrap();
    q.records()
        .suppress(vec![Suppression {
            channel: Channel::Sms,
            address: ADDRESS.into(),
            reason: "asked".into(),
            created_at_ms: 0,
        }])
        .await
        .unwrap();

    let erased = q.erase(ADDRESS, LEASE).await.unwrap();
    assert_eq!(
        erased,
        Erased {
            messages: 2,
            replies: 1,
            events: 1,
            cancelled: 1,
            sending: 0,
        },
        "{url}"
    );
    let hashed = q.erased_as(ADDRESS).await.unwrap();
    assert!(hashed.starts_with(ERASED_PREFIX), "{url}");
    assert!(q.search(to(ADDRESS)).await.unwrap().is_empty(), "{url}");
    let found = q.search(to(&hashed)).await.unwrap();
    let states: Vec<_> = found
        .iter()
        .map(|f| (f.batch_id, f.message.state, f.message.to.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            (queued, MessageState::Cancelled, hashed.as_str()),
            (sent, MessageState::Sent, hashed.as_str())
        ],
        "{url}"
    );
    assert_eq!(
        found[0].message.last_error.as_deref(),
        Some(crate::queue::erase::ERASED_REASON),
        "{url}"
    );
    // Counts stay right; the other recipient is untouched.
    let counts = counts(&q, queued).await;
    assert_eq!((counts.pending, counts.cancelled), (1, 1), "{url}");
    assert_eq!(q.search(to(OTHER)).await.unwrap().len(), 2, "{url}");
    // The cancel's event, the reply and its event name the hash, not the address.
    let cancelled = q.deliveries(Some("crm"), None, None, 10).await.unwrap();
    assert_eq!(cancelled.len(), 1, "{url}");
    assert_eq!(cancelled[0].event.kind, EventKind::Cancelled, "{url}");
    assert_eq!(
        cancelled[0].event.to.as_deref(),
        Some(hashed.as_str()),
        "{url}"
    );
    let replies = q
        .replies(ReplyQuery {
            limit: 10,
            ..ReplyQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(replies[0].from, hashed, "{url}");
    let reply_event = q.deliveries(Some("global"), None, None, 10).await.unwrap();
    assert_eq!(
        reply_event[0].event.data.as_ref().unwrap()["from"],
        hashed.as_str(),
        "{url}"
    );
    // An opted-out person stays opted out.
    let suppressed = q
        .records()
        .suppressed(Channel::Sms, &[ADDRESS])
        .await
        .unwrap();
    assert!(suppressed.contains(ADDRESS), "{url}");

    assert_eq!(
        q.erase(ADDRESS, LEASE).await.unwrap(),
        Erased::default(),
        "{url}: a second erasure finds nothing"
    );
}

pub(super) async fn erasing_while_a_batch_to_the_address_is_sending_waits_for_the_send_then_hashes_it(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let id = accept(&q, batch_to(&[ADDRESS, ADDRESS, OTHER])).await;
    let in_flight = q.claim("p", 1, LEASE).await.unwrap();
    assert_eq!(in_flight.len(), 1, "{url}");

    // Not waiting: what can be erased is, and the send in flight is reported.
    let refused = q.erase(ADDRESS, Duration::ZERO).await;
    assert!(
        matches!(refused, Err(Error::Conflict(_))),
        "{url}: {refused:?}"
    );
    let counts_now = counts(&q, id).await;
    assert_eq!(
        (counts_now.sending, counts_now.cancelled, counts_now.pending),
        (1, 1, 1),
        "{url}"
    );

    let eraser = {
        let q = q.clone();
        tokio::spawn(async move { q.erase(ADDRESS, Duration::from_secs(10)).await })
    };
    // The send lands while the erasure waits.
    q.settle(settle_all(
        &in_flight,
        Outcome::Sent {
            provider_message_id: Some("SM0".into()),
            segment_ids: Vec::new(),
        },
    ))
    .await
    .unwrap();
    let erased = eraser.await.unwrap().unwrap();
    assert_eq!((erased.messages, erased.cancelled), (1, 0), "{url}");
    let hashed = q.erased_as(ADDRESS).await.unwrap();
    let found = q.search(to(&hashed)).await.unwrap();
    let states: Vec<_> = found.iter().map(|f| f.message.state).collect();
    assert_eq!(
        states,
        [MessageState::Cancelled, MessageState::Sent],
        "{url}"
    );
    assert!(q.search(to(ADDRESS)).await.unwrap().is_empty(), "{url}");
    let left = counts(&q, id).await;
    assert_eq!(
        (left.sent, left.cancelled, left.pending),
        (1, 1, 1),
        "{url}"
    );
}
