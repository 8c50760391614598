//! What a batch submit says: the request body the API takes, its recipients
//! and its text (inline or a stored template).

use serde::{Deserialize, Serialize};

use super::*;
use crate::domain::Channel;
use crate::template::Vars;

/// A batch as the API takes it.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub channel: Channel,
    /// The text, inline; or name a stored template with `template_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(description = "Instead of `template`: a stored template.")]
    pub template_id: Option<String>,
    /// Absent in an upload's options, whose recipients come apart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<RecipientSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = *PRIORITY_RANGE.start(), max = *PRIORITY_RANGE.end()))]
    pub priority: Option<i32>,
    /// RFC 3339, e.g. `2026-12-01T08:00:00+08:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub send_at: Option<String>,
    /// The deadline, RFC 3339: a message not sent by then is `expired`, never
    /// sent after it. Give this or `valid_for`, not both; neither: the configured
    /// default for the provider or channel, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: Option<String>,
    /// The deadline as seconds from when the batch is due (`send_at`, or now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub valid_for: Option<i64>,
    /// Reject recipients who were sent the same message (same subject and body)
    /// within `recipients.recent_window_secs`, as `recent_duplicate`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reject_recent_duplicates: bool,
    /// An http(s) URL that every event of this batch is posted to, signed with
    /// `webhook.callback_secret` (which must be set), besides the configured
    /// `[[webhooks]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uri"))]
    pub callback_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The stored template this is, when it is one: its id is kept with the batch
    /// and each recipient's vars with its message, for providers that render it.
    #[serde(skip)]
    pub stored_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientSpec {
    #[schemars(description = "A phone number or an e-mail address.")]
    pub to: String,
    #[serde(default, skip_serializing_if = "Vars::is_empty")]
    #[schemars(description = "The template's variables.")]
    pub vars: Vars,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    #[schemars(description = "Yours: shown in the ledger, sent to the provider.")]
    pub reference: Option<String>,
}

/// How each recipient's message text is made.
pub enum Body {
    /// Rendered per recipient.
    Template(TemplateSpec),
    /// The same text for everyone, sent as is (the classic jobs' `content`, and
    /// for e-mail their `title` as the subject).
    Literal {
        subject: Option<String>,
        body: String,
    },
}
