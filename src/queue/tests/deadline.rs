//! Deadlines: a message is never claimed after its batch's deadline and ends
//! `expired` with its last error, at claim time or by the sweep; a retry brings
//! expired messages back with a fresh deadline. And a release that keeps its
//! error (a throttle's).

use super::*;

/// Waits, bounded, until the clock is past `deadline_ms`.
async fn until_past(deadline_ms: i64) {
    for _ in 0..100 {
        if now_ms() > deadline_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the clock did not pass the deadline within 2 s");
}

/// Each claimed message settled with its outcome, in order.
fn each(claimed: &[Claimed], outcomes: impl IntoIterator<Item = Outcome>) -> Vec<Settlement> {
    claimed
        .iter()
        .zip(outcomes)
        .map(|(c, outcome)| Settlement {
            lease: c.lease,
            outcome,
            sent_by: None,
        })
        .collect()
}

fn sent() -> Outcome {
    Outcome::Sent {
        provider_message_id: None,
        segment_ids: Vec::new(),
    }
}

async fn in_state(q: &Queue, id: BatchId, state: MessageState) -> Vec<MessageRecord> {
    let query = MessageQuery {
        state: Some(state),
        after: None,
        limit: 100,
    };
    q.messages(id, query).await.unwrap()
}

pub(super) async fn a_message_is_never_claimed_after_its_deadline_and_ends_expired_with_its_last_error(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let deadline = now_ms() + 400;
    let id = accept(&q, TestBatch::sms(3).expires_at(deadline).build()).await;
    assert_eq!(
        q.batch(id).await.unwrap().unwrap().expires_at_ms,
        Some(deadline)
    );
    let first = q.claim("p", 1, LEASE).await.unwrap();
    assert_eq!(first.len(), 1, "claimable before its deadline");
    q.settle(settle_all(
        &first,
        Outcome::Retry {
            at_ms: now_ms(),
            error: "HTTP 503".into(),
        },
    ))
    .await
    .unwrap();
    until_past(deadline).await;
    assert!(
        q.claim("p", 10, LEASE).await.unwrap().is_empty(),
        "nothing is claimed after the deadline"
    );
    let c = counts(&q, id).await;
    assert_eq!((c.expired, c.pending, c.failed), (3, 0, 0), "{c:?}");
    assert!(c.is_finished());
    assert_eq!(batch_state(BatchControl::Active, &c), "done");
    let expired = in_state(&q, id, MessageState::Expired).await;
    assert_eq!(expired.len(), 3);
    let retried = expired
        .iter()
        .find(|m| m.attempts == 1)
        .expect("the retried one");
    assert_eq!(retried.last_error.as_deref(), Some("HTTP 503"));
    // A message out under a lease when the deadline passes is settled as its
    // attempt went; one sent back to wait is expired, not requeued.
    assert_eq!(q.expire(100).await.unwrap(), 0, "nothing is expired twice");
}

pub(super) async fn the_sweep_expires_paused_unknown_and_unclaimed_messages_and_leaves_the_rest(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let deadline = now_ms() + 400;
    // Never claimed: its provider claims nothing.
    let idle = accept(
        &q,
        TestBatch::sms(2)
            .provider("idle")
            .expires_at(deadline)
            .build(),
    )
    .await;
    let paused = accept(&q, TestBatch::sms(2).expires_at(deadline).build()).await;
    q.control(paused, BatchAction::Pause).await.unwrap();
    // Staged in chunks, one message sent and one of unknown outcome.
    let mut staged = TestBatch::sms(2).expires_at(deadline).build();
    let messages = std::mem::take(&mut staged.messages);
    let staged_id = staged.id;
    let mut staging = begin(&q, staged).await;
    staging.add(messages).await.unwrap();
    q.commit(staging, json!({"accepted": 2}), 2).await.unwrap();
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2);
    q.settle(each(
        &claimed,
        [
            sent(),
            Outcome::Unknown {
                at_ms: now_ms() + 60_000,
                error: "no answer within 10 ms".into(),
            },
        ],
    ))
    .await
    .unwrap();
    // Neither without a deadline nor with a later one.
    let open = accept(&q, TestBatch::sms(2).provider("idle").build()).await;
    let later = accept(
        &q,
        TestBatch::sms(2)
            .provider("idle")
            .expires_at(now_ms() + 600_000)
            .build(),
    )
    .await;
    until_past(deadline).await;
    let mut swept = 0;
    for _ in 0..10 {
        let n = q.expire(1_000).await.unwrap();
        swept += n;
        if n == 0 {
            break;
        }
    }
    assert_eq!(swept, 5, "2 unclaimed, 2 paused, 1 unknown");
    assert_eq!(counts(&q, idle).await.expired, 2);
    let p = counts(&q, paused).await;
    assert_eq!((p.expired, p.paused), (2, 0), "{p:?}");
    let s = counts(&q, staged_id).await;
    assert_eq!((s.sent, s.expired, s.unknown), (1, 1, 0), "{s:?}");
    let unknown = in_state(&q, staged_id, MessageState::Expired).await;
    assert_eq!(
        unknown[0].last_error.as_deref(),
        Some("no answer within 10 ms"),
        "the last error is kept"
    );
    assert_eq!(counts(&q, open).await.pending, 2);
    assert_eq!(counts(&q, later).await.pending, 2);
    // Resuming the paused batch finds nothing to send.
    q.control(paused, BatchAction::Resume).await.unwrap();
    assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty());
}

pub(super) async fn a_retry_brings_failed_and_expired_messages_back_with_a_fresh_deadline(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let deadline = now_ms() + 400;
    let id = accept(&q, TestBatch::sms(3).expires_at(deadline).build()).await;
    let first = q.claim("p", 1, LEASE).await.unwrap();
    q.settle(settle_all(
        &first,
        Outcome::Failed {
            error: "HTTP 400".into(),
        },
    ))
    .await
    .unwrap();
    until_past(deadline).await;
    assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty());
    let c = counts(&q, id).await;
    assert_eq!((c.failed, c.expired), (1, 2), "{c:?}");
    let fresh = now_ms() + 60_000;
    let summary = q
        .control(
            id,
            BatchAction::Retry {
                expires_at_ms: Some(fresh),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.expires_at_ms, Some(fresh));
    assert_eq!(
        (
            summary.counts.pending,
            summary.counts.failed,
            summary.counts.expired
        ),
        (3, 0, 0)
    );
    let again = q.claim("p", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 3, "claimable again until the fresh deadline");
    assert!(again.iter().all(|m| m.attempts == 0));
    // A retry without a deadline leaves the batch without one.
    q.settle(settle_all(
        &again,
        Outcome::Failed {
            error: "HTTP 400".into(),
        },
    ))
    .await
    .unwrap();
    let none = BatchAction::Retry {
        expires_at_ms: None,
    };
    let summary = q.control(id, none).await.unwrap().unwrap();
    assert_eq!(summary.expires_at_ms, None);
    assert_eq!(summary.counts.pending, 3);
}

pub(super) async fn a_release_with_an_error_keeps_it_as_the_last_error_and_spends_no_attempt(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(1, 0, now_ms())).await;
    let claimed = q.claim("p", 1, LEASE).await.unwrap();
    let throttled = Outcome::Release {
        at_ms: now_ms(),
        error: Some("throttled: HTTP 429".into()),
    };
    q.settle(settle_all(&claimed, throttled)).await.unwrap();
    let m = &in_state(&q, id, MessageState::Pending).await[0];
    assert_eq!(
        (m.attempts, m.last_error.as_deref()),
        (0, Some("throttled: HTTP 429"))
    );
    let again = q.claim("p", 1, LEASE).await.unwrap();
    assert_eq!(again[0].attempts, 0);
    let quiet = Outcome::Release {
        at_ms: now_ms(),
        error: None,
    };
    q.settle(settle_all(&again, quiet)).await.unwrap();
    let m = &in_state(&q, id, MessageState::Pending).await[0];
    assert_eq!(
        m.last_error.as_deref(),
        Some("throttled: HTTP 429"),
        "a release without an error keeps the last one"
    );
}

pub(super) async fn a_send_that_ends_after_the_deadline_leaves_its_message_expired(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let deadline = now_ms() + 300;
    let id = accept(&q, TestBatch::sms(3).expires_at(deadline).build()).await;
    let claimed = q.claim("p", 3, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 3);
    until_past(deadline).await;
    q.settle(each(
        &claimed,
        [
            sent(),
            Outcome::Retry {
                at_ms: now_ms(),
                error: "HTTP 503".into(),
            },
            Outcome::Unknown {
                at_ms: now_ms(),
                error: "no answer within 10 ms".into(),
            },
        ],
    ))
    .await
    .unwrap();
    // The sent one stays sent; the others are not sent again.
    assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty());
    q.expire(100).await.unwrap();
    let c = counts(&q, id).await;
    assert_eq!(
        (c.sent, c.expired, c.pending, c.unknown),
        (1, 2, 0, 0),
        "{c:?}"
    );
    let errors: Vec<_> = in_state(&q, id, MessageState::Expired)
        .await
        .into_iter()
        .map(|m| m.last_error.unwrap_or_default())
        .collect();
    assert_eq!(errors, ["HTTP 503", "no answer within 10 ms"]);
}
