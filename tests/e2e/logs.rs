//! What Herald logs at info while it accepts and sends, in either log format: the
//! log provider's rendered message (it exists to be read there), and otherwise
//! never a message's body, a provider's secret or the store's password.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::telemetry::{LogFormat, subscriber};
use serde_json::json;
use tracing_subscriber::EnvFilter;

use crate::helpers::{ProviderServer, spawn_app};

/// Log lines written to memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

const BODY_SECRET: &str = "one-time-code-738201";
/// What the log provider is given to send, rendered.
const LOG_TEXT: &str = "Hello Ada, from the log provider";
const SIGNING_SECRET: &str = "webhook-signing-key-5521";

/// Sends one batch through the log provider (the text `LOG_TEXT`) and one holding
/// `BODY_SECRET` through a signed webhook, with info logs captured in `format`; the log.
async fn info_log_of_sends(format: LogFormat) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let _default = tracing::subscriber::set_default(subscriber(
        format,
        EnvFilter::new("info"),
        move || writer.clone(),
        false,
    ));
    let server = ProviderServer::start().await;
    let mut app = spawn_app(|config| {
        let mut hook = server.provider(Some(SIGNING_SECRET));
        hook.name = "signed".into();
        config.providers = vec![hook];
    })
    .await;
    for (provider, body, var) in [
        ("log", "Hello {{v}}, from the log provider", "Ada"),
        ("signed", "Your code is {{v}}", BODY_SECRET),
    ] {
        let batch = json!({
            "channel": "sms",
            "provider": provider,
            "template": {"body": body},
            "recipients": [{"to": "+8613800000001", "vars": {"v": var}}],
        });
        let (status, report) = app.post("/v1/batches", &batch).await;
        assert_eq!(status, 202, "{report}");
        app.wait_finished(
            report["batch_id"].as_str().unwrap(),
            Duration::from_secs(10),
        )
        .await;
    }
    assert_eq!(server.count(), 1);
    app.stop().await;
    captured.text()
}

// Current-thread runtimes: the capturing subscriber is this thread's default, and
// every task of the app runs on this thread.
#[tokio::test]
async fn info_logs_show_the_log_providers_message_and_no_other_body_or_secret_as_text() {
    let log = info_log_of_sends(LogFormat::Text).await;
    let line = log
        .lines()
        .find(|l| l.contains("message delivered to the log"))
        .unwrap_or_else(|| panic!("no log provider line in {log}"));
    assert!(line.contains("to=+8613800000001"), "{line}");
    assert!(line.contains(&format!("text=\"{LOG_TEXT}\"")), "{line}");
    assert!(!log.contains(BODY_SECRET), "{log}");
    assert!(!log.contains(SIGNING_SECRET), "{log}");
}

#[tokio::test]
async fn info_logs_show_the_log_providers_message_and_no_other_body_or_secret_as_json() {
    let log = info_log_of_sends(LogFormat::Json).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let line = lines
        .iter()
        .find(|l| l["fields"]["message"] == "message delivered to the log")
        .unwrap_or_else(|| panic!("no log provider line in {log}"));
    assert_eq!(line["fields"]["text"], LOG_TEXT, "{line}");
    assert_eq!(line["fields"]["to"], "+8613800000001", "{line}");
    assert!(!log.contains(BODY_SECRET), "{log}");
    assert!(!log.contains(SIGNING_SECRET), "{log}");
}
