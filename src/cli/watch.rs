//! `herald send --wait`: follows a batch's event stream with a progress bar until
//! the batch is finished, and says whether any message failed.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::Value;

use super::ServerArg;
use super::server::server_error;

/// Times the stream may be opened again after it broke off, before giving up.
const RECONNECTS: u32 = 5;
/// The server sends at least a keep-alive every 15 s; silence this long is a dead
/// connection.
const SILENCE: Duration = Duration::from_secs(60);

/// One server-sent event: its `event` name (`message` when it has none) and data
/// (its `data:` lines joined by newlines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEvent {
    pub name: String,
    pub data: String,
}

/// Reads `text/event-stream` bytes as they arrive, in pieces cut anywhere.
#[derive(Debug, Default)]
pub struct EventReader {
    /// Bytes of a line not yet ended.
    pending: Vec<u8>,
    name: Option<String>,
    data: Vec<String>,
}

impl EventReader {
    /// The events that `chunk` completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<ServerEvent> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                let name = self.name.take();
                if !self.data.is_empty() {
                    events.push(ServerEvent {
                        name: name.unwrap_or_else(|| "message".into()),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.name = Some(value.to_owned()),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        events
    }
}

/// How a finished batch ended, from its last event.
pub(super) struct Finished {
    pub(super) batch: Value,
}

impl Finished {
    /// Messages that were not delivered: failed, expired (not sent by the batch's
    /// deadline), and undelivered, where receipts say so.
    pub(super) fn failed(&self) -> u64 {
        ["failed", "expired", "undelivered"]
            .iter()
            .filter_map(|state| self.batch["counts"][state].as_u64())
            .sum()
    }
}

/// Follows batch `id` on `server` until its `end` event, drawing a bar of settled
/// messages on standard error.
pub(super) async fn wait(server: &ServerArg, id: &str) -> anyhow::Result<Finished> {
    let client = stream_client()?;
    let bar = progress_bar(indicatif::ProgressDrawTarget::stderr());
    let path = format!("/v1/batches/{id}/events");
    let mut broken = None;
    for _ in 0..=RECONNECTS {
        if broken.is_some() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match follow(&client, server, &path, &bar).await {
            Ok(Some(finished)) => {
                bar.finish_and_clear();
                return Ok(finished);
            }
            Ok(None) => broken = Some(anyhow::anyhow!("the server closed the event stream")),
            Err(e) if e.downcast_ref::<Refused>().is_some() => {
                bar.finish_and_clear();
                return Err(e);
            }
            Err(e) => broken = Some(e),
        }
    }
    bar.finish_and_clear();
    Err(broken
        .unwrap_or_else(|| anyhow::anyhow!("no event stream"))
        .context(format!("following batch {id}")))
}

/// The server refused the stream: asking again will not help.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Reads one connection of the stream: `Some` at `end`, `None` when it closed before.
async fn follow(
    client: &reqwest::Client,
    server: &ServerArg,
    path: &str,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Option<Finished>> {
    let (request, url) = server.request(client, reqwest::Method::GET, path);
    let response = request
        .send()
        .await
        .map_err(|e| super::server::unreachable(&e, &url))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(Refused(server_error(status, &body)).into());
    }
    let mut body = response.bytes_stream();
    let mut reader = EventReader::default();
    loop {
        let chunk = match tokio::time::timeout(SILENCE, body.next()).await {
            Err(_) => bail!("no word from the server in {} s", SILENCE.as_secs()),
            Ok(None) => return Ok(None),
            Ok(Some(chunk)) => chunk.context("reading the event stream")?,
        };
        for event in reader.push(&chunk) {
            let batch: Value = serde_json::from_str(&event.data)
                .with_context(|| format!("an event that is not JSON: {}", event.data))?;
            show(bar, &batch);
            if event.name == "end" {
                return Ok(Some(Finished { batch }));
            }
        }
    }
}

/// Messages of `counts` the provider took: `sent`, and those a delivery receipt
/// has since moved on to `delivered` or `undelivered`.
pub(super) fn sent(counts: &Value) -> u64 {
    ["sent", "delivered", "undelivered"]
        .iter()
        .filter_map(|state| counts[state].as_u64())
        .sum()
}

/// Puts a progress event on the bar: settled of total, counts, rate and ETA.
fn show(bar: &indicatif::ProgressBar, batch: &Value) {
    let count = |state: &str| batch["counts"][state].as_u64().unwrap_or(0);
    let (settled, total) = settled_of(&batch["counts"]);
    bar.set_length(total);
    bar.set_position(settled);
    let rate = batch["rate_per_sec"].as_f64().unwrap_or(0.0);
    let eta = match batch["eta_seconds"].as_f64() {
        Some(seconds) => format!(
            "ETA {}",
            indicatif::HumanDuration(Duration::from_secs_f64(seconds.max(0.0)))
        ),
        None => "ETA unknown".into(),
    };
    // Expired messages are named once there are any.
    let expired = match count("expired") {
        0 => String::new(),
        n => format!(" · expired {n}"),
    };
    bar.set_message(format!(
        "{} · sent {} · failed {}{expired} · {rate:.1}/s · {eta}",
        batch["state"].as_str().unwrap_or("?"),
        sent(&batch["counts"]),
        count("failed"),
    ));
}

/// The bar's position and length for `counts`: messages settled (sent, delivered,
/// undelivered, failed, cancelled or expired — an unknown outcome is asked about
/// and sent again, so it is not) of the total, counted from the settled states
/// themselves, so a state the counts leave out never fills the bar. The length is
/// at least 1: a bar of length 0 is drawn full.
fn settled_of(counts: &Value) -> (u64, u64) {
    let count = |state: &str| counts[state].as_u64().unwrap_or(0);
    let settled = sent(counts) + count("failed") + count("cancelled") + count("expired");
    (settled, count("total").max(settled).max(1))
}

fn progress_bar(target: indicatif::ProgressDrawTarget) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(1), target);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// A client for a stream that may last hours: no total timeout, but a read that
/// waits past [`SILENCE`] fails.
fn stream_client() -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(SILENCE)
        .no_proxy()
        .build()
        .context("building an HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_from_pieces_cut_anywhere() {
        let stream = "event: progress\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: end\r\ndata: x\r\ndata: y\r\n\r\ndata: plain\n\n";
        let expected = vec![
            ServerEvent {
                name: "progress".into(),
                data: "{\"a\":1}".into(),
            },
            ServerEvent {
                name: "end".into(),
                data: "x\ny".into(),
            },
            ServerEvent {
                name: "message".into(),
                data: "plain".into(),
            },
        ];
        for cut in 1..stream.len() {
            let mut reader = EventReader::default();
            let (a, b) = stream.as_bytes().split_at(cut);
            let mut events = reader.push(a);
            events.extend(reader.push(b));
            assert_eq!(events, expected, "cut at {cut}");
        }
    }

    #[test]
    fn failed_counts_failed_expired_and_undelivered_messages() {
        let finished = |counts: Value| Finished {
            batch: serde_json::json!({ "counts": counts }),
        };
        assert_eq!(
            finished(serde_json::json!({"sent": 3, "failed": 0})).failed(),
            0
        );
        assert_eq!(
            finished(serde_json::json!({"failed": 2, "undelivered": 1})).failed(),
            3
        );
        assert_eq!(
            finished(serde_json::json!({"failed": 1, "expired": 4})).failed(),
            5
        );
    }

    #[test]
    fn sent_counts_what_receipts_moved_on_too() {
        assert_eq!(sent(&serde_json::json!({"sent": 3, "failed": 1})), 3);
        assert_eq!(
            sent(&serde_json::json!({"sent": 1, "delivered": 4, "undelivered": 2, "unknown": 5})),
            7
        );
    }

    #[test]
    fn the_bar_fills_with_settled_messages_only() {
        let screen = crate::cli::screen::Screen::default();
        let bar = progress_bar(screen.target());
        // Counts that leave out the states still to go: one of 300 is sent.
        show(
            &bar,
            &serde_json::json!({"state": "running", "counts": {"total": 300, "sent": 1}}),
        );
        bar.tick();
        let line = screen.line();
        assert!(
            line.contains("  0% 1/300") && line.contains("sent 1"),
            "{line:?}"
        );
        assert!(!line.contains("100%"), "{line:?}");

        show(&bar, &serde_json::json!({"state": "running", "counts": {}}));
        bar.tick();
        assert!(screen.line().contains("  0% 0/1"), "{screen:?}");

        let counts = serde_json::json!({"total": 10, "sent": 2, "delivered": 3,
            "failed": 1, "cancelled": 1, "expired": 1, "pending": 1, "unknown": 1});
        assert_eq!(settled_of(&counts), (8, 10));
    }
}
