//! The conformance suite's part for retention and the audit trail: a pass
//! removes exactly what is old and finished, and the trail keeps its own age.

use tokio_util::sync::CancellationToken;

use super::receipts::{report, send_all};
use super::*;

/// Small steps, no pause: a pass of many steps, quickly.
const SMALL_STEPS: Pace = Pace {
    rows: 2,
    pages: 10,
    pause: Duration::ZERO,
};

fn reply_from(key: &str, from: &str) -> NewReply {
    NewReply {
        id: crate::provider::reply_id("p", key),
        provider: "p".into(),
        from: from.into(),
        to: None,
        body: "thanks".into(),
        sent_at_ms: None,
        keyword: None,
    }
}

fn entry(actor: &str, action: AuditAction, target: &str) -> NewAuditEntry {
    NewAuditEntry {
        at_ms: now_ms(),
        actor: actor.into(),
        action,
        target: target.into(),
        result: "ok".into(),
    }
}

/// A moment strictly between what came before and what comes after.
async fn cutoff() -> i64 {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let at = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    at
}

async fn prune(q: &Queue, ledger: i64, audit: i64) -> Pruned {
    q.prune(
        Cutoffs {
            ledger_before_ms: Some(ledger),
            audit_before_ms: Some(audit),
        },
        SMALL_STEPS,
        &CancellationToken::new(),
    )
    .await
    .unwrap()
}

/// The stored batches, newest first.
async fn listed(q: &Queue) -> Vec<BatchId> {
    let page = q.batches(None, 10).await.unwrap();
    page.iter().map(|b| b.id).collect()
}

pub(super) async fn pruning_removes_exactly_what_is_old_and_finished(store: TestStore) {
    let (q, url, _guard) = store;
    // Old, sent, and confirmed only after the cutoff: touched recently, kept.
    let touched = accept(&q, batch(1, 0, now_ms())).await;
    send_all(&q, |i| format!("SM{i}")).await;
    let done = accept(&q, batch(5, 0, now_ms())).await;
    q.control(done, BatchAction::Cancel).await.unwrap();
    let paused = accept(&q, batch(2, 0, now_ms())).await;
    q.control(paused, BatchAction::Pause).await.unwrap();
    let sending = accept(&q, batch(2, 0, now_ms())).await;
    q.records()
        .suppress(vec![Suppression {
            channel: Channel::Sms,
            address: "+8613800000000".into(),
            reason: "opted out".into(),
            created_at_ms: 0,
        }])
        .await
        .unwrap();
    q.record_replies(vec![reply_from("old", "+8613800000007")], Vec::new())
        .await
        .unwrap();
    let held = q
        .apply_receipts("p", vec![report("NOSUCH", None, true, "DELIVRD")])
        .await
        .unwrap();
    assert_eq!(held, [ReceiptEffect::Held], "{url}");
    let cut = cutoff().await;
    q.apply_receipts("p", vec![report("SM0", None, true, "DELIVRD")])
        .await
        .unwrap();
    let recent = accept(&q, batch(1, 0, now_ms())).await;
    q.control(recent, BatchAction::Cancel).await.unwrap();
    q.record_replies(vec![reply_from("new", "+8613800000008")], Vec::new())
        .await
        .unwrap();

    let pruned = prune(&q, cut, i64::MIN).await;
    assert_eq!(
        pruned,
        Pruned {
            batches: 1,
            messages: 5,
            replies: 1,
            receipts: 1,
            ..Pruned::default()
        },
        "{url}"
    );
    assert!(q.batch(done).await.unwrap().is_none(), "{url}");
    assert!(
        q.messages(
            done,
            MessageQuery {
                state: None,
                after: None,
                limit: 10
            }
        )
        .await
        .unwrap()
        .is_empty(),
        "{url}"
    );
    assert_eq!(counts(&q, touched).await.delivered, 1, "{url}");
    assert_eq!(counts(&q, paused).await.paused, 2, "{url}");
    assert_eq!(counts(&q, sending).await.pending, 2, "{url}");
    assert_eq!(counts(&q, recent).await.cancelled, 1, "{url}");
    let suppressed = q
        .records()
        .suppressed(Channel::Sms, &["+8613800000000".to_owned()])
        .await
        .unwrap();
    assert_eq!(suppressed.len(), 1, "{url}: suppressions are never pruned");
    let replies = q
        .replies(ReplyQuery {
            limit: 10,
            ..ReplyQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(replies.len(), 1, "{url}");
    assert_eq!(replies[0].from, "+8613800000008", "{url}");
    assert_eq!(
        listed(&q).await,
        [recent, sending, paused, touched],
        "{url}"
    );
    assert_eq!(
        prune(&q, cut, i64::MIN).await,
        Pruned::default(),
        "{url}: a second pass finds nothing"
    );

    // Once the later changes are past the age too, only what still sends stays.
    let later = cutoff().await;
    let pruned = prune(&q, later, i64::MIN).await;
    assert_eq!((pruned.batches, pruned.messages), (2, 2), "{url}");
    assert_eq!(listed(&q).await, [sending, paused], "{url}");
}

pub(super) async fn audit_entries_page_newest_first_by_filter_and_keep_their_own_age(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    q.record_audit(entry("ops", AuditAction::Cancel, "b-1"))
        .await
        .unwrap();
    let cut = cutoff().await;
    q.record_audit(entry("ops", AuditAction::Submit, "b-2"))
        .await
        .unwrap();
    q.record_audit(entry("ci", AuditAction::Submit, "b-3"))
        .await
        .unwrap();
    q.record_audit(entry("ci", AuditAction::TemplateDelete, "welcome"))
        .await
        .unwrap();
    let page = |action: Option<AuditAction>, actor: Option<&str>, before, limit| AuditQuery {
        action,
        actor: actor.map(str::to_owned),
        before,
        limit,
    };
    let targets = |entries: &[AuditEntry]| -> Vec<String> {
        entries.iter().map(|e| e.target.clone()).collect()
    };
    let all = q.audit(page(None, None, None, 10)).await.unwrap();
    assert_eq!(targets(&all), ["welcome", "b-3", "b-2", "b-1"], "{url}");
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "{url}");
    assert_eq!(all[0].actor, "ci");
    assert_eq!(all[0].action, "template.delete");
    assert_eq!(all[0].result, "ok");
    let first = q.audit(page(None, None, None, 2)).await.unwrap();
    let next = q
        .audit(page(None, None, Some(first[1].seq), 2))
        .await
        .unwrap();
    assert_eq!(targets(&next), ["b-2", "b-1"], "{url}");
    let submits = q
        .audit(page(Some(AuditAction::Submit), None, None, 10))
        .await
        .unwrap();
    assert_eq!(targets(&submits), ["b-3", "b-2"], "{url}");
    let ops_submits = q
        .audit(page(Some(AuditAction::Submit), Some("ops"), None, 10))
        .await
        .unwrap();
    assert_eq!(targets(&ops_submits), ["b-2"], "{url}");
    let ci = q.audit(page(None, Some("ci"), None, 10)).await.unwrap();
    assert_eq!(targets(&ci), ["welcome", "b-3"], "{url}");

    // The ledger's cutoff leaves the trail alone; the trail's own age prunes it.
    let pruned = prune(&q, now_ms(), i64::MIN).await;
    assert_eq!(pruned.audit, 0, "{url}");
    let pruned = prune(&q, i64::MIN, cut).await;
    assert_eq!(pruned.audit, 1, "{url}");
    let left = q.audit(page(None, None, None, 10)).await.unwrap();
    assert_eq!(targets(&left), ["welcome", "b-3", "b-2"], "{url}");
    let cancels = q
        .audit(page(Some(AuditAction::Cancel), None, None, 10))
        .await
        .unwrap();
    assert!(cancels.is_empty(), "{url}");
}

pub(super) async fn pruning_removes_posted_and_failed_deliveries_and_leaves_pending_ones(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    super::outbox::sent_events(&q, 3).await;
    let now = now_ms();
    let claimed = q.claim_deliveries(10, LEASE, now).await.unwrap();
    assert_eq!(claimed.len(), 3, "{url}");
    let settled = vec![
        (claimed[0].key, DeliveryOutcome::Posted),
        (
            claimed[1].key,
            DeliveryOutcome::Failed {
                error: "410 Gone".into(),
            },
        ),
    ];
    q.settle_deliveries(settled, now).await.unwrap();
    let cut = cutoff().await;
    let pruned = prune(&q, cut, i64::MIN).await;
    assert_eq!(pruned.deliveries, 2, "{url}: {pruned:?}");
    let left = q.deliveries(None, None, None, 10).await.unwrap();
    assert_eq!(left.len(), 1, "{url}");
    assert_eq!(left[0].state, DeliveryState::Pending, "{url}");
}
