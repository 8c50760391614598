//! The pre-flight report a submit answers with: rejections, SMS encodings and
//! segments, cost and time estimates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::BatchId;
use crate::provider::Route;
use crate::sms::{Encoding, Segments};

/// One recipient that will not be sent to, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rejection {
    pub index: usize,
    pub to: String,
    /// `invalid_address`, `invalid_ref`, `missing_variable`, `render_failed`,
    /// `duplicate`, `suppressed` or `recent_duplicate`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// For a `duplicate`: the index of the recipient's first occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_index: Option<usize>,
    pub detail: String,
}

/// The answer to a submit: what was (or, on a dry run, would be) stored and what not.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Report {
    /// Absent on a dry run: nothing was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uuid"))]
    pub batch_id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    pub accepted: usize,
    pub rejected: Vec<Rejection>,
    /// The rejections by reason: how many, and which indices.
    pub rejections: BTreeMap<String, Group>,
    /// The provider the accepted messages go to.
    pub provider: String,
    /// For SMS: the segments the accepted messages cost, by encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsSummary>,
    /// The estimated cost, when the provider has prices configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// How long until the accepted messages are sent: the messages already queued
    /// on the provider (up to 100,000) and then these, at the provider's rate limits
    /// or, without any, at the rate this process sent through it over the last
    /// minute; absent when it has neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// How many accepted recipients are at one of the provider's per-recipient
    /// caps now (`per_recipient`), so their messages wait for it; absent when the
    /// provider has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by_recipient_caps: Option<usize>,
    /// The batch's deadline (RFC 3339): a message not sent by then is `expired`.
    /// Absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: Option<String>,
    /// The batch's sending window, when it has one, and how many recipients wait
    /// for it to open, by when it opens. Absent when messages go at any hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<super::WindowReport>,
    /// On a dry run: the first [`PREVIEW_MESSAGES`] accepted messages as they
    /// would be sent. Absent from a stored batch's report, which would otherwise
    /// keep message bodies in every idempotent replay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview: Vec<Preview>,
}

/// One accepted message as it would be sent, for a dry run's preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Preview {
    /// The recipient's index in the batch.
    pub index: usize,
    /// The normalized address.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
    /// For SMS: `gsm7` or `ucs2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// For SMS: the segments the message is billed as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<usize>,
}

/// The SMS segments of a batch's accepted messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SmsSummary {
    pub segments: usize,
    pub gsm7: EncodingCount,
    pub ucs2: EncodingCount,
}

/// Messages of one encoding and the segments they take.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EncodingCount {
    pub messages: usize,
    pub segments: usize,
}

impl SmsSummary {
    pub(super) fn add(&mut self, s: Segments) {
        self.segments += s.segments;
        let count = match s.encoding {
            Encoding::Gsm7 => &mut self.gsm7,
            Encoding::Ucs2 => &mut self.ucs2,
        };
        count.messages += 1;
        count.segments += s.segments;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Cost {
    pub amount: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// The recipients rejected for one reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Group {
    pub count: usize,
    pub indices: Vec<usize>,
}

impl Report {
    pub(super) fn new(
        batch_id: Option<BatchId>,
        route: &Route,
        accepted: usize,
        sms: Option<SmsSummary>,
        rejected: Vec<Rejection>,
        preview: Vec<Preview>,
    ) -> Report {
        let mut rejections: BTreeMap<String, Group> = BTreeMap::new();
        for r in &rejected {
            let group = rejections.entry(r.reason.clone()).or_default();
            group.count += 1;
            group.indices.push(r.index);
        }
        let segments = sms.as_ref().map_or(0, |s| s.segments);
        Report {
            batch_id: batch_id.map(|id| id.to_string()),
            dry_run: batch_id.is_none(),
            accepted,
            rejected,
            rejections,
            provider: route.name.clone(),
            cost: route.price.as_ref().map(|p| Cost {
                // Rounded to a millionth: prices are given to a few decimals.
                amount: (p.cost(accepted, segments) * 1e6).round() / 1e6,
                currency: p.currency.clone(),
            }),
            // Set by the caller, who knows what the batch waits behind (`eta`).
            eta_seconds: None,
            held_by_recipient_caps: None,
            expires_at: None,
            window: None,
            sms,
            preview: if batch_id.is_none() {
                preview
            } else {
                Vec::new()
            },
        }
    }
}
