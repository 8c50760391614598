//! The conformance suite's part for the fingerprints of recent sends.

use super::*;

fn fingerprints(names: &[&str]) -> Vec<String> {
    names.iter().map(|f| (*f).to_owned()).collect()
}

pub(super) async fn recently_sent_returns_the_remembered_subset_since_the_given_time_per_channel(
    store: TestStore,
) {
    const T: i64 = 1_700_000_000_000;
    let (q, url, _guard) = store;
    let asked = fingerprints(&["a", "b", "c", "d", "e"]);
    assert!(
        q.records()
            .recently_sent(Channel::Sms, asked.clone(), 0)
            .await
            .unwrap()
            .is_empty(),
        "{url}: nothing remembered yet"
    );
    q.records()
        .remember_sends(Channel::Sms, fingerprints(&["a", "b", "a"]), T)
        .await
        .unwrap();
    q.records()
        .remember_sends(Channel::Sms, fingerprints(&["c"]), T + 1_000)
        .await
        .unwrap();
    q.records()
        .remember_sends(Channel::Email, fingerprints(&["d"]), T + 1_000)
        .await
        .unwrap();
    let found = |channel, since| {
        let (q, asked) = (q.clone(), asked.clone());
        async move {
            let mut found: Vec<String> = q
                .records()
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
    q.records()
        .remember_sends(Channel::Sms, fingerprints(&["a"]), T + 2_000)
        .await
        .unwrap();
    q.records()
        .remember_sends(Channel::Sms, fingerprints(&["a", "b"]), T - 5_000)
        .await
        .unwrap();
    assert_eq!(found(Channel::Sms, T + 1_500).await, ["a"], "{url}");
    assert_eq!(found(Channel::Sms, T).await, ["a", "b", "c"], "{url}");
    assert!(
        q.records()
            .recently_sent(Channel::Sms, Vec::new(), 0)
            .await
            .unwrap()
            .is_empty(),
        "{url}"
    );
}

pub(super) async fn forgetting_removes_only_the_fingerprints_older_than_the_cutoff(
    store: TestStore,
) {
    const T: i64 = 1_700_000_000_000;
    let (q, url, _guard) = store;
    q.records()
        .remember_sends(Channel::Sms, fingerprints(&["old-1", "old-2", "kept"]), T)
        .await
        .unwrap();
    q.records()
        .remember_sends(Channel::Email, fingerprints(&["old-1"]), T)
        .await
        .unwrap();
    q.records()
        .remember_sends(Channel::Sms, fingerprints(&["kept", "new"]), T + 1_000)
        .await
        .unwrap();
    q.records()
        .remember_sends(Channel::Email, fingerprints(&["edge"]), T + 1_000)
        .await
        .unwrap();
    assert_eq!(
        q.records().forget_sends_before(T + 1_000).await.unwrap(),
        3,
        "{url}"
    );
    assert_eq!(
        q.records().forget_sends_before(T + 1_000).await.unwrap(),
        0,
        "{url}"
    );
    let asked = fingerprints(&["old-1", "old-2", "kept", "new", "edge"]);
    let left = |channel| {
        let (q, asked) = (q.clone(), asked.clone());
        async move {
            let mut left: Vec<String> = q
                .records()
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

pub(super) async fn five_thousand_fingerprints_are_remembered_and_found_in_one_call(
    store: TestStore,
) {
    const T: i64 = 1_700_000_000_000;
    let (q, url, _guard) = store;
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
    q.records()
        .remember_sends(Channel::Sms, early.clone(), T)
        .await
        .unwrap();
    q.records()
        .remember_sends(Channel::Sms, late.clone(), T + 10)
        .await
        .unwrap();
    let mut asked = all.clone();
    asked.extend(all.iter().take(100).cloned());
    let found = q
        .records()
        .recently_sent(Channel::Sms, asked.clone(), T)
        .await
        .unwrap();
    let expected: HashSet<String> = early.iter().chain(&late).cloned().collect();
    assert_eq!(found, expected, "{url}");
    let found = q
        .records()
        .recently_sent(Channel::Sms, asked, T + 1)
        .await
        .unwrap();
    assert_eq!(found, late.into_iter().collect::<HashSet<_>>(), "{url}");
    assert_eq!(
        q.records().forget_sends_before(T + 1).await.unwrap(),
        early.len() as u64,
        "{url}"
    );
}
