//! The conformance suite's part for the outbox's recording: the events each
//! change records for a subscribed batch (and none for another), once each; and
//! the helpers `deliveries` shares.

use super::receipts::report;
use super::*;
use crate::queue::outbox::{finished_event_id, message_event_id};

pub(super) fn kinds(list: &[EventKind]) -> Kinds {
    list.iter().copied().collect()
}

/// The event id of message `index` of batch `id` for `kind`.
fn event_id(id: BatchId, index: u32, kind: EventKind) -> String {
    message_event_id(&message_id(id, index), kind)
}

/// Every delivery of `endpoint`, oldest first.
pub(super) async fn recorded(q: &Queue, endpoint: &str) -> Vec<DeliveryRecord> {
    let mut all = q
        .deliveries(Some(endpoint), None, None, 1000)
        .await
        .unwrap();
    all.reverse();
    all
}

/// The events recorded for `endpoint`: id → kind.
async fn events(q: &Queue, endpoint: &str) -> BTreeMap<String, EventKind> {
    recorded(q, endpoint)
        .await
        .into_iter()
        .map(|d| (d.event.id, d.event.kind))
        .collect()
}

/// The recorded event `id` of `endpoint`.
async fn event(q: &Queue, endpoint: &str, id: &str) -> Event {
    recorded(q, endpoint)
        .await
        .into_iter()
        .find(|d| d.event.id == id)
        .unwrap_or_else(|| panic!("no event {id} for {endpoint}"))
        .event
}

/// A batch of `n` messages for provider `p` whose events go to `subscriptions`.
pub(super) async fn subscribed(q: &Queue, n: u32, subscriptions: &[(&str, Kinds)]) -> BatchId {
    accept(q, TestBatch::sms(n).subscribed(subscriptions).build()).await
}

/// Claims every due message of `p` and settles each with `outcome(index)`.
pub(super) async fn settle_each(q: &Queue, outcome: impl Fn(u32) -> Outcome) {
    let claimed = q.claim("p", 100, LEASE).await.unwrap();
    let settlements = claimed
        .iter()
        .map(|c| Settlement {
            lease: c.lease,
            outcome: outcome(c.id.rsplit('-').next().unwrap().parse().unwrap()),
            sent_by: None,
        })
        .collect();
    q.settle(settlements).await.unwrap();
}

pub(super) fn sent(index: u32) -> Outcome {
    Outcome::Sent {
        provider_message_id: Some(format!("pid-{index}")),
        segment_ids: Vec::new(),
    }
}

fn failed(error: &str) -> Outcome {
    Outcome::Failed {
        error: error.into(),
    }
}

/// A batch of `n` messages, each sent, whose `message.sent` events go to `crm`:
/// `n` pending deliveries.
pub(crate) async fn sent_events(q: &Queue, n: u32) -> BatchId {
    let id = subscribed(q, n, &[("crm", kinds(&[EventKind::Sent]))]).await;
    settle_each(q, sent).await;
    id
}

pub(super) fn ms(d: Duration) -> i64 {
    crate::domain::millis(d)
}

pub(super) async fn settlements_record_sent_and_failed_for_a_subscribed_batch_and_nothing_for_another(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let plain = accept(&q, batch(2, 0, now_ms())).await;
    let id = subscribed(&q, 2, &[("crm", Kinds::all())]).await;
    settle_each(&q, |i| {
        if i == 0 {
            sent(0)
        } else {
            failed("HTTP 400: bad number")
        }
    })
    .await;
    assert_eq!(counts(&q, plain).await.failed, 1, "both batches settled");
    assert_eq!(
        events(&q, "crm").await,
        BTreeMap::from([
            (event_id(id, 0, EventKind::Sent), EventKind::Sent),
            (event_id(id, 1, EventKind::Failed), EventKind::Failed),
            (finished_event_id(id), EventKind::BatchFinished),
        ])
    );
    let all = q.deliveries(None, None, None, 100).await.unwrap();
    assert_eq!(all.len(), 3, "the unsubscribed batch recorded nothing");
    let sent = event(&q, "crm", &event_id(id, 0, EventKind::Sent)).await;
    assert_eq!(sent.batch_id, Some(id));
    assert_eq!(sent.message_id, Some(message_id(id, 0)));
    assert_eq!(sent.channel, Some(Channel::Sms));
    assert_eq!(sent.source.as_deref(), Some("test"));
    assert_eq!(sent.to.as_deref(), Some("+8613800000000"));
    assert_eq!(sent.reference.as_deref(), Some("r0"));
    assert_eq!(sent.provider.as_deref(), Some("p"));
    assert_eq!(sent.provider_message_id.as_deref(), Some("pid-0"));
    assert_eq!(sent.code, None);
    let failed = event(&q, "crm", &event_id(id, 1, EventKind::Failed)).await;
    assert_eq!(failed.code.as_deref(), Some("HTTP 400: bad number"));
    assert_eq!(failed.to.as_deref(), Some("+8613800000001"));
}

pub(super) async fn receipts_on_arrival_and_held_record_delivered_and_undelivered_with_their_codes(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = subscribed(
        &q,
        3,
        &[(
            "crm",
            kinds(&[EventKind::Delivered, EventKind::Undelivered]),
        )],
    )
    .await;
    let held = q
        .apply_receipts("p", vec![report("pid-2", None, false, "UNDELIV")])
        .await
        .unwrap();
    assert_eq!(held, vec![ReceiptEffect::Held]);
    settle_each(&q, sent).await;
    assert_eq!(
        events(&q, "crm").await,
        BTreeMap::from([(
            event_id(id, 2, EventKind::Undelivered),
            EventKind::Undelivered
        )]),
        "the held receipt is told when the settlement applies it"
    );
    q.apply_receipts(
        "p",
        vec![
            report("pid-0", None, true, "DELIVRD"),
            report("pid-1", None, false, "EXPIRED"),
        ],
    )
    .await
    .unwrap();
    q.apply_receipts("p", vec![report("pid-1", None, true, "DELIVRD")])
        .await
        .unwrap();
    let code = |kind, index| {
        let q = q.clone();
        async move { event(&q, "crm", &event_id(id, index, kind)).await.code }
    };
    assert_eq!(
        code(EventKind::Delivered, 0).await.as_deref(),
        Some("DELIVRD")
    );
    assert_eq!(
        code(EventKind::Undelivered, 1).await.as_deref(),
        Some("EXPIRED")
    );
    assert_eq!(
        code(EventKind::Delivered, 1).await.as_deref(),
        Some("DELIVRD"),
        "a later success is told too"
    );
    assert_eq!(
        code(EventKind::Undelivered, 2).await.as_deref(),
        Some("UNDELIV")
    );
    assert_eq!(events(&q, "crm").await.len(), 4);
}

pub(super) async fn messages_expired_at_claim_and_by_the_sweep_record_expired(store: TestStore) {
    let (q, _url, _guard) = store;
    let past = now_ms() - 1;
    let all = [("at-claim", Kinds::all())];
    let claimed = accept(
        &q,
        TestBatch::sms(2).expires_at(past).subscribed(&all).build(),
    )
    .await;
    let swept = accept(
        &q,
        TestBatch::sms(2)
            .provider("nobody-claims")
            .expires_at(past)
            .subscribed(&[("by-sweep", Kinds::all())])
            .build(),
    )
    .await;
    assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty());
    assert_eq!(
        events(&q, "at-claim").await,
        BTreeMap::from([
            (event_id(claimed, 0, EventKind::Expired), EventKind::Expired),
            (event_id(claimed, 1, EventKind::Expired), EventKind::Expired),
            (finished_event_id(claimed), EventKind::BatchFinished),
        ])
    );
    assert!(events(&q, "by-sweep").await.is_empty());
    assert_eq!(q.expire(100).await.unwrap(), 2);
    assert_eq!(
        events(&q, "by-sweep").await,
        BTreeMap::from([
            (event_id(swept, 0, EventKind::Expired), EventKind::Expired),
            (event_id(swept, 1, EventKind::Expired), EventKind::Expired),
            (finished_event_id(swept), EventKind::BatchFinished),
        ])
    );
}

pub(super) async fn a_cancel_records_cancelled_and_a_send_in_flight_ends_cancelled_too(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = subscribed(&q, 3, &[("crm", Kinds::all())]).await;
    let in_flight = q.claim("p", 1, LEASE).await.unwrap();
    q.control(id, BatchAction::Cancel).await.unwrap();
    assert_eq!(
        events(&q, "crm").await,
        BTreeMap::from([
            (event_id(id, 1, EventKind::Cancelled), EventKind::Cancelled),
            (event_id(id, 2, EventKind::Cancelled), EventKind::Cancelled),
        ]),
        "not finished while a send is in flight"
    );
    q.settle(settle_all(
        &in_flight,
        Outcome::Retry {
            at_ms: now_ms(),
            error: "503".into(),
        },
    ))
    .await
    .unwrap();
    let finished = event(&q, "crm", &finished_event_id(id)).await;
    assert_eq!(finished.batch_id, Some(id));
    assert_eq!(
        events(&q, "crm")
            .await
            .get(&event_id(id, 0, EventKind::Cancelled)),
        Some(&EventKind::Cancelled),
        "the retry ended it cancelled"
    );
}

pub(super) async fn batch_finished_is_recorded_once_with_the_final_counts(store: TestStore) {
    let (q, _url, _guard) = store;
    let id = subscribed(&q, 3, &[("crm", kinds(&[EventKind::BatchFinished]))]).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    q.settle(settle_all(&claimed[..2], sent(0))).await.unwrap();
    assert!(events(&q, "crm").await.is_empty(), "one is still sending");
    q.settle(settle_all(&claimed[2..], failed("no")))
        .await
        .unwrap();
    assert_eq!(events(&q, "crm").await.len(), 1);
    let retry = BatchAction::Retry {
        expires_at_ms: None,
    };
    q.control(id, retry).await.unwrap();
    settle_each(&q, |_| failed("no again")).await;
    assert_eq!(
        events(&q, "crm").await,
        BTreeMap::from([(finished_event_id(id), EventKind::BatchFinished)]),
        "finishing again is the same event"
    );
    let claimed = q.claim_deliveries(10, LEASE, now_ms()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let counts = claimed[0].event.counts.expect("a finished batch's counts");
    assert_eq!((counts.total, counts.sent, counts.failed), (3, 2, 1));
    assert_eq!(claimed[0].event.message_id, None);
}

pub(super) async fn each_subscription_gets_only_the_kinds_it_wants(store: TestStore) {
    let (q, _url, _guard) = store;
    let id = accept(
        &q,
        TestBatch::sms(2)
            .callback("https://app.example/hook")
            .subscribed(&[
                ("crm", kinds(&[EventKind::Failed])),
                ("audit", kinds(&[EventKind::Sent, EventKind::BatchFinished])),
                (CALLBACK, Kinds::all()),
            ])
            .build(),
    )
    .await;
    settle_each(&q, |i| if i == 0 { sent(0) } else { failed("no") }).await;
    let (sent, failed, finished) = (
        event_id(id, 0, EventKind::Sent),
        event_id(id, 1, EventKind::Failed),
        finished_event_id(id),
    );
    assert_eq!(
        events(&q, "crm").await,
        BTreeMap::from([(failed.clone(), EventKind::Failed)])
    );
    assert_eq!(
        events(&q, "audit").await,
        BTreeMap::from([
            (sent.clone(), EventKind::Sent),
            (finished.clone(), EventKind::BatchFinished)
        ])
    );
    assert_eq!(
        events(&q, CALLBACK).await,
        BTreeMap::from([
            (sent, EventKind::Sent),
            (failed, EventKind::Failed),
            (finished, EventKind::BatchFinished)
        ])
    );
    let claimed = q.claim_deliveries(100, LEASE, now_ms()).await.unwrap();
    assert_eq!(claimed.len(), 6);
    for d in &claimed {
        let url = (d.endpoint == CALLBACK).then_some("https://app.example/hook");
        assert_eq!(d.url.as_deref(), url, "{}", d.endpoint);
    }
}

pub(super) async fn an_event_recorded_twice_is_one_delivery(store: TestStore) {
    let (q, _url, _guard) = store;
    let id = subscribed(&q, 1, &[("crm", Kinds::all())]).await;
    settle_each(&q, |_| failed("first")).await;
    let retry = BatchAction::Retry {
        expires_at_ms: None,
    };
    q.control(id, retry).await.unwrap();
    settle_each(&q, |_| failed("second")).await;
    assert_eq!(counts(&q, id).await.failed, 1);
    let all = recorded(&q, "crm").await;
    assert_eq!(all.len(), 2, "{all:?}");
    let failed = event(&q, "crm", &event_id(id, 0, EventKind::Failed)).await;
    assert_eq!(failed.code.as_deref(), Some("first"), "the first is kept");
}

pub(super) async fn batch_finished_is_recorded_when_the_last_messages_settle_at_once(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let finished_only = [("crm", kinds(&[EventKind::BatchFinished]))];
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(subscribed(&q, 8, &finished_only).await);
    }
    let claimed = q.claim("p", 100, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 24);
    let settles: Vec<_> = claimed
        .into_iter()
        .map(|c| {
            let q = q.clone();
            tokio::spawn(async move { q.settle(settle_all(&[c], sent(0))).await.unwrap() })
        })
        .collect();
    for settle in settles {
        settle.await.unwrap();
    }
    let expected: BTreeMap<_, _> = ids
        .iter()
        .map(|id| (finished_event_id(*id), EventKind::BatchFinished))
        .collect();
    assert_eq!(events(&q, "crm").await, expected);
}

pub(super) async fn a_lapsed_lease_in_a_cancelled_batch_records_cancelled_at_the_next_claim(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = subscribed(&q, 1, &[("crm", Kinds::all())]).await;
    let claimed = q.claim("p", 1, Duration::from_millis(50)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    q.control(id, BatchAction::Cancel).await.unwrap();
    let cancelled = event_id(id, 0, EventKind::Cancelled);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !events(&q, "crm").await.contains_key(&cancelled) {
        assert!(std::time::Instant::now() < deadline, "never cancelled");
        assert!(q.claim("p", 1, LEASE).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counts(&q, id).await.cancelled, 1);
    assert!(events(&q, "crm").await.contains_key(&finished_event_id(id)));
}

/// An engine's own test of its recording helpers, from another transaction: a
/// batch of two messages whose replies and cancels go to `crm`. The test records
/// [`reply_to`] message 0 (twice) for the endpoint `global`, cancels message 1 and
/// records it cancelled with the code `replied STOP`, then checks it with
/// [`assert_reply_and_cancel`].
pub(crate) fn reply_case() -> NewBatch {
    TestBatch::sms(2)
        .subscribed(&[("crm", kinds(&[EventKind::Reply, EventKind::Cancelled]))])
        .build()
}

/// A reply to the message of row `row`.
pub(crate) fn reply_to(row: i64) -> NewEvent {
    NewEvent {
        id: "reply.r1".into(),
        kind: EventKind::Reply,
        at_ms: now_ms(),
        message_row: Some(row),
        code: None,
        payload: Some(r#"{"from":"+8613800000000","body":"STOP"}"#.into()),
    }
}

/// What the [`reply_case`] of batch `id` must have recorded.
pub(crate) async fn assert_reply_and_cancel(q: &Queue, id: BatchId) {
    let global = recorded(q, "global").await;
    assert_eq!(global.len(), 1, "recorded twice, one delivery");
    let reply = &global[0].event;
    assert_eq!(reply.kind, EventKind::Reply);
    assert_eq!(reply.message_id, Some(message_id(id, 0)));
    assert_eq!(reply.batch_id, Some(id));
    assert_eq!(
        reply.data,
        Some(json!({"from": "+8613800000000", "body": "STOP"}))
    );
    assert_eq!(
        events(q, "crm").await,
        BTreeMap::from([
            ("reply.r1".to_owned(), EventKind::Reply),
            (event_id(id, 1, EventKind::Cancelled), EventKind::Cancelled),
        ])
    );
    let cancelled = event(q, "crm", &event_id(id, 1, EventKind::Cancelled)).await;
    assert_eq!(cancelled.code.as_deref(), Some("replied STOP"));
}

pub(super) async fn a_batch_stored_in_chunks_or_gathered_keeps_its_subscriptions_and_callback(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    for arrival in [Arrival::Streamed, Arrival::AtHand] {
        let mut whole = TestBatch::sms(3)
            .callback("https://app.example/hook")
            .subscribed(&[(CALLBACK, kinds(&[EventKind::Sent]))])
            .build();
        let messages = std::mem::take(&mut whole.messages);
        let id = whole.id;
        let Begun::Staging(mut staging) = q.begin(whole, arrival).await.unwrap() else {
            panic!("a new batch is staged");
        };
        staging.add(messages).await.unwrap();
        q.commit(staging, json!({"accepted": 3}), 3).await.unwrap();
        settle_each(&q, sent).await;
        let claimed = q.claim_deliveries(10, LEASE, now_ms()).await.unwrap();
        assert_eq!(claimed.len(), 3, "{arrival:?}");
        for d in &claimed {
            assert_eq!(d.event.batch_id, Some(id));
            assert_eq!(d.url.as_deref(), Some("https://app.example/hook"));
        }
        let posted = claimed
            .iter()
            .map(|d| (d.key, DeliveryOutcome::Posted))
            .collect();
        q.settle_deliveries(posted, now_ms()).await.unwrap();
    }
}
