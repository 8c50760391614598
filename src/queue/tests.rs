//! The engine conformance suite: every test runs against every engine through the
//! public `Queue` handle, each on a store of its own.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::domain::{message_id, now_ms};
use crate::ratelimit::{Cap, Limits, Rate};

/// A store for one test: the handle, its URL (to open it again) and a guard that
/// keeps it alive and cleans it up when dropped.
pub(crate) type TestStore = (Queue, String, Box<dyn std::any::Any + Send>);

/// The records of an engine that a test wraps with [`Queue::from_engine`]: none.
pub(crate) struct NoRecords;

fn no_records<T>() -> Result<T> {
    Err(Error::Unsupported(
        "a wrapped test engine keeps no templates or suppressions".into(),
    ))
}

#[async_trait]
impl Records for NoRecords {
    async fn create_template(&self, _: Template) -> Result<Option<Template>> {
        no_records()
    }
    async fn replace_template(&self, _: Template) -> Result<Option<Template>> {
        no_records()
    }
    async fn template(&self, _: &str) -> Result<Option<Template>> {
        no_records()
    }
    async fn templates(&self, _: Option<String>, _: u32) -> Result<Vec<Template>> {
        no_records()
    }
    async fn delete_template(&self, _: &str) -> Result<bool> {
        no_records()
    }
    async fn suppress(&self, _: Vec<Suppression>) -> Result<usize> {
        no_records()
    }
    async fn unsuppress(&self, _: Channel, _: Vec<String>) -> Result<usize> {
        no_records()
    }
    async fn suppressed(&self, _: Channel, _: &[&str]) -> Result<HashSet<String>> {
        no_records()
    }
    async fn suppressions(
        &self,
        _: Option<Channel>,
        _: Option<(Channel, String)>,
        _: u32,
    ) -> Result<Vec<Suppression>> {
        no_records()
    }
    async fn remember_sends(&self, _: Channel, _: Vec<String>, _: i64) -> Result<()> {
        no_records()
    }
    async fn recently_sent(&self, _: Channel, _: Vec<String>, _: i64) -> Result<HashSet<String>> {
        no_records()
    }
    async fn forget_sends(&self, _: Channel, _: i64, _: u32) -> Result<u64> {
        no_records()
    }
    async fn mark_unacked(&self, _: &super::Unacked, _: i64, _: i64) -> Result<()> {
        no_records()
    }
    async fn unacked(&self, _: &str, _: &str, _: i64, _: u32) -> Result<Vec<String>> {
        no_records()
    }
    async fn unmark_unacked(&self, _: &super::Unacked) -> Result<()> {
        no_records()
    }
}

/// A fresh store of every engine for one test.
async fn stores() -> Vec<TestStore> {
    let mut stores = vec![sqlite_store().await];
    stores.extend(super::postgres::test_store().await);
    stores.extend(super::redis::test_store().await);
    stores
}

async fn sqlite_store() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store").display());
    let queue = Queue::open(&url).await.expect("open the SQLite store");
    (queue, url, Box::new(dir))
}

/// A batch of `n` SMS messages for provider "p".
pub(crate) fn batch(n: u32, priority: i32, send_at_ms: i64) -> NewBatch {
    NewBatch {
        id: BatchId::new(),
        channel: Channel::Sms,
        source: "test".into(),
        priority,
        send_at_ms,
        idempotency: None,
        report: json!({"accepted": n}),
        template_id: None,
        template: None,
        messages: (0..n)
            .map(|index| NewMessage {
                index,
                provider: "p".into(),
                to: format!("+8613800{index:06}"),
                reference: Some(format!("r{index}")),
                subject: None,
                body: format!("body {index}"),
                segments: 1,
                vars: None,
            })
            .collect(),
    }
}

async fn accept(q: &Queue, b: NewBatch) -> BatchId {
    match q.accept(b).await.expect("accept") {
        Accepted::New(id) => id,
        other => panic!("expected a new batch, got {other:?}"),
    }
}

async fn counts(q: &Queue, id: BatchId) -> Counts {
    q.batch(id).await.unwrap().expect("batch exists").counts
}

const LEASE: Duration = Duration::from_secs(30);

fn settle_all(claimed: &[Claimed], outcome: Outcome) -> Vec<Settlement> {
    claimed
        .iter()
        .map(|c| Settlement {
            lease: c.lease,
            outcome: outcome.clone(),
            sent_by: None,
        })
        .collect()
}

#[tokio::test]
async fn an_accepted_batch_is_stored_whole_and_survives_reopening() {
    for (q, url, _guard) in stores().await {
        let id = accept(&q, batch(250, 0, now_ms())).await;
        drop(q);
        let reopened = Queue::open(&url).await.unwrap();
        let c = counts(&reopened, id).await;
        assert_eq!((c.total, c.pending), (250, 250));
        let page = reopened
            .messages(
                id,
                MessageQuery {
                    state: None,
                    after: None,
                    limit: 1000,
                },
            )
            .await
            .unwrap();
        let indices: Vec<u32> = page.iter().map(|m| m.index).collect();
        assert_eq!(indices, (0..250).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_claim_carries_the_segments_template_and_vars_stored_with_the_message() {
    for (q, _url, _guard) in stores().await {
        let mut b = batch(2, 0, now_ms());
        b.template_id = Some("shipped".into());
        b.messages[0].segments = 3;
        b.messages[0].vars = Some(r#"{"name":"Li"}"#.into());
        b.messages[1].subject = Some("Hi".into());
        b.messages[1].reference = None;
        accept(&q, b).await;
        let mut plain = batch(1, 0, now_ms());
        plain.messages[0].to = "+8613900000000".into();
        accept(&q, plain).await;

        let claimed = q.claim("p", 10, LEASE).await.unwrap();
        let got: Vec<_> = claimed
            .iter()
            .map(|c| {
                (
                    c.segments,
                    c.template_id.as_deref(),
                    c.vars.as_deref(),
                    c.subject.as_deref(),
                    c.reference.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    3,
                    Some("shipped"),
                    Some(r#"{"name":"Li"}"#),
                    None,
                    Some("r0")
                ),
                (1, Some("shipped"), None, Some("Hi"), None),
                (1, None, None, None, Some("r0")),
            ]
        );
    }
}

/// Starts staging `b`, which must be new.
async fn begin(q: &Queue, b: NewBatch) -> Staging {
    match q.begin(b, Arrival::Streamed).await.expect("begin") {
        Begun::Staging(staging) => staging,
        Begun::Answered(answer) => panic!("expected to stage, got {answer:?}"),
    }
}

#[tokio::test]
async fn batches_are_listed_newest_first_in_pages_without_those_being_staged() {
    for (q, url, _guard) in stores().await {
        let oldest = accept(&q, batch(3, 0, now_ms())).await;
        let middle = accept(&q, batch(1, 5, now_ms())).await;
        let newest = accept(&q, batch(2, 0, now_ms())).await;
        let claimed = q.claim("p", 1, LEASE).await.unwrap();
        q.settle(settle_all(
            &claimed,
            Outcome::Sent {
                provider_message_id: None,
            },
        ))
        .await
        .unwrap();
        let staged = begin(&q, batch(0, 0, now_ms())).await;

        let ids = |page: &[BatchSummary]| page.iter().map(|b| b.id).collect::<Vec<_>>();
        let first = q.batches(None, 2).await.unwrap();
        assert_eq!(ids(&first), [newest, middle], "{url}");
        let rest = q.batches(Some(middle), 2).await.unwrap();
        assert_eq!(ids(&rest), [oldest], "{url}");
        assert!(
            q.batches(Some(oldest), 2).await.unwrap().is_empty(),
            "{url}"
        );
        assert!(q.batches(None, 0).await.unwrap().is_empty(), "{url}");

        // Each summary is what the batch's own read says.
        for summary in q.batches(None, 10).await.unwrap() {
            let alone = q
                .batch(summary.id)
                .await
                .unwrap()
                .expect("listed, so stored");
            assert_eq!(summary.counts, alone.counts, "{url}");
            assert_eq!(summary.priority, alone.priority, "{url}");
        }
        // Claims take the best priority first: the message sent was the middle one's.
        let middle_counts = q.batch(middle).await.unwrap().unwrap().counts;
        assert_eq!((middle_counts.total, middle_counts.sent), (1, 1), "{url}");
        staged.discard().await;
    }
}

#[tokio::test]
async fn pending_counts_a_providers_waiting_messages_up_to_the_cap() {
    for (q, url, _guard) in stores().await {
        assert_eq!(q.pending("p", 100).await.unwrap(), 0, "{url}");
        accept(&q, batch(4, 0, now_ms())).await;
        // Not due yet, and of another priority: pending all the same.
        accept(&q, batch(3, 7, now_ms() + 3_600_000)).await;
        let claimed = q.claim("p", 2, LEASE).await.unwrap();
        assert_eq!(claimed.len(), 2, "{url}");
        assert_eq!(q.pending("p", 100).await.unwrap(), 5, "{url}");
        assert_eq!(q.pending("p", 3).await.unwrap(), 3, "{url}");
        assert_eq!(q.pending("p", 0).await.unwrap(), 0, "{url}");
        assert_eq!(q.pending("other", 100).await.unwrap(), 0, "{url}");
    }
}

#[tokio::test]
async fn a_batch_stored_in_chunks_is_invisible_until_committed_then_whole() {
    for (q, url, _guard) in stores().await {
        let mut whole = batch(2_500, 0, now_ms());
        // Index 7 was rejected: a gap in the indices.
        whole.messages.remove(7);
        let messages = std::mem::take(&mut whole.messages);
        let id = whole.id;
        let mut staging = begin(&q, whole).await;
        for chunk in messages.chunks(1_000) {
            staging.add(chunk.to_vec()).await.unwrap();
        }
        // Staged messages are neither claimable nor in the ledger.
        assert!(q.claim("p", 100, LEASE).await.unwrap().is_empty());
        assert!(q.batch(id).await.unwrap().is_none());

        let accepted = q
            .commit(staging, json!({"accepted": 2_499}), 2_500)
            .await
            .unwrap();
        assert_eq!(accepted, Accepted::New(id));
        let reopened = Queue::open(&url).await.unwrap();
        let c = counts(&reopened, id).await;
        assert_eq!((c.total, c.pending), (2_499, 2_499));
        let mut claimed = Vec::new();
        for _ in 0..10 {
            let more = reopened.claim("p", 1_000, LEASE).await.unwrap();
            if more.is_empty() {
                break;
            }
            claimed.extend(more);
        }
        let mut ids: Vec<String> = claimed.iter().map(|c| c.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 2_499);
        assert!(!ids.contains(&message_id(id, 7)));
    }
}

#[tokio::test]
async fn a_discarded_staging_leaves_nothing_and_the_next_batch_is_unaffected() {
    for (q, _url, _guard) in stores().await {
        let mut first = batch(50, 0, now_ms());
        let messages = std::mem::take(&mut first.messages);
        let abandoned = first.id;
        let mut staging = begin(&q, first).await;
        staging.add(messages).await.unwrap();
        staging.discard().await;
        let kept = accept(&q, batch(5, 0, now_ms())).await;
        assert!(q.batch(abandoned).await.unwrap().is_none());
        assert_eq!(q.claim("p", 100, LEASE).await.unwrap().len(), 5);
        assert_eq!(counts(&q, kept).await.sending, 5);
    }
}

#[tokio::test]
async fn staging_with_a_used_idempotency_key_answers_with_the_first_batch() {
    for (q, _url, _guard) in stores().await {
        let idem = || Idempotency {
            key: "k-1".into(),
            request_hash: "h".into(),
        };
        let mut first = batch(3, 0, now_ms());
        first.idempotency = Some(idem());
        let messages = std::mem::take(&mut first.messages);
        let id = first.id;
        let mut staging = begin(&q, first).await;
        staging.add(messages).await.unwrap();
        q.commit(staging, json!({"accepted": 3}), 3).await.unwrap();

        let mut again = batch(3, 0, now_ms());
        again.idempotency = Some(idem());
        match q.begin(again, Arrival::Streamed).await.unwrap() {
            Begun::Answered(Accepted::Replayed { id: seen, report }) => {
                assert_eq!(seen, id);
                assert_eq!(report, json!({"accepted": 3}));
            }
            _ => panic!("expected the first batch's answer"),
        }
        let mut other = batch(3, 0, now_ms());
        other.idempotency = Some(Idempotency {
            key: "k-1".into(),
            request_hash: "another".into(),
        });
        assert!(matches!(
            q.begin(other, Arrival::Streamed).await,
            Err(Error::Conflict(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_hand_out_a_message_twice() {
    for (q, _url, _guard) in stores().await {
        accept(&q, batch(1000, 0, now_ms())).await;
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..1000 {
                    let claimed = q.claim("p", 7, LEASE).await.unwrap();
                    if claimed.is_empty() {
                        break;
                    }
                    mine.extend(claimed.into_iter().map(|c| c.id));
                }
                mine
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), 1000, "every message claimed once");
        assert_eq!(distinct.len(), 1000, "no message claimed twice");
    }
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_the_old_lease_cannot_settle() {
    for (q, _url, _guard) in stores().await {
        let id = accept(&q, batch(3, 0, now_ms())).await;
        let first = q.claim("p", 10, Duration::from_millis(50)).await.unwrap();
        assert_eq!(first.len(), 3);
        assert!(
            q.claim("p", 10, LEASE).await.unwrap().is_empty(),
            "leased messages are not due"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let second = loop {
            let again = q.claim("p", 10, LEASE).await.unwrap();
            if !again.is_empty() {
                break again;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the lease never expired"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let ids = |c: &[Claimed]| c.iter().map(|m| m.id.clone()).collect::<HashSet<_>>();
        assert_eq!(
            ids(&first),
            ids(&second),
            "the same messages, with the same ids, come back"
        );
        q.settle(settle_all(
            &first,
            Outcome::Failed {
                error: "late".into(),
            },
        ))
        .await
        .unwrap();
        assert_eq!(
            counts(&q, id).await.sending,
            3,
            "a stale lease's settlement is ignored"
        );
        q.settle(settle_all(
            &second,
            Outcome::Sent {
                provider_message_id: Some("x".into()),
            },
        ))
        .await
        .unwrap();
        let c = counts(&q, id).await;
        assert_eq!((c.sent, c.failed), (3, 0));
    }
}

#[tokio::test]
async fn a_retry_waits_for_its_time_and_counts_an_attempt_a_release_does_not() {
    for (q, _url, _guard) in stores().await {
        accept(&q, batch(2, 0, now_ms())).await;
        let claimed = q.claim("p", 10, LEASE).await.unwrap();
        let (a, b) = (&claimed[0], &claimed[1]);
        q.settle(vec![
            Settlement {
                lease: a.lease,
                outcome: Outcome::Retry {
                    at_ms: now_ms() + 60_000,
                    error: "503".into(),
                },
                sent_by: None,
            },
            Settlement {
                lease: b.lease,
                outcome: Outcome::Release { at_ms: now_ms() },
                sent_by: None,
            },
        ])
        .await
        .unwrap();
        let again = q.claim("p", 10, LEASE).await.unwrap();
        assert_eq!(again.len(), 1, "only the released message is due");
        assert_eq!(again[0].id, b.id);
        assert_eq!(again[0].attempts, 0, "a release is not an attempt");
        q.settle(settle_all(
            &again,
            Outcome::Retry {
                at_ms: now_ms(),
                error: "503".into(),
            },
        ))
        .await
        .unwrap();
        let third = q.claim("p", 10, LEASE).await.unwrap();
        assert_eq!(third[0].attempts, 1);
    }
}

#[tokio::test]
async fn failures_are_recorded_and_retry_requeues_only_the_failed() {
    for (q, _url, _guard) in stores().await {
        let id = accept(&q, batch(4, 0, now_ms())).await;
        let claimed = q.claim("p", 10, LEASE).await.unwrap();
        let mut settlements = settle_all(
            &claimed[..2],
            Outcome::Failed {
                error: "HTTP 400: bad number".into(),
            },
        );
        settlements.extend(settle_all(
            &claimed[2..],
            Outcome::Sent {
                provider_message_id: None,
            },
        ));
        q.settle(settlements).await.unwrap();
        let failed = q
            .messages(
                id,
                MessageQuery {
                    state: Some(MessageState::Failed),
                    after: None,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(failed.len(), 2);
        assert_eq!(
            failed[0].last_error.as_deref(),
            Some("HTTP 400: bad number")
        );
        assert_eq!(failed[0].attempts, 1);
        let summary = q.control(id, Control::Retry).await.unwrap().unwrap();
        assert_eq!(
            (
                summary.counts.pending,
                summary.counts.sent,
                summary.counts.failed
            ),
            (2, 2, 0)
        );
        let again = q.claim("p", 10, LEASE).await.unwrap();
        let again_ids: HashSet<_> = again.iter().map(|c| c.id.clone()).collect();
        let failed_ids: HashSet<_> = failed.iter().map(|m| m.id.clone()).collect();
        assert_eq!(again_ids, failed_ids);
        assert!(
            again.iter().all(|c| c.attempts == 0),
            "a retried message gets a fresh budget"
        );
    }
}

#[tokio::test]
async fn pause_holds_messages_resume_releases_them_cancel_ends_them() {
    for (q, _url, _guard) in stores().await {
        let id = accept(&q, batch(5, 0, now_ms())).await;
        let in_flight = q.claim("p", 1, LEASE).await.unwrap();
        let paused = q.control(id, Control::Pause).await.unwrap().unwrap();
        assert_eq!((paused.counts.paused, paused.counts.sending), (4, 1));
        assert!(
            q.claim("p", 10, LEASE).await.unwrap().is_empty(),
            "a paused batch is not claimed"
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
        assert_eq!(
            counts(&q, id).await.paused,
            5,
            "a retry inside a paused batch stays paused"
        );
        let resumed = q.control(id, Control::Resume).await.unwrap().unwrap();
        assert_eq!(resumed.counts.pending, 5);
        let two = q.claim("p", 2, LEASE).await.unwrap();
        let cancelled = q.control(id, Control::Cancel).await.unwrap().unwrap();
        assert_eq!(
            (cancelled.counts.cancelled, cancelled.counts.sending),
            (3, 2)
        );
        assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty());
        q.settle(settle_all(&two, Outcome::Release { at_ms: now_ms() }))
            .await
            .unwrap();
        assert_eq!(
            counts(&q, id).await.cancelled,
            5,
            "released messages of a cancelled batch are cancelled"
        );
        assert!(matches!(
            q.control(id, Control::Resume).await,
            Err(Error::Conflict(_))
        ));
        assert!(
            q.control(BatchId::new(), Control::Pause)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_request_and_refuses_a_different_one() {
    for (q, _url, _guard) in stores().await {
        let keyed = |hash: &str| {
            let mut b = batch(3, 0, now_ms());
            b.idempotency = Some(Idempotency {
                key: "k-1".into(),
                request_hash: hash.into(),
            });
            b
        };
        let first = keyed("h1");
        let first_id = first.id;
        assert_eq!(q.accept(first).await.unwrap(), Accepted::New(first_id));
        match q.accept(keyed("h1")).await.unwrap() {
            Accepted::Replayed { id, report } => {
                assert_eq!(id, first_id);
                assert_eq!(report, json!({"accepted": 3}));
            }
            other => panic!("expected a replay, got {other:?}"),
        }
        assert!(matches!(
            q.accept(keyed("h2")).await,
            Err(Error::Conflict(_))
        ));
        assert_eq!(
            q.claim("p", 100, LEASE).await.unwrap().len(),
            3,
            "nothing was stored twice"
        );
    }
}

#[tokio::test]
async fn claims_go_by_priority_then_send_time_then_arrival() {
    for (q, _url, _guard) in stores().await {
        let now = now_ms();
        let low = accept(&q, batch(1, -5, now - 1_000)).await;
        let normal_late = accept(&q, batch(1, 0, now - 10)).await;
        let normal_early = accept(&q, batch(1, 0, now - 500)).await;
        let normal_early_too = accept(&q, batch(1, 0, now - 500)).await;
        let high = accept(&q, batch(1, 7, now - 5)).await;
        let future = accept(&q, batch(1, 100, now + 60_000)).await;
        let mut order = Vec::new();
        for _ in 0..6 {
            // One at a time: the claim's selection is ordered, its RETURNING rows are not.
            order.extend(
                q.claim("p", 1, LEASE)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|c| c.batch_id),
            );
        }
        assert_eq!(
            order,
            vec![high, normal_early, normal_early_too, normal_late, low]
        );
        assert!(!order.contains(&future), "a future send_at is not due yet");
    }
}

#[tokio::test]
async fn claims_only_take_the_named_providers_messages() {
    for (q, _url, _guard) in stores().await {
        let mut other = batch(3, 0, now_ms());
        for m in &mut other.messages {
            m.provider = "other".into();
        }
        accept(&q, other).await;
        accept(&q, batch(2, 0, now_ms())).await;
        assert_eq!(q.claim("p", 10, LEASE).await.unwrap().len(), 2);
        assert_eq!(q.claim("other", 10, LEASE).await.unwrap().len(), 3);
    }
}

#[tokio::test]
async fn ledger_pages_follow_index_order_and_filter_by_state() {
    for (q, _url, _guard) in stores().await {
        let id = accept(&q, batch(25, 0, now_ms())).await;
        let mut after = None;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let page = q
                .messages(
                    id,
                    MessageQuery {
                        state: None,
                        after,
                        limit: 10,
                    },
                )
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(|m| m.index);
            seen.extend(page.into_iter().map(|m| m.index));
        }
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
        let sent = q
            .messages(
                id,
                MessageQuery {
                    state: Some(MessageState::Sent),
                    after: None,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert!(sent.is_empty());
        assert!(q.batch(BatchId::new()).await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_store_never_claim_the_same_message() {
    for (q, url, _guard) in stores().await {
        accept(&q, batch(600, 0, now_ms())).await;
        // A second handle is what a second process has: nothing shared in memory.
        let other = Queue::open(&url).await.expect("open the store again");
        let mut tasks = Vec::new();
        for handle in [q.clone(), other.clone(), q.clone(), other.clone()] {
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claimed = handle.claim("p", 5, LEASE).await.unwrap();
                    if claimed.is_empty() {
                        return mine;
                    }
                    mine.extend(claimed.into_iter().map(|c| c.id));
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), 600, "every message claimed once");
        assert_eq!(distinct.len(), 600, "no message claimed twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_accepts_with_one_idempotency_key_store_one_batch() {
    for (q, _url, _guard) in stores().await {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                let mut b = batch(50, 0, now_ms());
                b.idempotency = Some(Idempotency {
                    key: "race".into(),
                    request_hash: "h".into(),
                });
                q.accept(b).await.unwrap()
            }));
        }
        let mut stored = Vec::new();
        let mut replayed = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Accepted::New(id) => stored.push(id),
                Accepted::Replayed { id, .. } => replayed.push(id),
            }
        }
        assert_eq!(stored.len(), 1, "exactly one accept stores the batch");
        assert!(
            replayed.iter().all(|id| *id == stored[0]),
            "the others replay it"
        );
        assert_eq!(q.claim("p", 1000, LEASE).await.unwrap().len(), 50);
    }
}

#[tokio::test]
async fn an_expired_lease_in_a_paused_batch_comes_back_paused() {
    for (q, _url, _guard) in stores().await {
        let id = accept(&q, batch(2, 0, now_ms())).await;
        let leased = q.claim("p", 10, Duration::from_millis(30)).await.unwrap();
        assert_eq!(leased.len(), 2);
        q.control(id, Control::Pause).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while counts(&q, id).await.paused < 2 {
            // Engines notice expired leases when claiming.
            assert!(q.claim("p", 10, LEASE).await.unwrap().is_empty());
            assert!(
                std::time::Instant::now() < deadline,
                "the expired leases never came back"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counts(&q, id).await.sending, 0);
        q.control(id, Control::Resume).await.unwrap();
        let again = q.claim("p", 10, LEASE).await.unwrap();
        assert_eq!(again.len(), 2);
        assert!(
            again.iter().all(|c| c.attempts == 0),
            "an expired lease is not an attempt"
        );
    }
}

#[tokio::test]
async fn recipients_refused_at_intake_leave_gaps_in_the_indices() {
    for (q, _url, _guard) in stores().await {
        let mut b = batch(10, 0, now_ms());
        b.messages.retain(|m| [0, 2, 9].contains(&m.index));
        let batch_id = b.id;
        let id = accept(&q, b).await;
        assert_eq!(counts(&q, id).await.total, 3);
        let page = |after| {
            q.messages(
                id,
                MessageQuery {
                    state: None,
                    after,
                    limit: 10,
                },
            )
        };
        let all = page(None).await.unwrap();
        assert_eq!(all.iter().map(|m| m.index).collect::<Vec<_>>(), [0, 2, 9]);
        assert_eq!(all[1].id, crate::domain::message_id(batch_id, 2));
        assert_eq!(all[1].to, "+8613800000002");
        let rest = page(Some(2)).await.unwrap();
        assert_eq!(rest.iter().map(|m| m.index).collect::<Vec<_>>(), [9]);
        let mut claimed: Vec<String> = q
            .claim("p", 10, LEASE)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        claimed.sort();
        let expected: Vec<String> = [0, 2, 9]
            .map(|i| crate::domain::message_id(batch_id, i))
            .into();
        assert_eq!(claimed, expected);
    }
}

#[tokio::test]
async fn a_cancelled_batch_can_be_cancelled_again_but_not_retried() {
    for (q, _url, _guard) in stores().await {
        let id = accept(&q, batch(2, 0, now_ms())).await;
        q.control(id, Control::Cancel).await.unwrap();
        let again = q.control(id, Control::Cancel).await.unwrap().unwrap();
        assert_eq!(again.control, BatchControl::Cancelled);
        assert_eq!(again.counts.cancelled, 2);
        for action in [Control::Retry, Control::Pause, Control::Resume] {
            assert!(
                matches!(q.control(id, action).await, Err(Error::Conflict(_))),
                "{action:?} on a cancelled batch"
            );
        }
    }
}

#[tokio::test]
async fn pause_and_resume_put_each_message_back_in_its_own_providers_queue() {
    for (q, _url, _guard) in stores().await {
        let mut b = batch(10, 0, now_ms());
        // Recipients 0, 3 and 9 were rejected at intake.
        b.messages.retain(|m| ![0, 3, 9].contains(&m.index));
        for m in &mut b.messages {
            if m.index % 2 == 0 {
                m.provider = "other".into();
            }
        }
        let id = accept(&q, b).await;
        let page = q
            .messages(
                id,
                MessageQuery {
                    state: None,
                    after: Some(1),
                    limit: 3,
                },
            )
            .await
            .unwrap();
        let indices: Vec<u32> = page.iter().map(|m| m.index).collect();
        assert_eq!(indices, vec![2, 4, 5], "paging skips the gaps");
        assert_eq!(page[0].id, crate::domain::message_id(id, 2));
        assert_eq!(counts(&q, id).await.total, 7);
        q.control(id, Control::Pause).await.unwrap();
        q.control(id, Control::Resume).await.unwrap();
        let p: Vec<String> = q
            .claim("p", 10, LEASE)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let other = q.claim("other", 10, LEASE).await.unwrap();
        let expected_p: HashSet<String> =
            [1, 5, 7].map(|i| crate::domain::message_id(id, i)).into();
        assert_eq!(p.into_iter().collect::<HashSet<_>>(), expected_p);
        assert_eq!(other.len(), 4);
        assert_eq!(counts(&q, id).await.sending, 7);
    }
}

fn limited(rate: Rate) -> Limits {
    Limits {
        rate: Some(rate),
        ..Limits::default()
    }
}

/// Claims within `rate` until nothing is left, sleeping as told; returns each
/// claim's size and when it returned (relative to `start`).
async fn claim_within_rate(
    handle: Queue,
    rate: Rate,
    start: std::time::Instant,
) -> Vec<(Duration, usize)> {
    let mut claims = Vec::new();
    for _ in 0..10_000 {
        match handle
            .claim_within("p", 64, LEASE, &limited(rate))
            .await
            .unwrap()
        {
            Claim::Messages(claimed) if claimed.is_empty() => break,
            Claim::Messages(claimed) => claims.push((start.elapsed(), claimed.len())),
            Claim::Wait(wait) => {
                assert!(wait <= Duration::from_secs(1), "{wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
    claims
}

#[tokio::test]
async fn a_segment_rate_pays_for_each_messages_segments() {
    // 10 segments a second, burst 10; six messages of 4 segments and one of 12.
    let limits = Limits {
        segments: Some(Rate::new(10.0, Some(10))),
        ..Limits::default()
    };
    for (q, _url, _guard) in stores().await {
        let mut b = batch(7, 0, now_ms());
        for m in &mut b.messages {
            m.segments = 4;
        }
        b.messages[6].segments = 12;
        accept(&q, b).await;
        let start = std::time::Instant::now();
        let mut claims = Vec::new();
        for _ in 0..200 {
            match q.claim_within("p", 64, LEASE, &limits).await.unwrap() {
                Claim::Messages(claimed) if claimed.is_empty() => break,
                Claim::Messages(claimed) => {
                    claims.push(claimed.iter().map(|c| c.segments).collect::<Vec<_>>());
                }
                Claim::Wait(wait) => {
                    assert!(wait <= Duration::from_secs(2), "{wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let elapsed = start.elapsed();
        // A full bucket pays for two 4-segment messages, never three; the 12-segment
        // message goes alone.
        assert_eq!(claims.first(), Some(&vec![4, 4]), "{claims:?}");
        for claim in &claims {
            let segments: u32 = claim.iter().sum();
            assert!(segments <= 10 || claim == &[12], "{claims:?}");
        }
        assert_eq!(claims.iter().flatten().sum::<u32>(), 36, "{claims:?}");
        // 36 segments with 10 up front take at least 2.6 s at 10 a second.
        assert!(elapsed >= Duration::from_millis(2_400), "{elapsed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_holds_across_handles_on_one_store() {
    // 100/s, burst 10: three handles (as three processes would) share one bucket.
    let rate = Rate::new(100.0, Some(10));
    for (q, url, _guard) in stores().await {
        let id = accept(&q, batch(150, 0, now_ms())).await;
        let start = std::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let handle = Queue::open(&url).await.expect("open the store again");
            tasks.push(tokio::spawn(claim_within_rate(handle, rate, start)));
        }
        let mut claims = Vec::new();
        for t in tasks {
            claims.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed();
        let total: usize = claims.iter().map(|c| c.1).sum();
        assert_eq!(total, 150, "every message claimed");
        // 150 with a burst of 10 up front take at least 1.4 s at 100/s.
        assert!(elapsed >= Duration::from_millis(1_350), "{elapsed:?}");
        // Within any window of the run, at most the burst plus the window's worth.
        for &(from, _) in &claims {
            let window = Duration::from_millis(500);
            let within: usize = claims
                .iter()
                .filter(|c| c.0 >= from && c.0 < from + window)
                .map(|c| c.1)
                .sum();
            assert!(within <= 10 + 50 + 2, "{within} claimed within 0.5 s");
        }
        assert_eq!(counts(&q, id).await.sending, 150);
    }
}

#[tokio::test]
async fn a_rate_wait_claims_nothing_and_an_empty_claim_spends_nothing() {
    let rate = Rate::new(10.0, Some(4));
    for (q, _url, _guard) in stores().await {
        // Nothing due: the bucket keeps its tokens.
        for _ in 0..3 {
            match q
                .claim_within("p", 64, LEASE, &limited(rate))
                .await
                .unwrap()
            {
                Claim::Messages(claimed) => assert!(claimed.is_empty()),
                Claim::Wait(wait) => panic!("waited {wait:?} with a full bucket"),
            }
        }
        let id = accept(&q, batch(20, 0, now_ms())).await;
        let Claim::Messages(first) = q
            .claim_within("p", 64, LEASE, &limited(rate))
            .await
            .unwrap()
        else {
            panic!("a full bucket waited")
        };
        assert_eq!(first.len(), 4, "the burst");
        // Two tokens (half the burst) come back after 0.2 s at 10/s.
        match q
            .claim_within("p", 64, LEASE, &limited(rate))
            .await
            .unwrap()
        {
            Claim::Wait(wait) => assert!(
                wait > Duration::from_millis(100) && wait <= Duration::from_millis(200),
                "{wait:?}"
            ),
            Claim::Messages(claimed) => panic!("claimed {} from an empty bucket", claimed.len()),
        }
        let c = counts(&q, id).await;
        assert_eq!((c.sending, c.pending), (4, 16));
        // An unlimited claim is not held back by the bucket.
        assert_eq!(q.claim("p", 3, LEASE).await.unwrap().len(), 3);
        // Another provider has a bucket of its own.
        let mut other = batch(10, 0, now_ms());
        for m in &mut other.messages {
            m.provider = "q".into();
        }
        accept(&q, other).await;
        match q
            .claim_within("q", 64, LEASE, &limited(rate))
            .await
            .unwrap()
        {
            Claim::Messages(claimed) => assert_eq!(claimed.len(), 4),
            Claim::Wait(wait) => panic!("provider q waited {wait:?} on p's bucket"),
        }
    }
}

/// A batch for provider "p" whose recipients are `tos`, in order.
fn batch_to(tos: &[&str]) -> NewBatch {
    let mut b = batch(tos.len() as u32, 0, now_ms());
    for (m, to) in b.messages.iter_mut().zip(tos) {
        m.to = (*to).to_owned();
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recipient_cap_holds_across_handles_and_defers_the_rest() {
    // At most 2 per minute to one recipient.
    let capped = Limits {
        per_recipient: vec![Cap {
            count: 2,
            window_ms: 60_000,
        }],
        ..Limits::default()
    };
    for (q, url, _guard) in stores().await {
        // Five to "a", three to "b", one to "c", interleaved.
        let tos = ["a", "b", "a", "a", "c", "b", "a", "b", "a"];
        let id = accept(&q, batch_to(&tos)).await;
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let handle = Queue::open(&url).await.expect("open the store again");
            let capped = capped.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..20 {
                    match handle.claim_within("p", 2, LEASE, &capped).await.unwrap() {
                        Claim::Messages(claimed) => mine.extend(claimed),
                        Claim::Wait(wait) => panic!("no rate, yet told to wait {wait:?}"),
                    }
                }
                mine
            }));
        }
        let mut claimed = Vec::new();
        for t in tasks {
            claimed.extend(t.await.unwrap());
        }
        let mut per_to = std::collections::BTreeMap::new();
        for c in &claimed {
            *per_to.entry(c.to.clone()).or_insert(0) += 1;
        }
        assert_eq!(
            per_to.into_iter().collect::<Vec<_>>(),
            [
                ("a".to_owned(), 2),
                ("b".to_owned(), 2),
                ("c".to_owned(), 1)
            ]
        );
        // The first two of each recipient went; the rest wait, unattempted, for
        // the minute to pass.
        let mut went: Vec<u32> = claimed
            .iter()
            .map(|c| c.id.rsplit('-').next().unwrap().parse().unwrap())
            .collect();
        went.sort_unstable();
        assert_eq!(went, [0, 1, 2, 4, 5]);
        let waiting = q
            .messages(
                id,
                MessageQuery {
                    state: Some(MessageState::Pending),
                    after: None,
                    limit: 100,
                },
            )
            .await
            .unwrap();
        assert_eq!(waiting.len(), 4);
        assert!(waiting.iter().all(|m| m.attempts == 0));
        // An unlimited claim is not held back: caps belong to the claim's limits.
        assert!(
            q.claim("p", 10, LEASE).await.unwrap().is_empty(),
            "deferred"
        );
        // Settling the sent ones does not free the window.
        q.settle(settle_all(
            &claimed,
            Outcome::Sent {
                provider_message_id: None,
            },
        ))
        .await
        .unwrap();
        match q.claim_within("p", 10, LEASE, &capped).await.unwrap() {
            Claim::Messages(more) => assert!(more.is_empty(), "{more:?}"),
            Claim::Wait(wait) => panic!("{wait:?}"),
        }
    }
}

mod failover;
mod receipts;
mod records;
