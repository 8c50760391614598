//! The conformance suite's part for delivery receipts and unknown outcomes, on
//! every engine.

use super::*;
use crate::domain::DeliveryReport;

pub(super) fn report(id: &str, to: Option<&str>, delivered: bool, code: &str) -> DeliveryReport {
    DeliveryReport {
        provider_message_id: id.into(),
        to: to.map(str::to_string),
        delivered,
        code: Some(code.into()),
        at_ms: Some(1_700_000_000_000),
    }
}

/// Claims every message of provider "p" and settles each as sent with the id
/// `id_of(index)`.
pub(super) async fn send_all(q: &Queue, id_of: impl Fn(u32) -> String) -> Vec<Claimed> {
    let claimed = q.claim("p", 100, LEASE).await.unwrap();
    q.settle(sent_as(&claimed, id_of)).await.unwrap();
    claimed
}

/// Settlements of `claimed` as sent, each with the id `id_of(index)`.
pub(super) fn sent_as(claimed: &[Claimed], id_of: impl Fn(u32) -> String) -> Vec<Settlement> {
    claimed
        .iter()
        .map(|c| Settlement {
            lease: c.lease,
            outcome: Outcome::Sent {
                provider_message_id: Some(id_of(index_of(c))),
                segment_ids: Vec::new(),
            },
            sent_by: None,
        })
        .collect()
}

fn index_of(c: &Claimed) -> u32 {
    c.id.rsplit('-').next().unwrap().parse().unwrap()
}

pub(super) async fn message(q: &Queue, id: BatchId, index: u32) -> MessageRecord {
    q.messages(
        id,
        MessageQuery {
            state: None,
            after: index.checked_sub(1),
            limit: 1,
        },
    )
    .await
    .unwrap()
    .remove(0)
}

pub(super) async fn a_receipt_moves_a_sent_message_to_delivered_or_undelivered_with_its_code(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(3, 0, now_ms())).await;
    send_all(&q, |i| format!("SM{i}")).await;
    let effects = q
        .apply_receipts(
            "p",
            vec![
                report("SM0", Some("+8613800000000"), true, "DELIVRD"),
                report("SM1", None, false, "30003"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        effects,
        [
            ReceiptEffect::Applied {
                to: "+8613800000000".into(),
                channel: Channel::Sms
            },
            ReceiptEffect::Applied {
                to: "+8613800000001".into(),
                channel: Channel::Sms
            },
        ]
    );
    let c = counts(&q, id).await;
    assert_eq!(
        (c.total, c.sent, c.delivered, c.undelivered),
        (3, 1, 1, 1),
        "{c:?}"
    );
    let delivered = message(&q, id, 0).await;
    assert_eq!(delivered.state, MessageState::Delivered);
    assert_eq!(delivered.receipt_code.as_deref(), Some("DELIVRD"));
    assert_eq!(delivered.receipt_at_ms, Some(1_700_000_000_000));
    assert_eq!(message(&q, id, 1).await.state, MessageState::Undelivered);
    // Another provider's receipt with the same id touches nothing.
    let other = q
        .apply_receipts("other", vec![report("SM2", None, true, "DELIVRD")])
        .await
        .unwrap();
    assert_eq!(other, [ReceiptEffect::Held]);
    assert_eq!(counts(&q, id).await.sent, 1);
}

pub(super) async fn a_receipt_that_arrives_twice_or_contradicts_a_delivery_counts_once(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(2, 0, now_ms())).await;
    send_all(&q, |i| format!("SM{i}")).await;
    let twice = vec![
        report("SM0", None, true, "DELIVRD"),
        report("SM0", None, true, "DELIVRD"),
    ];
    assert_eq!(
        q.apply_receipts("p", twice.clone()).await.unwrap()[1],
        ReceiptEffect::Unchanged
    );
    assert_eq!(
        q.apply_receipts("p", twice).await.unwrap(),
        [ReceiptEffect::Unchanged, ReceiptEffect::Unchanged]
    );
    // Delivered is final: a later failure report does not undo it.
    let late = q
        .apply_receipts("p", vec![report("SM0", None, false, "EXPIRED")])
        .await
        .unwrap();
    assert_eq!(late, [ReceiptEffect::Unchanged]);
    // Undelivered can still become delivered (a carrier's later success), once.
    q.apply_receipts("p", vec![report("SM1", None, false, "EXPIRED")])
        .await
        .unwrap();
    q.apply_receipts("p", vec![report("SM1", None, true, "DELIVRD")])
        .await
        .unwrap();
    let c = counts(&q, id).await;
    assert_eq!(
        (c.total, c.sent, c.delivered, c.undelivered),
        (2, 0, 2, 0),
        "{c:?}"
    );
    assert_eq!(
        message(&q, id, 0).await.receipt_code.as_deref(),
        Some("DELIVRD")
    );
}

pub(super) async fn a_receipt_before_the_send_is_recorded_is_held_and_applied_by_the_settlement(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(2, 0, now_ms())).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    let early = q
        .apply_receipts(
            "p",
            vec![
                report("SM0", Some("+8613800000000"), false, "UNDELIV"),
                report("SM0", Some("+8613800000000"), true, "DELIVRD"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(early, [ReceiptEffect::Held, ReceiptEffect::Held]);
    assert_eq!(counts(&q, id).await.sending, 2);
    q.settle(sent_as(&claimed, |i| format!("SM{i}")))
        .await
        .unwrap();
    let c = counts(&q, id).await;
    assert_eq!(
        (c.sent, c.delivered, c.undelivered),
        (1, 1, 0),
        "both held reports applied in order, the message counted once: {c:?}"
    );
    // Applied once: the held reports are gone, so they apply to nothing again.
    let again = q
        .apply_receipts("p", vec![report("SM0", None, true, "DELIVRD")])
        .await
        .unwrap();
    assert_eq!(again, [ReceiptEffect::Unchanged]);
}

pub(super) async fn a_message_sent_or_confirmed_through_another_provider_takes_that_providers_receipts(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(2, 0, now_ms())).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    // Receipts from "q" that arrive before its sends are recorded, and one from
    // "p" with the same id, which names no message of "p".
    let early = q
        .apply_receipts(
            "q",
            vec![
                report("Q0", None, true, "DELIVRD"),
                report("Q1", None, false, "UNDELIV"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(early, [ReceiptEffect::Held, ReceiptEffect::Held]);
    q.apply_receipts("p", vec![report("Q1", None, true, "DELIVRD")])
        .await
        .unwrap();
    q.settle(vec![
        Settlement {
            lease: claimed[0].lease,
            outcome: Outcome::Sent {
                provider_message_id: Some("Q0".into()),
                segment_ids: Vec::new(),
            },
            sent_by: Some("q".into()),
        },
        Settlement {
            lease: claimed[1].lease,
            outcome: Outcome::Unknown {
                at_ms: now_ms(),
                error: "via q: no answer within 10 ms".into(),
            },
            sent_by: Some("q".into()),
        },
    ])
    .await
    .unwrap();
    let first = message(&q, id, 0).await;
    assert_eq!(
        (first.provider.as_str(), first.state),
        ("q", MessageState::Delivered),
        "the ledger names the provider that sent it, whose held receipt applies"
    );
    let second = message(&q, id, 1).await;
    assert_eq!(
        (second.provider.as_str(), second.state),
        ("p", MessageState::Unknown),
        "an unknown outcome waits with its own provider"
    );
    let again = claim_when_due(&q).await;
    q.settle(vec![Settlement {
        lease: again[0].lease,
        outcome: Outcome::Confirmed {
            provider_message_id: Some("Q1".into()),
        },
        sent_by: Some("q".into()),
    }])
    .await
    .unwrap();
    let second = message(&q, id, 1).await;
    assert_eq!(
        (second.provider.as_str(), second.state, second.attempts),
        ("q", MessageState::Undelivered, 1),
        "confirmed at q, with q's held receipt and not p's"
    );
    assert_eq!(second.receipt_code.as_deref(), Some("UNDELIV"));
    let c = counts(&q, id).await;
    assert_eq!((c.delivered, c.undelivered, c.unknown), (1, 1, 0), "{c:?}");
}

pub(super) async fn a_provider_id_shared_by_a_request_is_told_apart_by_the_recipient(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(3, 0, now_ms())).await;
    send_all(&q, |_| "BIZ^1".into()).await;
    let effects = q
        .apply_receipts(
            "p",
            vec![
                report("BIZ^1", None, true, "DELIVERED"),
                report("BIZ^1", Some("+8613800000002"), true, "DELIVERED"),
                report("BIZ^1", Some("+8613899999999"), true, "DELIVERED"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(effects[0], ReceiptEffect::Ambiguous);
    assert_eq!(
        effects[1],
        ReceiptEffect::Applied {
            to: "+8613800000002".into(),
            channel: Channel::Sms
        }
    );
    assert_eq!(
        effects[2],
        ReceiptEffect::Held,
        "a number not in the request"
    );
    let c = counts(&q, id).await;
    assert_eq!((c.sent, c.delivered), (2, 1), "{c:?}");
    assert_eq!(message(&q, id, 2).await.state, MessageState::Delivered);
}

pub(super) async fn an_unknown_outcome_waits_then_comes_back_marked_and_a_confirmation_is_no_attempt(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(1, 0, now_ms())).await;
    let first = q.claim("p", 10, LEASE).await.unwrap();
    assert_eq!(first[0].unknown_since_ms, None);
    let before = now_ms();
    q.settle(settle_all(
        &first,
        Outcome::Unknown {
            at_ms: now_ms() + 300,
            error: "no answer within 10 ms".into(),
        },
    ))
    .await
    .unwrap();
    let c = counts(&q, id).await;
    assert_eq!((c.unknown, c.sending, c.pending), (1, 0, 0), "{c:?}");
    let m = message(&q, id, 0).await;
    assert_eq!(m.state, MessageState::Unknown);
    assert_eq!(m.last_error.as_deref(), Some("no answer within 10 ms"));
    assert!(
        !crate::domain::batch_state(BatchControl::Active, &c).eq("done"),
        "an unknown outcome is not finished"
    );
    assert!(
        q.claim("p", 10, LEASE).await.unwrap().is_empty(),
        "not yet due"
    );
    let again = claim_when_due(&q).await;
    assert_eq!(again[0].attempts, 1);
    let since = again[0].unknown_since_ms.expect("marked as unknown before");
    assert!(since >= before && since <= now_ms(), "{since}");
    q.settle(settle_all(
        &again,
        Outcome::Confirmed {
            provider_message_id: Some("SM-found".into()),
        },
    ))
    .await
    .unwrap();
    let m = message(&q, id, 0).await;
    assert_eq!(m.state, MessageState::Sent);
    assert_eq!(m.attempts, 1, "asking the provider is no attempt");
    assert_eq!(m.provider_message_id.as_deref(), Some("SM-found"));
    assert_eq!(m.last_error, None);
    // Receipts find a confirmed message by the id the provider gave.
    let effects = q
        .apply_receipts("p", vec![report("SM-found", None, true, "DELIVRD")])
        .await
        .unwrap();
    assert!(matches!(effects[0], ReceiptEffect::Applied { .. }));
    assert_eq!(counts(&q, id).await.delivered, 1);
}

pub(super) async fn an_unknown_outcome_in_a_cancelled_batch_ends_cancelled(store: TestStore) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(1, 0, now_ms())).await;
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
    let summary = q.control(id, BatchAction::Cancel).await.unwrap().unwrap();
    assert_eq!(
        crate::domain::batch_state(summary.control, &summary.counts),
        "cancelling"
    );
    assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty());
    let c = counts(&q, id).await;
    assert_eq!((c.cancelled, c.unknown), (1, 0), "{c:?}");
}

pub(super) async fn held_receipts_expire_after_a_day(store: TestStore) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(2, 0, now_ms())).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    let long_ago = now_ms() - EARLY_RECEIPT_TTL_MS - 1_000;
    let held = q
        .engine()
        .apply_receipts("p", vec![report("SM0", None, true, "DELIVRD")], long_ago)
        .await
        .unwrap();
    assert_eq!(held, [ReceiptEffect::Held]);
    // Holding another report now sweeps the one past its time.
    q.apply_receipts("p", vec![report("SM1", None, true, "DELIVRD")])
        .await
        .unwrap();
    q.settle(sent_as(&claimed, |i| format!("SM{i}")))
        .await
        .unwrap();
    let c = counts(&q, id).await;
    assert_eq!(
        (c.sent, c.delivered),
        (1, 1),
        "only the fresh one applied: {c:?}"
    );
    assert_eq!(message(&q, id, 1).await.state, MessageState::Delivered);
}
