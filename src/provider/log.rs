//! The log provider: "delivers" by writing each message to the log, so a new user
//! sees Herald work before configuring a real service: the rendered message — who
//! it went to, its subject and its text — at info. It is the one part of Herald
//! that logs a body at info: what it sends is meant to be read there, and nothing
//! leaves the machine.

use async_trait::async_trait;

use super::{Error, Message, Provider, Receipt};

/// Writes each message to the log instead of sending it; every send succeeds.
pub struct LogProvider {
    name: String,
}

impl LogProvider {
    /// A log provider whose lines carry its configured `name`.
    pub fn new(name: &str) -> Self {
        LogProvider {
            name: name.to_string(),
        }
    }
}

#[async_trait]
impl Provider for LogProvider {
    async fn send(&self, message: &Message) -> Result<Receipt, Error> {
        // String fields are written quoted and escaped: a multi-line text stays on
        // the message's one line. An SMS has no subject, and no `subject` field.
        tracing::info!(
            provider = %self.name,
            id = %message.id,
            channel = %message.channel,
            to = %message.to,
            subject = message.subject.as_deref(),
            text = message.body.as_str(),
            "message delivered to the log"
        );
        Ok(Receipt {
            provider_message_id: None,
            segment_ids: Vec::new(),
        })
    }
}
