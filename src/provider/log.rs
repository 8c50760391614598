//! The log provider: "delivers" by writing each message to the log, so a new user
//! sees Herald work before configuring a real service.

use async_trait::async_trait;

use super::{Error, Message, Provider, Receipt};

/// Characters of the body shown at info level; the whole body is logged at debug.
const PREVIEW_CHARS: usize = 60;

pub struct LogProvider {
    name: String,
}

impl LogProvider {
    pub fn new(name: &str) -> Self {
        LogProvider {
            name: name.to_string(),
        }
    }
}

#[async_trait]
impl Provider for LogProvider {
    async fn send(&self, message: &Message) -> Result<Receipt, Error> {
        let preview: String = message.body.chars().take(PREVIEW_CHARS).collect();
        tracing::info!(
            provider = %self.name,
            id = %message.id,
            channel = %message.channel,
            to = %message.to,
            subject = message.subject.as_deref().unwrap_or(""),
            preview = %preview,
            "message delivered to the log"
        );
        tracing::debug!(id = %message.id, body = %message.body, "full message body");
        Ok(Receipt {
            provider_message_id: None,
        })
    }
}
