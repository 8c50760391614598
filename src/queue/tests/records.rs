//! The conformance suite's part for the store's records: stored templates, the
//! suppression list and recent-send fingerprints, on every engine.

use super::*;

fn sms_template(id: &str) -> Template {
    Template {
        id: id.into(),
        channel: Channel::Sms,
        subject: None,
        body: "Your code is {{ code }}.".into(),
        providers: BTreeMap::from([(
            "aliyun".to_owned(),
            ProviderTemplate {
                code: Some("SMS_1234".into()),
                sign_name: Some("Herald".into()),
            },
        )]),
        // Set by the store.
        version: 99,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

#[tokio::test]
async fn a_template_is_created_once_and_each_replace_is_a_new_version() {
    for (q, url, _guard) in stores().await {
        let before = now_ms();
        let created = q.create_template(sms_template("welcome")).await.unwrap();
        assert_eq!(created.version, 1, "{url}");
        assert!(created.created_at_ms >= before, "{url}");
        assert_eq!(created.updated_at_ms, created.created_at_ms, "{url}");
        assert_eq!(
            q.template("welcome").await.unwrap().as_ref(),
            Some(&created),
            "{url}"
        );
        match q.create_template(sms_template("welcome")).await {
            Err(Error::Conflict(m)) => {
                assert_eq!(m, "a template `welcome` already exists", "{url}")
            }
            other => panic!("{url}: a second create gave {other:?}"),
        }

        let mut changed = sms_template("welcome");
        changed.channel = Channel::Email;
        changed.subject = Some("Welcome, {{ name }}".into());
        changed.body = "<p>Hello</p>".into();
        changed.providers = BTreeMap::from([
            (
                "ses".to_owned(),
                ProviderTemplate {
                    code: None,
                    sign_name: Some("Herald Team".into()),
                },
            ),
            ("smtp".to_owned(), ProviderTemplate::default()),
        ]);
        let second = q
            .replace_template(changed.clone())
            .await
            .unwrap()
            .expect("the template exists");
        assert_eq!(second.version, 2, "{url}");
        assert_eq!(second.created_at_ms, created.created_at_ms, "{url}");
        assert!(second.updated_at_ms >= created.updated_at_ms, "{url}");
        assert_eq!(
            (&second.subject, &second.body, &second.providers),
            (&changed.subject, &changed.body, &changed.providers),
            "{url}"
        );
        assert_eq!(q.template("welcome").await.unwrap(), Some(second), "{url}");

        // A replace without a subject removes it.
        let third = q
            .replace_template(sms_template("welcome"))
            .await
            .unwrap()
            .expect("the template exists");
        assert_eq!(third.version, 3, "{url}");
        let stored = q.template("welcome").await.unwrap().expect("stored");
        assert_eq!(stored, third, "{url}");
        assert_eq!(
            (stored.channel, stored.subject),
            (Channel::Sms, None),
            "{url}"
        );

        assert_eq!(
            q.replace_template(sms_template("nobody")).await.unwrap(),
            None,
            "{url}"
        );
        assert_eq!(q.template("nobody").await.unwrap(), None, "{url}");
    }
}

#[tokio::test]
async fn templates_page_in_id_order_and_a_deleted_one_is_gone() {
    for (q, url, _guard) in stores().await {
        let ids = ["b", "a:1", "Z", "é", "a", "a b", "+1", "ü"];
        for id in ids {
            q.create_template(sms_template(id)).await.unwrap();
        }
        let mut expected: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
        expected.sort();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = q.templates(after.clone(), 3).await.unwrap();
            assert!(page.len() <= 3, "{url}");
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            seen.extend(page.into_iter().map(|t| t.id));
        }
        assert_eq!(seen, expected, "{url}: byte order, every id once");
        assert!(q.templates(None, 0).await.unwrap().is_empty(), "{url}");

        assert!(q.delete_template("a").await.unwrap(), "{url}");
        assert!(!q.delete_template("a").await.unwrap(), "{url}");
        assert!(!q.delete_template("never").await.unwrap(), "{url}");
        assert_eq!(q.template("a").await.unwrap(), None, "{url}");
        let listed: Vec<String> = q
            .templates(None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(listed.len(), ids.len() - 1, "{url}");
        assert!(!listed.iter().any(|id| id == "a"), "{url}");
        // The id is free again.
        assert_eq!(
            q.create_template(sms_template("a")).await.unwrap().version,
            1,
            "{url}"
        );
    }
}

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
    q.suppressions(None, None, u32::MAX).await.unwrap()
}

#[tokio::test]
async fn suppressing_counts_the_new_and_an_existing_one_keeps_its_time_but_takes_the_reason() {
    for (q, url, _guard) in stores().await {
        let before = now_ms();
        let first = q
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
        assert_eq!(q.suppress(Vec::new()).await.unwrap(), 0, "{url}");
    }
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

#[tokio::test]
async fn suppressed_returns_exactly_the_suppressed_subset() {
    for (q, url, _guard) in stores().await {
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
        q.suppress(entries).await.unwrap();
        let asked: Vec<String> = TRICKY.iter().map(|a| (*a).to_owned()).collect();
        let expected: HashSet<String> = on_sms.iter().map(|(_, a)| a.to_string()).collect();
        assert_eq!(
            q.suppressed(Channel::Sms, &asked).await.unwrap(),
            expected,
            "{url}"
        );
        let expected: HashSet<String> = on_email.iter().map(|(_, a)| a.to_string()).collect();
        assert_eq!(
            q.suppressed(Channel::Email, &asked).await.unwrap(),
            expected,
            "{url}"
        );
        assert!(
            q.suppressed::<&str>(Channel::Sms, &[])
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
        assert_eq!(q.suppress(listed).await.unwrap(), expected.len(), "{url}");
        let mut asked = addresses.clone();
        asked.extend(addresses.iter().take(100).cloned());
        let found = q.suppressed(Channel::Sms, &asked).await.unwrap();
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
            q.suppressed(Channel::Sms, &few).await.unwrap(),
            expected_few,
            "{url}"
        );
    }
}

#[tokio::test]
async fn unsuppressing_removes_only_the_named_addresses_on_that_channel() {
    for (q, url, _guard) in stores().await {
        q.suppress(vec![
            suppression(Channel::Sms, "a+1@example.com", "x"),
            suppression(Channel::Sms, "+8613800000001", "x"),
            suppression(Channel::Sms, "用户@例子.中国", "x"),
            suppression(Channel::Email, "a+1@example.com", "x"),
        ])
        .await
        .unwrap();
        let removed = q
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
            q.suppressed(Channel::Sms, &["a+1@example.com"])
                .await
                .unwrap()
                .is_empty(),
            "{url}"
        );
        assert_eq!(
            q.unsuppress(Channel::Sms, vec!["a+1@example.com".into()])
                .await
                .unwrap(),
            0,
            "{url}"
        );
        assert_eq!(
            q.suppress(vec![suppression(Channel::Sms, "a+1@example.com", "again")])
                .await
                .unwrap(),
            1,
            "{url}: an address unsuppressed is new again"
        );
    }
}

#[tokio::test]
async fn suppressions_page_by_channel_then_address() {
    for (q, url, _guard) in stores().await {
        let mut entries = Vec::new();
        for (i, address) in TRICKY.iter().enumerate() {
            entries.push(suppression(Channel::Sms, address, &format!("sms {i}")));
            if i % 3 == 0 {
                entries.push(suppression(Channel::Email, address, &format!("email {i}")));
            }
        }
        q.suppress(entries.clone()).await.unwrap();
        let key = |s: &Suppression| (s.channel.as_str(), s.address.clone());
        let mut expected: Vec<(&str, String)> = entries.iter().map(key).collect();
        expected.sort();

        let page_through = |channel: Option<Channel>| {
            let q = q.clone();
            async move {
                let mut seen = Vec::new();
                let mut after = None;
                loop {
                    let page = q.suppressions(channel, after.clone(), 3).await.unwrap();
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
            .suppressions(Some(Channel::Email), Some((Channel::Sms, "+".into())), 100)
            .await
            .unwrap();
        assert!(email_from_sms.is_empty(), "{url}: email sorts before sms");
        let sms_from_email = q
            .suppressions(
                Some(Channel::Sms),
                Some((Channel::Email, "zzz".into())),
                100,
            )
            .await
            .unwrap();
        assert_eq!(sms_from_email.len(), TRICKY.len(), "{url}");
        assert!(
            q.suppressions(None, None, 0).await.unwrap().is_empty(),
            "{url}"
        );
    }
}

fn fingerprints(names: &[&str]) -> Vec<String> {
    names.iter().map(|f| (*f).to_owned()).collect()
}

#[tokio::test]
async fn recently_sent_returns_the_remembered_subset_since_the_given_time_per_channel() {
    const T: i64 = 1_700_000_000_000;
    for (q, url, _guard) in stores().await {
        let asked = fingerprints(&["a", "b", "c", "d", "e"]);
        assert!(
            q.recently_sent(Channel::Sms, asked.clone(), 0)
                .await
                .unwrap()
                .is_empty(),
            "{url}: nothing remembered yet"
        );
        q.remember_sends(Channel::Sms, fingerprints(&["a", "b", "a"]), T)
            .await
            .unwrap();
        q.remember_sends(Channel::Sms, fingerprints(&["c"]), T + 1_000)
            .await
            .unwrap();
        q.remember_sends(Channel::Email, fingerprints(&["d"]), T + 1_000)
            .await
            .unwrap();
        let found = |channel, since| {
            let (q, asked) = (q.clone(), asked.clone());
            async move {
                let mut found: Vec<String> = q
                    .recently_sent(channel, asked, since)
                    .await
                    .unwrap()
                    .into_iter()
                    .collect();
                found.sort();
                found
            }
        };
        assert_eq!(found(Channel::Sms, T).await, ["a", "b", "c"], "{url}");
        assert_eq!(found(Channel::Sms, T + 1).await, ["c"], "{url}");
        assert_eq!(found(Channel::Sms, T + 1_001).await, [""; 0], "{url}");
        assert_eq!(found(Channel::Email, 0).await, ["d"], "{url}");

        // Seen again: the later time wins, whichever order the calls come in.
        q.remember_sends(Channel::Sms, fingerprints(&["a"]), T + 2_000)
            .await
            .unwrap();
        q.remember_sends(Channel::Sms, fingerprints(&["a", "b"]), T - 5_000)
            .await
            .unwrap();
        assert_eq!(found(Channel::Sms, T + 1_500).await, ["a"], "{url}");
        assert_eq!(found(Channel::Sms, T).await, ["a", "b", "c"], "{url}");
        assert!(
            q.recently_sent(Channel::Sms, Vec::new(), 0)
                .await
                .unwrap()
                .is_empty(),
            "{url}"
        );
    }
}

#[tokio::test]
async fn forgetting_removes_only_the_fingerprints_older_than_the_cutoff() {
    const T: i64 = 1_700_000_000_000;
    for (q, url, _guard) in stores().await {
        q.remember_sends(Channel::Sms, fingerprints(&["old-1", "old-2", "kept"]), T)
            .await
            .unwrap();
        q.remember_sends(Channel::Email, fingerprints(&["old-1"]), T)
            .await
            .unwrap();
        q.remember_sends(Channel::Sms, fingerprints(&["kept", "new"]), T + 1_000)
            .await
            .unwrap();
        q.remember_sends(Channel::Email, fingerprints(&["edge"]), T + 1_000)
            .await
            .unwrap();
        assert_eq!(q.forget_sends_before(T + 1_000).await.unwrap(), 3, "{url}");
        assert_eq!(q.forget_sends_before(T + 1_000).await.unwrap(), 0, "{url}");
        let asked = fingerprints(&["old-1", "old-2", "kept", "new", "edge"]);
        let left = |channel| {
            let (q, asked) = (q.clone(), asked.clone());
            async move {
                let mut left: Vec<String> = q
                    .recently_sent(channel, asked, 0)
                    .await
                    .unwrap()
                    .into_iter()
                    .collect();
                left.sort();
                left
            }
        };
        assert_eq!(left(Channel::Sms).await, ["kept", "new"], "{url}");
        assert_eq!(left(Channel::Email).await, ["edge"], "{url}");
    }
}

#[tokio::test]
async fn five_thousand_fingerprints_are_remembered_and_found_in_one_call() {
    const T: i64 = 1_700_000_000_000;
    for (q, url, _guard) in stores().await {
        let all: Vec<String> = (0..5_000).map(|i| format!("{i:064x}")).collect();
        // 3 in 7 remembered, in two calls at two times; some asked twice.
        let remembered = all
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == 1 || i % 7 == 0);
        let (early, late): (Vec<String>, Vec<String>) = (
            remembered
                .clone()
                .filter(|(i, _)| i % 2 == 0)
                .map(|(_, f)| f.clone())
                .collect(),
            remembered
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, f)| f.clone())
                .collect(),
        );
        q.remember_sends(Channel::Sms, early.clone(), T)
            .await
            .unwrap();
        q.remember_sends(Channel::Sms, late.clone(), T + 10)
            .await
            .unwrap();
        let mut asked = all.clone();
        asked.extend(all.iter().take(100).cloned());
        let found = q
            .recently_sent(Channel::Sms, asked.clone(), T)
            .await
            .unwrap();
        let expected: HashSet<String> = early.iter().chain(&late).cloned().collect();
        assert_eq!(found, expected, "{url}");
        let found = q.recently_sent(Channel::Sms, asked, T + 1).await.unwrap();
        assert_eq!(found, late.into_iter().collect::<HashSet<_>>(), "{url}");
        assert_eq!(
            q.forget_sends_before(T + 1).await.unwrap(),
            early.len() as u64,
            "{url}"
        );
    }
}

/// Times the lookup a batch submit makes, at its size: run by hand with `cargo test
/// --release --lib queue::tests::records::suppressed_timing -- --ignored --nocapture` (a debug
/// build also runs SQLite and the Redis client unoptimised).
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn suppressed_timing_for_100000_addresses_against_100000_suppressions() {
    const N: usize = 100_000;
    for (q, url, _guard) in stores().await {
        let engine = url.split("://").next().unwrap_or_default();
        let listed: Vec<Suppression> = (0..N)
            .map(|i| suppression(Channel::Sms, &format!("+8613{:09}", 2 * i), "bulk"))
            .collect();
        let started = std::time::Instant::now();
        assert_eq!(q.suppress(listed.clone()).await.unwrap(), N);
        let first = started.elapsed();
        let started = std::time::Instant::now();
        assert_eq!(q.suppress(listed).await.unwrap(), 0);
        let again = started.elapsed();
        eprintln!("{engine}: suppress {N} new: {first:?}; the same again: {again:?}");
        // Half of the asked addresses are listed.
        let asked: Vec<String> = (0..N).map(|i| format!("+8613{i:09}")).collect();
        for round in 1..=3 {
            let started = std::time::Instant::now();
            let found = q.suppressed(Channel::Sms, &asked).await.unwrap();
            let took = started.elapsed();
            assert_eq!(found.len(), N / 2);
            eprintln!("{engine}: suppressed() of {N} addresses, round {round}: {took:?}");
        }
    }
}

#[tokio::test]
async fn unacked_markers_are_found_oldest_first_by_source_and_body_and_expire_after_a_day() {
    let now = crate::domain::now_ms();
    let day = 24 * 60 * 60 * 1000;
    let marker = |source: &str, hash: &str, key: &str| Unacked {
        source: source.into(),
        hash: hash.into(),
        key: key.into(),
    };
    for (q, url, _guard) in stores().await {
        let old = marker("ingest:a", "h1", "k0");
        q.mark_unacked(&old, now - 2 * day).await.unwrap();
        assert_eq!(
            q.unacked("ingest:a", "h1", now - 2 * day, 10)
                .await
                .unwrap(),
            ["k0"],
            "{url}"
        );
        q.mark_unacked(&marker("ingest:a", "h1", "k2"), now)
            .await
            .unwrap();
        q.mark_unacked(&marker("ingest:a", "h1", "k1"), now - 10)
            .await
            .unwrap();
        // Marking again changes nothing.
        q.mark_unacked(&marker("ingest:a", "h1", "k1"), now)
            .await
            .unwrap();
        q.mark_unacked(&marker("ingest:a", "h2", "k3"), now)
            .await
            .unwrap();
        q.mark_unacked(&marker("ingest:b", "h1", "k4"), now)
            .await
            .unwrap();
        assert_eq!(
            q.unacked("ingest:a", "h1", now, 10).await.unwrap(),
            ["k1", "k2"],
            "{url}"
        );
        assert_eq!(
            q.unacked("ingest:a", "h1", now, 1).await.unwrap(),
            ["k1"],
            "{url}"
        );
        assert_eq!(
            q.unacked("ingest:b", "h1", now, 10).await.unwrap(),
            ["k4"],
            "{url}"
        );
        // The marker older than a day was deleted by the new ones.
        assert_eq!(
            q.unacked("ingest:a", "h1", now - 2 * day, 10)
                .await
                .unwrap(),
            ["k1", "k2"],
            "{url}"
        );
        q.unmark_unacked(&marker("ingest:a", "h1", "k1"))
            .await
            .unwrap();
        q.unmark_unacked(&marker("ingest:a", "h1", "k1"))
            .await
            .unwrap();
        assert_eq!(
            q.unacked("ingest:a", "h1", now, 10).await.unwrap(),
            ["k2"],
            "{url}"
        );
        assert_eq!(
            q.unacked("ingest:a", "h2", now, 10).await.unwrap(),
            ["k3"],
            "{url}"
        );
        assert!(
            q.unacked("ingest:c", "h1", now, 10)
                .await
                .unwrap()
                .is_empty(),
            "{url}"
        );
    }
}
