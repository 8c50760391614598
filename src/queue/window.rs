//! Quiet hours at claim: a claimed message whose batch's sending window is closed
//! for its recipient now (it was queued behind others, or retried, past the
//! window's end) goes back to wait for the next opening, no attempt counted.
//! Each batch's window is read from the store once and kept.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use super::{Claimed, Engine, Outcome, Result, Settlement};
use crate::domain::BatchId;
use crate::window::BatchWindow;

/// The batches' windows read so far (`None`: the batch has none).
#[derive(Default, Clone)]
pub(super) struct Windows(Arc<Mutex<HashMap<BatchId, Option<Arc<BatchWindow>>>>>);

/// Batches whose windows are kept before the cache starts afresh.
const KEPT: usize = 1_024;

impl Windows {
    /// Takes out of `claimed` the messages whose window is closed at `now`, and
    /// answers their releases to the next opening.
    pub(super) async fn hold_closed(
        &self,
        engine: &dyn Engine,
        claimed: &mut Vec<Claimed>,
        now: Timestamp,
    ) -> Result<Vec<Settlement>> {
        let mut windows = HashMap::new();
        for id in claimed.iter().map(|c| c.batch_id) {
            if let Entry::Vacant(slot) = windows.entry(id) {
                slot.insert(self.of(engine, id).await?);
            }
        }
        let mut held = Vec::new();
        claimed.retain(|c| {
            let Some(window) = windows.get(&c.batch_id).and_then(Option::as_ref) else {
                return true;
            };
            let opening = window.opening_for(c.channel, &c.to, now);
            if opening <= now {
                return true;
            }
            held.push(Settlement {
                lease: c.lease,
                outcome: Outcome::Release {
                    at_ms: opening.as_millisecond(),
                    error: None,
                },
                sent_by: None,
            });
            false
        });
        Ok(held)
    }

    /// Batch `id`'s window, from the cache or the store.
    async fn of(&self, engine: &dyn Engine, id: BatchId) -> Result<Option<Arc<BatchWindow>>> {
        if let Some(known) = self.lock().get(&id) {
            return Ok(known.clone());
        }
        let window = engine
            .window(id)
            .await?
            .map(|stored| {
                BatchWindow::from_stored(&stored)
                    .map(Arc::new)
                    .ok_or_else(|| {
                        super::Error::Corrupt(format!("batch {id}'s window is not readable"))
                    })
            })
            .transpose()?;
        let mut kept = self.lock();
        if kept.len() >= KEPT {
            kept.clear();
        }
        kept.insert(id, window.clone());
        Ok(window)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BatchId, Option<Arc<BatchWindow>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
