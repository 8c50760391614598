//! The SMTP provider's pure parts: reply classification, headers, configuration.
//! Conversations with a real server are in the end-to-end tests (`tests/e2e/smtp.rs`).

use super::*;
use crate::domain::{BatchId, Channel};

fn config(extra: &str) -> SmtpConfig {
    let text = format!(
        "host = \"127.0.0.1\"\nfrom = \"Shop <noreply@shop.example>\"\nsecurity = \"none\"\n{extra}"
    );
    toml_config(&text)
}

fn toml_config(text: &str) -> SmtpConfig {
    use figment::providers::Format;
    figment::Figment::from(figment::providers::Toml::string(text))
        .extract()
        .expect("a valid smtp config")
}

fn provider(extra: &str) -> SmtpProvider {
    SmtpProvider::new(&config(extra), Duration::from_secs(5)).expect("a valid provider")
}

fn message(to: &str, subject: &str) -> Message {
    Message {
        id: "0190c3a2-7b1e-7cc0-8f00-4d2b1c9e5a10-3".into(),
        batch_id: BatchId::new(),
        reference: None,
        channel: Channel::Email,
        to: to.into(),
        subject: Some(subject.into()),
        body: "Grüße\n— Herald".into(),
        vars: None,
        template: None,
    }
}

#[test]
fn replies_are_classified_by_code_and_enhanced_status() {
    use Stage::Transaction as T;
    let class = |stage, code, text| match classify_reply(stage, code, text) {
        Error::Transient { reason, .. } => ("transient", reason),
        e @ Error::Throttled { .. } => ("throttled", e.to_string()),
        Error::RecipientCapped { reason, .. } => ("recipient capped", reason),
        Error::Permanent { reason } => ("permanent", reason),
        Error::Undeliverable { reason } => ("undeliverable", reason),
        Error::Unknown { reason } => ("unknown", reason),
    };
    assert_eq!(
        class(T, 451, "4.3.0 try later"),
        ("transient", "SMTP 451 4.3.0 try later".into())
    );
    assert_eq!(
        class(T, 421, "4.7.0 too many connections"),
        (
            "throttled",
            "throttled: SMTP 421 4.7.0 too many connections".into()
        )
    );
    assert_eq!(class(T, 454, "4.7.0 slow down").0, "throttled");
    assert_eq!(class(T, 452, "4.2.2 mailbox full").0, "transient");
    for bad in [
        "5.1.1 no such user",
        "5.1.2 bad destination domain",
        "5.1.3 bad address syntax",
        "5.1.10 recipient address has null MX",
        "5.2.1 account disabled",
    ] {
        assert_eq!(class(T, 550, bad).0, "undeliverable", "{bad}");
    }
    assert_eq!(class(T, 553, "5.1.3 bad syntax").0, "undeliverable");
    assert_eq!(
        class(T, 550, "User unknown in local table").0,
        "undeliverable"
    );
    assert_eq!(class(T, 554, "5.7.1 rejected as spam").0, "permanent");
    assert_eq!(class(T, 550, "5.7.1 relay denied").0, "permanent");
    assert_eq!(class(T, 552, "5.3.4 message too big").0, "permanent");
    assert_eq!(class(T, 550, "mailbox unavailable").0, "permanent");
    assert_eq!(
        class(Stage::Auth, 535, "5.7.8 bad credentials"),
        (
            "permanent",
            "SMTP AUTH refused: 535 5.7.8 bad credentials".into()
        )
    );
    // Only a reply to the transaction is about the recipient.
    assert_eq!(
        class(Stage::Connect, 550, "5.1.1 odd greeting").0,
        "permanent"
    );
}

#[test]
fn enhanced_status_codes_are_read_only_at_the_start() {
    assert_eq!(enhanced_status("5.1.1 <x@y>: no"), Some("5.1.1"));
    assert_eq!(enhanced_status("5.1.10 null MX"), Some("5.1.10"));
    assert_eq!(enhanced_status("no such user 5.1.1"), None);
    assert_eq!(enhanced_status("5.1 short"), None);
    assert_eq!(enhanced_status("5.1.1.1 long"), None);
    assert_eq!(enhanced_status(""), None);
}

#[test]
fn list_unsubscribe_puts_the_encoded_address_in_each_url() {
    let u = Unsubscribe::parse(&OneOrMany::Many(vec![
        "mailto:unsub@shop.example?subject=stop-{{to}}".into(),
        "https://shop.example/unsub?u={{to}}".into(),
    ]))
    .unwrap();
    assert!(u.one_click);
    assert_eq!(
        u.header("li+news@shop.test"),
        "<mailto:unsub@shop.example?subject=stop-li%2Bnews%40shop.test>, <https://shop.example/unsub?u=li%2Bnews%40shop.test>"
    );
    let fixed = Unsubscribe::parse(&OneOrMany::One("mailto:stop@shop.example".into())).unwrap();
    assert!(!fixed.one_click, "one-click needs an https URL");
    assert_eq!(fixed.header("a@b.test"), "<mailto:stop@shop.example>");
    for bad in [
        "ftp://x",
        "https://x/a b",
        "https://x/<a>",
        "https://x/a,b",
        "https://x/{{email}}",
    ] {
        assert!(
            Unsubscribe::parse(&OneOrMany::One(bad.into())).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn the_message_is_ascii_mime_with_a_stable_message_id() {
    let p = provider(
        "reply_to = \"Support <help@shop.example>\"\nlist_unsubscribe = \"https://shop.example/u/{{to}}\"",
    );
    let m = message("\"Wei, Li\" <li@shop.test>", "订单 Bestätigung ✓");
    let email = p.compose(&m).unwrap();
    assert_eq!(
        email.envelope().from().map(|a| a.to_string()).as_deref(),
        Some("noreply@shop.example")
    );
    assert_eq!(
        email.envelope().to()[0].to_string(),
        "li@shop.test",
        "Reply-To is no recipient"
    );
    assert_eq!(email.envelope().to().len(), 1);
    let raw = String::from_utf8(email.formatted()).unwrap();
    assert!(raw.is_ascii(), "{raw}");
    for expected in [
        "Message-ID: <0190c3a2-7b1e-7cc0-8f00-4d2b1c9e5a10-3@shop.example>\r\n",
        "From: Shop <noreply@shop.example>\r\n",
        // A name with a comma becomes an encoded-word, which needs no quotes.
        "To: =?utf-8?b?V2VpLCBMaQ==?= <li@shop.test>\r\n",
        "Reply-To: Support <help@shop.example>\r\n",
        "Subject: =?utf-8?",
        "List-Unsubscribe: <https://shop.example/u/li%40shop.test>\r\n",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
        "Date: ",
    ] {
        assert!(raw.contains(expected), "{expected:?} missing from\n{raw}");
    }
    assert_eq!(
        p.message_id(&m),
        "0190c3a2-7b1e-7cc0-8f00-4d2b1c9e5a10-3@shop.example"
    );
    let again = String::from_utf8(p.compose(&m).unwrap().formatted()).unwrap();
    let message_id = |raw: &str| {
        raw.lines()
            .find(|l| l.starts_with("Message-ID:"))
            .map(String::from)
    };
    assert_eq!(
        message_id(&again),
        message_id(&raw),
        "a retry keeps the Message-ID"
    );
}

#[test]
fn line_breaks_in_the_subject_or_address_are_refused_by_name() {
    let p = provider("");
    let injected = message("li@shop.test", "Hi\r\nBcc: all@shop.test");
    assert_eq!(
        p.compose(&injected).err(),
        Some(Error::Permanent {
            reason: "subject contains a line break (CR or LF), which could inject mail headers"
                .into()
        })
    );
    let to = message("li@shop.test\nBcc: all@shop.test", "Hi");
    assert!(
        matches!(p.compose(&to), Err(Error::Permanent { reason }) if reason.starts_with("to contains a line break"))
    );
    let unparsable = message("not an address", "Hi");
    assert!(
        matches!(p.compose(&unparsable), Err(Error::Permanent { reason }) if reason.starts_with("to: ")),
    );
}

#[test]
fn configuration_mistakes_are_named() {
    let err = |extra: &str| {
        SmtpProvider::new(&config(extra), Duration::from_secs(5))
            .err()
            .expect("refused")
    };
    assert!(err("username = \"u\"").contains("username and password"));
    assert!(err("pool_size = 0").contains("pool_size"));
    assert!(err("timeout_ms = 0").contains("timeout_ms"));
    assert!(err("list_unsubscribe = []").contains("list_unsubscribe"));
    let bad_from = toml_config("host = \"h\"\nfrom = \"Shop noreply\"\nsecurity = \"none\"");
    assert!(
        SmtpProvider::new(&bad_from, Duration::from_secs(5))
            .err()
            .unwrap()
            .starts_with("from: ")
    );
    let missing_ca = toml_config(
        "host = \"h\"\nfrom = \"a@b.test\"\nsecurity = \"tls\"\nca_file = \"missing/ca.pem\"",
    );
    let refused = SmtpProvider::new(&missing_ca, Duration::from_secs(5)).err();
    assert!(
        refused
            .unwrap()
            .starts_with("ca_file missing/ca.pem cannot be read")
    );
}

#[test]
fn ports_and_timeouts_default_from_the_security_and_the_worker() {
    let p = |extra: &str| {
        let c = toml_config(&format!("host = \"h\"\nfrom = \"a@b.test\"\n{extra}"));
        SmtpProvider::new(&c, Duration::from_secs(30)).unwrap()
    };
    assert_eq!(p("").port, 587);
    assert_eq!(p("security = \"tls\"").port, 465);
    assert_eq!(p("security = \"none\"").port, 25);
    assert_eq!(p("security = \"none\"\nport = 2525").port, 2525);
    assert_eq!(p("").timeout, Duration::from_secs(30));
    assert_eq!(p("timeout_ms = 500").timeout, Duration::from_millis(500));
    assert_eq!(p("timeout_ms = 90000").timeout, Duration::from_secs(30));
}
