//! Which message a segment's `message_id` belongs to. A long message's receipt
//! may come for any of its segments; the message is recorded under its first
//! segment's id, and this map, in memory, takes the others to it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The most segment ids remembered; beyond it the oldest are forgotten.
const KEPT: usize = 200_000;

/// Segment ids (after the first) to their message's first segment id.
#[derive(Debug, Default)]
pub(crate) struct Aliases {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    first_of: HashMap<String, String>,
    order: VecDeque<String>,
}

impl Aliases {
    /// Remembers that `others` are segments of the message recorded as `first`.
    pub fn record(&self, first: &str, others: &[String]) {
        if others.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for id in others {
            if inner
                .first_of
                .insert(id.clone(), first.to_string())
                .is_none()
            {
                inner.order.push_back(id.clone());
            }
        }
        while inner.order.len() > KEPT {
            if let Some(old) = inner.order.pop_front() {
                inner.first_of.remove(&old);
            }
        }
    }

    /// The id the message of segment `id` is recorded under: `id` itself when
    /// it is a first segment or unknown here.
    pub fn message_of(&self, id: &str) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .first_of
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_segment_leads_to_the_first() {
        let aliases = Aliases::default();
        aliases.record("a1", &["a2".into(), "a3".into()]);
        assert_eq!(aliases.message_of("a3"), "a1");
        assert_eq!(aliases.message_of("a1"), "a1");
        assert_eq!(aliases.message_of("zz"), "zz");
    }
}
