//! Recipients at a per-recipient cap now, as the pre-flight report counts them.

use super::*;

pub(super) async fn recipients_at_a_cap_are_counted_from_the_sends_claims_recorded(
    store: TestStore,
) {
    let (q, _url, _guard) = store;
    let tos = ["+8613800000001", "+8613800000002", "+8613800000003"];
    accept(&q, batch_to(&tos)).await;
    let limits = Limits {
        per_recipient: vec![Cap {
            count: 1,
            window_ms: 86_400_000,
        }],
        owner: Some("p".into()),
        ..Limits::default()
    };
    let Claim::Messages(claimed) = q.claim_within("p", 2, LEASE, &limits).await.unwrap() else {
        panic!("no rate was given")
    };
    assert_eq!(claimed.len(), 2);

    let asked: Vec<String> = tos.iter().map(|t| t.to_string()).collect();
    let mut more = asked.clone();
    more.push("+8613800000004".into());
    assert_eq!(q.at_caps("p", &limits, more).await.unwrap(), 2);
    // Another provider's caps, or none, hold nobody.
    let other = Limits {
        owner: Some("other".into()),
        ..limits.clone()
    };
    assert_eq!(q.at_caps("p", &other, asked.clone()).await.unwrap(), 0);
    assert_eq!(q.at_caps("p", &Limits::default(), asked).await.unwrap(), 0);
}
