//! The conformance suite's part for the suppression list.

use super::*;

fn suppression(channel: Channel, address: &str, reason: &str) -> Suppression {
    Suppression {
        channel,
        address: address.into(),
        reason: reason.into(),
        // Set by the store.
        created_at_ms: 0,
    }
}

async fn all_suppressions(q: &Queue) -> Vec<Suppression> {
    q.records()
        .suppressions(None, None, u32::MAX)
        .await
        .unwrap()
}

pub(super) async fn suppressing_counts_the_new_and_an_existing_one_keeps_its_time_but_takes_the_reason(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    let before = now_ms();
    let first = q
        .records()
        .suppress(vec![
            suppression(Channel::Sms, "+8613800000001", "STOP reply"),
            suppression(Channel::Sms, "+8613800000002", "complaint"),
            suppression(Channel::Email, "+8613800000001", "typo list"),
        ])
        .await
        .unwrap();
    assert_eq!(
        first, 3,
        "{url}: one address on two channels is two entries"
    );
    let stored = all_suppressions(&q).await;
    assert_eq!(stored.len(), 3, "{url}");
    assert!(stored.iter().all(|s| s.created_at_ms >= before), "{url}");
    let first_time = stored
        .iter()
        .find(|s| s.channel == Channel::Sms && s.address == "+8613800000001")
        .expect("stored")
        .created_at_ms;
    // The next call happens on a later millisecond, so a rewritten time shows.
    while now_ms() <= first_time {
        tokio::task::yield_now().await;
    }

    let second = q
        .records()
        .suppress(vec![
            suppression(Channel::Sms, "+8613800000001", "first reason of this call"),
            suppression(Channel::Sms, "+8613800000003", "bounced"),
            suppression(Channel::Sms, "+8613800000001", "carrier opt-out"),
            suppression(Channel::Sms, "+8613800000002", "complaint"),
        ])
        .await
        .unwrap();
    assert_eq!(second, 1, "{url}: only +8613800000003 is new");
    let stored = all_suppressions(&q).await;
    assert_eq!(stored.len(), 4, "{url}");
    let updated = stored
        .iter()
        .find(|s| s.channel == Channel::Sms && s.address == "+8613800000001")
        .expect("stored");
    assert_eq!(
        updated.reason, "carrier opt-out",
        "{url}: the last reason wins"
    );
    assert_eq!(updated.created_at_ms, first_time, "{url}");
    let other_channel = stored
        .iter()
        .find(|s| s.channel == Channel::Email)
        .expect("stored");
    assert_eq!(other_channel.reason, "typo list", "{url}");
    let new = stored
        .iter()
        .find(|s| s.address == "+8613800000003")
        .expect("stored");
    assert!(new.created_at_ms > first_time, "{url}");
    assert_eq!(q.records().suppress(Vec::new()).await.unwrap(), 0, "{url}");
}

/// Addresses that differ only in ways a careless comparison would blur.
const TRICKY: [&str; 10] = [
    "+8613800000001",
    "8613800000001",
    "+86 138 0000 0001",
    "a+tag@example.com",
    "a@example.com",
    "A@example.com",
    "用户@例子.中国",
    "ünïcødé@exämple.org",
    "unicode@example.org",
    "o'brien@example.com",
];

pub(super) async fn suppressed_returns_exactly_the_suppressed_subset(store: TestStore) {
    let (q, url, _guard) = store;
    // Every other tricky address on sms, the rest on email.
    let (on_sms, on_email): (Vec<_>, Vec<_>) =
        TRICKY.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let mut entries: Vec<Suppression> = on_sms
        .iter()
        .map(|(_, a)| suppression(Channel::Sms, a, "test"))
        .collect();
    entries.extend(
        on_email
            .iter()
            .map(|(_, a)| suppression(Channel::Email, a, "test")),
    );
    q.records().suppress(entries).await.unwrap();
    let asked: Vec<String> = TRICKY.iter().map(|a| (*a).to_owned()).collect();
    let expected: HashSet<String> = on_sms.iter().map(|(_, a)| a.to_string()).collect();
    assert_eq!(
        q.records().suppressed(Channel::Sms, &asked).await.unwrap(),
        expected,
        "{url}"
    );
    let expected: HashSet<String> = on_email.iter().map(|(_, a)| a.to_string()).collect();
    assert_eq!(
        q.records()
            .suppressed(Channel::Email, &asked)
            .await
            .unwrap(),
        expected,
        "{url}"
    );
    assert!(
        q.records()
            .suppressed::<&str>(Channel::Sms, &[])
            .await
            .unwrap()
            .is_empty(),
        "{url}"
    );

    // 5,000 addresses of three kinds, 3 in 7 of them suppressed, some asked twice.
    let addresses: Vec<String> = (0..5_000)
        .map(|i| match i % 3 {
            0 => format!("+86138{i:08}"),
            1 => format!("user+{i}@exämple.org"),
            _ => format!("用户{i}@例子.中国"),
        })
        .collect();
    let listed: Vec<Suppression> = addresses
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 1 || i % 7 == 0)
        .map(|(_, a)| suppression(Channel::Sms, a, "bulk"))
        .collect();
    let expected: HashSet<String> = listed.iter().map(|s| s.address.clone()).collect();
    assert_eq!(
        q.records().suppress(listed).await.unwrap(),
        expected.len(),
        "{url}"
    );
    let mut asked = addresses.clone();
    asked.extend(addresses.iter().take(100).cloned());
    let found = q.records().suppressed(Channel::Sms, &asked).await.unwrap();
    assert_eq!(found.len(), expected.len(), "{url}");
    assert_eq!(found, expected, "{url}");
    // Far fewer addresses than the list holds (an engine may look each up).
    let few: Vec<String> = addresses.iter().skip(40).take(60).cloned().collect();
    let expected_few: HashSet<String> = few
        .iter()
        .filter(|a| expected.contains(*a))
        .cloned()
        .collect();
    assert!(!expected_few.is_empty() && expected_few.len() < few.len());
    assert_eq!(
        q.records().suppressed(Channel::Sms, &few).await.unwrap(),
        expected_few,
        "{url}"
    );
}

pub(super) async fn unsuppressing_removes_only_the_named_addresses_on_that_channel(
    store: TestStore,
) {
    let (q, url, _guard) = store;
    q.records()
        .suppress(vec![
            suppression(Channel::Sms, "a+1@example.com", "x"),
            suppression(Channel::Sms, "+8613800000001", "x"),
            suppression(Channel::Sms, "用户@例子.中国", "x"),
            suppression(Channel::Email, "a+1@example.com", "x"),
        ])
        .await
        .unwrap();
    let removed = q
        .records()
        .unsuppress(
            Channel::Sms,
            vec![
                "a+1@example.com".into(),
                "用户@例子.中国".into(),
                "never-listed@example.com".into(),
                "用户@例子.中国".into(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(removed, 2, "{url}");
    let left: Vec<(Channel, String)> = all_suppressions(&q)
        .await
        .into_iter()
        .map(|s| (s.channel, s.address))
        .collect();
    assert_eq!(
        left,
        [
            (Channel::Email, "a+1@example.com".to_owned()),
            (Channel::Sms, "+8613800000001".to_owned()),
        ],
        "{url}"
    );
    assert!(
        q.records()
            .suppressed(Channel::Sms, &["a+1@example.com"])
            .await
            .unwrap()
            .is_empty(),
        "{url}"
    );
    assert_eq!(
        q.records()
            .unsuppress(Channel::Sms, vec!["a+1@example.com".into()])
            .await
            .unwrap(),
        0,
        "{url}"
    );
    assert_eq!(
        q.records()
            .suppress(vec![suppression(Channel::Sms, "a+1@example.com", "again")])
            .await
            .unwrap(),
        1,
        "{url}: an address unsuppressed is new again"
    );
}

pub(super) async fn suppressions_page_by_channel_then_address(store: TestStore) {
    let (q, url, _guard) = store;
    let mut entries = Vec::new();
    for (i, address) in TRICKY.iter().enumerate() {
        entries.push(suppression(Channel::Sms, address, &format!("sms {i}")));
        if i % 3 == 0 {
            entries.push(suppression(Channel::Email, address, &format!("email {i}")));
        }
    }
    q.records().suppress(entries.clone()).await.unwrap();
    let key = |s: &Suppression| (s.channel.as_str(), s.address.clone());
    let mut expected: Vec<(&str, String)> = entries.iter().map(key).collect();
    expected.sort();

    let page_through = |channel: Option<Channel>| {
        let q = q.clone();
        async move {
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let page = q
                    .records()
                    .suppressions(channel, after.clone(), 3)
                    .await
                    .unwrap();
                assert!(page.len() <= 3);
                let Some(last) = page.last() else { break };
                after = Some((last.channel, last.address.clone()));
                seen.extend(page);
            }
            seen
        }
    };
    let all = page_through(None).await;
    assert_eq!(all.iter().map(key).collect::<Vec<_>>(), expected, "{url}");
    let reasons_match = all.iter().all(|s| {
        entries
            .iter()
            .any(|e| e.channel == s.channel && e.address == s.address && e.reason == s.reason)
    });
    assert!(reasons_match, "{url}");

    for channel in Channel::ALL {
        let only = page_through(Some(channel)).await;
        let want: Vec<_> = expected
            .iter()
            .filter(|(c, _)| *c == channel.as_str())
            .cloned()
            .collect();
        assert_eq!(only.iter().map(key).collect::<Vec<_>>(), want, "{url}");
    }
    // A cursor from another channel: before it, the whole channel; after it, nothing.
    let email_from_sms = q
        .records()
        .suppressions(Some(Channel::Email), Some((Channel::Sms, "+".into())), 100)
        .await
        .unwrap();
    assert!(email_from_sms.is_empty(), "{url}: email sorts before sms");
    let sms_from_email = q
        .records()
        .suppressions(
            Some(Channel::Sms),
            Some((Channel::Email, "zzz".into())),
            100,
        )
        .await
        .unwrap();
    assert_eq!(sms_from_email.len(), TRICKY.len(), "{url}");
    assert!(
        q.records()
            .suppressions(None, None, 0)
            .await
            .unwrap()
            .is_empty(),
        "{url}"
    );
}

/// Times the lookup a batch submit makes, at its size: run by hand with `cargo test
/// --release --lib suppressed_timing -- --ignored --nocapture` (a debug
/// build also runs SQLite and the Redis client unoptimised).
pub(super) async fn suppressed_timing_for_100000_addresses_against_100000_suppressions(
    store: TestStore,
) {
    const N: usize = 100_000;
    let (q, url, _guard) = store;
    let engine = url.split("://").next().unwrap_or_default();
    let listed: Vec<Suppression> = (0..N)
        .map(|i| suppression(Channel::Sms, &format!("+8613{:09}", 2 * i), "bulk"))
        .collect();
    let started = std::time::Instant::now();
    assert_eq!(q.records().suppress(listed.clone()).await.unwrap(), N);
    let first = started.elapsed();
    let started = std::time::Instant::now();
    assert_eq!(q.records().suppress(listed).await.unwrap(), 0);
    let again = started.elapsed();
    eprintln!("{engine}: suppress {N} new: {first:?}; the same again: {again:?}");
    // Half of the asked addresses are listed.
    let asked: Vec<String> = (0..N).map(|i| format!("+8613{i:09}")).collect();
    for round in 1..=3 {
        let started = std::time::Instant::now();
        let found = q.records().suppressed(Channel::Sms, &asked).await.unwrap();
        let took = started.elapsed();
        assert_eq!(found.len(), N / 2);
        eprintln!("{engine}: suppressed() of {N} addresses, round {round}: {took:?}");
    }
}
