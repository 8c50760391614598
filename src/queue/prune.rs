//! Retention: what the store forgets, and how, on every engine alike.
//!
//! A batch is pruned when it is older than the retention age and finished: none
//! of its messages is pending, sending, paused (or held for its window, which is
//! pending) or of unknown outcome, and none was touched since the cutoff (a late
//! delivery receipt keeps its batch another full age). Its messages go with it,
//! and with them what only they referred to (an idempotency key, a provider id
//! receipts looked up). Beside the ledger, replies received, webhook deliveries
//! posted or failed and held delivery receipts older than the age are removed.
//! Suppressions are never pruned: an opted-out address must stay opted out.
//!
//! Every step is one short transaction of at most [`Pace::rows`] messages or
//! records, and the pruner pauses between steps, so sending and the API never wait
//! long behind it. SQLite then hands the freed pages back to the file system, a
//! few at a time. The audit trail keeps its own, longer, age (see
//! [`crate::audit`]) and is pruned by the same pass.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Queue, Result};
use crate::domain::{StoreUrl, millis, now_ms};

/// What one step or a whole pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Finished batches removed whole.
    pub batches: u64,
    /// Their messages.
    pub messages: u64,
    /// Replies received before the cutoff.
    pub replies: u64,
    /// Webhook deliveries posted or failed before the cutoff.
    pub deliveries: u64,
    /// Delivery receipts held for a send that never came.
    pub receipts: u64,
    /// Audit entries older than the audit trail's own age.
    pub audit: u64,
}

impl Pruned {
    /// How many rows this removed, of every kind.
    pub fn total(&self) -> u64 {
        self.batches + self.messages + self.replies + self.deliveries + self.receipts + self.audit
    }

    fn add(&mut self, other: Pruned) {
        self.batches += other.batches;
        self.messages += other.messages;
        self.replies += other.replies;
        self.deliveries += other.deliveries;
        self.receipts += other.receipts;
        self.audit += other.audit;
    }
}

/// The pruning seam every engine implements beside [`super::Engine`]. Each call
/// is one transaction (one script on Redis) of at most `limit` rows.
#[async_trait]
pub(crate) trait Prune: Send + Sync + 'static {
    /// Removes up to `limit` messages of finished batches whose messages were all
    /// last touched before `before_ms` and which were created before it, oldest
    /// batch first, and each such batch once none of its messages is left. A
    /// batch still sending is never touched. Answers what it removed: nothing
    /// means nothing is left to remove.
    async fn prune_ledger(&self, before_ms: i64, limit: u32) -> Result<Pruned>;
    /// Removes up to `limit` of the records beside the ledger older than
    /// `before_ms`: replies, posted or failed webhook deliveries (a pending one is
    /// left to its retries) and held delivery receipts.
    async fn prune_beside(&self, before_ms: i64, limit: u32) -> Result<Pruned>;
    /// Hands up to `pages` free pages of the store's file back to the file
    /// system; answers how many it handed back. A server engine, whose server
    /// reuses freed space itself, answers 0.
    async fn reclaim(&self, pages: u32) -> Result<u64> {
        let _ = pages;
        Ok(0)
    }
}

/// How a pass goes: rows per step and the pause between steps.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// The most rows (messages, records, audit entries) one step removes.
    pub rows: u32,
    /// The most free pages one reclaiming step hands back (SQLite's pages are
    /// 4 KiB).
    pub pages: u32,
    /// The pause after every step, so the steps leave room for everything else.
    pub pause: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            rows: 2_000,
            pages: 2_000,
            pause: Duration::from_millis(20),
        }
    }
}

/// What a pass removes: the ledger older than `ledger_before_ms`, the audit trail
/// older than `audit_before_ms` (ms since the epoch; `None`: keep it).
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    pub ledger_before_ms: Option<i64>,
    pub audit_before_ms: Option<i64>,
}

impl Cutoffs {
    /// The cutoffs of ages `ledger` and `audit` (`None`: kept forever), now.
    pub fn ages(ledger: Option<Duration>, audit: Option<Duration>) -> Cutoffs {
        let before = |age: Duration| now_ms().saturating_sub(millis(age));
        Cutoffs {
            ledger_before_ms: ledger.map(before),
            audit_before_ms: audit.map(before),
        }
    }
}

impl Queue {
    /// One whole pass: steps of at most `pace.rows` rows, each its own
    /// transaction followed by `pace.pause`, until nothing older than the
    /// cutoffs is left; then the freed space is handed back, `pace.pages` at a
    /// time. Ends early, between steps, when `stop` is cancelled.
    pub async fn prune(
        &self,
        cutoffs: Cutoffs,
        pace: Pace,
        stop: &CancellationToken,
    ) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        let rows = pace.rows.max(1);
        let pause = || async {
            tokio::select! {
                () = tokio::time::sleep(pace.pause) => {}
                () = stop.cancelled() => {}
            }
        };
        if let Some(before) = cutoffs.ledger_before_ms {
            for step in [Step::Ledger, Step::Beside] {
                while !stop.is_cancelled() {
                    let done = match step {
                        Step::Ledger => self.prune.prune_ledger(before, rows).await?,
                        Step::Beside => self.prune.prune_beside(before, rows).await?,
                    };
                    pruned.add(done);
                    if done.total() == 0 {
                        break;
                    }
                    pause().await;
                }
            }
        }
        if let Some(before) = cutoffs.audit_before_ms {
            while !stop.is_cancelled() {
                let n = self.audit_store().prune_audit(before, rows).await?;
                pruned.audit += n;
                if n < u64::from(rows) {
                    break;
                }
                pause().await;
            }
        }
        if pruned.total() > 0 {
            while !stop.is_cancelled() && self.prune.reclaim(pace.pages.max(1)).await? > 0 {
                pause().await;
            }
        }
        Ok(pruned)
    }
}

#[derive(Clone, Copy)]
enum Step {
    Ledger,
    Beside,
}

/// The days of retention `store`'s URL gives in the older spelling (a PostgreSQL
/// URL's `retention_days`), if it gives them; `[retention] days` wins over it.
pub fn url_retention_days(store: &StoreUrl) -> Result<Option<u32>> {
    match store {
        StoreUrl::Postgres(url) => super::postgres::url_retention_days(url),
        StoreUrl::Sqlite(_) | StoreUrl::Redis(_) => Ok(None),
    }
}

/// When the background pruner first runs after start, and how often after that.
const FIRST_PASS: Duration = Duration::from_secs(60);
const EVERY: Duration = Duration::from_secs(3600);

/// Prunes `queue` in the background, a pass an hour (the first a minute after
/// start), until `stop`: the ledger older than `ledger`, the audit trail older
/// than `audit` (`None`: kept). Many processes on one store may prune at once:
/// each step is a transaction of its own.
pub fn spawn_pruner(
    queue: Queue,
    ledger: Option<Duration>,
    audit: Option<Duration>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if ledger.is_none() && audit.is_none() {
            return;
        }
        let mut wait = FIRST_PASS;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
            wait = EVERY;
            match queue
                .prune(Cutoffs::ages(ledger, audit), Pace::default(), &stop)
                .await
            {
                Ok(p) if p.total() > 0 => tracing::info!(
                    batches = p.batches,
                    messages = p.messages,
                    replies = p.replies,
                    deliveries = p.deliveries,
                    receipts = p.receipts,
                    audit = p.audit,
                    "pruned what is past retention"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning failed; will try again"),
            }
        }
    })
}
