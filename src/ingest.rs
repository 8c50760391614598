//! Ingest: Herald as a drop-in for the classic worker loop. Each `[[ingest]]`
//! source consumes a queue an existing application already fills — a Redis list
//! ([`redis_list`]) or an AMQP queue ([`amqp`]) — and turns each item ([`job`]: the
//! SMS job, the e-mail job, or Herald's batch JSON) into a batch through
//! [`Intake`], under an idempotency key that makes taking an item again after a
//! crash answer with its first batch. An item leaves its queue only once its
//! batch is committed; one that can never become a batch goes to a dead-letter
//! list or queue with the reason; a store outage leaves it where it is and is
//! retried with backoff.

mod amqp;
pub mod job;
mod redis_list;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, Jitter, Streak};
use crate::config::{IngestConfig, IngestKind};
use crate::domain::Channel;
use crate::intake::{self, Body, Envelope, Intake, RecipientSpec, Rejection, Submitted};
use crate::provider::{ProviderConfig, ProviderKind};
use crate::queue;
use job::{Job, JobWindow};

/// Why ingest could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An `[[ingest]]` block that cannot work as written.
    #[error("ingest `{name}`: {message}")]
    Config { name: String, message: String },
}

/// The running ingest sources; [`Ingest::stop`] waits for them to finish.
pub struct Ingest {
    tasks: Vec<JoinHandle<()>>,
    metrics: Metrics,
}

impl Ingest {
    /// Starts one task per source. They stop taking items when `shutdown` is
    /// cancelled; an item being turned into a batch then is finished or left
    /// where it is, to be taken again on the next start.
    pub fn start(
        sources: &[IngestConfig],
        intake: &Intake,
        providers: &[ProviderConfig],
        shutdown: &CancellationToken,
    ) -> Result<Ingest, Error> {
        let senders = senders(providers);
        let mut tasks = Vec::new();
        let mut counters = Vec::new();
        for source in sources {
            let handler = Handler {
                source: format!("ingest:{}", source.name),
                channel: source.channel,
                provider: source.provider.clone(),
                template_id: source.template_id.clone(),
                senders: senders.clone(),
                intake: intake.clone(),
                counters: Arc::new(Counters::default()),
            };
            counters.push((handler.source.clone(), handler.counters.clone()));
            let stop = shutdown.clone();
            let task = match &source.kind {
                IngestKind::RedisList {
                    url,
                    key,
                    processing_key,
                    dead_letter_key,
                } => {
                    let list = redis_list::RedisList::new(
                        handler,
                        url.expose(),
                        key,
                        processing_key.as_deref(),
                        dead_letter_key.as_deref(),
                    )
                    .map_err(|message| Error::Config {
                        name: source.name.clone(),
                        message,
                    })?;
                    tokio::spawn(list.run(stop))
                }
                IngestKind::Amqp {
                    url,
                    queue,
                    dead_letter_queue,
                    prefetch,
                } => {
                    let consumer = amqp::AmqpQueue::new(
                        handler,
                        url.expose(),
                        queue,
                        dead_letter_queue.as_deref(),
                        *prefetch,
                    )
                    .map_err(|message| Error::Config {
                        name: source.name.clone(),
                        message,
                    })?;
                    tokio::spawn(consumer.run(stop))
                }
            };
            tasks.push(task);
        }
        Ok(Ingest {
            tasks,
            metrics: Metrics(Arc::new(counters)),
        })
    }

    /// The sources' counters, to serve on `/metrics`.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Waits until every source has stopped (after the shutdown token fired).
    pub async fn stop(self) {
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "an ingest task panicked");
            }
        }
    }
}

/// What became of the items of every ingest source since this process started.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Vec<(String, Arc<Counters>)>>);

/// The counters in a scrape of `/metrics`, as [`Metrics::write_prometheus`]
/// writes them.
impl crate::metrics::Section for Metrics {
    fn write(&self, out: &mut String) {
        self.write_prometheus(out);
    }
}

/// One source's item counts.
#[derive(Debug, Default)]
pub struct Counters {
    ingested: AtomicU64,
    rejected: AtomicU64,
    dead_lettered: AtomicU64,
}

/// A snapshot of one source's [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Items that became a batch (or were found to be one already, when taken again).
    pub ingested: u64,
    /// Items intake refused whole (no recipient can be sent to, an unknown
    /// template, a bad field): each is also dead-lettered.
    pub rejected: u64,
    /// Items put on the dead-letter list or queue: the rejected ones and those that
    /// could not be read as a job at all.
    pub dead_lettered: u64,
}

impl Counters {
    fn snapshot(&self) -> Counts {
        Counts {
            ingested: self.ingested.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

impl Metrics {
    /// The counts of the source named `source` (`ingest:{name}`).
    pub fn counts(&self, source: &str) -> Option<Counts> {
        self.0
            .iter()
            .find(|(name, _)| name == source)
            .map(|(_, counters)| counters.snapshot())
    }

    /// Appends the counters in Prometheus' text format, as
    /// `herald_ingest_items_total{source="ingest:…",result="ingested|rejected|dead_lettered"}`;
    /// nothing when no source is configured.
    pub fn write_prometheus(&self, out: &mut String) {
        if self.0.is_empty() {
            return;
        }
        out.push_str(
            "# HELP herald_ingest_items_total Items taken from ingest sources, by source and result.\n\
             # TYPE herald_ingest_items_total counter\n",
        );
        for (source, counters) in self.0.iter() {
            let counts = counters.snapshot();
            let source = crate::metrics::escape(source);
            for (result, n) in [
                ("ingested", counts.ingested),
                ("rejected", counts.rejected),
                ("dead_lettered", counts.dead_lettered),
            ] {
                let _ = writeln!(
                    out,
                    "herald_ingest_items_total{{source=\"{source}\",result=\"{result}\"}} {n}"
                );
            }
        }
    }
}

/// The e-mail providers by the address they send from (lower case): an e-mail job's
/// `from_email` picks the provider whose `from` it is.
fn senders(providers: &[ProviderConfig]) -> HashMap<String, String> {
    providers
        .iter()
        .filter(|p| p.channels.contains(&Channel::Email))
        .filter_map(|p| match &p.kind {
            ProviderKind::Smtp(smtp) => Some((address_of(&smtp.from), p.name.clone())),
            _ => None,
        })
        .collect()
}

/// The address of a mailbox written `Name <address>` or `address`, in lower case.
fn address_of(mailbox: &str) -> String {
    let address = match (mailbox.rfind('<'), mailbox.rfind('>')) {
        (Some(open), Some(close)) if open < close => &mailbox[open + 1..close],
        _ => mailbox,
    };
    address.trim().to_ascii_lowercase()
}

/// What becomes of one item once handled: it leaves its queue (its batch is
/// stored) or goes to the dead-letter list or queue. Not a message's
/// [`queue::Outcome`]: an item is a whole batch, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Disposition {
    /// Its batch is in the store: the item may leave its queue.
    Stored { batch_id: String, replayed: bool },
    /// It can never become a batch: dead-letter it with this reason.
    Dead { reason: String, rejected: bool },
}

/// What a classic job sets of its batch besides its messages: an SMS job's spend
/// cap and window (an e-mail job sets neither).
#[derive(Default)]
struct Extras {
    max_cost: Option<f64>,
    window: JobWindow,
}

/// Turns items into batches for one source, whichever transport they came by.
#[derive(Clone)]
struct Handler {
    /// `ingest:{name}`: the batches' source, the counters' label, the key prefix.
    source: String,
    channel: Option<Channel>,
    provider: Option<String>,
    template_id: Option<String>,
    senders: HashMap<String, String>,
    intake: Intake,
    counters: Arc<Counters>,
}

impl Handler {
    /// Turns `item` into a batch stored under the idempotency key `key` (with the
    /// item as the request it stands for), so the same key and item answer with
    /// the batch already stored. `Err` only when the store could not be reached or
    /// failed: the item must stay in its queue and be tried again.
    async fn handle(&self, item: &[u8], key: &str) -> Result<Disposition, queue::Error> {
        let job = match Job::parse(item, self.channel) {
            Ok(job) => job,
            Err(reason) => {
                return Ok(Disposition::Dead {
                    reason,
                    rejected: false,
                });
            }
        };
        let idempotency = Some((key, item));
        let submitted = match job {
            Job::Batch(mut request) => {
                if request.provider.is_none() {
                    request.provider.clone_from(&self.provider);
                }
                if request.template.is_none() && request.template_id.is_none() {
                    request.template_id.clone_from(&self.template_id);
                }
                self.intake
                    .submit_request(*request, &self.source, idempotency, false)
                    .await
            }
            Job::Sms(sms) => {
                let callback_url = sms.callback_url.clone();
                let parts = async {
                    let max_cost = sms.max_cost()?;
                    let window = sms.window()?;
                    let (body, recipients) = sms
                        .submission(&self.intake, self.template_id.as_deref())
                        .await?;
                    Ok((body, recipients, Extras { max_cost, window }))
                }
                .await;
                let provider = self.provider.as_deref();
                self.submit(Channel::Sms, provider, idempotency, callback_url, parts)
                    .await
            }
            Job::Email(email) => {
                let provider = match self.email_provider(email.from_email.as_deref()) {
                    Ok(provider) => provider,
                    Err(reason) => {
                        return Ok(Disposition::Dead {
                            reason,
                            rejected: true,
                        });
                    }
                };
                let parts = email
                    .submission(&self.intake, self.template_id.as_deref())
                    .await
                    .map(|(body, recipients)| (body, recipients, Extras::default()));
                self.submit(Channel::Email, provider, idempotency, None, parts)
                    .await
            }
        };
        disposition(submitted)
    }

    /// Stores a classic job's messages, once they could be made, under the spend
    /// cap it gives; their events go to `callback_url` too, when the job names one.
    async fn submit(
        &self,
        channel: Channel,
        provider: Option<&str>,
        idempotency: Option<(&str, &[u8])>,
        callback_url: Option<String>,
        parts: Result<(Body, Vec<RecipientSpec>, Extras), intake::Error>,
    ) -> Result<Submitted, intake::Error> {
        let (body, recipients, Extras { max_cost, window }) = parts?;
        let envelope = Envelope {
            channel,
            provider,
            priority: None,
            send_at: None,
            expires_at: None,
            valid_for: None,
            source: &self.source,
            idempotency,
            dry_run: false,
            reject_recent_duplicates: false,
            callback_url: callback_url.as_deref(),
            window: window.request(),
            max_cost,
        };
        self.intake.submit(envelope, body, recipients).await
    }

    /// The provider an e-mail job goes through. A batch has no sender of its own:
    /// the provider's `from` is what the recipient sees. So the source's `provider`,
    /// when set, sends every e-mail (from its own address, whatever `from_email`
    /// says); otherwise `from_email` must be the `from` of an e-mail provider, and
    /// picks it. A job without `from_email` takes the channel's default.
    fn email_provider(&self, from_email: Option<&str>) -> Result<Option<&str>, String> {
        if let Some(provider) = &self.provider {
            return Ok(Some(provider));
        }
        let Some(from) = from_email else {
            return Ok(None);
        };
        match self.senders.get(&address_of(from)) {
            Some(provider) => Ok(Some(provider)),
            None => Err(format!(
                "from_email: no e-mail provider sends as `{from}`; add an smtp provider with that `from`, or set `provider` on this ingest source to send from its address"
            )),
        }
    }

    /// Counts an item whose batch is stored, and logs it.
    fn stored(&self, batch_id: &str, replayed: bool) {
        self.counters.ingested.fetch_add(1, Ordering::Relaxed);
        if replayed {
            tracing::info!(source = %self.source, batch_id, "item taken again: its batch was already stored");
        } else {
            tracing::info!(source = %self.source, batch_id, "item ingested");
        }
    }

    /// Counts an item now on the dead-letter list or queue, and logs it.
    fn dead_lettered(&self, reason: &str, rejected: bool) {
        if rejected {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(source = %self.source, reason, "item dead-lettered");
    }
}

/// What a submit's answer means for the item. A refusal that looking again will
/// not change (a bad field, no recipient that can be sent to, an unknown
/// template, an idempotency key reused with another item) is final: dead-letter.
/// The store being unreachable or failing is not: the item is tried again.
fn disposition(submitted: Result<Submitted, intake::Error>) -> Result<Disposition, queue::Error> {
    let dead = |reason: String| {
        Ok(Disposition::Dead {
            reason,
            rejected: true,
        })
    };
    match submitted {
        Ok(submitted) => Ok(Disposition::Stored {
            batch_id: submitted.report["batch_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            replayed: submitted.replayed,
        }),
        Err(intake::Error::Store(queue::Error::Conflict(why))) => dead(why),
        Err(intake::Error::Store(e)) => Err(e),
        Err(
            e @ (intake::Error::Invalid { .. }
            | intake::Error::Malformed { .. }
            | intake::Error::TooLarge { .. }),
        ) => dead(e.to_string()),
        Err(intake::Error::NoneAccepted(rejected)) => dead(none_accepted(&rejected)),
    }
}

/// `none of the 2 recipients can be sent to: 0 `123`: invalid_address (…); …`,
/// naming at most three.
fn none_accepted(rejected: &[Rejection]) -> String {
    let mut reason = format!("none of the {} recipients can be sent to: ", rejected.len());
    for (i, r) in rejected.iter().take(3).enumerate() {
        if i > 0 {
            reason.push_str("; ");
        }
        let _ = write!(
            reason,
            "{} `{}`: {} ({})",
            r.index, r.to, r.reason, r.detail
        );
    }
    if rejected.len() > 3 {
        reason.push_str("; …");
    }
    reason
}

/// Waits between attempts after a failure: 100 ms, doubling up to 30 s, with
/// jitter, so a store or broker outage is not hammered.
const RETRY: Backoff = Backoff {
    first: Duration::from_millis(100),
    cap: Duration::from_secs(30),
    jitter: Jitter::Equal,
};

/// Waits the next delay of `failures`; `false` when `shutdown` fired first.
async fn pause(failures: &mut Streak, shutdown: &CancellationToken) -> bool {
    let delay = failures.failed();
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = shutdown.cancelled() => false,
    }
}

/// What a dead-letter list keeps of an item: the item itself (as text, or as
/// `item_base64` when it is not UTF-8), why, from where and when.
fn dead_letter_entry(source: &str, reason: &str, item: &[u8]) -> String {
    use base64::Engine as _;
    let mut entry = serde_json::json!({
        "source": source,
        "reason": reason,
        "at": jiff::Timestamp::now().to_string(),
    });
    match std::str::from_utf8(item) {
        Ok(text) => entry["item"] = text.into(),
        Err(_) => {
            entry["item_base64"] = base64::engine::general_purpose::STANDARD
                .encode(item)
                .into()
        }
    }
    entry.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_written_in_prometheus_text_per_source_and_result() {
        let a = Arc::new(Counters::default());
        let b = Arc::new(Counters::default());
        a.ingested.fetch_add(3, Ordering::Relaxed);
        a.dead_lettered.fetch_add(1, Ordering::Relaxed);
        b.rejected.fetch_add(2, Ordering::Relaxed);
        b.dead_lettered.fetch_add(2, Ordering::Relaxed);
        let metrics = Metrics(Arc::new(vec![
            ("ingest:sms".into(), a),
            ("ingest:we\"ird".into(), b),
        ]));
        let mut text = String::new();
        metrics.write_prometheus(&mut text);
        assert!(
            text.starts_with("# HELP herald_ingest_items_total "),
            "{text}"
        );
        assert!(text.contains("# TYPE herald_ingest_items_total counter\n"));
        for line in [
            r#"herald_ingest_items_total{source="ingest:sms",result="ingested"} 3"#,
            r#"herald_ingest_items_total{source="ingest:sms",result="rejected"} 0"#,
            r#"herald_ingest_items_total{source="ingest:sms",result="dead_lettered"} 1"#,
            r#"herald_ingest_items_total{source="ingest:we\"ird",result="rejected"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert_eq!(
            metrics.counts("ingest:sms"),
            Some(Counts {
                ingested: 3,
                rejected: 0,
                dead_lettered: 1
            })
        );
        let mut none = String::new();
        Metrics::default().write_prometheus(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn a_mailbox_address_is_read_with_or_without_a_display_name() {
        assert_eq!(
            address_of("Shop <NoReply@Shop.example>"),
            "noreply@shop.example"
        );
        assert_eq!(address_of(" li@example.com "), "li@example.com");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let mut backoff = Streak::new(RETRY);
        let first = backoff.failed();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            backoff.failed();
        }
        let late = backoff.failed();
        assert!(late >= Duration::from_secs(15) && late <= Duration::from_secs(30));
        backoff.reset();
        assert!(backoff.failed() <= Duration::from_millis(100));
    }

    #[test]
    fn refusals_that_cannot_change_are_dead_lettered_and_store_failures_retried() {
        let invalid = disposition(Err(intake::Error::Invalid {
            field: "template_id".into(),
            message: "no stored sms template `x`".into(),
        }));
        assert_eq!(
            invalid.unwrap(),
            Disposition::Dead {
                reason: "template_id: no stored sms template `x`".into(),
                rejected: true
            }
        );
        let none = disposition(Err(intake::Error::NoneAccepted(vec![Rejection {
            index: 0,
            to: "123".into(),
            reason: "invalid_address".into(),
            variable: None,
            first_index: None,
            detail: "too short".into(),
        }])));
        let Ok(Disposition::Dead { reason, .. }) = none else {
            panic!("dead-lettered")
        };
        assert_eq!(
            reason,
            "none of the 1 recipients can be sent to: 0 `123`: invalid_address (too short)"
        );
        let down = disposition(Err(intake::Error::Store(queue::Error::Unavailable(
            "connection refused".into(),
        ))));
        assert!(matches!(down, Err(queue::Error::Unavailable(_))));
    }

    #[test]
    fn a_dead_letter_entry_keeps_the_item_and_the_reason() {
        let entry: serde_json::Value =
            serde_json::from_str(&dead_letter_entry("ingest:x", "not JSON", b"{oops")).unwrap();
        assert_eq!(entry["item"], "{oops");
        assert_eq!(entry["reason"], "not JSON");
        assert_eq!(entry["source"], "ingest:x");
        let entry: serde_json::Value =
            serde_json::from_str(&dead_letter_entry("ingest:x", "not JSON", &[0xff, 0])).unwrap();
        assert_eq!(entry["item_base64"], "/wA=");
    }
}
