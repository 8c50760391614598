//! The SMPP provider against Herald's own SMSC on 127.0.0.1: the faults an SMSC
//! simulator cannot be made to produce.

use std::time::Duration;

use rusmpp::CommandStatus;
use rusmpp::tlvs::TlvValue;

use super::smsc::{self, Answer, Script, Smsc};
use super::*;
use crate::domain::{BatchId, Secret};
use crate::provider::Pushed;

fn config(port: u16) -> SmppConfig {
    SmppConfig {
        submit_timeout_ms: Some(1_000),
        ..SmppConfig::new(
            "127.0.0.1",
            port,
            "herald",
            Secret::new("secret"),
            "+447700900000",
        )
    }
}

fn provider(config: &SmppConfig) -> SmppProvider {
    SmppProvider::new("smsc", config, &[Channel::Sms], Duration::from_secs(1)).unwrap()
}

fn sms(to: &str, body: &str) -> Message {
    Message {
        id: "m-1".into(),
        batch_id: BatchId::new(),
        reference: None,
        channel: Channel::Sms,
        to: to.into(),
        subject: None,
        body: body.into(),
        vars: None,
        template: None,
    }
}

/// The next push, within 5 s.
async fn next(pushes: &mut Pushes) -> crate::provider::Push {
    tokio::time::timeout(Duration::from_secs(5), pushes.recv())
        .await
        .expect("a push within 5 s")
        .expect("the provider keeps pushing")
}

async fn smsc(script: Script) -> (Smsc, SmppProvider) {
    let smsc = Smsc::start(script).await;
    let provider = provider(&config(smsc.port));
    (smsc, provider)
}

#[tokio::test]
async fn a_short_text_is_one_submit_with_the_configured_addresses_and_a_receipt_asked_for() {
    let (smsc, provider) = smsc(Script::default()).await;
    let receipt = provider.send(&sms("+447700900123", "Hello")).await.unwrap();
    assert_eq!(receipt.provider_message_id.as_deref(), Some("m1"));
    let submits = smsc.submits();
    assert_eq!(submits.len(), 1);
    let s = &submits[0];
    assert_eq!(s.destination_addr.as_str(), "447700900123");
    assert_eq!(s.source_addr.as_str(), "447700900000");
    assert_eq!(
        (u8::from(s.source_addr_ton), u8::from(s.source_addr_npi)),
        (1, 1)
    );
    assert_eq!(
        (u8::from(s.dest_addr_ton), u8::from(s.dest_addr_npi)),
        (1, 1)
    );
    assert_eq!(u8::from(s.registered_delivery), 1);
    assert_eq!(u8::from(s.esm_class), 0);
    assert_eq!(u8::from(s.data_coding), 0);
    assert_eq!(s.short_message().as_ref(), b"Hello");
}

#[tokio::test]
async fn a_long_text_with_sar_carries_the_tlvs_and_answers_every_segments_id() {
    let smsc = Smsc::start(Script::default()).await;
    let provider = provider(&SmppConfig {
        long_messages: LongMessages::Sar,
        ..config(smsc.port)
    });
    let text = "短信".repeat(50);
    let receipt = provider.send(&sms("+447700900123", &text)).await.unwrap();
    assert_eq!(receipt.provider_message_id.as_deref(), Some("m1"));
    let submits = smsc.submits();
    assert_eq!(submits.len(), crate::sms::measure(&text).segments);
    for (i, s) in submits.iter().enumerate() {
        assert_eq!(u8::from(s.data_coding), 8);
        assert_eq!(u8::from(s.esm_class) & 0x40, 0, "no UDHI with SAR");
        let sar: Vec<&TlvValue> = s.tlvs().iter().filter_map(|t| t.value()).collect();
        assert!(sar.contains(&&TlvValue::SarTotalSegments(2)), "{sar:?}");
        assert!(sar.contains(&&TlvValue::SarSegmentSeqnum(i as u8 + 1)));
    }
    assert_eq!(receipt.segment_ids, ["m2"]);
}

#[tokio::test]
async fn throttle_and_full_queue_answers_are_throttles_and_the_next_submit_goes() {
    let (smsc, provider) = smsc(Script {
        answers: [
            Answer::Refuse(CommandStatus::EsmeRthrottled),
            Answer::Refuse(CommandStatus::EsmeRmsgqful),
        ]
        .into(),
        ..Script::default()
    })
    .await;
    let message = sms("+447700900123", "Hi");
    assert!(provider.send(&message).await.unwrap_err().is_throttle());
    assert!(provider.send(&message).await.unwrap_err().is_throttle());
    assert!(provider.send(&message).await.is_ok());
    assert_eq!(
        smsc.seen().binds.load(Ordering::SeqCst),
        1,
        "one bind throughout"
    );
}

#[tokio::test]
async fn an_invalid_destination_is_undeliverable_and_a_system_error_transient() {
    let (_smsc, provider) = smsc(Script {
        answers: [
            Answer::Refuse(CommandStatus::EsmeRinvdstadr),
            Answer::Refuse(CommandStatus::EsmeRsyserr),
        ]
        .into(),
        ..Script::default()
    })
    .await;
    let message = sms("+447700900123", "Hi");
    let e = provider.send(&message).await.unwrap_err();
    assert!(matches!(e, Error::Undeliverable { .. }), "{e:?}");
    let e = provider.send(&message).await.unwrap_err();
    assert!(matches!(e, Error::Transient { .. }), "{e:?}");
    let e = provider.send(&sms("447700900123", "Hi")).await.unwrap_err();
    assert!(matches!(e, Error::Undeliverable { .. }), "not E.164: {e:?}");
}

#[tokio::test]
async fn a_submit_without_an_answer_is_unknown_after_the_submit_timeout() {
    let (_smsc, provider) = smsc(Script {
        answers: [Answer::Silent].into(),
        ..Script::default()
    })
    .await;
    let started = std::time::Instant::now();
    let e = provider
        .send(&sms("+447700900123", "Hi"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unknown { .. }), "{e:?}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(provider.send(&sms("+447700900123", "Hi")).await.is_ok());
}

#[tokio::test]
async fn a_later_segment_refused_says_how_many_went_before() {
    let (_smsc, provider) = smsc(Script {
        answers: [
            Answer::Accept,
            Answer::Refuse(CommandStatus::EsmeRthrottled),
        ]
        .into(),
        ..Script::default()
    })
    .await;
    let e = provider
        .send(&sms("+447700900123", &"a".repeat(200)))
        .await
        .unwrap_err();
    assert!(e.is_throttle(), "{e:?}");
    assert!(e.to_string().contains("segment 2 of 2"), "{e}");
}

#[tokio::test]
async fn a_refused_bind_is_transient_and_the_bind_is_tried_again_with_backoff() {
    let (smsc, provider) = smsc(Script {
        refuse_binds: Some(CommandStatus::EsmeRbindfail),
        ..Script::default()
    })
    .await;
    let e = provider
        .send(&sms("+447700900123", "Hi"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Transient { .. }), "{e:?}");
    assert!(e.to_string().contains("not bound"), "{e}");
    smsc.script(|s| s.refuse_binds = None);
    assert!(
        smsc.wait(|seen| seen.binds.load(Ordering::SeqCst) == 1)
            .await
    );
    assert!(provider.send(&sms("+447700900123", "Hi")).await.is_ok());
}

#[tokio::test]
async fn a_dropped_connection_is_bound_again_and_an_unanswered_submit_on_it_is_unknown() {
    let (smsc, provider) = smsc(Script::default()).await;
    assert!(provider.send(&sms("+447700900123", "Hi")).await.is_ok());
    smsc.script(|s| s.answers = [Answer::Silent].into());
    let lost = sms("+447700900123", "lost");
    let in_flight = provider.send(&lost);
    let dropping = async {
        assert!(
            smsc.wait(|seen| seen.submits.lock().unwrap().len() == 2)
                .await
        );
        smsc.drop_connections();
    };
    let (outcome, ()) = tokio::join!(in_flight, dropping);
    assert!(matches!(outcome, Err(Error::Unknown { .. })), "{outcome:?}");
    assert!(provider.send(&sms("+447700900123", "again")).await.is_ok());
    assert_eq!(smsc.seen().binds.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unanswered_enquire_link_closes_the_bind_and_it_is_bound_again() {
    let smsc = Smsc::start(Script {
        ignore_enquire_link: true,
        ..Script::default()
    })
    .await;
    let provider = provider(&SmppConfig {
        enquire_link_interval_ms: 100,
        submit_timeout_ms: Some(200),
        ..config(smsc.port)
    });
    assert!(provider.send(&sms("+447700900123", "Hi")).await.is_ok());
    assert!(
        smsc.wait(|seen| seen.binds.load(Ordering::SeqCst) >= 2)
            .await
    );
    assert!(smsc.seen().enquire_links.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn an_early_receipt_is_pushed_and_answered_once_stored() {
    let (smsc, provider) = smsc(Script {
        receipts: true,
        receipt_first: true,
        ..Script::default()
    })
    .await;
    let mut pushes = provider.take_pushes().expect("SMPP pushes");
    assert!(provider.take_pushes().is_none(), "taken once");
    let sent = provider.send(&sms("+447700900123", "Hi")).await.unwrap();
    let push = next(&mut pushes).await;
    let Pushed::Receipt(report) = &push.pushed else {
        panic!("a receipt: {:?}", push.pushed);
    };
    assert_eq!(
        Some(&report.provider_message_id),
        sent.provider_message_id.as_ref()
    );
    assert!(report.delivered);
    assert_eq!(report.code.as_deref(), Some("DELIVRD"));
    assert!(
        smsc.seen().deliver_answers.lock().unwrap().is_empty(),
        "not before stored"
    );
    push.stored.send(true).unwrap();
    assert!(
        smsc.wait(|seen| *seen.deliver_answers.lock().unwrap() == [CommandStatus::EsmeRok])
            .await
    );
}

#[tokio::test]
async fn a_long_message_answers_every_segments_id_and_a_receipt_keeps_the_id_it_names() {
    let (smsc, provider) = smsc(Script::default()).await;
    let mut pushes = provider.take_pushes().expect("SMPP pushes");
    let sent = provider
        .send(&sms("+447700900123", &"a".repeat(400)))
        .await
        .unwrap();
    assert_eq!(sent.provider_message_id.as_deref(), Some("m1"));
    assert_eq!(sent.segment_ids, ["m2", "m3"]);
    smsc.deliver(smsc::receipt("m3", "447700900123", "UNDELIV"));
    let push = next(&mut pushes).await;
    let Pushed::Receipt(report) = &push.pushed else {
        panic!("a receipt");
    };
    // The store finds the message by any of its segments' ids.
    assert_eq!(report.provider_message_id, "m3");
    assert!(!report.delivered);
}

#[tokio::test]
async fn an_inbound_message_is_pushed_as_a_reply_and_one_not_stored_is_asked_again() {
    let (smsc, provider) = smsc(Script::default()).await;
    let mut pushes = provider.take_pushes().expect("SMPP pushes");
    assert!(
        smsc.wait(|seen| seen.binds.load(Ordering::SeqCst) == 1)
            .await
    );
    smsc.deliver(smsc::reply("447700900123", "STOP"));
    let push = next(&mut pushes).await;
    let Pushed::Reply(reply) = &push.pushed else {
        panic!("a reply: {:?}", push.pushed);
    };
    assert_eq!(
        (reply.from.as_str(), reply.body.as_str()),
        ("+447700900123", "STOP")
    );
    push.stored.send(false).unwrap();
    assert!(
        smsc.wait(|seen| *seen.deliver_answers.lock().unwrap() == [CommandStatus::EsmeRxTAppn])
            .await
    );
}

#[tokio::test]
async fn close_unbinds_every_bind() {
    let smsc = Smsc::start(Script::default()).await;
    let provider = provider(&SmppConfig {
        binds: 3,
        ..config(smsc.port)
    });
    let _pushes = provider.take_pushes();
    assert!(
        smsc.wait(|seen| seen.binds.load(Ordering::SeqCst) == 3)
            .await
    );
    provider.close().await;
    assert_eq!(smsc.seen().unbinds.load(Ordering::SeqCst), 3);
}

#[test]
fn settings_are_checked_and_name_the_key() {
    let error = |change: fn(&mut SmppConfig)| {
        let mut config = config(2775);
        change(&mut config);
        SmppProvider::new("smsc", &config, &[Channel::Sms], Duration::from_secs(1))
            .err()
            .expect("refused")
    };
    assert!(error(|c| c.system_id = "x".repeat(16)).contains("system_id"));
    assert!(error(|c| c.password = Secret::new("123456789")).contains("password"));
    assert!(error(|c| c.window = 0).contains("window"));
    assert!(error(|c| c.source_addr = "+12ab".into()).contains("source_addr"));
    assert!(
        SmppProvider::new(
            "smsc",
            &config(1),
            &[Channel::Email],
            Duration::from_secs(1)
        )
        .err()
        .expect("SMS only")
        .contains("SMS only")
    );
    let name = Settings::new(
        &SmppConfig {
            source_addr: "Herald".into(),
            ..config(1)
        },
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!((name.source.ton, name.source.npi), (5, 0));
}

#[test]
fn a_ca_file_needs_tls_and_must_hold_pem_certificates() {
    let settings = |tls: bool, ca_file: Option<std::path::PathBuf>| {
        let config = SmppConfig {
            tls,
            ca_file,
            ..config(1)
        };
        Settings::new(&config, Duration::from_secs(1))
    };
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smpp/tls");
    let error = settings(false, Some(fixture.join("cert.pem"))).unwrap_err();
    assert!(error.contains("ca_file needs tls = true"), "{error}");
    let missing = dir.path().join("missing.pem");
    let error = settings(true, Some(missing.clone())).unwrap_err();
    assert!(
        error.contains(&format!("ca_file {}", missing.display())),
        "{error}"
    );
    let error = settings(true, Some(fixture.join("README.md"))).unwrap_err();
    assert!(error.contains("holds no PEM certificate"), "{error}");
    assert!(
        settings(true, Some(fixture.join("cert.pem")))
            .unwrap()
            .tls
            .is_some()
    );
    assert!(settings(false, None).unwrap().tls.is_none());
}

#[test]
fn a_send_waits_for_a_bind_half_the_time_it_has_at_most() {
    let settings = |submit_timeout_ms: Option<u64>, send_timeout_ms: u64| {
        let config = SmppConfig {
            submit_timeout_ms,
            ..config(1)
        };
        Settings::new(&config, Duration::from_millis(send_timeout_ms))
            .unwrap()
            .bind_wait
    };
    assert_eq!(settings(None, 2_000), Duration::from_millis(1_000));
    assert_eq!(settings(Some(500), 2_000), Duration::from_millis(250));
    assert_eq!(settings(Some(5_000), 2_000), Duration::from_millis(1_000));
}

#[test]
fn an_unknown_smpp_key_is_refused() {
    let toml = r#"
        name = "smsc"
        kind = "smpp"
        host = "127.0.0.1"
        system_id = "herald"
        password = "secret"
        source_addr = "Herald"
        windw = 10
    "#;
    let e = toml_from_str(toml).unwrap_err();
    assert!(e.contains("windw"), "{e}");
}

fn toml_from_str(toml: &str) -> Result<crate::provider::ProviderConfig, String> {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(toml))
        .extract()
        .map_err(|e| e.to_string())
}
