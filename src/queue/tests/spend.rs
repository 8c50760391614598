//! Spend caps and daily budgets: charges at claim, held batches resumed with a
//! higher cap, refunds, and a provider's spend per local day across restarts.

use std::sync::Arc;

use super::*;
use crate::queue::spend::{Charge, Charged, DailyBudget, Tariff, to_micros};

/// Limits of provider `name` at `price` a message (in CNY), with a daily budget
/// of `budget` in `zone` when given.
fn priced(name: &str, price: f64, budget: Option<(f64, &str)>) -> Limits {
    Limits {
        owner: Some(name.into()),
        tariff: Some(Arc::new(Tariff {
            provider: name.into(),
            per_message: to_micros(price),
            per_segment: 0,
            currency: Some("CNY".into()),
            daily: budget.map(|(amount, zone)| DailyBudget {
                amount: to_micros(amount),
                zone: jiff::tz::TimeZone::get(zone).expect("a known zone"),
            }),
            fails_over: false,
        })),
        ..Limits::default()
    }
}

async fn claim_priced(q: &Queue, limit: usize, lease: Duration, limits: &Limits) -> Vec<Claimed> {
    match q.claim_within("p", limit, lease, limits).await.unwrap() {
        Claim::Messages(claimed) => claimed,
        Claim::Wait(wait) => panic!("no rate was given, yet asked to wait {wait:?}"),
    }
}

async fn summary(q: &Queue, id: BatchId) -> BatchSummary {
    q.batch(id).await.unwrap().expect("the batch exists")
}

pub(super) async fn a_batch_at_its_cap_holds_the_rest_with_why_until_resumed_with_a_higher_cap(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let limits = priced("p", 1.0, None);
    let id = accept(&q, TestBatch::sms(5).max_cost(to_micros(2.5)).build()).await;
    let first = claim_priced(&q, 2, LEASE, &limits).await;
    assert_eq!(first.len(), 2);
    q.settle(settle_all(&first, sent())).await.unwrap();

    // The third would take the spend to 3.00: it and the two waiting are held.
    assert!(claim_priced(&q, 10, LEASE, &limits).await.is_empty());
    let held = summary(&q, id).await;
    assert_eq!((held.counts.sent, held.counts.held), (2, 3), "{held:?}");
    assert_eq!((held.spent, held.max_cost), (2_000_000, Some(2_500_000)));
    assert_eq!(batch_state(held.control, &held.counts), "held");
    assert!(!held.counts.is_finished(), "a held batch is not finished");
    let page = q
        .messages(
            id,
            MessageQuery {
                state: Some(MessageState::Held),
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.len(), 3);
    assert!(
        page.iter()
            .all(|m| m.last_error.as_deref() == Some("spend cap 2.50 CNY reached (spent 2.00)")),
        "{page:?}"
    );

    // A plain resume, or a cap not above the spend, is refused; nothing moves.
    assert!(matches!(
        q.control(id, BatchAction::Resume).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        q.resume_with_cap(id, 2.0).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(counts(&q, id).await.held, 3);

    let resumed = q
        .resume_with_cap(id, 10.0)
        .await
        .unwrap()
        .expect("the batch");
    assert_eq!((resumed.counts.pending, resumed.counts.held), (3, 0));
    let rest = claim_priced(&q, 10, LEASE, &limits).await;
    assert_eq!(rest.len(), 3);
    q.settle(settle_all(&rest, sent())).await.unwrap();
    let done = summary(&q, id).await;
    assert_eq!((done.counts.sent, done.spent), (5, 5_000_000));
    assert!(done.counts.is_finished());
}

pub(super) async fn a_charge_is_given_back_when_not_sent_unless_an_attempt_was_unknown(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let limits = priced("p", 1.0, None);
    let outcome = |lease: Lease, outcome: Outcome| Settlement {
        lease,
        outcome,
        sent_by: None,
    };
    let released = || Outcome::Release {
        at_ms: now_ms(),
        error: None,
    };
    let refused = || Outcome::Failed {
        error: "refused".into(),
    };

    // Released and failed attempts never reached the provider: given back.
    let fresh = accept(&q, TestBatch::sms(2).max_cost(to_micros(10.0)).build()).await;
    let claimed = claim_priced(&q, 10, LEASE, &limits).await;
    assert_eq!(summary(&q, fresh).await.spent, 2_000_000);
    let [a, b] = claimed.as_slice() else {
        panic!("two claimed")
    };
    q.settle(vec![
        outcome(a.lease, released()),
        outcome(b.lease, refused()),
    ])
    .await
    .unwrap();
    assert_eq!(summary(&q, fresh).await.spent, 0);
    // The released one is charged again when it goes.
    let last = claim_priced(&q, 10, LEASE, &limits).await;
    assert_eq!(last.len(), 1);
    assert_eq!(summary(&q, fresh).await.spent, 1_000_000);
    q.settle(vec![outcome(last[0].lease, sent())])
        .await
        .unwrap();

    let id = accept(&q, TestBatch::sms(3).max_cost(to_micros(10.0)).build()).await;
    let claimed = claim_priced(&q, 10, Duration::from_millis(50), &limits).await;
    assert_eq!(claimed.len(), 3);
    assert_eq!(summary(&q, id).await.spent, 3_000_000);

    // The leases lapse: claimed again, as unknown outcomes, not charged twice.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let again = loop {
        let again = claim_priced(&q, 10, LEASE, &limits).await;
        if !again.is_empty() {
            break again;
        }
        assert!(std::time::Instant::now() < deadline, "no lease lapsed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|c| c.unknown_since_ms.is_some()));
    assert_eq!(summary(&q, id).await.spent, 3_000_000, "charged twice");

    // Their first requests may have been billed: a release or a failure after
    // them gives nothing back.
    let [a, b, c] = again.as_slice() else {
        panic!("three claimed")
    };
    q.settle(vec![
        outcome(a.lease, released()),
        outcome(b.lease, refused()),
        outcome(c.lease, sent()),
    ])
    .await
    .unwrap();
    assert_eq!(summary(&q, id).await.spent, 3_000_000);
    // The released one still carries its charge: not charged again when it goes.
    let last = claim_priced(&q, 10, LEASE, &limits).await;
    assert_eq!(last.len(), 1);
    assert_eq!(summary(&q, id).await.spent, 3_000_000);
}

pub(super) async fn a_spent_daily_budget_releases_to_the_providers_next_local_midnight(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let limits = priced("p", 1.0, Some((2.5, "Asia/Shanghai")));
    let id = accept(&q, TestBatch::sms(4).build()).await;
    let claimed = claim_priced(&q, 10, LEASE, &limits).await;
    assert_eq!(claimed.len(), 2, "two fit the budget of 2.50");
    let budget = limits
        .tariff
        .as_ref()
        .and_then(|t| t.daily.clone())
        .unwrap();
    let now = jiff::Timestamp::now();
    let (today, midnight) = (budget.day(now), budget.next_day(now).as_millisecond());
    assert_eq!(q.spent("p", &today).await.unwrap(), 2_000_000);
    assert_eq!(q.pauses().until("p", now_ms()), Some(midnight));
    // The two over the budget wait, unattempted, for the next day, saying why.
    let c = counts(&q, id).await;
    assert_eq!((c.pending, c.sending, c.held), (2, 2, 0), "{c:?}");
    let waiting = q
        .messages(
            id,
            MessageQuery {
                state: Some(MessageState::Pending),
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert!(waiting.iter().all(|m| m.attempts == 0
        && m.last_error.as_deref() == Some("daily budget 2.50 CNY of p reached")));
    q.settle(settle_all(&claimed, sent())).await.unwrap();
    assert_eq!(q.next_due("p").await.unwrap(), Some(midnight));
}

/// Charges `claimed` at 1.00 CNY each on provider `provider`'s `day`, within a
/// budget of 2.50.
async fn charge_on(q: &Queue, claimed: &[Claimed], provider: &str, day: &str) -> Vec<Charged> {
    let charges = claimed
        .iter()
        .map(|c| Charge {
            lease: c.lease,
            batch_id: c.batch_id,
            amount: 1_000_000,
            provider: provider.into(),
            day: day.into(),
            budget: Some(2_500_000),
            currency: Some("CNY".into()),
        })
        .collect();
    q.caps().charge(charges).await.unwrap()
}

pub(super) async fn each_providers_budget_rolls_over_at_its_own_local_midnight(store: TestStore) {
    let (q, _url, _guard) = store;
    accept(&q, TestBatch::sms(8).build()).await;
    let claimed = q.claim("p", 8, LEASE).await.unwrap();
    let budget = |zone: &str| DailyBudget {
        amount: 2_500_000,
        zone: jiff::tz::TimeZone::get(zone).unwrap(),
    };
    let (shanghai, new_york) = (budget("Asia/Shanghai"), budget("America/New_York"));
    // 23:30 in Shanghai, 10:30 in New York: both spend their budget that day.
    let before: jiff::Timestamp = "2026-12-06T15:30:00Z".parse().unwrap();
    let yes = vec![Charged::Yes, Charged::Yes, Charged::OverBudget];
    assert_eq!(
        charge_on(&q, &claimed[0..3], "cn", &shanghai.day(before)).await,
        yes
    );
    assert_eq!(
        charge_on(&q, &claimed[3..6], "us", &new_york.day(before)).await,
        yes
    );
    // An hour later it is a new day in Shanghai only.
    let after: jiff::Timestamp = "2026-12-06T16:30:00Z".parse().unwrap();
    assert_eq!(
        charge_on(&q, &claimed[2..3], "cn", &shanghai.day(after)).await,
        vec![Charged::Yes]
    );
    assert_eq!(
        charge_on(&q, &claimed[5..6], "us", &new_york.day(after)).await,
        vec![Charged::OverBudget]
    );
    assert_eq!(q.spent("cn", "2026-12-06").await.unwrap(), 2_000_000);
    assert_eq!(q.spent("cn", "2026-12-07").await.unwrap(), 1_000_000);
    assert_eq!(q.spent("us", "2026-12-06").await.unwrap(), 2_000_000);
    // A message charged already is not charged again, wherever it is asked.
    assert_eq!(
        charge_on(&q, &claimed[0..1], "cn", "2026-12-07").await,
        vec![Charged::Yes]
    );
    assert_eq!(q.spent("cn", "2026-12-07").await.unwrap(), 1_000_000);
}

pub(super) async fn a_days_spend_outlives_a_restart_and_still_holds_the_budget(store: TestStore) {
    let (q, url, _guard) = store;
    accept(&q, TestBatch::sms(4).build()).await;
    let claimed = q.claim("p", 4, LEASE).await.unwrap();
    assert_eq!(
        charge_on(&q, &claimed[0..3], "cn", "2026-12-06").await,
        vec![Charged::Yes, Charged::Yes, Charged::OverBudget]
    );
    drop(q);

    let reopened = Queue::open(&url.parse().expect("a store URL"))
        .await
        .unwrap();
    assert_eq!(reopened.spent("cn", "2026-12-06").await.unwrap(), 2_000_000);
    assert_eq!(
        charge_on(&reopened, &claimed[3..4], "cn", "2026-12-06").await,
        vec![Charged::OverBudget]
    );
}

fn sent() -> Outcome {
    Outcome::Sent {
        provider_message_id: None,
        segment_ids: Vec::new(),
    }
}

pub(super) async fn a_batch_stored_in_chunks_keeps_its_cap(store: TestStore) {
    let (q, _url, _guard) = store;
    let mut staged = TestBatch::sms(3).max_cost(to_micros(7.5)).build();
    let messages = std::mem::take(&mut staged.messages);
    let id = staged.id;
    let mut staging = begin(&q, staged).await;
    for chunk in messages.chunks(2) {
        staging.add(chunk.to_vec()).await.unwrap();
    }
    q.commit(staging, json!({"accepted": 3}), 3).await.unwrap();
    let stored = summary(&q, id).await;
    assert_eq!((stored.max_cost, stored.spent), (Some(7_500_000), 0));
    let claimed = claim_priced(&q, 10, LEASE, &priced("p", 1.0, None)).await;
    assert_eq!(claimed.len(), 3);
    assert_eq!(summary(&q, id).await.spent, 3_000_000);
}
