//! Test support for the PostgreSQL engine (a fresh schema per test, dropped after)
//! and its unit tests.

use std::time::Duration;

use serde_json::json;
use tokio_postgres::{Config, NoTls};

use super::sql::quote_ident;
use super::*;
use crate::queue::tests::{TestBatch, TestStore};
use crate::queue::{Arrival, BatchTemplate, Begun, Queue};

/// The server the conformance suite uses unless `HERALD_TEST_POSTGRES` names another.
const TEST_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A store of this engine for one conformance test: a fresh schema in the database
/// named by `HERALD_TEST_POSTGRES`, dropped by the guard. Panics when the server
/// cannot be reached: a missing server is a failure, never a skip.
pub(crate) async fn test_store() -> TestStore {
    let (url, guard) = test_schema();
    let queue = Queue::open(&url.parse().expect("a store URL")).await.unwrap_or_else(|e| {
        panic!(
            "the PostgreSQL conformance store is unavailable ({e}). Start PostgreSQL on 127.0.0.1:5432 \
             (scripts/test does it) or point HERALD_TEST_POSTGRES at a server"
        )
    });
    (queue, url, Box::new(guard))
}

/// Where the store at `url` is.
fn location(url: &str) -> Result<Location> {
    let url = url::Url::parse(url).map_err(|e| Error::Unsupported(e.to_string()))?;
    Location::parse(&url)
}

/// A URL naming a fresh schema on the test server, and a guard that drops it.
fn test_schema() -> (String, DropSchema) {
    let server = std::env::var("HERALD_TEST_POSTGRES").unwrap_or_else(|_| TEST_SERVER.into());
    let schema = format!("herald_test_{:016x}", fastrand::u64(..));
    let separator = if server.contains('?') { '&' } else { '?' };
    // Named after the schema, so the guard can find the store's connections.
    let url = format!("{server}{separator}schema={schema}&application_name={schema}");
    let config = location(&url)
        .unwrap_or_else(|e| panic!("HERALD_TEST_POSTGRES is not a PostgreSQL URL: {e}"))
        .config;
    (url, DropSchema { config, schema })
}

/// Drops a test schema when dropped, on a thread of its own (a guard may be dropped
/// inside or outside a runtime), within a bounded time. The store's own connections
/// are ended first: on a current-thread runtime they cannot run while we block here,
/// and one left inside a transaction would hold locks the drop waits for.
struct DropSchema {
    config: Config,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        let (mut config, schema) = (self.config.clone(), self.schema.clone());
        config.connect_timeout(Duration::from_secs(5));
        let dropped = std::thread::spawn(move || -> std::result::Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let work = async {
                    let (client, connection) = config.connect(NoTls).await?;
                    tokio::spawn(connection);
                    client
                        .execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                             WHERE application_name = $1 AND pid <> pg_backend_pid()",
                            &[&schema],
                        )
                        .await?;
                    client
                        .batch_execute(&format!(
                            "DROP SCHEMA IF EXISTS {} CASCADE",
                            quote_ident(&schema)
                        ))
                        .await
                };
                match tokio::time::timeout(Duration::from_secs(20), work).await {
                    Ok(result) => result.map_err(|e| cause(&e)),
                    Err(_) => Err("timed out".into()),
                }
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test schema {}: {e}", self.schema),
            Err(_) => eprintln!(
                "could not drop test schema {}: the thread panicked",
                self.schema
            ),
        }
    }
}

#[test]
fn message_ids_carry_the_index_in_the_low_bits() {
    assert_eq!(index_of((7_i64 << 32) | 4_294_967_295), u32::MAX);
    assert_eq!(index_of(7_i64 << 32), 0);
}

async fn engine(url: &str) -> Postgres {
    Postgres::connect(&location(url).unwrap())
        .await
        .expect("the test server is reachable")
}

/// `n` e-mail messages for provider `p`, each body 160 bytes.
fn batch(n: u32) -> NewBatch {
    TestBatch::sms(n)
        .channel(Channel::Email)
        .bodies(|_| "x".repeat(160))
        .build()
}

/// Three messages rendered from `Hi {{name}}, 你好`, with bodies the store must not
/// keep: a claimed body can only come from the render.
fn template_batch() -> NewBatch {
    let template = BatchTemplate {
        subject: None,
        body: "Hi {{name}}, 你好".into(),
    };
    TestBatch::sms(3)
        .template(None, template, |i| json!({"name": format!("N{i}")}))
        .bodies(|_| "not stored".into())
        .build()
}

/// The body and vars of every message stored in the schema of `url`, in id order.
async fn stored_messages(url: &str) -> Vec<(String, Option<String>)> {
    let location = location(url).unwrap();
    let e = engine(url).await;
    let client = e.client().await.unwrap();
    client
        .query(
            &format!(
                "SELECT body, vars FROM {}.messages ORDER BY id",
                quote_ident(&location.schema)
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// What a handle claims of `provider`: each message's body and vars, in id order.
async fn claimed_bodies(queue: &Queue) -> Vec<(String, Option<String>)> {
    let mut claimed = queue.claim("p", 10, Duration::from_secs(30)).await.unwrap();
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    claimed.into_iter().map(|c| (c.body, c.vars)).collect()
}

fn rendered() -> Vec<(String, Option<String>)> {
    (0..3).map(|i| (format!("Hi N{i}, 你好"), None)).collect()
}

fn stored_vars() -> Vec<(String, Option<String>)> {
    (0..3)
        .map(|i| {
            (
                String::new(),
                Some(json!({"name": format!("N{i}")}).to_string()),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_template_batch_stores_its_vars_not_its_bodies_and_is_rendered_at_claim() {
    let (url, _guard) = test_schema();
    let queue = Queue::open(&url.parse().expect("a store URL"))
        .await
        .unwrap();
    queue.accept(template_batch()).await.unwrap();
    assert_eq!(stored_messages(&url).await, stored_vars());
    assert_eq!(claimed_bodies(&queue).await, rendered());
}

#[tokio::test]
async fn a_template_batch_stored_in_chunks_stores_its_vars_not_its_bodies() {
    let (url, _guard) = test_schema();
    let queue = Queue::open(&url.parse().expect("a store URL"))
        .await
        .unwrap();
    let mut batch = template_batch();
    let messages = std::mem::take(&mut batch.messages);
    let Begun::Staging(mut staging) = queue.begin(batch, Arrival::Streamed).await.unwrap() else {
        panic!("a new batch is staged")
    };
    let (first, rest) = messages.split_at(1);
    staging.add(first.to_vec()).await.unwrap();
    staging.add(rest.to_vec()).await.unwrap();
    queue.commit(staging, json!({}), 3).await.unwrap();
    assert_eq!(stored_messages(&url).await, stored_vars());
    assert_eq!(claimed_bodies(&queue).await, rendered());
}

#[tokio::test]
async fn a_batch_without_a_template_keeps_its_bodies() {
    let (url, _guard) = test_schema();
    let queue = Queue::open(&url.parse().expect("a store URL"))
        .await
        .unwrap();
    queue.accept(batch(2)).await.unwrap();
    let bodies = vec![("x".repeat(160), None); 2];
    assert_eq!(stored_messages(&url).await, bodies);
    assert_eq!(claimed_bodies(&queue).await, bodies);
}

#[tokio::test]
async fn a_store_from_before_stored_templates_migrates_and_keeps_its_bodies() {
    let (url, _guard) = test_schema();
    let location = location(&url).unwrap();
    let schema = quote_ident(&location.schema);
    let queue = Queue::open(&url.parse().expect("a store URL"))
        .await
        .unwrap();
    queue.accept(batch(1)).await.unwrap();
    drop(queue);
    // The store as the herald before migration 8 left it (and so without the later).
    let e = engine(&url).await;
    e.client()
        .await
        .unwrap()
        .batch_execute(&format!(
            "DROP TABLE {schema}.message_segments;
             DROP TABLE {schema}.audit;
             DROP INDEX {schema}.deliveries_first;
             DROP INDEX {schema}.replies_received;
             DROP TABLE {schema}.erase_salt;
             DROP INDEX {schema}.deliveries_reply;
             DROP INDEX {schema}.messages_ref;
             DROP INDEX {schema}.messages_to;
             DROP TRIGGER messages_refund ON {schema}.messages;
             DROP FUNCTION {schema}.messages_refund();
             DROP TABLE {schema}.provider_spend;
             ALTER TABLE {schema}.messages DROP COLUMN charge_day;
             ALTER TABLE {schema}.messages DROP COLUMN charge_provider;
             ALTER TABLE {schema}.messages DROP COLUMN charge;
             ALTER TABLE {schema}.batches DROP COLUMN spent;
             ALTER TABLE {schema}.batches DROP COLUMN max_cost;
             DROP INDEX {schema}.messages_due;
             ALTER TABLE {schema}.batches DROP COLUMN send_window;
             DROP TABLE {schema}.replies;
             DROP INDEX {schema}.messages_sent_to;
             DROP TABLE {schema}.deliveries;
             DROP INDEX {schema}.batches_subscribed;
             ALTER TABLE {schema}.batches DROP COLUMN callback_url;
             ALTER TABLE {schema}.batches DROP COLUMN subscriptions;
             DROP INDEX {schema}.messages_expiring;
             ALTER TABLE {schema}.messages DROP COLUMN expires_at;
             ALTER TABLE {schema}.batches DROP COLUMN expires_at;
             ALTER TABLE {schema}.batches DROP COLUMN template_source;
             DELETE FROM {schema}.herald_schema_version WHERE version >= 8"
        ))
        .await
        .unwrap();
    drop(e);
    let queue = Queue::open(&url.parse().expect("a store URL"))
        .await
        .unwrap();
    queue.accept(template_batch()).await.unwrap();
    let mut claimed = claimed_bodies(&queue).await;
    assert_eq!(claimed.remove(0), ("x".repeat(160), None));
    assert_eq!(claimed, rendered());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_migrate_a_new_schema_once() {
    let (url, _guard) = test_schema();
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                Queue::open(&url.parse().expect("a store URL"))
                    .await
                    .map(drop)
            })
        })
        .collect();
    for open in opens {
        open.await.unwrap().expect("every start succeeds");
    }
}

#[tokio::test]
async fn a_schema_from_a_newer_herald_is_refused_naming_both_versions() {
    let (url, _guard) = test_schema();
    let location = location(&url).unwrap();
    let e = engine(&url).await;
    let client = e.client().await.unwrap();
    client
        .batch_execute(&format!(
            "INSERT INTO {}.herald_schema_version VALUES (99, 0)",
            quote_ident(&location.schema)
        ))
        .await
        .unwrap();
    match Queue::open(&url.parse().expect("a store URL")).await {
        Err(Error::Corrupt(m)) => {
            let latest = super::schema::MIGRATIONS.len();
            assert!(
                m.contains("version 99") && m.contains(&format!("up to {latest}")),
                "{m}"
            );
        }
        Ok(_) => panic!("a newer schema was accepted"),
        Err(other) => panic!("expected Corrupt, got {other}"),
    }
}

#[tokio::test]
async fn a_ten_thousand_message_batch_is_accepted_quickly() {
    let (url, _guard) = test_schema();
    let e = engine(&url).await;
    e.accept(batch(10)).await.unwrap(); // warm the connection and statement
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let b = batch(10_000);
        let started = std::time::Instant::now();
        e.accept(b).await.unwrap();
        best = best.min(started.elapsed());
    }
    eprintln!("accepting 10,000 messages took {best:?} (best of 5)");
    // Generous: a debug build on a busy CI machine, well above the ~tens of ms a
    // release build takes here. It catches a per-row round trip, not drift.
    assert!(best < Duration::from_secs(2), "took {best:?}");
}

#[tokio::test]
async fn another_transaction_records_a_reply_and_a_cancel_with_the_engines_helpers() {
    use crate::domain::now_ms;
    use crate::queue::EventKind;
    use crate::queue::tests::{assert_reply_and_cancel, reply_case, reply_to};

    let (queue, url, _guard) = test_store().await;
    let Accepted::New(id) = queue.accept(reply_case()).await.unwrap() else {
        panic!("a new batch");
    };
    let e = engine(&url).await;
    let mut client = e.client().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let schema = quote_ident(&location(&url).unwrap().schema);
    let rows: Vec<i64> = tx
        .query(
            &format!("SELECT id FROM {schema}.messages ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let everywhere = vec!["global".to_owned()];
    for _ in 0..2 {
        e.record_deliveries(&tx, &everywhere, &reply_to(rows[0]))
            .await
            .unwrap();
    }
    tx.execute(
        &format!("UPDATE {schema}.messages SET state = 'cancelled' WHERE id = $1"),
        &[&rows[1]],
    )
    .await
    .unwrap();
    let stop = Some("replied STOP");
    e.record_message_events(&tx, &rows[1..], EventKind::Cancelled, stop, now_ms())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_reply_and_cancel(&queue, id).await;
}

/// Every stored version of the rows of the test store at `url` whose writes a
/// claim makes (messages, batches, rate buckets): a write of any of them changes
/// it, a read does not.
pub(crate) async fn row_versions(url: &str) -> String {
    let location = location(url).expect("a PostgreSQL URL");
    let (client, connection) = location.config.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);
    let s = quote_ident(&location.schema);
    let sql = format!(
        "SELECT coalesce(string_agg(v, ',' ORDER BY v), '') FROM (
             SELECT 'm' || ctid::text || xmin::text AS v FROM {s}.messages
             UNION ALL SELECT 'b' || ctid::text || xmin::text FROM {s}.batches
             UNION ALL SELECT 'r' || ctid::text || xmin::text FROM {s}.rate_buckets) rows"
    );
    client.query_one(&sql, &[]).await.expect("read").get(0)
}

#[tokio::test]
async fn searches_by_recipient_and_by_ref_read_their_indexes_not_the_ledger() {
    let (url, _guard) = test_schema();
    let e = engine(&url).await;
    for (by_ref, index) in [(false, "messages_to"), (true, "messages_ref")] {
        let plan = super::search::plan(&e, by_ref).await;
        assert!(
            plan.contains(&format!("Index Scan Backward using {index}")),
            "{plan}"
        );
        assert!(!plan.contains("Seq Scan on messages"), "{plan}");
    }
}

/// How many segment ids the store at `url` records (`message_segments`).
pub(crate) async fn segment_rows(url: &str) -> u64 {
    let location = location(url).expect("a PostgreSQL URL");
    let (client, connection) = location.config.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);
    let s = quote_ident(&location.schema);
    let sql = format!("SELECT COUNT(*) FROM {s}.message_segments");
    let rows: i64 = client.query_one(&sql, &[]).await.expect("read").get(0);
    rows.unsigned_abs()
}
