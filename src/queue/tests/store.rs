//! The stores the conformance suite runs on: a fresh store of one engine for each
//! test. A server that cannot be reached fails the test with what to start; it
//! never skips it.

use crate::queue::Queue;
pub(crate) use crate::queue::{postgres::row_versions, redis::stored_keys};

/// A store for one test: the handle, its URL (to open it again) and a guard that
/// keeps it alive and cleans it up when dropped.
pub(crate) type TestStore = (Queue, String, Box<dyn std::any::Any + Send>);

/// A fresh SQLite store in a temp dir, removed with the guard.
pub(crate) async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store").display());
    let queue = Queue::open(&url.parse().expect("a store URL"))
        .await
        .expect("open the SQLite store");
    (queue, url, Box::new(dir))
}

/// A fresh schema on the PostgreSQL test server (`HERALD_TEST_POSTGRES`), dropped
/// with the guard.
pub(crate) async fn postgres() -> TestStore {
    crate::queue::postgres::test_store().await
}

/// A fresh key prefix on the Redis test server (`HERALD_TEST_REDIS`), deleted with
/// the guard.
pub(crate) async fn redis() -> TestStore {
    crate::queue::redis::test_store().await
}

/// How many segment ids the store at `url` keeps beside its messages: the rows of
/// `message_segments` (SQLite, PostgreSQL), or every provider id of provider `p`
/// (Redis indexes them together).
pub(crate) async fn segment_ids_kept(url: &str) -> u64 {
    if url.starts_with("sqlite:") {
        crate::queue::sqlite::segment_rows(url)
    } else if url.starts_with("redis") {
        crate::queue::redis::indexed_ids(url, "p").await
    } else {
        crate::queue::postgres::segment_rows(url).await
    }
}
