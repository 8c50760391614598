//! The audit trail as stored: what an entry holds, the actions it names, and the
//! crate-private [`AuditStore`] seam every engine implements in a table (or keys)
//! of its own. [`crate::audit`] records through it.

use std::fmt;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Serialize;

use super::{Queue, Result};

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum AuditAction {
    /// A batch was submitted (its target is the batch id when accepted).
    #[serde(rename = "submit")]
    Submit,
    #[serde(rename = "pause")]
    Pause,
    #[serde(rename = "resume")]
    Resume,
    #[serde(rename = "cancel")]
    Cancel,
    #[serde(rename = "retry")]
    Retry,
    #[serde(rename = "template.create")]
    TemplateCreate,
    #[serde(rename = "template.update")]
    TemplateUpdate,
    #[serde(rename = "template.delete")]
    TemplateDelete,
    #[serde(rename = "suppression.add")]
    SuppressionAdd,
    #[serde(rename = "suppression.remove")]
    SuppressionRemove,
    /// An address erased from the ledger.
    #[serde(rename = "erase")]
    Erase,
    /// Webhook deliveries made due again.
    #[serde(rename = "webhook.replay")]
    WebhookReplay,
    /// A request presented a token this server does not accept.
    #[serde(rename = "token.rejected")]
    TokenRejected,
}

impl AuditAction {
    pub const ALL: [AuditAction; 13] = [
        AuditAction::Submit,
        AuditAction::Pause,
        AuditAction::Resume,
        AuditAction::Cancel,
        AuditAction::Retry,
        AuditAction::TemplateCreate,
        AuditAction::TemplateUpdate,
        AuditAction::TemplateDelete,
        AuditAction::SuppressionAdd,
        AuditAction::SuppressionRemove,
        AuditAction::Erase,
        AuditAction::WebhookReplay,
        AuditAction::TokenRejected,
    ];

    /// The name stored and shown: `submit`, `template.create`, `token.rejected`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Submit => "submit",
            AuditAction::Pause => "pause",
            AuditAction::Resume => "resume",
            AuditAction::Cancel => "cancel",
            AuditAction::Retry => "retry",
            AuditAction::TemplateCreate => "template.create",
            AuditAction::TemplateUpdate => "template.update",
            AuditAction::TemplateDelete => "template.delete",
            AuditAction::SuppressionAdd => "suppression.add",
            AuditAction::SuppressionRemove => "suppression.remove",
            AuditAction::Erase => "erase",
            AuditAction::WebhookReplay => "webhook.replay",
            AuditAction::TokenRejected => "token.rejected",
        }
    }

    /// The action named `name`, as [`AuditAction::as_str`] writes it.
    pub fn parse(name: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One action to record.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    pub at_ms: i64,
    pub actor: String,
    pub action: AuditAction,
    /// What it acted on: a batch id, a template id, an address, an endpoint, a
    /// request path; empty when nothing in particular.
    pub target: String,
    /// `ok` or an HTTP status.
    pub result: String,
}

/// One recorded action, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AuditEntry {
    /// Its place in the trail: later entries have higher ones.
    pub seq: i64,
    /// When, in ms since the epoch.
    pub at_ms: i64,
    /// The token's name, `anonymous`, `cli` or `unknown`.
    pub actor: String,
    pub action: String,
    pub target: String,
    /// `ok`, or the HTTP status the action was refused with.
    pub result: String,
}

/// A page of the trail: newest first, below `before` (a seq).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub action: Option<AuditAction>,
    pub actor: Option<String>,
    pub before: Option<i64>,
    pub limit: u32,
}

/// The trail's storage seam, which every engine implements in a table (or keys)
/// of its own.
#[async_trait]
pub(crate) trait AuditStore: Send + Sync + 'static {
    /// Appends `entry`, taking the next seq.
    async fn record_audit(&self, entry: NewAuditEntry) -> Result<()>;
    /// Up to `query.limit` entries, newest first, filtered as `query` says.
    async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>>;
    /// Removes up to `limit` entries recorded before `before_ms`, oldest first;
    /// answers how many.
    async fn prune_audit(&self, before_ms: i64, limit: u32) -> Result<u64>;
}

impl Queue {
    /// Appends one entry to the audit trail.
    pub(crate) async fn record_audit(&self, entry: NewAuditEntry) -> Result<()> {
        self.audit.record_audit(entry).await
    }

    /// One page of the audit trail, newest first.
    pub async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        self.audit.audit(query).await
    }

    /// The seam itself, for the pruner.
    pub(super) fn audit_store(&self) -> &dyn AuditStore {
        self.audit.as_ref()
    }
}
