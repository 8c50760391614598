//! The engine conformance suite: every test runs against every engine through the
//! public `Queue` handle, each on a store of its own.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::domain::{message_id, now_ms};
use crate::ratelimit::{Cap, Limits, Rate};

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
impl Records for NoRecords {
    async fn create_template(&self, _: Template) -> Result<Option<Template>> {
        no_records()
    }
    async fn replace_template(&self, _: Template) -> Result<Option<Template>> {
        no_records()
    }
    async fn template(&self, _: &str) -> Result<Option<Template>> {
        no_records()
    }
    async fn templates(&self, _: Option<String>, _: u32) -> Result<Vec<Template>> {
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
    async fn mark_unacked(&self, _: &super::Unacked, _: i64, _: i64) -> Result<()> {
        no_records()
    }
    async fn unacked(&self, _: &str, _: &str, _: i64, _: u32) -> Result<Vec<String>> {
        no_records()
    }
    async fn unmark_unacked(&self, _: &super::Unacked) -> Result<()> {
        no_records()
    }
}

/// A fresh store of every engine for one test.
async fn stores() -> Vec<TestStore> {
    let mut stores = vec![sqlite_store().await];
    stores.extend(super::postgres::test_store().await);
    stores.extend(super::redis::test_store().await);
    stores
}

async fn sqlite_store() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store").display());
    let queue = Queue::open(&url).await.expect("open the SQLite store");
    (queue, url, Box::new(dir))
}

/// A batch of `n` SMS messages for provider "p".
pub(crate) fn batch(n: u32, priority: i32, send_at_ms: i64) -> NewBatch {
    NewBatch {
        id: BatchId::new(),
        channel: Channel::Sms,
        source: "test".into(),
        priority,
        send_at_ms,
        idempotency: None,
        report: json!({"accepted": n}),
        template_id: None,
        template: None,
        messages: (0..n)
            .map(|index| NewMessage {
                index,
                provider: "p".into(),
                to: format!("+8613800{index:06}"),
                reference: Some(format!("r{index}")),
                subject: None,
                body: format!("body {index}"),
                segments: 1,
                vars: None,
            })
            .collect(),
    }
}

async fn accept(q: &Queue, b: NewBatch) -> BatchId {
    match q.accept(b).await.expect("accept") {
        Accepted::New(id) => id,
        other => panic!("expected a new batch, got {other:?}"),
    }
}

async fn counts(q: &Queue, id: BatchId) -> Counts {
    q.batch(id).await.unwrap().expect("batch exists").counts
}

const LEASE: Duration = Duration::from_secs(30);

fn settle_all(claimed: &[Claimed], outcome: Outcome) -> Vec<Settlement> {
    claimed
        .iter()
        .map(|c| Settlement {
            lease: c.lease,
            outcome: outcome.clone(),
            sent_by: None,
        })
        .collect()
}

/// Starts staging `b`, which must be new.
async fn begin(q: &Queue, b: NewBatch) -> Staging {
    match q.begin(b).await.expect("begin") {
        Begun::Staging(staging) => staging,
        Begun::Answered(answer) => panic!("expected to stage, got {answer:?}"),
    }
}

/// A batch for provider "p" whose recipients are `tos`, in order.
fn batch_to(tos: &[&str]) -> NewBatch {
    let mut b = batch(tos.len() as u32, 0, now_ms());
    for (m, to) in b.messages.iter_mut().zip(tos) {
        m.to = (*to).to_owned();
    }
    b
}

mod accept;
mod claim;
mod control;
mod failover;
mod fingerprint;
mod ledger;
mod limit;
mod receipts;
mod settle;
mod suppression;
mod template;
mod unacked;
