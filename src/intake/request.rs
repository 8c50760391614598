//! What a batch submit says: the request body the API takes, its recipients
//! and its text (inline or a stored template).

use serde::{Deserialize, Deserializer, Serialize};

use super::*;
use crate::domain::Channel;
use crate::template::Vars;

/// Text with something in it: not empty, not only white space.
pub const NOT_BLANK: &str = r"\S";
/// One line of text, an e-mail subject's template (whose final `\n` is dropped).
pub const ONE_LINE: &str = r"^[^\r\n]*\n?$";

/// A batch as the API takes it: exactly one of `template` and `template_id`, and
/// an e-mail batch's template has a subject.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "oneOf" = [{"required": ["template"]}, {"required": ["template_id"]}],
    "anyOf" = [
        {"properties": {"channel": {"const": "sms"}}},
        {"properties": {"template": {"required": ["subject"], "properties": {"subject": {"type": "string"}}}}},
    ],
    "not" = {"required": ["expires_at", "valid_for"]},
), transform = recipients_required)]
pub struct BatchRequest {
    pub channel: Channel,
    /// The text, inline; or name a stored template with `template_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "TemplateSpec")]
    pub template: Option<TemplateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "String",
        description = "Instead of `template`: a stored template of the batch's channel."
    )]
    pub template_id: Option<String>,
    /// At least one. (An upload's options line has none: its recipients come apart.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1))]
    pub recipients: Vec<RecipientSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(
        default,
        deserialize_with = "whole_number",
        skip_serializing_if = "Option::is_none"
    )]
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
    #[serde(
        default,
        deserialize_with = "whole_number",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = crate::domain::MAX_VALID_FOR_SECS))]
    pub valid_for: Option<i64>,
    /// Reject recipients who were sent the same message (same subject and body)
    /// within `recipients.recent_window_secs`, as `recent_duplicate`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reject_recent_duplicates: bool,
    /// An http(s) URL that every event of this batch is posted to, signed with
    /// `webhook.callback_secret` (which must be set), besides the configured
    /// `[[webhooks]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uri"), pattern(crate::domain::HTTP_URL_PATTERN))]
    pub callback_url: Option<String>,
    /// Quiet hours: the sending window in each recipient's local time, `HH:MM-HH:MM`
    /// optionally after days (`mon-fri 08:00-21:00`); overrides the configured
    /// `[windows]`. A message outside it waits until it opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = "08:00-21:00")]
    pub window: Option<String>,
    /// Send at any hour, whatever window is configured (login codes and other
    /// transactional messages). Not with `window`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_window: bool,
    /// The IANA time zone (`Europe/London`) of recipients a number does not
    /// place: e-mail, and numbers of no known zone. Default `[windows] timezone`,
    /// else UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The most the batch may spend, in its provider's currency (which must have
    /// prices): refused when the estimate is over it, and held when sending would
    /// pass it, until resumed with a higher one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.000001))]
    pub max_cost: Option<f64>,
}

/// A batch body's `recipients` are required, though an upload's options, which
/// are read as the same type, have none (so serde defaults them).
fn recipients_required(schema: &mut schemars::Schema) {
    if let Some(required) = schema
        .get_mut("required")
        .and_then(serde_json::Value::as_array_mut)
    {
        required.push("recipients".into());
    }
}

/// Reads an optional integer written as JSON Schema's `integer` allows: `4`, or a
/// number with no fraction such as `4.0` (which some JSON writers make of every
/// number); `4.5` and numbers beyond `T` are refused.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = match (number.as_i64(), number.as_f64()) {
        (Some(i), _) => Some(i),
        // `i64::MAX as f64` rounds up to 2^63, itself out of range.
        (None, Some(f)) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => {
            Some(f as i64)
        }
        _ => None,
    };
    whole
        .and_then(|i| T::try_from(i).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("expected a whole number in range, not {number}")))
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    #[schemars(pattern(NOT_BLANK))]
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(ONE_LINE))]
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
    #[schemars(
        description = "Yours: shown in the ledger, sent to the provider. At most 256 bytes of UTF-8 (64 characters always fit).",
        length(max = MAX_REF_BYTES / 4)
    )]
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
