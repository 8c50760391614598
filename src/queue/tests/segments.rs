//! The conformance suite's part for messages sent in several parts (an SMPP long
//! message's segments, each with an id of the provider's): a receipt under any
//! part's id is the message's, whenever it comes, and pruning takes the ids with
//! the message.

use tokio_util::sync::CancellationToken;

use super::receipts::{message, report};
use super::store::segment_ids_kept;
use super::*;
use crate::domain::DeliveryReport;

/// Settlements of `claimed` as sent in three parts: message `i` with the id `A{i}`
/// and the segment ids `B{i}` and `C{i}`.
fn sent_in_parts(claimed: &[Claimed]) -> Vec<Settlement> {
    claimed
        .iter()
        .map(|c| {
            let i = c.id.rsplit('-').next().expect("an index");
            Settlement {
                lease: c.lease,
                outcome: Outcome::Sent {
                    provider_message_id: Some(format!("A{i}")),
                    segment_ids: vec![format!("B{i}"), format!("C{i}")],
                },
                sent_by: None,
            }
        })
        .collect()
}

/// What applying `reports` of provider `provider` did.
async fn apply(q: &Queue, provider: &str, reports: Vec<DeliveryReport>) -> Vec<ReceiptEffect> {
    q.apply_receipts(provider, reports).await.unwrap()
}

fn applied(to: &str) -> ReceiptEffect {
    ReceiptEffect::Applied {
        to: to.into(),
        channel: Channel::Sms,
    }
}

pub(super) async fn a_receipt_for_a_later_segment_settles_its_message_before_and_after_reopening(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let id = accept(&q, batch(2, 0, now_ms())).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    assert!(q.settle(sent_in_parts(&claimed)).await.unwrap().is_empty());

    let effects = apply(&q, "p", vec![report("C0", None, true, "DELIVRD")]).await;
    assert_eq!(effects, [applied("+8613800000000")], "{url}");
    let m = message(&q, id, 0).await;
    assert_eq!(m.state, MessageState::Delivered, "{url}");
    assert_eq!(m.receipt_code.as_deref(), Some("DELIVRD"));
    assert_eq!(m.provider_message_id.as_deref(), Some("A0"));
    // Another provider's segment of that id is not this message's.
    let effects = apply(&q, "q", vec![report("B1", None, false, "UNDELIV")]).await;
    assert_eq!(effects, [ReceiptEffect::Held], "{url}");
    drop(q);

    let reopened = Queue::open(&url.parse().expect("a store URL"))
        .await
        .unwrap();
    let effects = apply(
        &reopened,
        "p",
        vec![
            report("B1", Some("+8613800000001"), false, "UNDELIV"),
            report("B0", None, true, "DELIVRD"),
        ],
    )
    .await;
    assert_eq!(
        effects,
        [applied("+8613800000001"), ReceiptEffect::Unchanged],
        "{url}"
    );
    let m = message(&reopened, id, 1).await;
    assert_eq!(m.state, MessageState::Undelivered, "{url}");
    assert_eq!(m.receipt_code.as_deref(), Some("UNDELIV"));
    let c = counts(&reopened, id).await;
    assert_eq!((c.delivered, c.undelivered), (1, 1), "{url}");
}

pub(super) async fn an_early_receipt_for_a_later_segment_is_held_and_applied_at_settle(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let id = accept(&q, batch(2, 0, now_ms())).await;
    let held = apply(
        &q,
        "p",
        vec![
            report("C1", None, false, "UNDELIV"),
            report("B9", None, true, "DELIVRD"),
        ],
    )
    .await;
    assert_eq!(held, [ReceiptEffect::Held, ReceiptEffect::Held], "{url}");
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    let applied = q.settle(sent_in_parts(&claimed)).await.unwrap();
    assert_eq!(
        applied,
        [AppliedReceipt {
            provider: "p".into(),
            to: "+8613800000001".into(),
            channel: Channel::Sms,
            delivered: false,
            code: Some("UNDELIV".into()),
        }],
        "{url}"
    );
    assert_eq!(message(&q, id, 0).await.state, MessageState::Sent, "{url}");
    let m = message(&q, id, 1).await;
    assert_eq!(m.state, MessageState::Undelivered, "{url}");
    assert_eq!(m.receipt_code.as_deref(), Some("UNDELIV"));
    // Applied once: the same receipt again changes nothing.
    let again = apply(&q, "p", vec![report("C1", None, false, "UNDELIV")]).await;
    assert_eq!(again, [ReceiptEffect::Unchanged], "{url}");
}

pub(super) async fn pruning_takes_a_messages_segment_ids_with_it(store: TestStore) {
    let (q, url, _guard) = store;
    let old = accept(&q, batch(2, 0, now_ms())).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    q.settle(sent_in_parts(&claimed)).await.unwrap();
    assert!(segment_ids_kept(&url).await >= 4, "{url}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cut = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;

    let pruned = q
        .prune(
            Cutoffs {
                ledger_before_ms: Some(cut),
                audit_before_ms: None,
            },
            Pace {
                rows: 1,
                pages: 10,
                pause: Duration::ZERO,
            },
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!((pruned.batches, pruned.messages), (1, 2), "{url}");
    assert!(q.batch(old).await.unwrap().is_none(), "{url}");
    assert_eq!(segment_ids_kept(&url).await, 0, "{url}");
    let effects = apply(&q, "p", vec![report("C1", None, true, "DELIVRD")]).await;
    assert_eq!(effects, [ReceiptEffect::Held], "{url}");
}
