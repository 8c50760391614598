//! Status webhooks: what Herald tells an application about its messages, posted
//! as signed JSON arrays of events to the configured `[[webhooks]]` endpoints and
//! to a batch's own `callback_url`.
//!
//! - `sign`: Standard Webhooks secrets, signatures and request ids.

mod sign;

pub use sign::{MIN_SECRET_BYTES, SigningSecret, request_id};

#[cfg(test)]
mod tests;
