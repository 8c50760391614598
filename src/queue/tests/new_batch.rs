//! The one builder of the batches queue tests store: a [`NewBatch`] of `n`
//! messages with plain defaults, changed field by field where a test needs it.

use serde_json::json;

use crate::domain::{BatchId, Channel, now_ms};
use crate::queue::{BatchTemplate, Idempotency, Kinds, NewBatch, NewMessage, Subscription};

/// Builds a [`NewBatch`] for a test.
///
/// [`TestBatch::sms`] starts from `n` SMS messages for provider `p`, due now at
/// priority 0, from source `test`, with the report `{"accepted": n}`. Message
/// `index` goes to `+8613800{index:06}` with the reference `r{index}`, the body
/// `body {index}`, one segment, no subject and no variables.
#[derive(Debug, Clone)]
pub(crate) struct TestBatch {
    batch: NewBatch,
}

impl TestBatch {
    /// `n` SMS messages with the defaults above.
    pub(crate) fn sms(n: u32) -> Self {
        TestBatch {
            batch: NewBatch {
                id: BatchId::new(),
                channel: Channel::Sms,
                source: "test".into(),
                priority: 0,
                send_at_ms: now_ms(),
                expires_at_ms: None,
                idempotency: None,
                report: json!({"accepted": n}),
                template_id: None,
                template: None,
                callback_url: None,
                subscriptions: Vec::new(),
                window: None,
                max_cost: None,
                messages: (0..n)
                    .map(|index| NewMessage {
                        index,
                        provider: "p".into(),
                        to: format!("+8613800{index:06}"),
                        reference: Some(format!("r{index}")),
                        subject: None,
                        body: format!("body {index}"),
                        segments: 1,
                        vars: None,
                        due_ms: None,
                    })
                    .collect(),
            },
        }
    }

    /// One SMS message to each of `tos`, in order.
    pub(crate) fn sms_to(tos: &[&str]) -> Self {
        let count = u32::try_from(tos.len()).expect("a test batch fits in u32");
        let mut built = Self::sms(count);
        for (m, to) in built.batch.messages.iter_mut().zip(tos) {
            m.to = (*to).to_owned();
        }
        built
    }

    /// On `channel` instead of SMS (addresses stay as they are).
    pub(crate) fn channel(mut self, channel: Channel) -> Self {
        self.batch.channel = channel;
        self
    }

    /// Message `index` due at `due_ms` (ms since the epoch) rather than with the batch.
    pub(crate) fn due(mut self, index: u32, due_ms: i64) -> Self {
        let m = self.batch.messages.iter_mut().find(|m| m.index == index);
        m.expect("a message with that index").due_ms = Some(due_ms);
        self
    }

    /// With the sending window `window` (in `timezone` for unplaced recipients).
    pub(crate) fn window(mut self, window: &str, timezone: &str) -> Self {
        self.batch.window = Some(crate::window::BatchWindow {
            window: crate::window::Window::parse(window).expect("a valid window"),
            timezone: timezone.into(),
        });
        self
    }

    /// Higher goes first.
    /// With a spend cap of `max_cost` millionths.
    pub(crate) fn max_cost(mut self, max_cost: i64) -> Self {
        self.batch.max_cost = Some(max_cost);
        self
    }

    pub(crate) fn source(mut self, source: &str) -> Self {
        self.batch.source = source.into();
        self
    }

    pub(crate) fn priority(mut self, priority: i32) -> Self {
        self.batch.priority = priority;
        self
    }

    /// Due at `send_at_ms` (ms since the epoch) instead of now.
    pub(crate) fn send_at(mut self, send_at_ms: i64) -> Self {
        self.batch.send_at_ms = send_at_ms;
        self
    }

    /// With the deadline `expires_at_ms` (ms since the epoch).
    pub(crate) fn expires_at(mut self, expires_at_ms: i64) -> Self {
        self.batch.expires_at_ms = Some(expires_at_ms);
        self
    }

    /// Every message for `provider` instead of `p`.
    pub(crate) fn provider(mut self, provider: &str) -> Self {
        for m in &mut self.batch.messages {
            m.provider = provider.to_owned();
        }
        self
    }

    /// Stored under the idempotency key `key` for a request hashed as `request_hash`.
    pub(crate) fn idempotency(mut self, key: &str, request_hash: &str) -> Self {
        self.batch.idempotency = Some(Idempotency {
            key: key.into(),
            request_hash: request_hash.into(),
        });
        self
    }

    /// Message `index`'s body is `body(index)`.
    pub(crate) fn bodies(mut self, body: impl Fn(u32) -> String) -> Self {
        for m in &mut self.batch.messages {
            m.body = body(m.index);
        }
        self
    }

    /// Rendered from the stored template `template_id` (if any) whose sources are
    /// `template`: message `index` keeps the variables `vars(index)` (a JSON object).
    pub(crate) fn template(
        mut self,
        template_id: Option<&str>,
        template: BatchTemplate,
        vars: impl Fn(u32) -> serde_json::Value,
    ) -> Self {
        self.batch.template_id = template_id.map(str::to_owned);
        self.batch.template = Some(template);
        for m in &mut self.batch.messages {
            m.vars = Some(vars(m.index).to_string());
        }
        self
    }

    /// Its events go to each of `subscriptions`: (endpoint, the kinds it wants).
    pub(crate) fn subscribed(mut self, subscriptions: &[(&str, Kinds)]) -> Self {
        self.batch.subscriptions = subscriptions
            .iter()
            .map(|(endpoint, kinds)| Subscription {
                endpoint: (*endpoint).to_owned(),
                kinds: *kinds,
            })
            .collect();
        self
    }

    /// With its own callback URL `url`.
    pub(crate) fn callback(mut self, url: &str) -> Self {
        self.batch.callback_url = Some(url.to_owned());
        self
    }

    /// The batch.
    pub(crate) fn build(self) -> NewBatch {
        self.batch
    }
}

/// A batch of `n` SMS messages for provider `p` (see [`TestBatch::sms`]), of
/// `priority`, due at `send_at_ms`: the suite's most common batch.
pub(crate) fn batch(n: u32, priority: i32, send_at_ms: i64) -> NewBatch {
    TestBatch::sms(n)
        .priority(priority)
        .send_at(send_at_ms)
        .build()
}

/// A batch for provider `p` whose recipients are `tos`, in order.
pub(crate) fn batch_to(tos: &[&str]) -> NewBatch {
    TestBatch::sms_to(tos).build()
}
