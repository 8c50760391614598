//! The conformance suite's part for the replies ledger.

use super::*;
use crate::provider::Keyword;

fn reply(key: &str, from: &str, body: &str, keyword: Option<Keyword>) -> NewReply {
    NewReply {
        id: crate::provider::reply_id("p", key),
        provider: "p".into(),
        from: from.into(),
        to: Some("+15550001111".into()),
        body: body.into(),
        sent_at_ms: Some(1_700_000_000_000),
        keyword,
    }
}

async fn sms_suppressions(q: &Queue) -> Vec<Suppression> {
    q.records()
        .suppressions(Some(Channel::Sms), None, u32::MAX)
        .await
        .unwrap()
}

/// Sends every claimable message of provider `p`.
async fn send_all(q: &Queue) {
    super::receipts::send_all(q, |i| format!("SM{i}")).await;
}

pub(super) async fn a_reply_is_stored_once_and_linked_to_the_latest_message_sent_to_its_sender(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let first = accept(&q, batch_to(&["+8613800000001", "+8613800000002"])).await;
    send_all(&q).await;
    // A later batch to the same number: the reply answers its message.
    let second = accept(&q, batch_to(&["+8613800000009", "+8613800000001"])).await;
    send_all(&q).await;
    let recorded = q
        .record_replies(
            vec![
                reply("k1", "+8613800000001", "Thanks", None),
                reply("k2", "+15550009999", "who is this?", None),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
    assert!(recorded.iter().all(|r| r.new), "{url}");
    let linked = recorded[0].reply.answers.clone().expect("linked");
    assert_eq!(
        linked.batch_id, second,
        "{url}: the latest batch, not {first}"
    );
    assert_eq!(linked.message_id, message_id(second, 1), "{url}");
    assert_eq!(linked.reference.as_deref(), Some("r1"), "{url}");
    assert_eq!(
        recorded[1].reply.answers, None,
        "{url}: nothing was sent there"
    );
    assert!(recorded[1].reply.seq > recorded[0].reply.seq, "{url}");

    // Posted again: the same reply, as first stored, and nothing new.
    let again = q
        .record_replies(
            vec![reply("k1", "+8613800000001", "Thanks", None)],
            Vec::new(),
        )
        .await
        .unwrap();
    assert!(!again[0].new, "{url}");
    assert_eq!(again[0].reply, recorded[0].reply, "{url}");
    let all = q
        .replies(ReplyQuery {
            limit: 100,
            ..ReplyQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "{url}: {all:?}");
    assert_eq!(all[0], recorded[0].reply, "{url}");
}

pub(super) async fn replies_page_by_seq_and_filter_by_sender(store: TestStore) {
    let (q, url, _guard) = store;
    let replies: Vec<NewReply> = (0..5)
        .map(|i| {
            let from = if i % 2 == 0 {
                "+15550000000"
            } else {
                "+15551111111"
            };
            reply(&format!("k{i}"), from, &format!("text {i}"), None)
        })
        .collect();
    q.record_replies(replies, Vec::new()).await.unwrap();
    let page = |from: Option<&str>, after: Option<i64>, limit: u32| {
        let q = q.clone();
        let from = from.map(str::to_owned);
        async move {
            q.replies(ReplyQuery { from, after, limit })
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.seq, r.body))
                .collect::<Vec<_>>()
        }
    };
    let first = page(None, None, 2).await;
    assert_eq!(
        first.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["text 0", "text 1"],
        "{url}"
    );
    let rest = page(None, Some(first[1].0), 10).await;
    assert_eq!(
        rest.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["text 2", "text 3", "text 4"],
        "{url}"
    );
    let evens = page(Some("+15550000000"), None, 10).await;
    assert_eq!(
        evens.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["text 0", "text 2", "text 4"],
        "{url}"
    );
    let after_first_even = page(Some("+15550000000"), Some(evens[0].0), 1).await;
    assert_eq!(after_first_even[0].1, "text 2", "{url}");
}

pub(super) async fn an_opt_out_suppresses_its_sender_and_an_opt_in_lifts_only_what_a_reply_made(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let stop = reply("k1", "+8613800000001", "退订", Some(Keyword::OptOut));
    let stop_id = stop.id.clone();
    q.record_replies(vec![stop], Vec::new()).await.unwrap();
    let listed = sms_suppressions(&q).await;
    assert_eq!(listed.len(), 1, "{url}");
    assert_eq!(listed[0].address, "+8613800000001", "{url}");
    assert_eq!(
        listed[0].reason,
        format!("replied STOP (reply {stop_id})"),
        "{url}"
    );

    // An operator's suppression stays through an opt-in; the reply's goes.
    q.records()
        .suppress(vec![Suppression {
            channel: Channel::Sms,
            address: "+8613800000002".into(),
            reason: "complaint".into(),
            created_at_ms: 0,
        }])
        .await
        .unwrap();
    q.record_replies(
        vec![
            reply("k2", "+8613800000001", "恢复", Some(Keyword::OptIn)),
            reply("k3", "+8613800000002", "START", Some(Keyword::OptIn)),
        ],
        Vec::new(),
    )
    .await
    .unwrap();
    let listed = sms_suppressions(&q).await;
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.address.as_str(), s.reason.as_str()))
            .collect::<Vec<_>>(),
        [("+8613800000002", "complaint")],
        "{url}"
    );

    // The opt-out posted again changes nothing: it was recorded, and lifted since.
    let again = q
        .record_replies(
            vec![reply("k1", "+8613800000001", "退订", Some(Keyword::OptOut))],
            Vec::new(),
        )
        .await
        .unwrap();
    assert!(!again[0].new, "{url}");
    assert_eq!(again[0].reply.keyword, Some(Keyword::OptOut), "{url}");
    assert_eq!(sms_suppressions(&q).await.len(), 1, "{url}");
}

pub(super) async fn queued_messages_to_a_number_that_opted_out_end_cancelled_but_its_auto_reply_goes(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let queued = accept(
        &q,
        TestBatch::sms_to(&["+8613800000001", "+8613800000002"])
            .subscribed(&[("app", Kinds::all())])
            .build(),
    )
    .await;
    let stop = reply("k1", "+8613800000001", "TD", Some(Keyword::OptOut));
    let stop_id = stop.id.clone();
    q.record_replies(vec![stop], Vec::new()).await.unwrap();
    let auto = accept(
        &q,
        TestBatch::sms_to(&["+8613800000001"])
            .source(AUTO_REPLY_SOURCE)
            .build(),
    )
    .await;

    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    let mut got: Vec<(BatchId, &str)> = claimed
        .iter()
        .map(|c| (c.batch_id, c.to.as_str()))
        .collect();
    got.sort();
    let mut want = vec![(queued, "+8613800000002"), (auto, "+8613800000001")];
    want.sort();
    assert_eq!(got, want, "{url}");
    let cancelled = super::receipts::message(&q, queued, 0).await;
    assert_eq!(cancelled.state, MessageState::Cancelled, "{url}");
    assert_eq!(cancelled.attempts, 0, "{url}");
    assert_eq!(
        cancelled.last_error,
        Some(format!("suppressed: replied STOP (reply {stop_id})")),
        "{url}"
    );
    let c = counts(&q, queued).await;
    assert_eq!((c.cancelled, c.sending), (1, 1), "{url}: {c:?}");
    let told = q.deliveries(Some("app"), None, None, 100).await.unwrap();
    let cancel = told
        .iter()
        .find(|d| d.event.kind == EventKind::Cancelled)
        .unwrap_or_else(|| panic!("{url}: no message.cancelled in {told:?}"));
    assert_eq!(
        cancel.event.message_id,
        Some(message_id(queued, 0)),
        "{url}"
    );
    assert_eq!(cancel.event.code, cancelled.last_error, "{url}");
    assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty(), "{url}");
}

pub(super) async fn a_reply_records_its_event_for_the_answered_batch_and_the_endpoints_wanting_replies(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let replies_only: Kinds = [EventKind::Reply].into_iter().collect();
    let sent_only: Kinds = [EventKind::Sent].into_iter().collect();
    let id = accept(
        &q,
        TestBatch::sms_to(&["+8613800000001"])
            .subscribed(&[("app", replies_only), ("audit", sent_only)])
            .build(),
    )
    .await;
    send_all(&q).await;
    let recorded = q
        .record_replies(
            vec![reply("k1", "+8613800000001", "TD", Some(Keyword::OptOut))],
            vec!["all-replies".into()],
        )
        .await
        .unwrap();
    let reply_id = recorded[0].reply.id.clone();
    // Posted again: no second event.
    q.record_replies(
        vec![reply("k1", "+8613800000001", "TD", Some(Keyword::OptOut))],
        vec!["all-replies".into()],
    )
    .await
    .unwrap();
    for endpoint in ["app", "all-replies"] {
        let found = q.deliveries(Some(endpoint), None, None, 100).await.unwrap();
        assert_eq!(found.len(), 1, "{url}: {endpoint} {found:?}");
        let event = &found[0].event;
        assert_eq!(event.id, format!("reply.{reply_id}"), "{url}");
        assert_eq!(event.kind, EventKind::Reply, "{url}");
        assert_eq!(event.batch_id, Some(id), "{url}");
        assert_eq!(event.message_id, Some(message_id(id, 0)), "{url}");
        let data = event.data.clone().expect("a reply carries its record");
        assert_eq!(data["id"], reply_id.as_str(), "{url}");
        assert_eq!(data["keyword"], "opt_out", "{url}");
        assert_eq!(data["answers"]["ref"], "r0", "{url}");
    }
    let audit = q.deliveries(Some("audit"), None, None, 100).await.unwrap();
    assert!(
        audit.iter().all(|d| d.event.kind == EventKind::Sent),
        "{url}: {audit:?}"
    );
}

pub(super) async fn a_message_of_unknown_outcome_to_a_number_that_opted_out_ends_cancelled_saying_so(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let id = accept(&q, batch_to(&["+8613800000001"])).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    q.settle(settle_all(
        &claimed,
        Outcome::Unknown {
            at_ms: now_ms(),
            error: "timed out".into(),
        },
    ))
    .await
    .unwrap();
    q.record_replies(
        vec![reply("k1", "+8613800000001", "STOP", Some(Keyword::OptOut))],
        Vec::new(),
    )
    .await
    .unwrap();
    assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty(), "{url}");
    let m = super::receipts::message(&q, id, 0).await;
    assert_eq!(m.state, MessageState::Cancelled, "{url}");
    let error = m.last_error.unwrap_or_default();
    assert!(
        error.starts_with("suppressed: replied STOP") && error.contains("may have been sent"),
        "{url}: {error}"
    );
}
