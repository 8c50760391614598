//! An AMQP 0-9-1 queue (RabbitMQ) as an ingest source.
//!
//! Messages are consumed with manual acknowledgements and at most `prefetch`
//! unacknowledged at once (`basic.qos`). The channel is transactional
//! (`tx.select`): a message is acknowledged only after its batch is committed, and
//! the acknowledgement is confirmed by `tx.commit`; a dead-lettered message is
//! published to the dead-letter queue and acknowledged in one transaction, so it
//! is in exactly one of the two queues. When the broker closes the connection or
//! restarts, the source reconnects with backoff; the messages it had not
//! acknowledged are delivered again, flagged `redelivered`.
//!
//! **Idempotency.** A message with a `message_id` property is stored under the
//! key `ingest:{name}:id:{message_id}`: delivered again, it is answered with the
//! batch already stored, and a different body under the same id is
//! dead-lettered. A message without one cannot be told from an identical message
//! published on purpose, so its first delivery gets a fresh key, and before its
//! batch is stored the store gets a marker (source, SHA-256 of the body, key),
//! deleted once the broker has confirmed the acknowledgement. A delivery flagged
//! `redelivered` without a `message_id` takes the key of a marker of the same
//! body that no message in this process holds, and so is answered with the batch
//! already stored, however Herald stopped (a lost connection or a SIGKILL). Each
//! marker serves one redelivery: two identical messages left unacknowledged are
//! two markers and two batches. Markers are kept a day.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{BasicProperties, FieldTable, FieldValue};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{Disposition, Handler, RETRY, pause};
use crate::backoff::Streak;
use crate::domain::now_ms;
use crate::queue::{self, Unacked};

/// The most markers of one body read to find one for a redelivery: more than can
/// be unacknowledged at once (`prefetch` is a `u16`).
const MARKERS_READ: u32 = 70_000;

/// One `kind = "amqp"` source.
pub(super) struct AmqpQueue {
    handler: Handler,
    connect: OpenConnectionArguments,
    /// Where the broker is, for logs (no credentials).
    broker: String,
    queue: String,
    dead: String,
    prefetch: u16,
    /// The keys of the markers held by messages of this process not yet
    /// acknowledged, which a redelivery of another message must not take.
    held: HashSet<String>,
}

/// Why a session with the broker ended, other than a shutdown.
type Failure = String;

impl AmqpQueue {
    /// Reads `amqp://user:password@host:port/vhost` (user and password default
    /// to `guest`, the port to 5672, the vhost to `/`); nothing connects until
    /// [`AmqpQueue::run`].
    pub(super) fn new(
        handler: Handler,
        url: &str,
        queue: &str,
        dead: Option<&str>,
        prefetch: u16,
    ) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("url: {e}"))?;
        if parsed.scheme() != "amqp" {
            return Err(format!(
                "url: the scheme must be amqp, not `{}` (TLS is not supported)",
                parsed.scheme()
            ));
        }
        let host = parsed
            .host_str()
            .ok_or("url: names no host")?
            .trim_matches(['[', ']']);
        let port = parsed.port().unwrap_or(5672);
        let decode = |s: &str| {
            percent_decode(s).map_err(|()| "url: a bad %-escape in the user, password or vhost")
        };
        let user = match parsed.username() {
            "" => "guest".to_string(),
            user => decode(user)?,
        };
        let password = match parsed.password() {
            None => "guest".to_string(),
            Some(password) => decode(password)?,
        };
        let vhost = match parsed.path().strip_prefix('/').unwrap_or("") {
            "" => "/".to_string(),
            vhost => decode(vhost)?,
        };
        if queue.is_empty() {
            return Err("queue must not be empty".into());
        }
        let dead = dead.map_or_else(|| format!("{queue}.dead"), String::from);
        if dead == queue {
            return Err("dead_letter_queue must differ from queue".into());
        }
        let mut connect = OpenConnectionArguments::new(host, port, &user, &password);
        connect
            .virtual_host(&vhost)
            .heartbeat(10)
            .connection_name(&format!("herald {}", handler.source));
        Ok(AmqpQueue {
            broker: format!("{host}:{port}{vhost}"),
            handler,
            connect,
            queue: queue.to_string(),
            dead,
            prefetch,
            held: HashSet::new(),
        })
    }

    /// Consumes the queue until `shutdown`, reconnecting with backoff whenever the
    /// connection is lost or cannot be made.
    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Streak::new(RETRY);
        tracing::info!(source = %self.handler.source, broker = %self.broker, queue = %self.queue, "ingesting from an AMQP queue");
        while !shutdown.is_cancelled() {
            match self.session(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(source = %self.handler.source, broker = %self.broker, error = %e, "AMQP ingest interrupted; reconnecting");
                    if !pause(&mut backoff, &shutdown).await {
                        break;
                    }
                }
            }
        }
        tracing::info!(source = %self.handler.source, "AMQP ingest stopped");
    }

    /// One connection: consumes until `shutdown` (`Ok`) or the connection fails.
    async fn session(
        &mut self,
        shutdown: &CancellationToken,
        backoff: &mut Streak,
    ) -> Result<(), Failure> {
        let fail = |what: &str| {
            let what = what.to_string();
            move |e: amqprs::error::Error| format!("{what}: {e}")
        };
        let connection = Connection::open(&self.connect)
            .await
            .map_err(fail("connecting"))?;
        let channel = connection
            .open_channel(None)
            .await
            .map_err(fail("opening a channel"))?;
        channel
            .queue_declare(QueueDeclareArguments::durable_client_named(&self.dead))
            .await
            .map_err(fail("declaring the dead-letter queue"))?;
        channel
            .basic_qos(BasicQosArguments::new(0, self.prefetch, false))
            .await
            .map_err(fail("setting the prefetch"))?;
        channel.tx_select().await.map_err(fail("tx.select"))?;
        let tag = format!("herald-{}-{}", self.handler.source, uuid::Uuid::now_v7());
        let (_, mut deliveries) = channel
            .basic_consume_rx(
                BasicConsumeArguments::new(&self.queue, &tag)
                    .manual_ack(true)
                    .finish(),
            )
            .await
            .map_err(fail(&format!("consuming from `{}`", self.queue)))?;
        backoff.reset();
        tracing::info!(source = %self.handler.source, queue = %self.queue, "connected to the AMQP broker");
        let ended = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                delivery = deliveries.recv() => match delivery {
                    Some(message) => {
                        match self.delivery(&channel, message, shutdown).await {
                            Ok(true) => {}
                            Ok(false) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    }
                    None => break Err("the broker ended the consumer".to_string()),
                },
                // The consumer's channel is not always closed with the connection:
                // look now and then.
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if !connection.is_open() || !channel.is_open() {
                        break Err("the connection was closed".to_string());
                    }
                }
            }
        };
        // Unacknowledged messages go back to the queue when the connection closes.
        if connection.is_open() {
            let _ = channel.close().await;
            let _ = connection.close().await;
        }
        ended
    }

    /// Turns one delivery into a batch (retrying while the store is down) and
    /// acknowledges it; `Ok(false)` when `shutdown` came first, the message left
    /// unacknowledged for the broker to deliver again.
    async fn delivery(
        &mut self,
        channel: &Channel,
        message: amqprs::channel::ConsumerMessage,
        shutdown: &CancellationToken,
    ) -> Result<bool, Failure> {
        let (Some(deliver), Some(body)) = (message.deliver, message.content) else {
            return Err("a delivery without its method or body".into());
        };
        let message_id = message
            .basic_properties
            .as_ref()
            .and_then(BasicProperties::message_id)
            .filter(|id| !id.is_empty());
        let source = &self.handler.source;
        let (marker, key) = match message_id {
            Some(id) => (None, format!("{source}:id:{id}")),
            None => {
                let hash = hex::encode(Sha256::digest(&body));
                let redelivered = deliver.redelivered();
                let Some(marker) =
                    retry(source, shutdown, || self.marker(hash.clone(), redelivered)).await
                else {
                    return Ok(false);
                };
                self.held.insert(marker.key.clone());
                let key = marker.key.clone();
                (Some(marker), key)
            }
        };
        let Some(disposition) = retry(source, shutdown, || self.handler.handle(&body, &key)).await
        else {
            return Ok(false);
        };
        let ack = BasicAckArguments::new(deliver.delivery_tag(), false);
        match disposition {
            Disposition::Stored { batch_id, replayed } => {
                let acked = async {
                    channel.basic_ack(ack).await?;
                    channel.tx_commit().await
                }
                .await;
                if let Err(e) = acked {
                    // The marker stays for the redelivery to take.
                    self.held.remove(&key);
                    return Err(format!("acknowledging a stored message: {e}"));
                }
                self.unmark(marker).await;
                self.handler.stored(&batch_id, replayed);
            }
            Disposition::Dead { reason, rejected } => {
                let mut headers = FieldTable::new();
                for (name, value) in [
                    ("x-herald-reason", reason.as_str()),
                    ("x-herald-source", self.handler.source.as_str()),
                ] {
                    headers.insert(
                        name.try_into().expect("a short header name"),
                        FieldValue::S(value.try_into().expect("a reason shorter than 4 GB")),
                    );
                }
                let mut properties = message.basic_properties.unwrap_or_default();
                properties.with_headers(headers).with_persistence(true);
                let moved = async {
                    channel
                        .basic_publish(properties, body, BasicPublishArguments::new("", &self.dead))
                        .await?;
                    channel.basic_ack(ack).await?;
                    channel.tx_commit().await
                }
                .await;
                if let Err(e) = moved {
                    self.held.remove(&key);
                    return Err(format!("dead-lettering a message: {e}"));
                }
                self.unmark(marker).await;
                self.handler.dead_lettered(&reason, rejected);
            }
        }
        Ok(!shutdown.is_cancelled())
    }
}

impl AmqpQueue {
    /// The marker of a message without `message_id`: for a redelivery, one of the
    /// same body that no message of this process holds (its batch may be stored);
    /// otherwise, or when there is none, a new one with a fresh key, stored.
    async fn marker(&self, hash: String, redelivered: bool) -> Result<Unacked, queue::Error> {
        let queue = self.handler.intake.queue();
        let source = self.handler.source.clone();
        if redelivered {
            let keys = queue
                .records()
                .unacked(&source, &hash, now_ms(), MARKERS_READ)
                .await?;
            if let Some(key) = keys.into_iter().find(|key| !self.held.contains(key)) {
                return Ok(Unacked { source, hash, key });
            }
        }
        let key = format!("{source}:{}", uuid::Uuid::now_v7());
        let marker = Unacked { source, hash, key };
        queue.records().mark_unacked(&marker, now_ms()).await?;
        Ok(marker)
    }

    /// Deletes the marker of a message the broker has taken the acknowledgement
    /// of. Best effort: one left behind is deleted within a day.
    async fn unmark(&mut self, marker: Option<Unacked>) {
        let Some(marker) = marker else { return };
        self.held.remove(&marker.key);
        if let Err(e) = self
            .handler
            .intake
            .queue()
            .records()
            .unmark_unacked(&marker)
            .await
        {
            tracing::warn!(source = %self.handler.source, error = %e, "could not delete the marker of an acknowledged message");
        }
    }
}

/// `step` until it succeeds, with backoff while the store fails; `None` when
/// `shutdown` came first (the message stays unacknowledged for the broker to
/// deliver again).
async fn retry<T, F, Fut>(source: &str, shutdown: &CancellationToken, mut step: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, queue::Error>>,
{
    let mut backoff = Streak::new(RETRY);
    loop {
        match step().await {
            Ok(value) => return Some(value),
            Err(e) => {
                tracing::warn!(source, error = %e, "the store failed; the message stays unacknowledged and is tried again");
                if !pause(&mut backoff, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// `%XX` escapes decoded, as URLs write user names, passwords and vhosts (`%2F` is `/`).
fn percent_decode(s: &str) -> Result<String, ()> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(String::from)
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_in_a_url_are_decoded() {
        assert_eq!(percent_decode("%2Fprod").unwrap(), "/prod");
        assert_eq!(percent_decode("p%40ss").unwrap(), "p@ss");
        assert!(percent_decode("%ff").is_err());
    }
}
