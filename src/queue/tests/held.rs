//! Delivery reports held until their send is recorded come back out of the
//! settlement that applies them, so the suppression rules read them as they read
//! the reports applied on arrival.

use super::receipts::{report, sent_as};
use super::*;

pub(super) async fn a_settlement_answers_the_held_receipts_it_applied_and_only_those(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(3, 0, now_ms())).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    let to = |i: u32| {
        claimed
            .iter()
            .find(|c| c.id == message_id(id, i))
            .expect("claimed")
            .to
            .clone()
    };
    let early = q
        .apply_receipts(
            "p",
            vec![
                report("SM0", Some(&to(0)), false, "UNDELIV"),
                report("SM1", None, true, "DELIVRD"),
                report("SM9", None, false, "EXPIRED"),
            ],
        )
        .await
        .unwrap();
    assert!(early.iter().all(|e| *e == ReceiptEffect::Held), "{early:?}");
    let (first, rest): (Vec<Claimed>, Vec<Claimed>) = claimed
        .iter()
        .cloned()
        .partition(|c| c.id == message_id(id, 0));
    // A settlement of no message with a held report answers none.
    let none = q
        .settle(settle_all(
            &[rest[1].clone()],
            Outcome::Retry {
                at_ms: now_ms(),
                error: "HTTP 503".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(none, []);
    let applied = q
        .settle(sent_as(&[first[0].clone(), rest[0].clone()], |i| {
            format!("SM{i}")
        }))
        .await
        .unwrap();
    let held = |i: u32, delivered: bool, code: &str| AppliedReceipt {
        provider: "p".into(),
        to: to(i),
        channel: Channel::Sms,
        delivered,
        code: Some(code.into()),
    };
    assert_eq!(
        applied,
        [held(0, false, "UNDELIV"), held(1, true, "DELIVRD")],
        "each held report that moved a message, in order; SM9 still held"
    );
    let c = counts(&q, id).await;
    assert_eq!((c.undelivered, c.delivered, c.pending), (1, 1, 1), "{c:?}");
}
