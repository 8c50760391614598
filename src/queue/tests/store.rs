//! The stores the conformance suite runs on: a fresh store of one engine for each
//! test, and the records of an engine a test wraps. A server that cannot be
//! reached fails the test with what to start; it never skips it.

use std::collections::HashSet;

use async_trait::async_trait;

use crate::domain::Channel;
use crate::queue::{Error, Queue, RecordStore, Result, StoredTemplate, Suppression, Unacked};

/// A store for one test: the handle, its URL (to open it again) and a guard that
/// keeps it alive and cleans it up when dropped.
pub(crate) type TestStore = (Queue, String, Box<dyn std::any::Any + Send>);

/// The records of an engine that a test wraps with [`Queue::from_engine`]: none.
pub(crate) struct NoRecords;

fn no_records<T>() -> Result<T> {
    Err(Error::Unsupported(
        "a wrapped test engine keeps no templates or suppressions".into(),
    ))
}

#[async_trait]
impl RecordStore for NoRecords {
    async fn create_template(&self, _: StoredTemplate) -> Result<Option<StoredTemplate>> {
        no_records()
    }
    async fn replace_template(&self, _: StoredTemplate) -> Result<Option<StoredTemplate>> {
        no_records()
    }
    async fn template(&self, _: &str) -> Result<Option<StoredTemplate>> {
        no_records()
    }
    async fn templates(&self, _: Option<String>, _: u32) -> Result<Vec<StoredTemplate>> {
        no_records()
    }
    async fn delete_template(&self, _: &str) -> Result<bool> {
        no_records()
    }
    async fn suppress(&self, _: Vec<Suppression>) -> Result<usize> {
        no_records()
    }
    async fn unsuppress(&self, _: Channel, _: Vec<String>) -> Result<usize> {
        no_records()
    }
    async fn suppressed(&self, _: Channel, _: &[&str]) -> Result<HashSet<String>> {
        no_records()
    }
    async fn suppressions(
        &self,
        _: Option<Channel>,
        _: Option<(Channel, String)>,
        _: u32,
    ) -> Result<Vec<Suppression>> {
        no_records()
    }
    async fn remember_sends(&self, _: Channel, _: Vec<String>, _: i64) -> Result<()> {
        no_records()
    }
    async fn recently_sent(&self, _: Channel, _: Vec<String>, _: i64) -> Result<HashSet<String>> {
        no_records()
    }
    async fn forget_sends(&self, _: Channel, _: i64, _: u32) -> Result<u64> {
        no_records()
    }
    async fn mark_unacked(&self, _: &Unacked, _: i64, _: i64) -> Result<()> {
        no_records()
    }
    async fn unacked(&self, _: &str, _: &str, _: i64, _: u32) -> Result<Vec<String>> {
        no_records()
    }
    async fn unmark_unacked(&self, _: &Unacked) -> Result<()> {
        no_records()
    }
}

/// A fresh SQLite store in a temp dir, removed with the guard.
pub(super) async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store").display());
    let queue = Queue::open(&url.parse().expect("a store URL"))
        .await
        .expect("open the SQLite store");
    (queue, url, Box::new(dir))
}

/// A fresh schema on the PostgreSQL test server (`HERALD_TEST_POSTGRES`), dropped
/// with the guard.
pub(super) async fn postgres() -> TestStore {
    crate::queue::postgres::test_store().await
}

/// A fresh key prefix on the Redis test server (`HERALD_TEST_REDIS`), deleted with
/// the guard.
pub(super) async fn redis() -> TestStore {
    crate::queue::redis::test_store().await
}
