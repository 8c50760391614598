//! Herald: an asynchronous bulk-messaging dispatcher.
//!
//! Each module is a file or a folder of files named for what they own; a
//! module imports only modules that do not import it back.
//!
//! A batch comes in through [`api`] (or the [`cli`]), is checked and rendered by
//! [`intake`] with [`template`], and stored whole by [`queue`]. The [`worker`] pool
//! claims due messages, waits on [`ratelimit`], sends through a [`provider`] (or,
//! while its [`circuit`] is open, the next one of the channel's failover list) and
//! settles the outcome back in bulk. [`app`] wires it together and owns the
//! shutdown order; [`config`] and [`telemetry`] set it up; [`domain`] holds the
//! pure types everything shares (with the [`domain::Secret`],
//! [`domain::SigningSecret`], [`domain::HttpUrl`] and [`domain::StoreUrl`] settings, so that no module reaches up into [`config`]
//! for them); [`recipient`] normalises phone numbers and
//! mailboxes and [`sms`] measures an SMS text's encoding and segments, both pure;
//! [`csv_input`] reads CSV files as spreadsheets export them; [`ingest`] takes jobs
//! from an existing application's Redis list or AMQP queue into [`intake`]; [`auth`]
//! makes and checks API tokens; [`metrics`] counts what the API and the workers do.
//! [`webhook`] posts status events to the application's endpoints, signed.
//! [`backoff`] is the one schedule of waits after failures that retries, ingest
//! and the circuits share. [`window`] holds quiet hours: a sending window in each
//! recipient's local time, and when it next opens. [`web`] is the page served at `/`, which drives the API from a browser.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backoff;
pub mod circuit;
pub mod cli;
pub mod config;
pub mod csv_input;
pub mod domain;
pub mod ingest;
pub mod intake;
pub mod metrics;
pub mod provider;
pub mod queue;
pub mod ratelimit;
pub mod recipient;
pub mod sms;
pub mod telemetry;
pub mod template;
pub mod web;
pub mod webhook;
pub mod window;
pub mod worker;
