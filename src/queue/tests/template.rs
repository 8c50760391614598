//! The conformance suite's part for stored templates.

use super::*;

fn sms_template(id: &str) -> StoredTemplate {
    StoredTemplate {
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

pub(super) async fn a_template_is_created_once_and_each_replace_is_a_new_version(store: TestStore) {
    let (q, url, _guard) = store;
    let before = now_ms();
    let created = q
        .records()
        .create_template(sms_template("welcome"))
        .await
        .unwrap();
    assert_eq!(created.version, 1, "{url}");
    assert!(created.created_at_ms >= before, "{url}");
    assert_eq!(created.updated_at_ms, created.created_at_ms, "{url}");
    assert_eq!(
        q.records().template("welcome").await.unwrap().as_ref(),
        Some(&created),
        "{url}"
    );
    match q.records().create_template(sms_template("welcome")).await {
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
        .records()
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
    assert_eq!(
        q.records().template("welcome").await.unwrap(),
        Some(second),
        "{url}"
    );

    // A replace without a subject removes it.
    let third = q
        .records()
        .replace_template(sms_template("welcome"))
        .await
        .unwrap()
        .expect("the template exists");
    assert_eq!(third.version, 3, "{url}");
    let stored = q
        .records()
        .template("welcome")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored, third, "{url}");
    assert_eq!(
        (stored.channel, stored.subject),
        (Channel::Sms, None),
        "{url}"
    );

    assert_eq!(
        q.records()
            .replace_template(sms_template("nobody"))
            .await
            .unwrap(),
        None,
        "{url}"
    );
    assert_eq!(q.records().template("nobody").await.unwrap(), None, "{url}");
}

pub(super) async fn templates_page_in_id_order_and_a_deleted_one_is_gone(store: TestStore) {
    let (q, url, _guard) = store;
    let ids = ["b", "a:1", "Z", "é", "a", "a b", "+1", "ü"];
    for id in ids {
        q.records().create_template(sms_template(id)).await.unwrap();
    }
    let mut expected: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    expected.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = q.records().templates(after.clone(), 3).await.unwrap();
        assert!(page.len() <= 3, "{url}");
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(page.into_iter().map(|t| t.id));
    }
    assert_eq!(seen, expected, "{url}: byte order, every id once");
    assert!(
        q.records().templates(None, 0).await.unwrap().is_empty(),
        "{url}"
    );

    assert!(q.records().delete_template("a").await.unwrap(), "{url}");
    assert!(!q.records().delete_template("a").await.unwrap(), "{url}");
    assert!(
        !q.records().delete_template("never").await.unwrap(),
        "{url}"
    );
    assert_eq!(q.records().template("a").await.unwrap(), None, "{url}");
    let listed: Vec<String> = q
        .records()
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
        q.records()
            .create_template(sms_template("a"))
            .await
            .unwrap()
            .version,
        1,
        "{url}"
    );
}
