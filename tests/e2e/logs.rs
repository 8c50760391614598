//! What Herald logs at info while it accepts and sends: never a message's body,
//! a provider's secret or the store's password, in either log format.

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
const SIGNING_SECRET: &str = "webhook-signing-key-5521";

/// Sends one batch through the log provider and one through a signed webhook with
/// info logs captured in `format`; the log.
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
    for provider in ["log", "signed"] {
        let batch = json!({
            "channel": "sms",
            "provider": provider,
            "template": {"body": "Your code is {{code}}"},
            "recipients": [{"to": "+8613800000001", "vars": {"code": BODY_SECRET}}],
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
async fn info_logs_of_sends_hold_no_body_and_no_secret_as_text() {
    let log = info_log_of_sends(LogFormat::Text).await;
    assert!(log.contains("message delivered to the log"), "{log}");
    assert!(!log.contains(BODY_SECRET), "{log}");
    assert!(!log.contains(SIGNING_SECRET), "{log}");
}

#[tokio::test]
async fn info_logs_of_sends_hold_no_body_and_no_secret_as_json() {
    let log = info_log_of_sends(LogFormat::Json).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "message delivered to the log"),
        "{log}"
    );
    assert!(!log.contains(BODY_SECRET), "{log}");
    assert!(!log.contains(SIGNING_SECRET), "{log}");
}
