//! The conformance suite's part for claims within limits: a provider's rate and
//! segment rate, shared by every handle on a store, and per-recipient caps.

use super::*;

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

pub(super) async fn a_segment_rate_pays_for_each_messages_segments(store: TestStore) {
    // 10 segments a second, burst 10; six messages of 4 segments and one of 12.
    let limits = Limits {
        segments: Some(Rate::new(10.0, Some(10))),
        ..Limits::default()
    };
    let (q, _url, _guard) = store;
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
    // 36 segments with 10 up front take at least 2.4 s at 10 a second (the
    // 12-segment message goes with a full bucket of 10). The store reads its clock
    // in whole milliseconds, so each of the dozen claims may see up to 1 ms more
    // refill than the test's own clock: the bound leaves them 50 ms.
    assert!(elapsed >= Duration::from_millis(2_350), "{elapsed:?}");
}

pub(super) async fn a_rate_holds_across_handles_on_one_store(store: TestStore) {
    // 100/s, burst 10: three handles (as three processes would) share one bucket.
    let rate = Rate::new(100.0, Some(10));
    let (q, url, _guard) = store;
    let id = accept(&q, batch(150, 0, now_ms())).await;
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let handle = Queue::open(&url.parse().expect("a store URL"))
            .await
            .expect("open the store again");
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

pub(super) async fn a_rate_wait_claims_nothing_and_an_empty_claim_spends_nothing(store: TestStore) {
    let rate = Rate::new(10.0, Some(4));
    let (q, _url, _guard) = store;
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
    let drawn = std::time::Instant::now();
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
        // Less the time the claims themselves took, on a busy machine.
        Claim::Wait(wait) => assert!(
            wait > Duration::from_millis(100).saturating_sub(drawn.elapsed())
                && wait <= Duration::from_millis(200),
            "{wait:?} after {:?}",
            drawn.elapsed()
        ),
        Claim::Messages(claimed) => panic!("claimed {} from an empty bucket", claimed.len()),
    }
    let c = counts(&q, id).await;
    assert_eq!((c.sending, c.pending), (4, 16));
    // An unlimited claim is not held back by the bucket.
    assert_eq!(q.claim("p", 3, LEASE).await.unwrap().len(), 3);
    // Another provider has a bucket of its own.
    accept(&q, TestBatch::sms(10).provider("q").build()).await;
    match q
        .claim_within("q", 64, LEASE, &limited(rate))
        .await
        .unwrap()
    {
        Claim::Messages(claimed) => assert_eq!(claimed.len(), 4),
        Claim::Wait(wait) => panic!("provider q waited {wait:?} on p's bucket"),
    }
}

pub(super) async fn a_recipient_cap_holds_across_handles_and_defers_the_rest(store: TestStore) {
    // At most 2 per minute to one recipient.
    let capped = Limits {
        per_recipient: vec![Cap {
            count: 2,
            window_ms: 60_000,
        }],
        ..Limits::default()
    };
    let (q, url, _guard) = store;
    // Five to "a", three to "b", one to "c", interleaved.
    let tos = ["a", "b", "a", "a", "c", "b", "a", "b", "a"];
    let id = accept(&q, batch_to(&tos)).await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let handle = Queue::open(&url.parse().expect("a store URL"))
            .await
            .expect("open the store again");
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
            segment_ids: Vec::new(),
        },
    ))
    .await
    .unwrap();
    match q.claim_within("p", 10, LEASE, &capped).await.unwrap() {
        Claim::Messages(more) => assert!(more.is_empty(), "{more:?}"),
        Claim::Wait(wait) => panic!("{wait:?}"),
    }
}
