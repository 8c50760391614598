//! Auto-replies: the configured answer to an opt-out or opt-in reply, stored as a
//! batch of one message through the provider the reply came by. It goes through
//! the queue, not straight to the provider, so that it is sent at least once like
//! every other message: it is stored under an idempotency key made from the
//! reply's id before the inbound request is answered, so a provider posting the
//! reply again stores nothing twice, and a crash before the answer makes the
//! provider post it again. It skips the suppression check (its recipient has just
//! opted out), and the claim-time cancel of suppressed recipients leaves batches of
//! source [`AUTO_REPLY_SOURCE`] alone.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::Intake;
use crate::domain::{BatchId, Channel, now_ms};
use crate::queue::{self, AUTO_REPLY_SOURCE, Accepted, Idempotency, NewBatch, NewMessage};

impl Intake {
    /// Stores `body` to `to` through `provider`, once for the reply `reply_id`;
    /// answers the batch's id (the first one's, when the reply was answered
    /// before), or `None` when the provider sends only its own approved templates
    /// and so cannot send a free text.
    pub async fn auto_reply(
        &self,
        provider: &str,
        to: &str,
        body: &str,
        reply_id: &str,
    ) -> Result<Option<BatchId>, queue::Error> {
        let needs_template = self
            .registry
            .route(provider)
            .is_none_or(|route| route.provider.needs_template_code());
        if needs_template {
            return Ok(None);
        }
        let now = now_ms();
        let key = format!("{AUTO_REPLY_SOURCE}:{reply_id}");
        let batch = NewBatch {
            id: BatchId::new(),
            channel: Channel::Sms,
            source: AUTO_REPLY_SOURCE.into(),
            priority: *super::PRIORITY_RANGE.end(),
            send_at_ms: now,
            expires_at_ms: self.deadline(Channel::Sms, provider, None, now, now),
            idempotency: Some(Idempotency {
                // The key alone: a text changed in the configuration meanwhile
                // is no other request.
                request_hash: hex::encode(Sha256::digest(&key)),
                key,
            }),
            report: json!({"accepted": 1, "reply": reply_id}),
            template_id: None,
            template: None,
            // The sender has just written: the answer goes at once, whatever the
            // quiet hours (carriers expect an opt-out confirmed without delay).
            window: None,
            max_cost: None,
            callback_url: None,
            subscriptions: self
                .subscribers
                .of_batch(Channel::Sms, AUTO_REPLY_SOURCE, false),
            messages: vec![NewMessage {
                index: 0,
                provider: provider.into(),
                to: to.into(),
                reference: Some(reply_id.into()),
                subject: None,
                body: body.into(),
                segments: u32::try_from(crate::sms::measure(body).segments).unwrap_or(u32::MAX),
                vars: None,
                due_ms: None,
            }],
        };
        match self.queue.accept(batch).await? {
            Accepted::New(id) | Accepted::Replayed { id, .. } => Ok(Some(id)),
        }
    }
}
