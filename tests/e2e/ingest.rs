//! Ingest from the queues of an existing application, against the real Redis and
//! RabbitMQ on loopback: jobs pushed with `redis-cli LPUSH` or published to a
//! queue reach the provider as batches whose source is the ingest's; items that
//! are no job land in the dead-letter list or queue with the reason; a SIGKILL in
//! the middle of ingestion loses no item and doubles none; a broker that closes
//! the connection is reconnected to.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use amqprs::channel::{
    BasicGetArguments, BasicPublishArguments, Channel, QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{BasicProperties, FieldValue};
use herald::config::{Config, IngestConfig, IngestKind};
use herald::domain::Channel as MessageChannel;
use herald::domain::Secret;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{ProviderServer, TestApp, route_all_to, spawn_app, wait_for};
use crate::process::{Herald, write_config};

/// The Redis server, as the other tests find it.
fn redis_url() -> String {
    std::env::var("HERALD_TEST_REDIS").unwrap_or("redis://127.0.0.1:6379/0".into())
}

/// Short leases: what the killed process had claimed is sent again within the test.
const KILL_ENV: [(&str, &str); 2] = [
    ("HERALD_WORKER__LEASE_MS", "2500"),
    ("HERALD_WORKER__SEND_TIMEOUT_MS", "2000"),
];

/// The RabbitMQ server: `HERALD_TEST_AMQP`, by default guest on 127.0.0.1:5672.
fn amqp_url() -> String {
    std::env::var("HERALD_TEST_AMQP").unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

const WITHIN: Duration = Duration::from_secs(30);

/// A name of this test's own: `herald_ingest_{label}_{pid}_{random}`.
fn unique(label: &str) -> String {
    format!(
        "herald_ingest_{label}_{}_{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

/// A Redis list of the test's own, and its processing and dead-letter lists;
/// all are deleted when dropped.
struct RedisKeys {
    key: String,
    client: redis::Client,
}

impl RedisKeys {
    fn new(label: &str) -> Self {
        RedisKeys {
            key: unique(label),
            client: redis::Client::open(redis_url()).expect("a Redis URL"),
        }
    }

    fn dead(&self) -> String {
        format!("{}:dead", self.key)
    }

    fn all(&self) -> [String; 4] {
        [
            self.key.clone(),
            format!("{}:processing", self.key),
            format!("{}:processing:numbered", self.key),
            self.dead(),
        ]
    }

    /// `redis-cli LPUSH key items…`, as a PHP application's `lPush` does it.
    fn lpush(&self, items: &[String]) {
        let url = redis_url();
        let output = Command::new("redis-cli")
            .args(["-u", url.as_str(), "LPUSH", self.key.as_str()])
            .args(items)
            .output()
            .expect("run redis-cli (install redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli LPUSH failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis at {} is not reachable: {e}", redis_url()))
    }

    async fn len(&self, key: &str) -> usize {
        self.conn().await.llen(key).await.unwrap()
    }

    /// The dead-letter list's entries, oldest first.
    async fn dead_letters(&self) -> Vec<Value> {
        let entries: Vec<String> = self.conn().await.lrange(self.dead(), 0, -1).await.unwrap();
        entries
            .iter()
            .rev()
            .map(|e| serde_json::from_str(e).expect("a JSON dead-letter entry"))
            .collect()
    }

    fn source(&self, name: &str) -> IngestConfig {
        IngestConfig {
            name: name.into(),
            kind: IngestKind::RedisList {
                url: Secret::new(redis_url()),
                key: self.key.clone(),
                processing_key: None,
                dead_letter_key: None,
            },
            channel: None,
            provider: None,
            template_id: None,
        }
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        if let Ok(mut conn) = self.client.get_connection() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&self.all()).query(&mut conn);
        }
    }
}

/// A Herald whose every channel goes to `server`, reading mobiles in China, with
/// `sources` ingested.
async fn herald_with(server: &ProviderServer, sources: Vec<IngestConfig>) -> TestApp {
    spawn_app(|config: &mut Config| {
        route_all_to(config, server.provider(None));
        config.recipients.default_region = Some("CN".parse().unwrap());
        config.ingest = sources;
    })
    .await
}

/// Waits until `server` has received a message for each of `to`; returns the
/// requests by recipient.
async fn delivered_to(server: &ProviderServer, to: &[&str]) -> HashMap<String, Vec<Value>> {
    let wanted: HashSet<String> = to.iter().map(|t| t.to_string()).collect();
    wait_for(WITHIN, &format!("messages to {to:?}"), || {
        let mut by_to: HashMap<String, Vec<Value>> = HashMap::new();
        for r in server.received() {
            by_to
                .entry(r.json["to"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(r.json);
        }
        let arrived: HashSet<String> = by_to.keys().cloned().collect();
        std::future::ready(wanted.is_subset(&arrived).then_some(by_to))
    })
    .await
}

/// Waits until the recipients `server` has received messages for are `expected`,
/// no fewer and no other.
async fn received_exactly(server: &ProviderServer, expected: &HashSet<String>) {
    wait_for(WITHIN, "every message to reach the provider", || {
        let to: HashSet<String> = server
            .received()
            .iter()
            .map(|r| r.json["to"].as_str().unwrap_or_default().to_string())
            .collect();
        std::future::ready((&to == expected).then_some(()))
    })
    .await;
}

/// The ledger's `source` of the batch a received message belongs to.
async fn source_of(app: &TestApp, message: &Value) -> String {
    let batch_id = message["batch_id"].as_str().expect("a batch id");
    let (status, batch) = app.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(status, 200, "{batch}");
    batch["source"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pushed_with_redis_cli_reach_the_provider_as_batches_of_the_ingest_source() {
    let keys = RedisKeys::new("formats");
    let server = ProviderServer::start().await;
    let app = herald_with(&server, vec![keys.source("legacy")]).await;

    let sms = json!({"template_id": "SMS_1", "mobiles": ["13800000001", 13_800_000_002_i64], "content": "Your order has shipped"});
    let comma =
        json!({"template_id": 7, "mobiles": "13800000003,13800000004", "content": "Comma list"});
    let email = json!({"from_email": "shop@example.com", "to_email": "li@example.com", "title": "Receipt", "content": "Thanks for your order"});
    let batch = json!({"channel": "sms", "template": {"body": "Hi {{name}}"},
        "recipients": [{"to": "+8613800000005", "vars": {"name": "Wang"}}]});
    // Two identical jobs pushed on purpose are two batches.
    let twice = json!({"mobiles": ["13800000006"], "content": "Same twice"});
    let items: Vec<String> = [&sms, &comma, &email, &batch, &twice, &twice]
        .iter()
        .map(|v| v.to_string())
        .collect();
    // Without `provider`, an e-mail job's `from_email` must be a provider's sender:
    // this one is dead-lettered (below); the rest go through.
    keys.lpush(&items);

    let by_to = delivered_to(
        &server,
        &[
            "+8613800000001",
            "+8613800000002",
            "+8613800000003",
            "+8613800000004",
            "+8613800000005",
            "+8613800000006",
        ],
    )
    .await;
    assert_eq!(by_to["+8613800000001"][0]["body"], "Your order has shipped");
    assert_eq!(by_to["+8613800000003"][0]["body"], "Comma list");
    assert_eq!(by_to["+8613800000005"][0]["body"], "Hi Wang");
    let twice: Vec<&Value> = by_to["+8613800000006"].iter().collect();
    wait_for(WITHIN, "both identical jobs to be delivered", || {
        let n = server
            .received()
            .iter()
            .filter(|r| r.json["to"] == "+8613800000006")
            .map(|r| r.json["batch_id"].to_string())
            .collect::<HashSet<_>>()
            .len();
        std::future::ready((n == 2).then_some(()))
    })
    .await;
    assert_eq!(twice[0]["body"], "Same twice");
    assert_eq!(
        source_of(&app, &by_to["+8613800000001"][0]).await,
        "ingest:legacy"
    );
    assert_eq!(
        source_of(&app, &by_to["+8613800000005"][0]).await,
        "ingest:legacy"
    );

    let dead = wait_for(WITHIN, "the e-mail job to be dead-lettered", || async {
        let dead = keys.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["item"], email.to_string());
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("from_email: no e-mail provider sends as `shop@example.com`"),
        "{}",
        dead[0]
    );
    let counts = wait_for(WITHIN, "the counters to add up", || {
        let counts = app
            .running
            .as_ref()
            .unwrap()
            .ingest_metrics()
            .counts("ingest:legacy")
            .unwrap();
        std::future::ready((counts.ingested == 5).then_some(counts))
    })
    .await;
    assert_eq!((counts.rejected, counts.dead_lettered), (1, 1));
    for key in &keys.all()[..3] {
        assert_eq!(
            keys.len(key).await,
            0,
            "{key} is empty once all is ingested"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_job_is_sent_with_its_title_as_the_subject_through_the_sources_provider() {
    let keys = RedisKeys::new("email");
    let server = ProviderServer::start().await;
    let mut source = keys.source("mail");
    source.channel = Some(MessageChannel::Email);
    source.provider = Some("hook".into());
    let _app = herald_with(&server, vec![source]).await;
    let job = json!({"from_email": "shop@example.com", "to_email": ["li@example.com", "wang@example.com"],
        "title": "Your receipt", "content": "Thanks, {{ not a template }}"});
    keys.lpush(&[job.to_string()]);
    let by_to = delivered_to(&server, &["li@example.com", "wang@example.com"]).await;
    let li = &by_to["li@example.com"][0];
    assert_eq!(li["channel"], "email");
    assert_eq!(li["subject"], "Your receipt");
    assert_eq!(li["body"], "Thanks, {{ not a template }}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_items_land_in_the_dead_letter_list_with_the_reason_and_ingestion_goes_on() {
    let keys = RedisKeys::new("dead");
    let server = ProviderServer::start().await;
    let app = herald_with(&server, vec![keys.source("dl")]).await;
    let items = [
        "this is not json".to_string(),
        json!({"mobile": "13800000001", "content": "x"}).to_string(),
        json!({"mobiles": ["12345"], "content": "nobody can get this"}).to_string(),
        json!({"mobiles": ["13800000009"], "content": "after the bad ones"}).to_string(),
    ];
    keys.lpush(&items);

    let by_to = delivered_to(&server, &["+8613800000009"]).await;
    assert_eq!(by_to["+8613800000009"][0]["body"], "after the bad ones");
    let dead = wait_for(WITHIN, "three dead letters", || async {
        let dead = keys.dead_letters().await;
        (dead.len() == 3).then_some(dead)
    })
    .await;
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].starts_with("not JSON"), "{reasons:?}");
    assert!(reasons[1].starts_with("neither an SMS job"), "{reasons:?}");
    assert!(
        reasons[2]
            .starts_with("none of the 1 recipients can be sent to: 0 `12345`: invalid_address"),
        "{reasons:?}"
    );
    assert_eq!(dead[0]["item"], items[0]);
    assert_eq!(dead[2]["source"], "ingest:dl");
    let metrics = app.running.as_ref().unwrap().ingest_metrics().clone();
    let counts = wait_for(WITHIN, "the item to be counted", || {
        let counts = metrics.counts("ingest:dl").unwrap();
        std::future::ready((counts.ingested == 1).then_some(counts))
    })
    .await;
    assert_eq!((counts.rejected, counts.dead_lettered), (1, 3));
    let mut text = String::new();
    metrics.write_prometheus(&mut text);
    assert!(
        text.contains(r#"herald_ingest_items_total{source="ingest:dl",result="dead_lettered"} 3"#),
        "{text}"
    );
    let scraped = app.metrics().await;
    for (result, n) in [("ingested", "1"), ("rejected", "1"), ("dead_lettered", "3")] {
        let series =
            format!(r#"herald_ingest_items_total{{source="ingest:dl",result="{result}"}}"#);
        assert_eq!(scraped.sample(&series), n);
    }
}

/// The config file of a herald process (see [`write_config`]) with one
/// `[[ingest]]` block of `fields`.
fn config_with_ingest(dir: &Path, server: &ProviderServer, fields: &str) -> PathBuf {
    let config = write_config(dir, server);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[[ingest]]\n{fields}\n")).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_redis_ingest_loses_no_item_and_makes_no_duplicate_batch() {
    const ITEMS: usize = 400;
    let keys = RedisKeys::new("kill");
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_ingest(
        dir.path(),
        &server,
        &format!(
            "name = \"kill\"\nkind = \"redis-list\"\nurl = {:?}\nkey = {:?}\nchannel = \"sms\"",
            redis_url(),
            keys.key
        ),
    );
    // Each item a job of its own; the last ten are the same job, pushed ten times.
    let mut items: Vec<String> = (0..ITEMS - 10)
        .map(|i| {
            json!({"mobiles": [format!("+86138{i:08}")], "content": format!("job {i}")}).to_string()
        })
        .collect();
    let same = json!({"mobiles": ["+8613900000000"], "content": "the same job"}).to_string();
    items.extend(std::iter::repeat_n(same, 10));
    keys.lpush(&items);

    let herald = Herald::serve(&config, &KILL_ENV).await;
    wait_for(WITHIN, "ingestion to be under way", || async {
        (keys.len(&keys.key).await < ITEMS - 40).then_some(())
    })
    .await;
    herald.kill();
    let left = keys.len(&keys.key).await;
    assert!(
        left > 0,
        "every item was taken before the kill; the test needs the kill to interrupt ingestion"
    );

    let herald = Herald::serve(&config, &KILL_ENV).await;
    wait_for(WITHIN, "every item to be ingested", || async {
        let mut pending = 0;
        for key in &keys.all()[..3] {
            pending += keys.len(key).await;
        }
        (pending == 0).then_some(())
    })
    .await;
    let mut expected: HashSet<String> = (0..ITEMS - 10).map(|i| format!("+86138{i:08}")).collect();
    expected.insert("+8613900000000".into());
    received_exactly(&server, &expected).await;

    let batches = herald.api.batches_of("ingest:kill").await;
    assert_eq!(
        batches.len(),
        ITEMS,
        "one batch per item, none lost, none doubled"
    );
    let mut same = 0;
    for batch in &batches {
        let id = batch["id"].as_str().expect("a batch id");
        let messages = herald.api.messages(id).await;
        same += messages
            .iter()
            .filter(|m| m["to"] == "+8613900000000")
            .count();
    }
    assert_eq!(same, 10, "the job pushed ten times is ten batches");
    herald.kill();
    assert!(keys.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_a_crash_left_in_processing_are_taken_again_without_a_second_batch() {
    let keys = RedisKeys::new("crash");
    let server = ProviderServer::start().await;
    // The first item is numbered by the test, as a crash between numbering and
    // storing leaves it: its batch is stored under that number, which the test
    // then knows.
    let number = "0190c0de-0000-7000-8000-000000000031";
    let first = json!({"mobiles": ["13800000031"], "content": "first"}).to_string();
    let mut conn = keys.conn().await;
    let [_, processing, numbered, _] = keys.all();
    let _: () = conn
        .lpush(&numbered, format!("{number}:{first}"))
        .await
        .unwrap();
    let mut app = herald_with(&server, vec![keys.source("crash")]).await;
    delivered_to(&server, &["+8613800000031"]).await;
    wait_for(WITHIN, "the numbered item to be removed", || async {
        (keys.len(&numbered).await == 0).then_some(())
    })
    .await;
    app.stop().await;

    // The state a crash leaves between committing an item's batch and removing
    // the item: the item still numbered. And between BLMOVE and numbering: an
    // item in the processing list.
    let store = app.dir.path().join("store");
    let second = json!({"mobiles": ["13800000032"], "content": "second"}).to_string();
    let _: () = conn
        .lpush(&numbered, format!("{number}:{first}"))
        .await
        .unwrap();
    let _: () = conn.lpush(&processing, &second).await.unwrap();

    let mut config = crate::helpers::test_config(&store);
    route_all_to(&mut config, server.provider(None));
    config.recipients.default_region = Some("CN".parse().unwrap());
    config.ingest = vec![keys.source("crash")];
    let running = herald::app::start(config)
        .await
        .expect("herald starts again");
    let mut again = TestApp {
        url: running.url().expect("the API runs"),
        client: crate::helpers::client(),
        running: Some(running),
        dir: tempfile::tempdir().expect("temp dir"),
    };
    delivered_to(&server, &["+8613800000032"]).await;
    let metrics = again.running.as_ref().unwrap().ingest_metrics().clone();
    let counts = wait_for(WITHIN, "both items to be taken", || {
        let counts = metrics.counts("ingest:crash").unwrap();
        std::future::ready((counts.ingested == 2).then_some(counts))
    })
    .await;
    assert_eq!(counts.dead_lettered, 0);
    let batches = again.batches_of("ingest:crash").await;
    again.stop().await;

    for key in [processing, numbered] {
        assert_eq!(keys.len(&key).await, 0, "{key} is empty");
    }
    assert_eq!(
        batches.len(),
        2,
        "the item taken again is answered with its batch"
    );
    let first_sends = server
        .received()
        .iter()
        .filter(|r| r.json["to"] == "+8613800000031")
        .count();
    assert_eq!(first_sends, 1);
}

/// A RabbitMQ queue of the test's own and its dead-letter queue, deleted when dropped.
struct AmqpQueue {
    name: String,
    connection: Connection,
    channel: Channel,
}

impl AmqpQueue {
    /// Declares a durable queue, as the producing application would.
    async fn new(label: &str) -> Self {
        let url = reqwest::Url::parse(&amqp_url()).unwrap();
        let args = OpenConnectionArguments::new(
            url.host_str().unwrap(),
            url.port().unwrap_or(5672),
            url.username(),
            url.password().unwrap_or("guest"),
        );
        let connection = Connection::open(&args)
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ at {} is not reachable: {e}", amqp_url()));
        let channel = connection.open_channel(None).await.unwrap();
        let name = unique(label);
        channel
            .queue_declare(QueueDeclareArguments::durable_client_named(&name))
            .await
            .unwrap();
        AmqpQueue {
            name,
            connection,
            channel,
        }
    }

    fn dead(&self) -> String {
        format!("{}.dead", self.name)
    }

    /// Publishes `body`, persistent, with `message_id` when given.
    async fn publish(&self, body: &str, message_id: Option<&str>) {
        let mut properties = BasicProperties::default();
        properties.with_persistence(true);
        if let Some(id) = message_id {
            properties.with_message_id(id);
        }
        self.channel
            .basic_publish(
                properties,
                body.as_bytes().to_vec(),
                BasicPublishArguments::new("", &self.name),
            )
            .await
            .unwrap();
    }

    fn source(&self, name: &str) -> IngestConfig {
        IngestConfig {
            name: name.into(),
            kind: IngestKind::Amqp {
                url: Secret::new(amqp_url()),
                queue: self.name.clone(),
                dead_letter_queue: None,
                prefetch: 4,
            },
            channel: None,
            provider: None,
            template_id: None,
        }
    }

    /// How many messages wait in the queue (not those delivered and unacknowledged).
    async fn waiting(&self) -> u32 {
        let declared = self
            .channel
            .queue_declare(
                QueueDeclareArguments::new(&self.name)
                    .passive(true)
                    .finish(),
            )
            .await
            .unwrap();
        declared.map_or(0, |(_, count, _)| count)
    }

    /// The next message of the dead-letter queue: its body and `x-herald-reason`.
    async fn next_dead(&self) -> Option<(String, String)> {
        let (_, properties, body) = self
            .channel
            .basic_get(BasicGetArguments::new(&self.dead()).no_ack(true).finish())
            .await
            .unwrap()?;
        let reason = properties
            .headers()
            .and_then(|h| {
                h.get(&"x-herald-reason".try_into().unwrap())
                    .and_then(|v| match v {
                        FieldValue::S(s) => Some(s.to_string()),
                        _ => None,
                    })
            })
            .unwrap_or_default();
        Some((String::from_utf8(body).unwrap(), reason))
    }

    async fn delete(self) {
        for queue in [self.name.clone(), self.dead()] {
            let _ = self
                .channel
                .queue_delete(QueueDeleteArguments::new(&queue))
                .await;
        }
        let _ = self.channel.close().await;
        let _ = self.connection.close().await;
    }
}

/// Closes the broker's connections whose client name contains `name`, from the
/// broker's side, with `rabbitmqctl`.
fn close_connections_named(name: &str) -> usize {
    let listed = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("run rabbitmqctl (it comes with rabbitmq-server)");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let mut closed = 0;
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        if !line.contains(name) {
            continue;
        }
        let pid = line.split_whitespace().next().unwrap();
        let status = Command::new("rabbitmqctl")
            .args([
                "-q",
                "close_connection",
                pid,
                "closed by the reconnect test",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        closed += 1;
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_to_rabbitmq_reach_the_provider_and_bad_ones_are_dead_lettered() {
    let queue = AmqpQueue::new("amqp").await;
    let server = ProviderServer::start().await;
    let app = herald_with(&server, vec![queue.source("rabbit")]).await;
    let job = json!({"template_id": 1, "mobiles": ["13800000011"], "content": "From RabbitMQ"});
    queue.publish(&job.to_string(), Some("job-1")).await;
    queue.publish("{broken", None).await;
    // The same message id again (a producer's retry) is the same batch.
    queue.publish(&job.to_string(), Some("job-1")).await;
    queue
        .publish(
            &json!({"mobiles": "13800000012", "content": "no id"}).to_string(),
            None,
        )
        .await;

    let by_to = delivered_to(&server, &["+8613800000011", "+8613800000012"]).await;
    assert_eq!(by_to["+8613800000011"][0]["body"], "From RabbitMQ");
    assert_eq!(
        source_of(&app, &by_to["+8613800000011"][0]).await,
        "ingest:rabbit"
    );
    let dead = wait_for(
        WITHIN,
        "the broken message in the dead-letter queue",
        || async { queue.next_dead().await },
    )
    .await;
    assert_eq!(dead.0, "{broken");
    assert!(dead.1.starts_with("not JSON"), "{dead:?}");
    let metrics = app.running.as_ref().unwrap().ingest_metrics().clone();
    let counts = wait_for(WITHIN, "every message to be counted", || {
        let counts = metrics.counts("ingest:rabbit").unwrap();
        std::future::ready((counts.ingested == 3).then_some(counts))
    })
    .await;
    assert_eq!(counts.dead_lettered, 1);
    let batches: HashSet<String> = server
        .received()
        .iter()
        .filter(|r| r.json["to"] == "+8613800000011")
        .map(|r| r.json["batch_id"].to_string())
        .collect();
    assert_eq!(batches.len(), 1, "one message id, one batch");
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_ingest_reconnects_after_the_broker_closes_its_connection() {
    let queue = AmqpQueue::new("reconnect").await;
    let server = ProviderServer::start().await;
    let name = unique("src");
    let _app = herald_with(&server, vec![queue.source(&name)]).await;
    queue
        .publish(
            &json!({"mobiles": ["13800000021"], "content": "before"}).to_string(),
            None,
        )
        .await;
    delivered_to(&server, &["+8613800000021"]).await;

    let closed = wait_for(WITHIN, "Herald's connection to be listed", || {
        std::future::ready(Some(close_connections_named(&name)).filter(|&n| n > 0))
    })
    .await;
    assert_eq!(closed, 1);
    queue
        .publish(
            &json!({"mobiles": ["13800000022"], "content": "after"}).to_string(),
            None,
        )
        .await;
    let by_to = delivered_to(&server, &["+8613800000022"]).await;
    assert_eq!(by_to["+8613800000022"][0]["body"], "after");
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_amqp_ingest_loses_no_message_and_doubles_none_with_message_ids() {
    const MESSAGES: usize = 300;
    let queue = AmqpQueue::new("kill").await;
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_ingest(
        dir.path(),
        &server,
        &format!(
            "name = \"amqp-kill\"\nkind = \"amqp\"\nurl = {:?}\nqueue = {:?}\nprefetch = 32",
            amqp_url(),
            queue.name
        ),
    );
    for i in 0..MESSAGES {
        let job = json!({"mobiles": [format!("+86137{i:08}")], "content": format!("message {i}")});
        queue
            .publish(&job.to_string(), Some(&format!("m-{i}")))
            .await;
    }

    let herald = Herald::serve(&config, &KILL_ENV).await;
    wait_for(WITHIN, "ingestion to be under way", || {
        std::future::ready((server.count() >= 30).then_some(()))
    })
    .await;
    herald.kill();
    let waiting = wait_for(
        WITHIN,
        "the broker to take back the unacknowledged messages",
        || async {
            let waiting = queue.waiting().await;
            (waiting > 0).then_some(waiting)
        },
    )
    .await;
    assert!(
        waiting < MESSAGES as u32,
        "nothing was ingested before the kill"
    );

    let herald = Herald::serve(&config, &KILL_ENV).await;
    let expected: HashSet<String> = (0..MESSAGES).map(|i| format!("+86137{i:08}")).collect();
    received_exactly(&server, &expected).await;
    wait_for(WITHIN, "the queue to be drained", || async {
        (queue.waiting().await == 0).then_some(())
    })
    .await;
    assert_eq!(
        batches_of(&herald, "ingest:amqp-kill").await,
        MESSAGES,
        "one batch per message, none lost, none doubled"
    );
    herald.kill();
    queue.delete().await;
}

/// How many batches of `source` the API of `herald` lists.
async fn batches_of(herald: &Herald, source: &str) -> usize {
    herald.api.batches_of(source).await.len()
}

/// A TCP proxy on 127.0.0.1 to the AMQP broker that can be told to stop passing
/// what the client sends (the broker's frames still reach the client): the
/// acknowledgement of whatever Herald is storing then never reaches the broker.
struct FreezingProxy {
    url: String,
    frozen: Arc<AtomicBool>,
}

impl FreezingProxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let broker = reqwest::Url::parse(&amqp_url()).unwrap();
        let upstream = format!(
            "{}:{}",
            broker.host_str().unwrap(),
            broker.port().unwrap_or(5672)
        );
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let flag = flag.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                        if flag.load(Ordering::SeqCst) {
                            continue;
                        }
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
            }
        });
        let mut url = broker;
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(port)).unwrap();
        FreezingProxy {
            url: url.to_string(),
            frozen,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_before_the_broker_takes_an_ack_makes_no_second_batch_of_a_message_without_id() {
    const MESSAGES: usize = 100;
    let queue = AmqpQueue::new("kill-noid").await;
    let proxy = FreezingProxy::start().await;
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);
    let base = std::fs::read_to_string(&config).unwrap();
    let with_url = |url: &str| {
        format!(
            "{base}\n[[ingest]]\nname = \"noid\"\nkind = \"amqp\"\nurl = {url:?}\nqueue = {:?}\nprefetch = 8\n",
            queue.name
        )
    };
    std::fs::write(&config, with_url(&proxy.url)).unwrap();
    let job =
        |i: usize| json!({"mobiles": [format!("+86138{i:08}")], "content": format!("message {i}")});
    for i in 0..MESSAGES {
        queue.publish(&job(i).to_string(), None).await;
    }
    // The same message published twice on purpose is two batches.
    queue.publish(&job(0).to_string(), None).await;

    let herald = Herald::serve(&config, &KILL_ENV).await;
    wait_for(WITHIN, "ingestion to be under way", || async {
        (batches_of(&herald, "ingest:noid").await >= 10).then_some(())
    })
    .await;
    proxy.frozen.store(true, Ordering::SeqCst);
    // Herald stores at most one more batch, then waits for the broker's answer to
    // its acknowledgement, which never comes.
    let last = std::cell::Cell::new(usize::MAX);
    wait_for(
        WITHIN,
        "ingestion to stop at the frozen acknowledgement",
        || async {
            let now = batches_of(&herald, "ingest:noid").await;
            let settled = now == last.replace(now);
            tokio::time::sleep(Duration::from_millis(300)).await;
            settled.then_some(())
        },
    )
    .await;
    herald.kill();
    wait_for(
        WITHIN,
        "the broker to take back the unacknowledged messages",
        || async { (queue.waiting().await > 0).then_some(()) },
    )
    .await;

    std::fs::write(&config, with_url(&amqp_url())).unwrap();
    let herald = Herald::serve(&config, &KILL_ENV).await;
    wait_for(WITHIN, "the queue to be drained", || async {
        (queue.waiting().await == 0 && batches_of(&herald, "ingest:noid").await > MESSAGES)
            .then_some(())
    })
    .await;
    let expected: HashSet<String> = (0..MESSAGES).map(|i| format!("+86138{i:08}")).collect();
    received_exactly(&server, &expected).await;
    assert_eq!(
        batches_of(&herald, "ingest:noid").await,
        MESSAGES + 1,
        "one batch per message published, the one stored before the kill not doubled"
    );
    herald.kill();
    queue.delete().await;
}
