//! Status webhooks: what Herald tells an application about its messages, posted
//! as signed JSON arrays of events to the configured `[[webhooks]]` endpoints and
//! to a batch's own `callback_url`.
//!
//! - `sign`: Standard Webhooks signatures and request ids.
//! - `subscribers`: which endpoints a batch's events go to.

mod sign;
mod subscribers;

pub use sign::{headers, request_id, sign};
pub use subscribers::Subscribers;

#[cfg(test)]
mod tests;
