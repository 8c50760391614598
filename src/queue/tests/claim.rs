//! The conformance suite's part for claims: what a claim carries, in which order,
//! and never the same message twice.

use super::*;

pub(super) async fn a_claim_carries_the_segments_template_and_vars_stored_with_the_message(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
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

/// Whether an engine stores each body or renders it at claim from the batch's
/// template and the message's variables, a claim carries the body intake rendered.
pub(super) async fn a_batch_rendered_from_a_template_is_claimed_with_each_body_and_its_vars(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let template = BatchTemplate {
        subject: None,
        body: "Hi {{name}}, 你好".into(),
    };
    let vars = |i: u32| json!({"name": format!("N{i}")});
    // The bodies handed to the store are not the rendered ones: what is claimed
    // can only come from the template and each message's vars.
    for (stored_id, arrival) in [
        (Some("t1"), None),
        (None, None),
        (Some("t1"), Some(Arrival::Streamed)),
    ] {
        let b = TestBatch::sms(3)
            .template(stored_id, template.clone(), vars)
            .bodies(|i| format!("not stored {i}"))
            .build();
        match arrival {
            None => {
                accept(&q, b).await;
            }
            Some(arrival) => {
                let messages = b.messages.clone();
                let Begun::Staging(mut staging) = q.begin(b, arrival).await.unwrap() else {
                    panic!("a new batch");
                };
                staging.add(messages).await.unwrap();
                q.commit(staging, json!({}), 3).await.unwrap();
            }
        }
        let mut claimed = q.claim("p", 10, LEASE).await.unwrap();
        claimed.sort_by(|a, b| a.id.cmp(&b.id));
        let got: Vec<(String, Option<String>)> =
            claimed.into_iter().map(|c| (c.body, c.vars)).collect();
        // Providers see the vars only for a stored template of theirs.
        let expected: Vec<(String, Option<String>)> = (0..3)
            .map(|i| {
                let shown = stored_id.map(|_| vars(i).to_string());
                (format!("Hi N{i}, 你好"), shown)
            })
            .collect();
        assert_eq!(got, expected, "{url} {stored_id:?} {arrival:?}");
    }
}

pub(super) async fn pending_counts_a_providers_waiting_messages_up_to_the_cap(store: TestStore) {
    let (q, url, _guard) = store;
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

pub(super) async fn concurrent_claims_never_hand_out_a_message_twice(store: TestStore) {
    let (q, _url, _guard) = store;
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

pub(super) async fn claims_go_by_priority_then_send_time_then_arrival(store: TestStore) {
    let (q, _url, _guard) = store;
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

pub(super) async fn claims_only_take_the_named_providers_messages(store: TestStore) {
    let (q, _url, _guard) = store;
    accept(&q, TestBatch::sms(3).provider("other").build()).await;
    accept(&q, batch(2, 0, now_ms())).await;
    assert_eq!(q.claim("p", 10, LEASE).await.unwrap().len(), 2);
    assert_eq!(q.claim("other", 10, LEASE).await.unwrap().len(), 3);
}

pub(super) async fn two_handles_on_one_store_never_claim_the_same_message(store: TestStore) {
    let (q, url, _guard) = store;
    accept(&q, batch(600, 0, now_ms())).await;
    // A second handle is what a second process has: nothing shared in memory.
    let other = Queue::open(&url.parse().expect("a store URL"))
        .await
        .expect("open the store again");
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

pub(super) async fn next_due_is_the_earliest_pending_lease_end_or_unknown_check_of_a_provider(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    assert_eq!(q.next_due("p").await.unwrap(), None, "{url}");
    let now = now_ms();
    accept(&q, batch(1, 9, now + 7_200_000)).await;
    // Of a lower priority, but due sooner: the earliest counts, whatever its priority.
    accept(&q, batch(1, 0, now + 3_600_000)).await;
    assert_eq!(
        q.next_due("p").await.unwrap(),
        Some(now + 3_600_000),
        "{url}"
    );
    assert_eq!(q.next_due("other").await.unwrap(), None, "{url}");
    accept(&q, batch(1, 0, now)).await;
    let claimed = q.claim("p", 1, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1, "{url}");
    // The claimed message's lease ends before the others are due.
    let due = q.next_due("p").await.unwrap().expect("something is due");
    assert!(
        (now + LEASE.as_millis() as i64..now_ms() + LEASE.as_millis() as i64 + 1).contains(&due),
        "{url}: {due}"
    );
    let at_ms = now + 60_000;
    q.settle(settle_all(
        &claimed,
        Outcome::Unknown {
            at_ms,
            error: "no answer".into(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(q.next_due("p").await.unwrap(), Some(at_ms), "{url}");
}
