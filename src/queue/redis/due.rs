//! The Redis engine's next due time: when a claim for a provider could next take
//! a message, read from the heads of its sorted sets so that an idle claimer
//! writes nothing.

use super::Redis;
use crate::queue::Result;

impl Redis {
    /// [`Engine::next_due`](crate::queue::Engine::next_due): the lowest score of
    /// each of the provider's ready sets (one per priority in use, scored by due
    /// time) and of its leased set (leases' ends and unknown outcomes' next
    /// checks); read-only commands, in one pipeline after the priorities are read.
    pub(super) async fn earliest_due(&self, provider: &str) -> Result<Option<i64>> {
        let priorities = self.priorities(provider).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(self.key(&format!("leased:{provider}")))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        for priority in &priorities {
            pipe.cmd("ZRANGE")
                .arg(self.key(&format!("ready:{priority}:{provider}")))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let heads: Vec<Vec<(String, f64)>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(heads.iter().flatten().map(|(_, score)| *score as i64).min())
    }
}
