//! The embedded engine's own tests, beside the conformance suite: what is stored
//! on disk, the sweep of abandoned stagings, the held writer and migrations.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::Sqlite;
use super::schema::MIGRATIONS;
use super::staging::STAGING_DEADLINE_MS;
use crate::domain::now_ms;
use crate::queue::tests::TestBatch;
use crate::queue::{Accepted, Arrival, BatchTemplate, Begun, Error, NewBatch, Queue};

/// A queue on a fresh store in the directory `store` of a temporary directory,
/// which lives as long as the first value.
async fn open_queue() -> (tempfile::TempDir, PathBuf, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let queue = Queue::open(
        &format!("sqlite://{}", store.display())
            .parse()
            .expect("a store URL"),
    )
    .await
    .unwrap();
    (dir, store, queue)
}

/// A batch of three messages rendered from `Hi {{name}}`, as intake makes it
/// for this engine: bodies rendered, each recipient's vars kept.
fn template_batch(template_id: Option<&str>) -> NewBatch {
    let template = BatchTemplate {
        subject: None,
        body: "Hi {{name}}, 你好".into(),
    };
    TestBatch::sms(3)
        .bodies(|index| format!("Hi N{index}, 你好"))
        .template(
            template_id,
            template,
            |index| serde_json::json!({"name": format!("N{index}")}),
        )
        .build()
}

#[tokio::test]
async fn a_template_batch_stores_variables_and_renders_each_body_at_claim() {
    for template_id in [None, Some("t1")] {
        let (_dir, store, queue) = open_queue().await;
        let batch = template_batch(template_id);
        let expected: Vec<(String, Option<String>)> = batch
            .messages
            .iter()
            .map(|m| (m.body.clone(), m.vars.clone()))
            .collect();
        queue.accept(batch).await.unwrap();
        let db = Connection::open(store.join("herald.db")).unwrap();
        let stored: Vec<String> = db
            .prepare("SELECT body FROM messages ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(stored, ["", "", ""], "bodies are not stored");
        let claimed = queue.claim("p", 10, Duration::from_secs(30)).await.unwrap();
        let got: Vec<(String, Option<String>)> =
            claimed.into_iter().map(|c| (c.body, c.vars)).collect();
        let expected: Vec<(String, Option<String>)> = expected
            .into_iter()
            .map(|(body, vars)| (body, template_id.and(vars)))
            .collect();
        // Providers see vars only for a stored template.
        assert_eq!(got, expected, "template {template_id:?}");
    }
}

#[tokio::test]
async fn a_message_that_cannot_be_rendered_at_claim_fails_with_why_and_the_rest_go() {
    let (_dir, store, queue) = open_queue().await;
    let Accepted::New(id) = queue.accept(template_batch(None)).await.unwrap() else {
        panic!("a new batch");
    };
    let db = Connection::open(store.join("herald.db")).unwrap();
    db.execute(
        "UPDATE messages SET vars = '{}' WHERE id = (SELECT MIN(id) FROM messages)",
        [],
    )
    .unwrap();
    let claimed = queue.claim("p", 10, Duration::from_secs(30)).await.unwrap();
    let bodies: Vec<&str> = claimed.iter().map(|c| c.body.as_str()).collect();
    assert_eq!(bodies, ["Hi N1, 你好", "Hi N2, 你好"]);
    let summary = queue.batch(id).await.unwrap().unwrap();
    assert_eq!(summary.counts.failed, 1);
    let (state, error): (String, String) = db
        .query_row(
            "SELECT state, last_error FROM messages ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "failed");
    assert!(error.contains("lack `name`"), "{error}");
}

#[tokio::test]
async fn a_staging_abandoned_past_its_deadline_is_swept_by_the_next_begin() {
    let (_dir, store, queue) = open_queue().await;
    let new_batch = || TestBatch::sms(0).build();
    let message = TestBatch::sms(1).build().messages.remove(0);
    let Begun::Staging(mut abandoned) = queue.begin(new_batch(), Arrival::Streamed).await.unwrap()
    else {
        panic!("a new batch");
    };
    abandoned.add(vec![message]).await.unwrap();
    // As if its process had died long ago.
    let db = Connection::open(store.join("herald.db")).unwrap();
    db.execute(
        "UPDATE batches SET created_at = ?1 WHERE control = 'staging'",
        [now_ms() - STAGING_DEADLINE_MS - 1],
    )
    .unwrap();
    let Begun::Staging(next) = queue.begin(new_batch(), Arrival::Streamed).await.unwrap() else {
        panic!("a new batch");
    };
    let left: (i64, i64) = db
        .query_row(
            "SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM batches)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(left, (0, 1), "only the new staging is left");
    // Opening the store sweeps too.
    db.execute(
        "UPDATE batches SET created_at = ?1 WHERE control = 'staging'",
        [now_ms() - STAGING_DEADLINE_MS - 1],
    )
    .unwrap();
    drop(Sqlite::open(&store).await.unwrap());
    let batches: i64 = db
        .query_row("SELECT COUNT(*) FROM batches", [], |r| r.get(0))
        .unwrap();
    assert_eq!(batches, 0, "the store's open swept the abandoned staging");
    match queue.commit(abandoned, serde_json::json!({}), 1).await {
        Err(Error::Unavailable(m)) => assert!(m.contains("abandoned"), "{m}"),
        other => panic!("expected a refused commit, got {other:?}"),
    }
    next.discard().await;
}

#[tokio::test]
async fn a_batch_stored_whole_appears_at_its_commit_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(
        &format!("sqlite://{}", dir.path().display())
            .parse()
            .expect("a store URL"),
    )
    .await
    .unwrap();
    let whole = |key: &str| {
        let mut batch = TestBatch::sms(3).idempotency(key, "h").build();
        let messages = std::mem::take(&mut batch.messages);
        (batch, messages)
    };

    let (batch, mut messages) = whole("a");
    let Begun::Staging(mut staging) = queue.begin(batch.clone(), Arrival::AtHand).await.unwrap()
    else {
        panic!("SQLite stores a batch whole");
    };
    let last = messages.split_off(1);
    staging.add(messages).await.unwrap();
    staging.add(last).await.unwrap();
    // The writer holds the transaction; readers see nothing of it yet.
    assert!(queue.batch(batch.id).await.unwrap().is_none());
    let accepted = queue
        .commit(staging, serde_json::json!({"accepted": 3}), 3)
        .await;
    assert_eq!(accepted.unwrap(), Accepted::New(batch.id));
    let summary = queue.batch(batch.id).await.unwrap().expect("committed");
    assert_eq!((summary.counts.total, summary.counts.pending), (3, 3));
    assert_eq!(
        queue
            .claim("p", 10, Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        3
    );

    // The same key again is answered from the store, with the stored report.
    match queue.begin(whole("a").0, Arrival::AtHand).await.unwrap() {
        Begun::Answered(Accepted::Replayed { id, report }) => {
            assert_eq!((id, report), (batch.id, serde_json::json!({"accepted": 3})));
        }
        _ => panic!("a replay"),
    }

    // Discarded, or dropped half-way: nothing stays, and the writer is free.
    let (discarded, messages) = whole("b");
    let Begun::Staging(mut staging) = queue
        .begin(discarded.clone(), Arrival::AtHand)
        .await
        .unwrap()
    else {
        panic!("a new batch");
    };
    staging.add(messages).await.unwrap();
    staging.discard().await;
    let (dropped, messages) = whole("c");
    let Begun::Staging(mut staging) = queue.begin(dropped.clone(), Arrival::AtHand).await.unwrap()
    else {
        panic!("a new batch");
    };
    staging.add(messages).await.unwrap();
    drop(staging);
    let next = TestBatch::sms(1).build();
    assert_eq!(
        queue.accept(next.clone()).await.unwrap(),
        Accepted::New(next.id)
    );
    for gone in [discarded.id, dropped.id] {
        assert!(queue.batch(gone).await.unwrap().is_none());
    }
    let db = Connection::open(dir.path().join("herald.db")).unwrap();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 4, "the committed batch's 3 and the next one's 1");
}

fn user_version(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn an_older_store_is_migrated_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let db = store.join("herald.db");
    drop(Sqlite::open(&store).await.unwrap());
    let latest = MIGRATIONS.len() as i64;
    assert_eq!(user_version(&db), latest);

    // A store of the first version, with a message in it.
    let old = dir.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    let old_db = old.join("herald.db");
    Connection::open(&old_db)
        .unwrap()
        .execute_batch(&format!(
            "{} PRAGMA user_version = 1;
             INSERT INTO batches (id, channel, source, priority, send_at, created_at, report, first_row, size)
             VALUES ('0190a0a0-0000-7000-8000-000000000000', 'sms', 'api', 0, 0, 0, '{{}}', 1, 1);
             INSERT INTO messages (id, batch, provider, state, priority, available_at, to_addr, body, created_at, updated_at)
             VALUES (1, 1, 'log', 'pending', 0, 0, '+8613800138000', 'hi', 0, 0);",
            MIGRATIONS[0]
        ))
        .unwrap();
    drop(Sqlite::open(&old).await.unwrap());
    assert_eq!(user_version(&old_db), latest);
    let conn = Connection::open(&old_db).unwrap();
    for table in [
        "rate_buckets",
        "recipient_sends",
        "templates",
        "suppressions",
        "send_fingerprints",
        "early_receipts",
        "replies",
    ] {
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1, "{table}");
    }
    // The message kept its place, with the defaults of the later columns.
    let (segments, template): (u32, Option<String>) = conn
        .query_row(
            "SELECT segments, template FROM messages WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((segments, template), (1, None));

    Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    match Sqlite::open(&store).await {
        Err(Error::Corrupt(m)) => assert!(m.contains("99"), "{m}"),
        Ok(_) => panic!("a newer schema was accepted"),
        Err(other) => panic!("expected Corrupt, got {other}"),
    }
}

/// The connection's `PRAGMA synchronous`: 1 is NORMAL, 2 is FULL.
fn synchronous(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA synchronous", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn accepts_flush_their_commit_and_claims_and_settlements_do_not() {
    use super::connection::{connect, light_transaction, write_transaction};
    let dir = tempfile::tempdir().unwrap();
    let mut conn = connect(&dir.path().join("herald.db")).unwrap();
    conn.execute_batch("CREATE TABLE t (n INTEGER)").unwrap();
    // Each transaction sets its own level, whatever the one before it left.
    for (light, level) in [(true, 1), (false, 2), (true, 1), (true, 1), (false, 2)] {
        let tx = if light {
            light_transaction(&mut conn).unwrap()
        } else {
            write_transaction(&mut conn).unwrap()
        };
        tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert_eq!(synchronous(&tx), level, "light: {light}");
        tx.commit().unwrap();
    }
    // Every commit, flushed or not, is there for the next connection.
    let other = connect(&dir.path().join("herald.db")).unwrap();
    let rows: i64 = other
        .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 5);
}

#[test]
fn statements_are_not_compiled_again_when_their_values_change() {
    use super::connection::connect;
    use rusqlite::StatementStatus;
    let dir = tempfile::tempdir().unwrap();
    let mut conn = connect(&dir.path().join("herald.db")).unwrap();
    super::schema::migrate(&mut conn).unwrap();
    // A bound LIMIT, as claims have, and a bound value that a partial index's
    // condition (`deliveries_reply`: kind = 'reply') is compared with, as the
    // recording of events has.
    let mut claim = conn
        .prepare(
            "SELECT seq FROM deliveries WHERE state = 'pending' AND due_at <= ?1
             ORDER BY due_at, seq LIMIT ?2",
        )
        .unwrap();
    for limit in 1..=5 {
        claim
            .query_map(rusqlite::params![now_ms(), limit], |r| r.get::<_, i64>(0))
            .unwrap()
            .for_each(drop);
    }
    assert_eq!(claim.get_status(StatementStatus::RePrepare), 0);
    let mut record = conn
        .prepare(
            "INSERT OR IGNORE INTO deliveries (endpoint, event_id, kind, at, first_at, due_at)
             VALUES (?1, ?2, ?3, 0, 0, 0)",
        )
        .unwrap();
    for (i, kind) in ["message.sent", "reply", "message.delivered"]
        .iter()
        .enumerate()
    {
        record
            .execute(rusqlite::params!["crm", format!("e{i}"), kind])
            .unwrap();
    }
    assert_eq!(record.get_status(StatementStatus::RePrepare), 0);
}

#[tokio::test]
async fn another_transaction_records_a_reply_and_a_cancel_with_the_engines_helpers() {
    use crate::queue::EventKind;
    use crate::queue::tests::{assert_reply_and_cancel, reply_case, reply_to};

    let (_dir, store, queue) = open_queue().await;
    let Accepted::New(id) = queue.accept(reply_case()).await.unwrap() else {
        panic!("a new batch");
    };
    let mut conn = Connection::open(store.join("herald.db")).unwrap();
    let tx = conn.transaction().unwrap();
    let rows: Vec<i64> = tx
        .prepare("SELECT id FROM messages ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let everywhere = vec!["global".to_owned()];
    for _ in 0..2 {
        super::record_deliveries(&tx, &everywhere, &reply_to(rows[0])).unwrap();
    }
    tx.execute(
        "UPDATE messages SET state = 'cancelled' WHERE id = ?1",
        [rows[1]],
    )
    .unwrap();
    let stop = Some("replied STOP");
    super::record_message_events(&tx, &rows[1..], EventKind::Cancelled, stop, now_ms()).unwrap();
    tx.commit().unwrap();
    assert_reply_and_cancel(&queue, id).await;
}

#[tokio::test]
async fn searches_by_recipient_and_by_ref_read_their_indexes_not_the_ledger() {
    let (_dir, store, queue) = open_queue().await;
    queue.accept(TestBatch::sms(3).build()).await.unwrap();
    let conn = Connection::open(store.join("herald.db")).unwrap();
    for (by_ref, index) in [(false, "messages_to"), (true, "messages_ref")] {
        let plan = super::search::plan(&conn, by_ref);
        let scan = &plan[0];
        assert!(
            scan.starts_with("SEARCH m USING INDEX") && scan.contains(index),
            "{plan:?}"
        );
        assert!(
            plan.iter()
                .all(|step| !step.starts_with("SCAN") && !step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }
}

/// The store's file size once the WAL is copied in. A checkpoint that meets
/// another connection's read, or the store's own background checkpoint, is
/// busy and copies nothing, so it is tried again, a bounded number of times.
fn checkpointed_size(store: &Path) -> u64 {
    let db = Connection::open(store.join("herald.db")).unwrap();
    let done = (0..100).any(|_| {
        let busy = match db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(busy) => busy != 0,
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => true,
            Err(e) => panic!("the checkpoint failed: {e}"),
        };
        if busy {
            std::thread::sleep(Duration::from_millis(20));
        }
        !busy
    });
    assert!(done, "the checkpoint stayed busy for two seconds");
    std::fs::metadata(store.join("herald.db")).unwrap().len()
}

#[tokio::test]
async fn pruning_hands_the_freed_pages_back_so_the_file_shrinks() {
    let (_dir, store, queue) = open_queue().await;
    for _ in 0..4 {
        let batch = TestBatch::sms(2_000).bodies(|_| "x".repeat(400)).build();
        let Accepted::New(id) = queue.accept(batch).await.unwrap() else {
            panic!("a new batch")
        };
        queue
            .control(id, crate::queue::BatchAction::Cancel)
            .await
            .unwrap();
    }
    let full = checkpointed_size(&store);
    assert!(full > 3_000_000, "{full} bytes");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let pruned = queue
        .prune(
            crate::queue::Cutoffs {
                ledger_before_ms: Some(now_ms()),
                audit_before_ms: None,
            },
            crate::queue::Pace::default(),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!((pruned.batches, pruned.messages), (4, 8_000));
    let shrunk = checkpointed_size(&store);
    assert!(shrunk < full / 4, "{full} bytes became {shrunk}");
}

#[tokio::test]
async fn a_store_made_before_incremental_vacuum_is_rewritten_once_to_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    {
        let db = Connection::open(store.join("herald.db")).unwrap();
        db.execute_batch(&format!("{} PRAGMA user_version = 1;", MIGRATIONS[0]))
            .unwrap();
        let mode: i64 = db
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 0, "made without it");
    }
    let url = format!("sqlite://{}", store.display());
    let queue = Queue::open(&url.parse().expect("a store URL"))
        .await
        .unwrap();
    queue.accept(TestBatch::sms(2).build()).await.unwrap();
    drop(queue);
    let db = Connection::open(store.join("herald.db")).unwrap();
    let mode: i64 = db
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 2, "incremental");
}

#[tokio::test]
async fn only_the_process_holding_the_poster_lock_claims_deliveries() {
    let (_dir, store, queue) = open_queue().await;
    crate::queue::tests::outbox::sent_events(&queue, 3).await;
    let lease = Duration::from_secs(30);
    // Another process holds the lock: this one claims nothing.
    let other = std::fs::File::create(store.join("poster.lock")).unwrap();
    other.try_lock().unwrap();
    assert!(
        queue
            .claim_deliveries(10, lease, now_ms())
            .await
            .unwrap()
            .is_empty()
    );
    // It ended: this one takes the lock and posts, each delivery once.
    drop(other);
    let now = now_ms();
    let claimed = queue.claim_deliveries(10, lease, now).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(
        queue
            .claim_deliveries(10, lease, now)
            .await
            .unwrap()
            .is_empty()
    );
    // The lock is this process's now, whatever its handles.
    let again = std::fs::File::create(store.join("poster.lock")).unwrap();
    assert!(again.try_lock().is_err());
    // A claim is a read: the store holds no lease.
    let db = Connection::open(store.join("herald.db")).unwrap();
    let leased: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM deliveries WHERE lease IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leased, 0);
}

/// How many segment ids the store at `url` (`sqlite://{dir}`) records
/// (`message_segments`).
pub(crate) fn segment_rows(url: &str) -> u64 {
    let dir = url.strip_prefix("sqlite://").expect("an SQLite store URL");
    Connection::open(Path::new(dir).join("herald.db"))
        .and_then(|conn| {
            conn.query_row("SELECT COUNT(*) FROM message_segments", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .expect("read the store")
        .unsigned_abs()
}
