//! The store's one poster. On the embedded store a single process posts webhook
//! deliveries: the one holding `poster.lock` in the store's directory, taken at
//! its first claim and kept until it ends (the kernel lets go of it however the
//! process ends, and another process takes it at its next claim). The leases of
//! the deliveries it has claimed live in its memory rather than in the store, so
//! a claim is a read and only a settlement writes; a lease that lapses is
//! forgotten at the next claim, and its delivery, still pending in the store, is
//! claimed again. A process that does not hold the lock claims nothing.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use crate::queue::{DeliveryKey, Error, Result};

/// The poster's state of each store this process opened, by lock path: shared by
/// every handle on the store, kept until the process ends.
static POSTERS: LazyLock<Mutex<HashMap<PathBuf, Arc<Mutex<Poster>>>>> =
    LazyLock::new(Mutex::default);

/// A handle's way to its store's poster state.
#[derive(Clone)]
pub(in crate::queue::sqlite) struct Posting {
    poster: Arc<Mutex<Poster>>,
}

/// What this process knows as its store's poster.
struct Poster {
    path: PathBuf,
    /// The lock, once this process holds it.
    lock: Option<File>,
    /// The deliveries claimed and not settled, by row: the claim's token and the
    /// lease's end (ms).
    leased: HashMap<i64, Lease>,
}

#[derive(Clone, Copy)]
struct Lease {
    token: i64,
    until: i64,
}

/// The poster's leases while a claim or settlement holds them.
pub(in crate::queue::sqlite) struct Leases<'a> {
    poster: MutexGuard<'a, Poster>,
}

impl Posting {
    pub(in crate::queue::sqlite) fn new(dir: &Path) -> Posting {
        let path = dir.join("poster.lock");
        let mut posters = POSTERS.lock().unwrap_or_else(|p| p.into_inner());
        let poster = posters
            .entry(path.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Poster {
                    path,
                    lock: None,
                    leased: HashMap::new(),
                }))
            })
            .clone();
        Posting { poster }
    }

    /// The leases, for a claim: `None` while another process holds the lock.
    /// Leases that lapsed by `now` are forgotten.
    pub(in crate::queue::sqlite) fn claiming(&self, now: i64) -> Result<Option<Leases<'_>>> {
        let mut poster = self.lock();
        if poster.lock.is_none() {
            let failed = |e: std::io::Error| {
                Error::Unavailable(format!("cannot lock {}: {e}", poster.path.display()))
            };
            let file = File::options()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&poster.path)
                .map_err(failed)?;
            match file.try_lock() {
                Ok(()) => poster.lock = Some(file),
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(failed(e)),
            }
        }
        poster.leased.retain(|_, lease| lease.until > now);
        Ok(Some(Leases { poster }))
    }

    /// The leases, for a settlement.
    pub(in crate::queue::sqlite) fn settling(&self) -> Leases<'_> {
        Leases {
            poster: self.lock(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Poster> {
        self.poster.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Leases<'_> {
    /// How many deliveries are leased.
    pub(in crate::queue::sqlite) fn len(&self) -> usize {
        self.poster.leased.len()
    }

    /// Whether the delivery in `row` is leased.
    pub(in crate::queue::sqlite) fn holds(&self, row: i64) -> bool {
        self.poster.leased.contains_key(&row)
    }

    /// Leases `rows` under `token` until `until`.
    pub(in crate::queue::sqlite) fn lease(&mut self, rows: &[i64], token: i64, until: i64) {
        let leased = &mut self.poster.leased;
        leased.extend(rows.iter().map(|&row| (row, Lease { token, until })));
    }

    /// Ends the lease `key` names, if it is still the delivery's: whether it was.
    pub(in crate::queue::sqlite) fn end(&mut self, key: &DeliveryKey) -> bool {
        let leased = &mut self.poster.leased;
        match leased.get(&key.row) {
            Some(lease) if lease.token == key.token => leased.remove(&key.row).is_some(),
            _ => false,
        }
    }

    /// Forgets the leases of `rows`, whatever claim took them.
    pub(in crate::queue::sqlite) fn forget(&mut self, rows: &[i64]) {
        for row in rows {
            self.poster.leased.remove(row);
        }
    }
}
