//! The SMTP provider against a real SMTP server: `tests/smtp/sink.py` (aiosmtpd)
//! on 127.0.0.1, which parses each message it accepts with Python's `email`
//! package and writes what it saw as JSON. Batches through the API, TLS both ways,
//! AUTH, scripted refusals, stalls and the connection pool.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use herald::domain::{BatchId, Channel};
use herald::provider::{
    Error, Message, Provider, ProviderConfig, ProviderKind, SmtpConfig, SmtpProvider,
};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{TestApp, spawn_app, wait_for};

/// A running `sink.py`; killed when dropped.
struct Sink {
    port: u16,
    dir: TempDir,
    _child: Child,
}

impl Sink {
    /// Starts the sink with extra command-line `args` (`--rcpt`, `--starttls`, …);
    /// its certificates, if any, go to `self.ca()`'s directory.
    async fn start(args: &[&str]) -> Sink {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--out")
            .arg(dir.path().join("out"))
            .arg("--tls-dir")
            .arg(dir.path().join("tls"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (scripts/test installs it and aiosmtpd)");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("the SMTP sink did not start within 30 s")
            .expect("the sink's stdout")
            .unwrap_or_else(|| {
                panic!("the SMTP sink exited before listening: is aiosmtpd installed? (scripts/test installs it)")
            });
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the sink: {line}"));
        Sink {
            port,
            dir,
            _child: child,
        }
    }

    /// The CA that signed the sink's certificate (with `--starttls`/`--implicit-tls`).
    fn ca(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// Every message accepted so far, in order.
    fn received(&self) -> Vec<Value> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("out")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap())
            .collect()
    }

    /// Waits until `n` messages were accepted; returns them.
    async fn wait_received(&self, n: usize) -> Vec<Value> {
        wait_for(
            Duration::from_secs(10),
            &format!("{n} messages at the sink"),
            || async {
                let received = self.received();
                (received.len() >= n).then_some(received)
            },
        )
        .await
    }

    /// The accepted message addressed to `to`.
    fn to(&self, to: &str) -> Value {
        self.received()
            .into_iter()
            .find(|m| m["rcpt_tos"] == json!([to]))
            .unwrap_or_else(|| panic!("no message to {to} at the sink"))
    }
}

/// An SMTP provider's keys as a user writes them, `host` and `port` filled in.
fn smtp_keys(port: u16, toml: &str) -> String {
    format!("host = \"127.0.0.1\"\nport = {port}\n{toml}")
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> T {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(text))
        .extract()
        .unwrap_or_else(|e| panic!("invalid config {text}: {e}"))
}

fn provider(port: u16, toml: &str) -> SmtpProvider {
    let config: SmtpConfig = parse(&smtp_keys(port, toml));
    SmtpProvider::new(&config, Duration::from_secs(5)).expect("a valid provider")
}

const PLAIN: &str = "security = \"none\"\nfrom = \"Shop <noreply@shop.example>\"";

fn email(n: u32, to: &str) -> Message {
    Message {
        id: format!("{}-{n}", BatchId::new()),
        batch_id: BatchId::new(),
        reference: None,
        channel: Channel::Email,
        to: to.into(),
        subject: Some("Hello".into()),
        body: "Hi".into(),
        vars: None,
        template: None,
    }
}

/// The body as sent: the sink reads the text with its CRLF line ends.
fn text(body: &Value) -> String {
    body.as_str().expect("a text body").replace("\r\n", "\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_emails_reaches_the_smtp_server_as_utf8_mime() {
    let sink = Sink::start(&["--auth", "herald:s3cret"]).await;
    let app = app_sending_through(
        sink.port,
        r#"
        security = "none"
        username = "herald"
        password = "s3cret"
        from = "Shop <noreply@shop.example>"
        reply_to = "Support <help@shop.example>"
        list_unsubscribe = ["mailto:unsub@shop.example?subject=stop-{{to}}", "https://shop.example/unsub?u={{to}}"]
        "#,
    )
    .await;
    let body = "Grüße {{name}},\n你的订单 {{order}} 已发货 ✓\n— Shop";
    let batch = json!({
        "channel": "email",
        "template": {"subject": "订单 {{order}} Bestätigung ✓", "body": body},
        "recipients": [
            {"to": "李雷 <li@shop.test>", "vars": {"name": "李雷", "order": "A-1"}},
            {"to": "\"Wei, Li\" <wei@shop.test>", "vars": {"name": "Wei", "order": "A-2"}},
            {"to": "plain@shop.test", "vars": {"name": "you", "order": "A-3"}},
        ],
    });

    let batch_id = app.submit(&batch).await;
    app.wait_finished(&batch_id, Duration::from_secs(15)).await;
    let ledger = app.messages(&batch_id).await;
    sink.wait_received(3).await;

    // (address, display name, order, the name in the greeting)
    let expected = [
        ("li@shop.test", "李雷", "A-1", "李雷"),
        ("wei@shop.test", "Wei, Li", "A-2", "Wei"),
        ("plain@shop.test", "", "A-3", "you"),
    ];
    assert_eq!(ledger.len(), expected.len());
    for (entry, (address, name, order, greeted)) in ledger.iter().zip(expected) {
        assert_eq!(entry["state"], "sent", "{entry}");
        let id = entry["id"].as_str().unwrap();
        let m = sink.to(address);
        assert_eq!(m["defects"], json!([]), "{}", m["raw"]);
        assert_eq!(m["raw_is_ascii"], true, "needs no 8BITMIME: {}", m["raw"]);
        assert_eq!(m["auth_user"], "herald");
        assert_eq!(m["mail_from"], "noreply@shop.example");
        assert_eq!(
            m["from"],
            json!({"name": "Shop", "address": "noreply@shop.example"})
        );
        assert_eq!(m["to"], json!({"name": name, "address": address}));
        assert_eq!(
            m["reply_to"],
            json!({"name": "Support", "address": "help@shop.example"})
        );
        assert_eq!(m["subject"], format!("订单 {order} Bestätigung ✓"));
        assert_eq!(
            text(&m["body"]),
            format!("Grüße {greeted},\n你的订单 {order} 已发货 ✓\n— Shop")
        );
        assert_eq!(
            (&m["content_type"], &m["charset"], &m["mime_version"]),
            (&json!("text/plain"), &json!("utf-8"), &json!("1.0"))
        );
        assert!(
            matches!(
                m["transfer_encoding"].as_str(),
                Some("base64" | "quoted-printable")
            ),
            "{}",
            m["transfer_encoding"]
        );
        assert_eq!(m["message_id"], format!("<{id}@shop.example>"));
        assert_eq!(entry["provider_message_id"], format!("{id}@shop.example"));
        assert!(
            m["date"].as_str().is_some_and(|d| d.contains(" +0000")),
            "{m}"
        );
        let encoded = address.replace('@', "%40");
        assert_eq!(
            m["list_unsubscribe"],
            format!(
                "<mailto:unsub@shop.example?subject=stop-{encoded}>, <https://shop.example/unsub?u={encoded}>"
            )
        );
        assert_eq!(m["list_unsubscribe_post"], "List-Unsubscribe=One-Click");
    }
}

/// Herald sending e-mail to `.test` domains through an SMTP provider on `port`
/// with the keys in `toml`, trying each message at most twice.
async fn app_sending_through(port: u16, toml: &str) -> TestApp {
    let entry: ProviderConfig = parse(&format!(
        "name = \"mail\"\nkind = \"smtp\"\nchannels = [\"email\"]\n{}",
        smtp_keys(port, toml)
    ));
    assert!(matches!(entry.kind, ProviderKind::Smtp(_)));
    spawn_app(|config| {
        config.recipients.allow_local_email = true;
        config.retry.max_attempts = 2;
        config.defaults.insert(Channel::Email, "mail".into());
        config.providers = vec![entry];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_mailbox_is_suppressed_and_refused_in_the_next_batch() {
    let sink = Sink::start(&[
        "--rcpt",
        "gone@shop.test=550 5.1.1 no such user",
        "--rcpt",
        "busy@shop.test=451 4.3.0 try later",
    ])
    .await;
    let app = app_sending_through(sink.port, PLAIN).await;
    let batch = |to: &[&str]| {
        let recipients: Vec<Value> = to.iter().map(|t| json!({"to": t})).collect();
        json!({"channel": "email", "template": {"subject": "Hi", "body": "Hello"}, "recipients": recipients})
    };

    let batch_id = app
        .submit(&batch(&[
            "gone@shop.test",
            "busy@shop.test",
            "ok@shop.test",
        ]))
        .await;
    app.wait_finished(&batch_id, Duration::from_secs(15)).await;
    let ledger = app.messages(&batch_id).await;

    let failed = |m: &Value, attempts: u64, reply: &str| {
        assert_eq!(m["state"], "failed", "{m}");
        assert_eq!(m["attempts"], attempts, "{m}");
        assert!(m["last_error"].as_str().unwrap().contains(reply), "{m}");
    };
    let (gone, busy, ok) = (&ledger[0], &ledger[1], &ledger[2]);
    failed(gone, 1, "550 5.1.1 no such user");
    failed(busy, 2, "451 4.3.0 try later");
    assert_eq!(ok["state"], "sent", "{ok}");
    assert_eq!(sink.wait_received(1).await.len(), 1);

    let (status, page) = app.get("/v1/suppressions?channel=email").await;
    assert_eq!(status, 200, "{page}");
    let suppressed = page["suppressions"].as_array().unwrap();
    assert_eq!(suppressed.len(), 1, "only the unknown mailbox: {page}");
    assert_eq!(suppressed[0]["address"], "gone@shop.test");
    assert!(
        suppressed[0]["reason"].as_str().unwrap().contains("5.1.1"),
        "{page}"
    );

    let (status, report) = app
        .post("/v1/batches", &batch(&["gone@shop.test", "ok@shop.test"]))
        .await;
    assert_eq!(status, 202, "{report}");
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(report["rejected"][0]["index"], 0, "{report}");
    assert_eq!(report["rejected"][0]["reason"], "suppressed", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_replies_are_classified_and_quoted() {
    let sink = Sink::start(&[
        "--rcpt",
        "gone@shop.test=550 5.1.1 no such user",
        "--rcpt",
        "busy@shop.test=451 4.3.0 try later",
        "--rcpt",
        "slow@shop.test=421 4.7.0 too many messages, slow down",
        "--data",
        "spam@shop.test=554 5.7.1 message refused as spam",
        "--data",
        "moved@shop.test=550 5.1.6 mailbox has moved",
    ])
    .await;
    let smtp = provider(sink.port, PLAIN);
    let send = async |to: &str| smtp.send(&email(1, to)).await;

    assert_eq!(
        send("gone@shop.test").await,
        Err(Error::Undeliverable {
            reason: "SMTP 550 5.1.1 no such user".into()
        })
    );
    assert_eq!(
        send("busy@shop.test").await,
        Err(Error::Transient {
            reason: "SMTP 451 4.3.0 try later".into(),
            retry_after: None
        })
    );
    assert_eq!(
        send("slow@shop.test").await,
        Err(Error::Throttled {
            reason: "SMTP 421 4.7.0 too many messages, slow down".into(),
            retry_after: None
        })
    );
    assert_eq!(
        send("spam@shop.test").await,
        Err(Error::Permanent {
            reason: "SMTP 554 5.7.1 message refused as spam".into()
        })
    );
    assert_eq!(
        send("moved@shop.test").await,
        Err(Error::Undeliverable {
            reason: "SMTP 550 5.1.6 mailbox has moved".into()
        })
    );
    // Each refusal closed its connection; the next message gets a fresh one.
    let receipt = send("ok@shop.test").await.expect("delivered");
    assert!(
        receipt
            .provider_message_id
            .unwrap()
            .ends_with("@shop.example")
    );
    assert_eq!(
        sink.wait_received(1).await[0]["rcpt_tos"],
        json!(["ok@shop.test"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_a_wrong_password_fails_permanently_with_the_servers_reply() {
    let sink = Sink::start(&["--auth", "herald:s3cret"]).await;
    let wrong = provider(
        sink.port,
        &format!("{PLAIN}\nusername = \"herald\"\npassword = \"guess\""),
    );
    let right = provider(
        sink.port,
        &format!("{PLAIN}\nusername = \"herald\"\npassword = \"s3cret\""),
    );
    let anonymous = provider(sink.port, PLAIN);

    match wrong.send(&email(1, "li@shop.test")).await {
        Err(Error::Permanent { reason }) => {
            assert!(reason.starts_with("SMTP AUTH refused: 535"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    match anonymous.send(&email(2, "li@shop.test")).await {
        Err(Error::Permanent { reason }) => assert!(reason.contains("530"), "{reason}"),
        other => panic!("{other:?}"),
    }
    right
        .send(&email(3, "li@shop.test"))
        .await
        .expect("delivered");
    assert_eq!(sink.wait_received(1).await[0]["auth_user"], "herald");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_implicit_tls_verify_the_server_against_ca_file() {
    let starttls = Sink::start(&["--starttls"]).await;
    let implicit = Sink::start(&["--implicit-tls"]).await;
    let secured = |sink: &Sink, security: &str| {
        provider(
            sink.port,
            &format!(
                "security = \"{security}\"\nfrom = \"noreply@shop.example\"\nca_file = \"{}\"",
                sink.ca().display()
            ),
        )
    };

    secured(&starttls, "starttls")
        .send(&email(1, "li@shop.test"))
        .await
        .expect("sent over STARTTLS");
    secured(&implicit, "tls")
        .send(&email(2, "li@shop.test"))
        .await
        .expect("sent over implicit TLS");
    assert_eq!(starttls.wait_received(1).await[0]["tls"], true);
    assert_eq!(implicit.wait_received(1).await[0]["tls"], true);

    // Without the CA the certificate is not trusted, and nothing is sent.
    let untrusted = provider(
        implicit.port,
        "security = \"tls\"\nfrom = \"noreply@shop.example\"",
    );
    match untrusted.send(&email(3, "li@shop.test")).await {
        Err(Error::Transient { reason, .. }) => {
            assert_eq!(
                reason,
                "SMTP connecting: Connection error: invalid peer certificate: UnknownIssuer"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(implicit.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_is_required_when_configured() {
    let sink = Sink::start(&[]).await;
    let smtp = provider(
        sink.port,
        "security = \"starttls\"\nfrom = \"noreply@shop.example\"",
    );

    match smtp.send(&email(1, "li@shop.test")).await {
        Err(Error::Transient { reason, .. }) => {
            assert!(reason.contains("does not offer STARTTLS"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(sink.received().is_empty());
}

/// A TCP server on 127.0.0.1 that accepts connections and never says a word; it
/// counts the connections.
struct Silent {
    port: u16,
    accepted: tokio::sync::watch::Receiver<usize>,
}

impl Silent {
    async fn start() -> Silent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (count, accepted) = tokio::sync::watch::channel(0);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
                count.send_replace(held.len());
            }
        });
        Silent { port, accepted }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_injection_is_refused_without_contacting_the_server() {
    let server = Silent::start().await;
    let smtp = provider(server.port, PLAIN);
    let mut injected = email(1, "li@shop.test");
    injected.subject = Some("Hello\r\nBcc: everyone@shop.test".into());

    match smtp.send(&injected).await {
        Err(Error::Permanent { reason }) => assert!(reason.starts_with("subject "), "{reason}"),
        other => panic!("{other:?}"),
    }
    let mut accepted = server.accepted.clone();
    let contacted = tokio::time::timeout(Duration::from_millis(300), accepted.changed()).await;
    assert!(contacted.is_err(), "the provider connected to the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_is_a_transient_timeout_and_the_pool_recovers() {
    let silent = Silent::start().await;
    let smtp = provider(silent.port, &format!("{PLAIN}\ntimeout_ms = 300"));

    let started = Instant::now();
    let result = smtp.send(&email(1, "li@shop.test")).await;
    let took = started.elapsed();
    match result {
        Err(Error::Transient { reason, .. }) => assert!(reason.contains("300 ms"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // A server that stalls mid-transaction (after DATA): the send times out, its
    // connection is dropped rather than pooled, and the next send goes through.
    let sink = Sink::start(&["--stall-data", "slow@shop.test=5"]).await;
    let smtp = provider(sink.port, &format!("{PLAIN}\ntimeout_ms = 500"));
    smtp.send(&email(1, "warm@shop.test"))
        .await
        .expect("delivered");
    let started = Instant::now();
    assert!(matches!(
        smtp.send(&email(2, "slow@shop.test")).await,
        Err(Error::Transient { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    smtp.send(&email(3, "after@shop.test"))
        .await
        .expect("delivered after the stall");
    let after = sink.to("after@shop.test");
    assert_ne!(
        after["peer_port"],
        sink.to("warm@shop.test")["peer_port"],
        "the stalled connection was not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_share_a_bounded_pool_of_connections() {
    let sink = Sink::start(&[]).await;
    let smtp = provider(sink.port, &format!("{PLAIN}\npool_size = 2"));
    let messages: Vec<Message> = (0..12)
        .map(|n| email(n, &format!("r{n}@shop.test")))
        .collect();

    let results = futures_util::future::join_all(messages.iter().map(|m| smtp.send(m))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    smtp.send(&email(99, "last@shop.test"))
        .await
        .expect("delivered");

    let received = sink.wait_received(13).await;
    let mut ports: Vec<u64> = received
        .iter()
        .map(|m| m["peer_port"].as_u64().unwrap())
        .collect();
    ports.sort();
    ports.dedup();
    assert!(
        !ports.is_empty() && ports.len() <= 2,
        "13 messages over at most 2 connections: {ports:?}"
    );
}
