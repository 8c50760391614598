//! The HTTP API end to end: the accept report, every refusal with its status, code
//! and field, idempotency, the ledger, batch control, a person's messages found,
//! exported and erased, and the seed's `/send-sms`.
//! This file holds what the parts share: an app with small limits and the
//! provider's delivery counts.

mod accept;
mod control;
mod idempotency;
mod ledger;
mod person;
mod refusals;
mod send_sms;

use std::collections::HashMap;
use std::time::Duration;

use crate::helpers::{ProviderServer, TestApp, route_all_to, spawn_app};

const FINISH: Duration = Duration::from_secs(10);

/// Herald delivering every channel to `server`, with small limits the refusal tests reach.
async fn app_sending_to(server: &ProviderServer) -> TestApp {
    spawn_app(|config| {
        route_all_to(config, server.provider(None));
        // The seed's requests carry Chinese mobiles without a country code.
        config.recipients.default_region = Some("CN".parse().unwrap());
        config.limits.max_recipients = 30;
        config.limits.max_body_bytes = 16 * 1024;
        config.limits.max_upload_bytes = 16 * 1024;
    })
    .await
}

/// How many requests the provider received for each message id.
fn deliveries(server: &ProviderServer) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for received in server.received() {
        *counts.entry(received.key).or_insert(0) += 1;
    }
    counts
}
