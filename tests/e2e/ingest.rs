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
async fn an_ingested_job_gets_the_configured_deadline() {
    let keys = RedisKeys::new("deadline");
    let server = ProviderServer::start().await;
    let app = spawn_app(|config: &mut Config| {
        route_all_to(config, server.provider(None));
        config.recipients.default_region = Some("CN".parse().unwrap());
        config.ingest = vec![keys.source("timed")];
        config.valid_for.sms = Some(900);
    })
    .await;
    let job = json!({"template_id": "1", "mobiles": ["13800000007"], "content": "hello"});
    keys.lpush(&[job.to_string()]);
    delivered_to(&server, &["+8613800000007"]).await;
    let batches = app.batches_of("ingest:timed").await;
    let at: jiff::Timestamp = batches[0]["expires_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no deadline: {}", batches[0]))
        .parse()
        .unwrap();
    let left = at.duration_since(jiff::Timestamp::now()).as_secs();
    assert!((880..=900).contains(&left), "{}", batches[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingested_sms_job_with_a_window_waits_for_it_to_open() {
    let keys = RedisKeys::new("window");
    let server = ProviderServer::start().await;
    let app = herald_with(&server, vec![keys.source("quiet")]).await;
    // A window that opens two hours from now in Shanghai, where the number is.
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let opens = jiff::Timestamp::now()
        .to_zoned(tz)
        .checked_add(jiff::Span::new().hours(2))
        .unwrap();
    let window = format!("{:02}:00-{:02}:00", opens.hour(), (opens.hour() + 1) % 24);
    let waiting = json!({"mobiles": ["13800000041"], "content": "later", "window": window});
    let now = json!({"mobiles": ["13800000042"], "content": "now", "ignore_window": true});
    keys.lpush(&[waiting.to_string(), now.to_string()]);
    delivered_to(&server, &["+8613800000042"]).await;
    let batches = wait_for(WITHIN, "both jobs stored", || async {
        let batches = app.batches_of("ingest:quiet").await;
        (batches.len() == 2).then_some(batches)
    })
    .await;
    let pending: Vec<&Value> = batches.iter().map(|b| &b["counts"]["pending"]).collect();
    assert!(pending.contains(&&json!(1)), "{batches:?}");
    received_exactly(&server, &HashSet::from(["+8613800000042".to_string()])).await;
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

mod amqp;
