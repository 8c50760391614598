//! The SMPP provider against an SMSC Herald did not write: `tests/smpp/smsc.js`,
//! the npm `smpp` package's server on 127.0.0.1, which decodes each PDU with its
//! own parser and prints what it saw. Short and long GSM 7-bit (packed or not)
//! and UCS-2 texts go out as the SMSC reads them, its delivery receipts move the messages (a long
//! one's by a later segment's id after Herald restarted, too), a person's reply
//! reaches the replies ledger, and Herald unbinds on shutdown. Over TLS, Herald
//! trusts the SMSC's self-signed certificate (`tests/smpp/tls`) only as `ca_file`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::config::Config;
use herald::domain::{Channel, Secret, StoreUrl};
use herald::provider::{LongMessages, ProviderKind, SmppConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::helpers::{TestApp, sms_provider, spawn_app, wait_for};

/// A running `smsc.js`; killed when dropped.
struct Smsc {
    port: u16,
    /// Every JSON line it printed.
    seen: Arc<Mutex<Vec<Value>>>,
    stdin: ChildStdin,
    _child: Child,
}

impl Smsc {
    /// Starts the SMSC with `options` besides its account (`--undeliverable
    /// <number>`, `--hold-receipts`: see `smsc.js`).
    async fn start(options: &[&str]) -> Smsc {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smpp/smsc.js");
        let mut child = Command::new("node")
            .arg(script)
            .args(["--system-id", "herald", "--password", "secret"])
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (scripts/test installs it and tests/smpp's packages)");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the SMSC did not start within 30 s")
            .expect("the SMSC's stdout")
            .unwrap_or_else(|| {
                panic!("the SMSC exited before listening: run `npm ci --prefix tests/smpp` (scripts/test does)")
            });
        let port = first
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the SMSC: {first}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("the SMSC printed {line:?}: {e}"));
                    seen.lock().unwrap().push(value);
                }
            }
        });
        Smsc {
            port,
            seen,
            stdin: child.stdin.take().expect("piped stdin"),
            _child: child,
        }
    }

    /// The PDUs named `pdu` it received so far.
    fn pdus(&self, pdu: &str) -> Vec<Value> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|v| v["pdu"] == pdu).cloned().collect()
    }

    /// The submits to `destination`, in order.
    fn submits_to(&self, destination: &str) -> Vec<Value> {
        let mut submits = self.pdus("submit_sm");
        submits.retain(|s| s["destination_addr"] == destination);
        submits
    }

    /// Has the SMSC send a person's message to Herald.
    async fn reply(&mut self, from: &str, text: &str) {
        self.tell(json!({"from": from, "to": "8613800000000", "text": text}))
            .await;
    }

    /// Has the SMSC send the receipt it held for `message_id` (`--hold-receipts`).
    async fn release_receipt(&mut self, message_id: &str) {
        self.tell(json!({ "receipt": message_id })).await;
    }

    /// Writes `command` to the SMSC's stdin, as one line.
    async fn tell(&mut self, command: Value) {
        let line = command.to_string() + "\n";
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// How many binds it accepted so far.
    fn binds(&self) -> usize {
        let binds = self.pdus("bind_transceiver");
        binds.iter().filter(|b| b["ok"] == true).count()
    }

    /// A provider bound to it with `long_messages`.
    fn provider(&self, long_messages: LongMessages) -> herald::provider::ProviderConfig {
        sms_provider(
            "smsc",
            ProviderKind::Smpp(SmppConfig {
                binds: 2,
                long_messages,
                ..SmppConfig::new(
                    "127.0.0.1",
                    self.port,
                    "herald",
                    Secret::new("secret"),
                    "Herald",
                )
            }),
        )
    }
}

/// The test SMSC's certificate and key (see `tests/smpp/tls/README.md`).
fn tls_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/smpp/tls")
        .join(name)
}

/// The SMPP settings of the one provider `herald_on` configures.
fn smpp_of(config: &mut Config) -> &mut SmppConfig {
    match &mut config.providers[0].kind {
        ProviderKind::Smpp(smpp) => smpp,
        _ => unreachable!("herald_on configures an SMPP provider"),
    }
}

/// Herald sending SMS through `smsc` alone, its configuration then changed by
/// `tweak`.
async fn herald_on(
    smsc: &Smsc,
    long_messages: LongMessages,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let provider = smsc.provider(long_messages);
    spawn_app(|config| {
        config.defaults.insert(Channel::Sms, provider.name.clone());
        config.providers = vec![provider];
        tweak(config);
    })
    .await
}

/// A batch of `(to, text)` recipients, each sent its own text.
fn batch(texts: &[(&str, String)]) -> Value {
    let recipients: Vec<Value> = texts
        .iter()
        .map(|(to, text)| json!({"to": to, "vars": {"text": text}}))
        .collect();
    json!({"channel": "sms", "template": {"body": "{{text}}"}, "recipients": recipients})
}

/// Waits until every message of the batch has one of the final receipt states.
async fn wait_receipted(herald: &TestApp, batch_id: &str) -> Vec<Value> {
    wait_for(Duration::from_secs(20), "every receipt applied", || async {
        let ledger = herald.messages(batch_id).await;
        ledger
            .iter()
            .all(|m| matches!(m["state"].as_str(), Some("delivered" | "undelivered")))
            .then_some(ledger)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gsm_and_ucs2_texts_short_and_long_reach_the_smsc_as_it_reads_them_and_its_receipts_settle_them()
 {
    let smsc = Smsc::start(&["--undeliverable", "8613800000999"]).await;
    let herald = herald_on(&smsc, LongMessages::Udh, |_| {}).await;
    let long_gsm = format!("{} [price: 5€]", "Your parcel is on its way. ".repeat(7));
    let long_ucs2 = "您的包裹已发出，请注意查收。".repeat(8);
    let texts = [
        ("+8613800000001", "Hello from Herald".to_string()),
        ("+8613800000002", long_gsm.clone()),
        ("+8613800000003", "您好，Herald".to_string()),
        ("+8613800000004", long_ucs2.clone()),
        ("+8613800000999", "Nobody home".to_string()),
    ];
    let batch_id = herald.submit(&batch(&texts)).await;
    let ledger = wait_receipted(&herald, &batch_id).await;
    let states: Vec<&str> = ledger
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "delivered",
            "delivered",
            "delivered",
            "delivered",
            "undelivered"
        ],
        "{ledger:?}"
    );

    for (to, text) in &texts {
        let submits = smsc.submits_to(&to[1..]);
        let measured = herald::sms::measure(text);
        assert_eq!(submits.len(), measured.segments, "{to}: {submits:?}");
        let coding = match measured.encoding {
            herald::sms::Encoding::Gsm7 => 0,
            herald::sms::Encoding::Ucs2 => 8,
        };
        let mut whole = String::new();
        for (i, s) in submits.iter().enumerate() {
            assert_eq!(s["data_coding"], coding, "{s}");
            assert_eq!(
                (
                    &s["source_addr"],
                    &s["source_addr_ton"],
                    &s["source_addr_npi"]
                ),
                (&json!("Herald"), &json!(5), &json!(0))
            );
            assert_eq!(
                (&s["dest_addr_ton"], &s["dest_addr_npi"]),
                (&json!(1), &json!(1))
            );
            assert_eq!(s["registered_delivery"], 1);
            if submits.len() > 1 {
                assert_eq!(s["esm_class"], 0x40, "UDHI: {s}");
                let udh = s["udh"][0].as_str().unwrap();
                assert!(udh.starts_with("0003"), "{udh}");
                assert!(
                    udh.ends_with(&format!("{:02x}{:02x}", submits.len(), i + 1)),
                    "{udh}"
                );
            } else {
                assert_eq!(s["esm_class"], 0, "{s}");
            }
            whole.push_str(s["message"].as_str().unwrap());
        }
        assert_eq!(&whole, text, "{to}");
        let first = submits[0]["message_id"].as_str().unwrap();
        let message = ledger.iter().find(|m| m["to"] == *to).unwrap();
        assert_eq!(
            message["provider_message_id"], first,
            "recorded under its first segment"
        );
    }
    assert!(
        smsc.pdus("deliver_sm_resp")
            .iter()
            .all(|r| r["status"] == 0),
        "every receipt answered once stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sar_segments_reach_the_smsc_and_a_reply_on_the_bind_reaches_the_replies_ledger() {
    let mut smsc = Smsc::start(&[]).await;
    let mut herald = herald_on(&smsc, LongMessages::Sar, |_| {}).await;
    let text = "a".repeat(200);
    let batch_id = herald
        .submit(&batch(&[("+8613800000001", text.clone())]))
        .await;
    wait_receipted(&herald, &batch_id).await;
    let submits = smsc.submits_to("8613800000001");
    assert_eq!(submits.len(), 2);
    for (i, s) in submits.iter().enumerate() {
        assert_eq!(s["esm_class"], 0, "no UDH with SAR: {s}");
        assert_eq!(s["sar_total_segments"], 2);
        assert_eq!(s["sar_segment_seqnum"], i + 1);
        assert_eq!(s["sar_msg_ref_num"], submits[0]["sar_msg_ref_num"]);
    }

    smsc.reply("8613800000001", "STOP").await;
    let replies = wait_for(Duration::from_secs(10), "the reply stored", || async {
        let (_, page) = herald.get("/v1/replies?limit=10").await;
        let replies = page["replies"].as_array().cloned().unwrap_or_default();
        (!replies.is_empty()).then_some(replies)
    })
    .await;
    assert_eq!(replies[0]["from"], "+8613800000001");
    assert_eq!(replies[0]["body"], "STOP");
    assert_eq!(replies[0]["keyword"], "opt_out");
    assert_eq!(replies[0]["provider"], "smsc");

    herald.stop().await;
    wait_for(Duration::from_secs(5), "both binds unbound", || async {
        (smsc.pdus("unbind").len() == 2).then_some(())
    })
    .await;
    let binds = smsc.pdus("bind_transceiver");
    assert!(
        binds.len() >= 2 && binds.iter().all(|b| b["ok"] == true),
        "{binds:?}"
    );
    assert_eq!(binds[0]["interface_version"], 0x34);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_for_a_later_segment_after_a_restart_settles_the_long_message() {
    let mut smsc = Smsc::start(&["--hold-receipts"]).await;
    let mut herald = herald_on(&smsc, LongMessages::Udh, |_| {}).await;
    let store = herald.dir.path().join("store");
    let text = "Your parcel is on its way. ".repeat(8);
    let batch_id = herald
        .submit(&batch(&[("+8613800000001", text.clone())]))
        .await;
    wait_for(Duration::from_secs(10), "the message sent", || async {
        let ledger = herald.messages(&batch_id).await;
        (ledger[0]["state"] == "sent").then_some(())
    })
    .await;
    herald.stop().await;
    let submits = smsc.submits_to("8613800000001");
    assert_eq!(submits.len(), herald::sms::measure(&text).segments);
    assert_eq!(submits.len(), 2, "{submits:?}");

    let binds = smsc.binds();
    let restarted = herald_on(&smsc, LongMessages::Udh, |config| {
        config.store = StoreUrl::Sqlite(store.clone());
    })
    .await;
    wait_for(
        Duration::from_secs(10),
        "the restarted Herald bound",
        || async { (smsc.binds() >= binds + 2).then_some(()) },
    )
    .await;
    let later = submits[1]["message_id"].as_str().unwrap();
    smsc.release_receipt(later).await;
    let ledger = wait_receipted(&restarted, &batch_id).await;
    assert_eq!(ledger[0]["state"], "delivered", "{ledger:?}");
    assert_eq!(ledger[0]["provider_message_id"], submits[0]["message_id"]);
    assert_eq!(ledger[0]["receipt_code"], "DELIVRD", "{ledger:?}");
}

/// The SMSC listening with TLS, on the test certificate.
async fn tls_smsc() -> Smsc {
    let (key, cert) = (tls_file("key.pem"), tls_file("cert.pem"));
    Smsc::start(&[
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_the_smscs_certificate_as_ca_file_a_message_is_delivered() {
    let smsc = tls_smsc().await;
    let herald = herald_on(&smsc, LongMessages::Udh, |config| {
        let smpp = smpp_of(config);
        smpp.host = "localhost".into();
        smpp.tls = true;
        smpp.ca_file = Some(tls_file("cert.pem"));
    })
    .await;
    let batch_id = herald
        .submit(&batch(&[("+8613800000001", "Over TLS".to_string())]))
        .await;
    let ledger = wait_receipted(&herald, &batch_id).await;
    assert_eq!(ledger[0]["state"], "delivered", "{ledger:?}");
    let submits = smsc.submits_to("8613800000001");
    assert_eq!(submits.len(), 1);
    assert_eq!(submits[0]["message"], "Over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_without_ca_file_the_handshake_fails_and_the_message_waits_saying_why() {
    let smsc = tls_smsc().await;
    let herald = herald_on(&smsc, LongMessages::Udh, |config| {
        smpp_of(config).tls = true;
    })
    .await;
    let batch_id = herald
        .submit(&batch(&[("+8613800000001", "Over TLS".to_string())]))
        .await;
    let message = wait_for(Duration::from_secs(20), "an attempt's error", || async {
        let ledger = herald.messages(&batch_id).await;
        ledger[0]["last_error"]
            .is_string()
            .then(|| ledger[0].clone())
    })
    .await;
    let error = message["last_error"].as_str().unwrap();
    assert!(
        error.contains("TLS handshake failed: invalid peer certificate"),
        "{message}"
    );
    // Waiting for its next attempt, or in it: neither failed nor unknown.
    assert!(
        message["state"] == "pending" || message["state"] == "sending",
        "tried again: {message}"
    );
    assert!(smsc.pdus("bind_transceiver").is_empty(), "never bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_gsm_texts_short_and_long_read_back_whole_at_an_smsc_that_unpacks_them() {
    let smsc = Smsc::start(&["--gsm7-packed"]).await;
    let herald = herald_on(&smsc, LongMessages::Udh, |config| {
        smpp_of(config).gsm7_packed = true;
    })
    .await;
    // 15 and 16 septets: 15 leave the last octet 7 bits to fill. The long text is
    // 153 + 16 septets: its last segment, after the header, does as well.
    let long = format!("{}Thanks!", "Your parcel is on its way. ".repeat(6));
    let texts = [
        ("+8613800000001", "Packed GSM text".to_string()),
        ("+8613800000002", "Hi {you}, 5€ off".to_string()),
        ("+8613800000003", long),
    ];
    let batch_id = herald.submit(&batch(&texts)).await;
    let ledger = wait_receipted(&herald, &batch_id).await;
    assert!(
        ledger.iter().all(|m| m["state"] == "delivered"),
        "{ledger:?}"
    );
    for (to, text) in &texts {
        let submits = smsc.submits_to(&to[1..]);
        assert_eq!(submits.len(), herald::sms::measure(text).segments, "{to}");
        let mut whole = String::new();
        for s in &submits {
            assert_eq!(s["data_coding"], 0, "{s}");
            let octets = s["short_message"].as_str().unwrap().len() / 2;
            assert!(octets <= 140, "packed into at most 140 octets: {s}");
            whole.push_str(s["message"].as_str().unwrap());
        }
        assert_eq!(&whole, text, "{to}: {submits:?}");
    }
    assert_eq!(smsc.submits_to("8613800000003").len(), 2);
}
