//! Ingest sources (`[[ingest]]`): queues of an existing application that Herald
//! takes jobs from.

use serde::Deserialize;

use crate::domain::{Channel, Secret};

/// One `[[ingest]]` block: a queue that an existing application pushes jobs onto,
/// which Herald consumes in place of the application's old worker.
#[derive(Debug, Clone, Deserialize)]
pub struct IngestConfig {
    /// Names the source: its batches show `ingest:{name}` as their source.
    pub name: String,
    /// Where its jobs come from, with that kind's keys.
    #[serde(flatten)]
    pub kind: IngestKind,
    /// The channel the queue carries: its classic jobs are read as this channel's,
    /// and batches of another channel are dead-lettered. Absent: told apart by
    /// their fields (`mobiles` SMS, `to_email` e-mail).
    #[serde(default)]
    pub channel: Option<Channel>,
    /// The provider for jobs that name none; default the channel's default.
    #[serde(default)]
    pub provider: Option<String>,
    /// A stored template for jobs that name none, rendered with the job's
    /// `content` (and for e-mail `title`) as variables.
    #[serde(default)]
    pub template_id: Option<String>,
}

/// Where an ingest source's jobs come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum IngestKind {
    /// A Redis list producers `LPUSH` onto (`kind = "redis-list"`).
    RedisList {
        /// `redis://[:password@]host:port/db`.
        url: Secret,
        /// The list, e.g. `sms_queue`.
        key: String,
        /// Where items are held while they become a batch; default `{key}:processing`.
        #[serde(default)]
        processing_key: Option<String>,
        /// Where items that cannot become a batch go, with the reason; default `{key}:dead`.
        #[serde(default)]
        dead_letter_key: Option<String>,
    },
    /// An AMQP 0-9-1 queue, as RabbitMQ serves it (`kind = "amqp"`).
    Amqp {
        /// `amqp://user:password@host:port/vhost`.
        url: Secret,
        queue: String,
        /// Where items that cannot become a batch are published, with the reason
        /// in the header `x-herald-reason`; default `{queue}.dead`, declared durable.
        #[serde(default)]
        dead_letter_queue: Option<String>,
        /// Messages the broker sends ahead, unacknowledged (basic.qos); 1 to 1000.
        #[serde(default = "default_prefetch")]
        prefetch: u16,
    },
}

fn default_prefetch() -> u16 {
    16
}
