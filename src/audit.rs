//! The audit trail: who did what to which batch, template or address, when, and
//! how it ended. Every operator action through the API (and the CLI when it acts
//! on the store itself) is recorded by the [`Audit`] handle, right after the
//! action's own transaction, with the name of the token that asked for it. Entries
//! hold names, ids and addresses, never a secret: a token is named, never shown.
//!
//! The trail has its own retention (`[audit] retention_days`, longer than the
//! ledger's), pruned by the same pass as the ledger (see [`crate::queue::Pruned`]).

use crate::domain::now_ms;
pub use crate::queue::{AuditAction, AuditEntry, AuditQuery};
use crate::queue::{NewAuditEntry, Queue, Result};

/// Who acted: a token's name, `anonymous` (no tokens are configured), `cli`
/// (the command line on the store itself) or `unknown` (a token that was refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// A caller presenting the token named `name`.
    pub fn token(name: &str) -> Actor {
        Actor(name.to_owned())
    }

    /// A caller of a server that asks for no token.
    pub fn anonymous() -> Actor {
        Actor("anonymous".into())
    }

    /// A caller whose token was refused.
    pub fn unknown() -> Actor {
        Actor("unknown".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How an action ended: `ok`, or the HTTP status it was refused with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Status(u16),
}

impl Outcome {
    /// `ok` or the status, as stored.
    pub fn to_stored(self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Status(code) => code.to_string(),
        }
    }
}

/// The handle the API records through; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    queue: Queue,
}

impl Audit {
    pub fn new(queue: Queue) -> Audit {
        Audit { queue }
    }

    /// Records that `actor` did `action` to `target`, ending as `outcome`. A
    /// failure to record is logged, never the action's failure: the action has
    /// already happened.
    pub async fn record(
        &self,
        actor: &Actor,
        action: AuditAction,
        target: impl Into<String>,
        outcome: Outcome,
    ) {
        let entry = NewAuditEntry {
            at_ms: now_ms(),
            actor: actor.as_str().to_owned(),
            action,
            target: target.into(),
            result: outcome.to_stored(),
        };
        if let Err(e) = self.queue.record_audit(entry).await {
            tracing::warn!(error = %e, %action, "recording an audit entry failed");
        }
    }

    /// One page of the trail, newest first.
    pub async fn list(&self, query: AuditQuery) -> Result<Vec<AuditEntry>> {
        self.queue.audit(query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_reads_back_from_its_name() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                serde_json::json!(action.as_str())
            );
        }
        assert_eq!(AuditAction::parse("delete everything"), None);
    }

    #[test]
    fn an_outcome_is_stored_as_ok_or_its_status() {
        assert_eq!(Outcome::Ok.to_stored(), "ok");
        assert_eq!(Outcome::Status(409).to_stored(), "409");
    }
}
