//! Status webhooks: what Herald tells an application about its messages, posted
//! as signed JSON arrays of events to the configured `[[webhooks]]` endpoints and
//! to a batch's own `callback_url`.
//!
//! - `sign`: Standard Webhooks signatures and request ids.
//! - `subscribers`: which endpoints a batch's events go to.
//! - `post`: the posting loop: claim, group, post signed, settle.
//! - `retry`: when a failed post is tried again, and when it is given up.

mod post;
mod retry;
mod sign;
mod subscribers;

pub use post::{Error, Poster};
pub use retry::{BACKOFF, Posted, RetryRule};
pub use sign::{headers, request_id, sign};
pub use subscribers::Subscribers;
