//! The engine's own tests (the conformance suite covers the rest), and the
//! store each conformance test of this engine gets.

use std::collections::HashMap;
use std::time::Duration;

use super::accept::Layout;
use super::keyspace::{Scan, glob_escape, unlink};
use super::server::{durability_warnings, failure};
use super::slot::Slot;
use super::url::Target;
use super::*;
use crate::domain::{BatchId, now_ms};
use crate::queue::tests::TestBatch;
use crate::queue::{Accepted, Arrival, BatchTemplate, Begun, Queue};

/// A store of this engine for one conformance test, under a key prefix of its own on
/// the server named by `HERALD_TEST_REDIS` (default `redis://127.0.0.1:6379/0`); the
/// guard deletes the prefix's keys. Panics when the server cannot be reached.
pub(crate) async fn test_store() -> crate::queue::tests::TestStore {
    let server = std::env::var("HERALD_TEST_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let prefix = format!("herald-test-{}", uuid::Uuid::now_v7().simple());
    let joiner = if server.contains('?') { '&' } else { '?' };
    let url = format!("{server}{joiner}prefix={prefix}");
    let queue = match Queue::open(&url.parse().expect("a store URL")).await {
        Ok(queue) => queue,
        Err(e) => panic!(
            "the Redis test server at {server} cannot be used: {e}\n\
             start one (scripts/test does: redis-server --port 6379) or point HERALD_TEST_REDIS at one"
        ),
    };
    let guard = TestPrefix { server, prefix };
    (queue, url, Box::new(guard))
}

/// Deletes a test's keys when dropped.
struct TestPrefix {
    server: String,
    prefix: String,
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let server = self.server.clone();
        let pattern = format!("{}:*", glob_escape(&self.prefix));
        // Dropped inside a test's runtime, where blocking is not allowed: the
        // clean-up runs on a thread and a runtime of its own.
        let cleanup = std::thread::spawn(move || -> redis::RedisResult<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = redis::Client::open(server.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let mut scan = Scan::new(pattern);
                while let Some(keys) = scan.next_page(&mut conn).await? {
                    unlink(&mut conn, &keys).await?;
                }
                Ok(())
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot delete the test keys {}:*: {e}", self.prefix),
            Err(_) => eprintln!("deleting the test keys {}:* panicked", self.prefix),
        }
    }
}

#[test]
fn members_sort_in_arrival_order() {
    let slots = [
        Slot { seq: 1, index: 0 },
        Slot { seq: 1, index: 9 },
        Slot { seq: 1, index: 10 },
        Slot { seq: 9, index: 0 },
        Slot { seq: 10, index: 0 },
        Slot {
            seq: Slot::MAX_SEQ as u32,
            index: u32::MAX,
        },
    ];
    let members: Vec<String> = slots.iter().map(|s| s.member()).collect();
    let mut sorted = members.clone();
    sorted.sort();
    assert_eq!(members, sorted);
    for slot in slots {
        assert_eq!(Slot::parse_member(&slot.member()), Some(slot));
        assert_eq!(Slot::from_row(slot.row()), Some(slot));
        assert!(slot.row() >= 0);
    }
}

#[test]
fn priority_scores_put_the_highest_first_and_are_exact() {
    // `prios:{provider}` is scored by -priority: ascending scores are priority DESC.
    let priorities = [i32::MAX, 100, 7, 0, -5, i32::MIN];
    let scores: Vec<f64> = priorities.iter().map(|&p| -f64::from(p)).collect();
    assert!(scores.windows(2).all(|w| w[0] < w[1]));
    for (p, s) in priorities.iter().zip(&scores) {
        assert_eq!(-(*s as i64), i64::from(*p), "no precision lost");
    }
    // Available-at scores are ms timestamps, exact in a double for ~285,000 years.
    let t: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    assert_eq!(t as f64 as i64, t);
}

fn parsed(url: &str) -> ::url::Url {
    ::url::Url::parse(url).expect("a valid URL")
}

fn target(url: &str) -> Result<Target> {
    Target::parse(&parsed(url))
}

#[test]
fn urls_keep_the_prefix_out_of_the_connection() {
    let parsed = target("redis://127.0.0.1:6379/0").unwrap();
    assert_eq!(
        parsed,
        Target {
            connect: "redis://127.0.0.1:6379/0".into(),
            prefix: "herald:".into(),
            place: "127.0.0.1:6379/0".into(),
        }
    );
    let parsed =
        target("rediss://user:secret@cache.example:6380/2?protocol=resp3&prefix=prod.sms").unwrap();
    assert_eq!(
        parsed,
        Target {
            connect: "rediss://user:secret@cache.example:6380/2?protocol=resp3".into(),
            prefix: "prod.sms:".into(),
            place: "cache.example:6380/2".into(),
        }
    );
    assert_eq!(target("redis://h/0?prefix=a:b").unwrap().prefix, "a:b:");
}

#[test]
fn bad_prefixes_are_refused_with_the_rule() {
    for url in [
        "redis://h/0?prefix=",
        "redis://h/0?prefix",
        "redis://h/0?prefix=a*b",
        "redis://h/0?prefix=a&prefix=b",
        "redis://h/0?prefix=with%20space",
    ] {
        assert!(
            matches!(target(url), Err(Error::Unsupported(_))),
            "{url} must be refused"
        );
    }
}

#[test]
fn durability_warnings_say_what_to_set() {
    let settings = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let durable = settings(&[
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("maxmemory-policy", "noeviction"),
    ]);
    assert!(durability_warnings(&durable).is_empty());
    let off = durability_warnings(&settings(&[("appendonly", "no")]));
    assert!(off[0].contains("appendonly yes") && off[0].contains("appendfsync always"));
    let everysec = durability_warnings(&settings(&[
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
    ]));
    assert!(everysec[0].contains("appendfsync always"));
    let evicting = durability_warnings(&settings(&[
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("maxmemory-policy", "allkeys-lru"),
    ]));
    assert!(evicting[0].contains("noeviction"));
}

#[test]
fn connection_failures_say_what_to_check_and_hide_the_password() {
    let e = failure(
        "127.0.0.1:1/0",
        RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
    );
    let Error::Unavailable(message) = e else {
        panic!("expected Unavailable");
    };
    assert!(message.contains("127.0.0.1:1/0") && message.contains("running and reachable"));
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    match Queue::open(&"redis://127.0.0.1:1/0".parse().expect("a store URL")).await {
        Err(Error::Unavailable(message)) => assert!(message.contains("127.0.0.1:1/0")),
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("nothing listens on port 1"),
    }
}

fn big_batch(n: u32) -> NewBatch {
    TestBatch::sms(n)
        .bodies(|index| format!("Your code is {index:06}. It expires in 10 minutes."))
        .build()
}

#[tokio::test]
async fn accepting_ten_thousand_messages_is_quick_and_whole() {
    let (queue, _url, _guard) = test_store().await;
    // Warm the connection and load the scripts, as a running server would have.
    queue.accept(big_batch(1)).await.unwrap();
    let started = std::time::Instant::now();
    let Accepted::New(id) = queue.accept(big_batch(10_000)).await.unwrap() else {
        panic!("a new batch");
    };
    let took = started.elapsed();
    eprintln!("accepted 10,000 messages in {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let counts = queue.batch(id).await.unwrap().unwrap().counts;
    assert_eq!((counts.total, counts.pending), (10_000, 10_000));
}

#[tokio::test]
async fn older_layouts_are_upgraded_on_open_and_an_unknown_one_refused() {
    let (queue, url, _guard) = test_store().await;
    drop(queue);
    let store = Redis::open(&parsed(&url)).await.unwrap();
    let version = |v: &'static str| {
        let key = store.key("version");
        let mut conn = store.conn();
        async move {
            redis::cmd("SET")
                .arg(key)
                .arg(v)
                .query_async::<()>(&mut conn)
                .await
                .unwrap();
        }
    };
    for old in ["1", "2", "3", "4", "5"] {
        version(old).await;
        let upgraded = Redis::open(&parsed(&url)).await.unwrap();
        let now: String = redis::cmd("GET")
            .arg(upgraded.key("version"))
            .query_async(&mut upgraded.conn())
            .await
            .unwrap();
        assert_eq!(now, "6", "upgraded from {old}");
    }
    version("7").await;
    let Err(refused) = Redis::open(&parsed(&url)).await else {
        panic!("a store of an unknown layout opened");
    };
    assert!(
        refused.to_string().contains("layout version 7"),
        "{refused}"
    );
}

#[tokio::test]
async fn batches_stored_before_the_batch_index_existed_are_indexed_on_open() {
    let (queue, url, _guard) = test_store().await;
    let first = big_batch(2);
    let second = big_batch(1);
    let ids = [second.id, first.id];
    queue.accept(first).await.unwrap();
    queue.accept(second).await.unwrap();
    drop(queue);
    let store = Redis::open(&parsed(&url)).await.unwrap();
    // As a store written by a build without the index.
    redis::cmd("DEL")
        .arg(store.key("batches"))
        .arg(store.key("batches-indexed"))
        .query_async::<()>(&mut store.conn())
        .await
        .unwrap();
    assert!(store.batches(None, 10).await.unwrap().is_empty());
    let reopened = Redis::open(&parsed(&url)).await.unwrap();
    let listed: Vec<BatchId> = reopened
        .batches(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(listed, ids);
}

/// The members of the search index `index` (`to:…` or `ref:…`).
async fn index_members(store: &Redis, index: &str) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(store.key(index))
        .arg(0)
        .arg(-1)
        .query_async(&mut store.conn())
        .await
        .unwrap()
}

#[tokio::test]
async fn messages_stored_before_the_search_indexes_existed_are_indexed_on_open() {
    let (queue, url, _guard) = test_store().await;
    queue.accept(big_batch(2)).await.unwrap();
    drop(queue);
    let store = Redis::open(&parsed(&url)).await.unwrap();
    let to = "to:+8613800000001";
    assert_eq!(index_members(&store, to).await.len(), 1);
    // As a store written by a build without the indexes.
    redis::cmd("DEL")
        .arg(store.key(to))
        .arg(store.key("ref:r1"))
        .arg(store.key("messages-indexed"))
        .query_async::<()>(&mut store.conn())
        .await
        .unwrap();
    let reopened = Redis::open(&parsed(&url)).await.unwrap();
    assert_eq!(index_members(&reopened, to).await.len(), 1);
    assert_eq!(index_members(&reopened, "ref:r1").await.len(), 1);
}

#[tokio::test]
async fn a_search_skips_and_drops_index_entries_whose_message_is_gone() {
    let (queue, url, _guard) = test_store().await;
    let batch = TestBatch::sms_to(&["+8613900000001", "+8613900000001"]).build();
    queue.accept(batch).await.unwrap();
    let store = Redis::open(&parsed(&url)).await.unwrap();
    let index = "to:+8613900000001";
    let members = index_members(&store, index).await;
    assert_eq!(members.len(), 2);
    // As retention leaves it: the message gone, its index entry not.
    redis::cmd("DEL")
        .arg(store.key(&format!("m:{}", members[1])))
        .query_async::<()>(&mut store.conn())
        .await
        .unwrap();
    let found = queue
        .search(crate::queue::SearchQuery {
            to: Some("+8613900000001".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].message.index, 0);
    assert_eq!(index_members(&store, index).await, members[..1]);
}

#[tokio::test]
async fn abandoned_staging_is_swept_and_a_late_commit_refused() {
    let (queue, url, _guard) = test_store().await;
    drop(queue);
    let store = Redis::open(&parsed(&url)).await.unwrap();
    let batch = big_batch(3);
    // Staged as by a process that died before committing, long ago.
    let seq: String = store
        .scripts
        .reserve
        .arg(&store.prefix)
        .arg(now_ms())
        .arg(now_ms() - 1)
        .arg(3)
        .invoke_async(&mut store.conn())
        .await
        .unwrap();
    let seq: u32 = seq.parse().unwrap();
    store
        .stage(&batch, &batch.messages, seq, now_ms())
        .await
        .unwrap();
    let staged = store.key(&format!("m:{}", Slot { seq, index: 0 }.member()));
    let exists = |store: &Redis| {
        let staged = staged.clone();
        let mut conn = store.conn();
        async move {
            redis::cmd("EXISTS")
                .arg(staged)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(exists(&store).await, 1);
    store.sweep_staging().await.unwrap();
    assert_eq!(exists(&store).await, 0, "the staged messages are gone");
    let mut layout = Layout::default();
    for m in &batch.messages {
        layout.add(m, batch.send_at_ms);
    }
    layout.seq = seq;
    layout.reserved = 3;
    match store.commit(&batch, &layout, "{}").await {
        Err(Error::Unavailable(m)) => assert!(m.contains("abandoned"), "{m}"),
        other => panic!("expected a refused commit, got {other:?}"),
    }
    assert!(store.batch(batch.id).await.unwrap().is_none());
}

/// What a template batch's stored hashes hold: the batch's `template_source`, and
/// each message's body (which must be empty) and vars.
async fn stored_template_batch(
    store: &Redis,
    id: BatchId,
    n: u32,
) -> (Option<String>, Vec<(String, Option<String>)>) {
    let (seq, source): (String, Option<String>) = redis::cmd("HMGET")
        .arg(store.key(&format!("b:{id}")))
        .arg("seq")
        .arg("template_source")
        .query_async(&mut store.conn())
        .await
        .unwrap();
    let mut messages = Vec::new();
    for index in 0..n {
        let (body, vars): (String, Option<String>) = redis::cmd("HMGET")
            .arg(store.key(&format!("m:{seq}:{index:010}")))
            .arg("body")
            .arg("vars")
            .query_async(&mut store.conn())
            .await
            .unwrap();
        messages.push((body, vars));
    }
    (source, messages)
}

#[tokio::test]
async fn a_template_batch_is_stored_with_its_template_once_and_claimed_rendered() {
    let (queue, url, _guard) = test_store().await;
    let store = Redis::open(&parsed(&url)).await.unwrap();
    let template = BatchTemplate {
        subject: None,
        body: "Hi {{name}}".into(),
    };
    let vars = |i: u32| serde_json::json!({"name": format!("N{i}")});
    // Wrong bodies, never stored: what a claim carries comes from the render.
    let whole = TestBatch::sms(3)
        .template(None, template.clone(), vars)
        .bodies(|i| format!("wrong {i}"))
        .build();
    let streamed = TestBatch::sms(2)
        .template(Some("t1"), template.clone(), vars)
        .bodies(|i| format!("wrong {i}"))
        .build();
    let (whole_id, streamed_id) = (whole.id, streamed.id);
    queue.accept(whole).await.unwrap();
    let Begun::Staging(mut staging) = queue
        .begin(streamed.clone(), Arrival::Streamed)
        .await
        .unwrap()
    else {
        panic!("a new batch is staged");
    };
    staging.add(streamed.messages).await.unwrap();
    queue
        .commit(staging, serde_json::json!({"accepted": 2}), 2)
        .await
        .unwrap();

    let json = serde_json::to_string(&template).unwrap();
    for (id, n) in [(whole_id, 3), (streamed_id, 2)] {
        let (source, messages) = stored_template_batch(&store, id, n).await;
        assert_eq!(source.as_deref(), Some(json.as_str()), "the template, once");
        let expected: Vec<(String, Option<String>)> = (0..n)
            .map(|i| (String::new(), Some(vars(i).to_string())))
            .collect();
        assert_eq!(messages, expected, "vars without bodies");
    }

    let mut claimed = queue.claim("p", 10, Duration::from_secs(30)).await.unwrap();
    claimed.sort_by(|a, b| (a.batch_id, &a.id).cmp(&(b.batch_id, &b.id)));
    let got: Vec<(BatchId, String, Option<String>)> = claimed
        .into_iter()
        .map(|c| (c.batch_id, c.body, c.vars))
        .collect();
    let expected = vec![
        (whole_id, "Hi N0".to_owned(), None),
        (whole_id, "Hi N1".to_owned(), None),
        (whole_id, "Hi N2".to_owned(), None),
        // A stored template's batch keeps the vars for its provider.
        (streamed_id, "Hi N0".to_owned(), Some(vars(0).to_string())),
        (streamed_id, "Hi N1".to_owned(), Some(vars(1).to_string())),
    ];
    assert_eq!(got, expected);
}

#[tokio::test]
async fn another_script_records_a_reply_and_a_cancel_with_the_outboxs_lua() {
    use crate::queue::tests::{assert_reply_and_cancel, reply_case, reply_to};

    // What a script storing a reply does: its event, twice, and a message of the
    // replying number cancelled with the reason.
    // ARGV: P, now, batch id, provider, member replied to, member cancelled, payload.
    const REPLY: &str = r"
local b = batch_of(ARGV[3])
for _ = 1, 2 do record_event(b, { 'global' }, 'reply.r1', 'reply', ARGV[5], nil, ARGV[7]) end
local key = P .. 'm:' .. ARGV[6]
unready(b, ARGV[4], ARGV[6])
redis.call('HSET', key, 'state', 'cancelled', 'updated_at', now)
count(b, 'pending', 'cancelled', ARGV[6], 'replied STOP')
flush_counts()
return 1
";
    let (queue, url, _guard) = test_store().await;
    let Accepted::New(id) = queue.accept(reply_case()).await.unwrap() else {
        panic!("a new batch");
    };
    let store = Redis::open(&parsed(&url)).await.unwrap();
    let seq: u32 = redis::cmd("HGET")
        .arg(store.key(&format!("b:{id}")))
        .arg("seq")
        .query_async(&mut store.conn())
        .await
        .unwrap();
    let member = |index| Slot { seq, index }.member();
    let payload = reply_to(0).payload.expect("a reply's payload");
    let _: i64 = scripts::script(REPLY)
        .arg(&store.prefix)
        .arg(now_ms())
        .arg(id.to_string())
        .arg("p")
        .arg(member(0))
        .arg(member(1))
        .arg(payload)
        .invoke_async(&mut store.conn())
        .await
        .unwrap();
    assert_reply_and_cancel(&queue, id).await;
    assert_eq!(queue.batch(id).await.unwrap().unwrap().counts.cancelled, 1);
}

/// The test store at `url`, and a connection to its server.
async fn connect(url: &str) -> (Target, redis::aio::MultiplexedConnection) {
    let target = Target::parse(&::url::Url::parse(url).expect("a Redis URL")).expect("a target");
    let client = redis::Client::open(target.connect.as_str()).expect("a client");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    (target, conn)
}

/// Every key of the test store at `url` with its serialized value, in key order:
/// a write of any of them changes it, a read does not.
pub(crate) async fn stored_keys(url: &str) -> Vec<(String, Vec<u8>)> {
    let (target, mut conn) = connect(url).await;
    let mut scan = Scan::new(format!("{}:*", glob_escape(&target.prefix)));
    let mut keys = Vec::new();
    while let Some(page) = scan.next_page(&mut conn).await.expect("scan") {
        keys.extend(page);
    }
    keys.sort();
    let mut stored = Vec::new();
    for key in keys {
        let value: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("dump");
        stored.push((key, value));
    }
    stored
}

/// How many provider ids of `provider` the store at `url` indexes (`pids:…`, where
/// segment ids are indexed beside the messages' own).
pub(crate) async fn indexed_ids(url: &str, provider: &str) -> u64 {
    let (target, mut conn) = connect(url).await;
    redis::cmd("HLEN")
        .arg(format!("{}pids:{provider}", target.prefix))
        .query_async(&mut conn)
        .await
        .expect("read")
}
