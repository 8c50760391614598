//! The conformance suite's part for failover: a provider's messages claimed within
//! another provider's limits, and the ledger naming the provider that sent them.

use super::*;

/// Provider "q"'s limits: 2 messages at once, refilled slowly, and one message a
/// minute per recipient.
fn q_limits() -> Limits {
    Limits {
        rate: Some(Rate::new(0.01, Some(2))),
        per_recipient: vec![Cap {
            count: 1,
            window_ms: 60_000,
        }],
        owner: Some("q".into()),
        ..Limits::default()
    }
}

fn messages_of(claim: Claim) -> Vec<Claimed> {
    match claim {
        Claim::Messages(claimed) => claimed,
        Claim::Wait(wait) => panic!("told to wait {wait:?}"),
    }
}

pub(super) async fn a_claim_within_another_providers_limits_pays_that_providers_bucket_and_caps(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    accept(&q, batch_to(&["a", "b", "c"])).await;
    accept(&q, TestBatch::sms_to(&["a", "d"]).provider("q").build()).await;
    // p's messages, sent through q: q's bucket holds 2.
    let claimed = messages_of(q.claim_within("p", 10, LEASE, &q_limits()).await.unwrap());
    assert_eq!(
        claimed.iter().map(|c| c.to.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(claimed.iter().all(|c| c.provider == "p"));
    // q's own claim finds q's bucket empty.
    match q.claim_within("q", 10, LEASE, &q_limits()).await.unwrap() {
        Claim::Wait(_) => {}
        Claim::Messages(m) => panic!("q's bucket was not paid by p's claim: {m:?}"),
    }
    // p's own bucket (no rate here) is untouched by the claim through q.
    let p_rate = Limits {
        rate: Some(Rate::new(0.01, Some(1))),
        ..Limits::default()
    };
    assert_eq!(
        messages_of(q.claim_within("p", 10, LEASE, &p_rate).await.unwrap()).len(),
        1
    );
    // Recipient "a" got its one message a minute through q: q's next claim
    // defers q's own message to "a" and takes "d".
    let unlimited_rate_q = Limits {
        rate: None,
        ..q_limits()
    };
    let claimed = messages_of(
        q.claim_within("q", 10, LEASE, &unlimited_rate_q)
            .await
            .unwrap(),
    );
    assert_eq!(
        claimed.iter().map(|c| c.to.as_str()).collect::<Vec<_>>(),
        ["d"]
    );
}

pub(super) async fn a_message_sent_through_another_provider_names_it_and_a_retry_stays_with_its_own(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let id = accept(&q, batch(3, 0, now_ms())).await;
    let claimed = q.claim("p", 10, LEASE).await.unwrap();
    let through_q = |c: &Claimed, outcome: Outcome| Settlement {
        lease: c.lease,
        outcome,
        sent_by: Some("q".into()),
    };
    q.settle(vec![
        through_q(
            &claimed[0],
            Outcome::Sent {
                provider_message_id: Some("q-1".into()),
                segment_ids: Vec::new(),
            },
        ),
        through_q(
            &claimed[1],
            Outcome::Retry {
                at_ms: now_ms(),
                error: "via q: HTTP 503".into(),
            },
        ),
        Settlement {
            lease: claimed[2].lease,
            outcome: Outcome::Sent {
                provider_message_id: None,
                segment_ids: Vec::new(),
            },
            sent_by: None,
        },
    ])
    .await
    .unwrap();
    let ledger = q
        .messages(
            id,
            MessageQuery {
                state: None,
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    let providers: Vec<(&str, MessageState)> = ledger
        .iter()
        .map(|m| (m.provider.as_str(), m.state))
        .collect();
    assert_eq!(
        providers,
        [
            ("q", MessageState::Sent),
            ("p", MessageState::Pending),
            ("p", MessageState::Sent)
        ]
    );
    assert_eq!(ledger[0].provider_message_id.as_deref(), Some("q-1"));
    // The retried message waits in its own provider's queue.
    assert!(q.claim("q", 10, LEASE).await.unwrap().is_empty());
    let again = q.claim("p", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, claimed[1].id);
}
