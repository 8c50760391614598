//! The web page in a real browser: `tests/browser/page.spec.mjs` drives headless
//! Chromium through Playwright against a Herald that asks for an API token and
//! whose provider refuses the numbers ending in 7 on their first attempt, so the
//! page has failures to show and retry, and a reply it lists.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::{ProviderServer, Reply, route_all_to, spawn_app};
use crate::inbound::{SECRET, signed};

/// The browser script's whole run, Chromium's start included.
const BROWSER_RUN: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_sends_200_shows_the_bar_reach_100_retries_failures_and_controls_a_batch_in_chromium()
 {
    let server = ProviderServer::start().await;
    let refused = Arc::new(Mutex::new(HashSet::new()));
    server.behave(move |n, message| {
        let to = message["to"].as_str().unwrap_or_default().to_owned();
        if to.ends_with('7') && refused.lock().unwrap().insert(to) {
            Reply::status(400).body(r#"{"error":"rejected","message":"try again later"}"#)
        } else {
            Reply::ok().body(&format!(r#"{{"id":"p-{n}"}}"#))
        }
    });
    let (token, hash) = herald::auth::new_token().unwrap();
    let app = spawn_app(|config| {
        config.auth.tokens = vec![hash.into()];
        // Signed, so that it takes replies.
        let mut provider = server.provider(Some(SECRET));
        // Slow enough (about 2 s for the batch) for the bar to be seen on its way.
        provider.rate_per_sec = Some(100.0);
        route_all_to(config, provider);
    })
    .await;

    // A reply for the Replies view, from a number the page never messages.
    let reply = r#"{"id":"page-1","from":"+8613900000001","to":"+15550001111","body":"收到，谢谢","at":"2025-06-01T08:30:00Z"}"#;
    let (status, answer) = app.webhook_reply(reply, &signed(reply)).await;
    assert_eq!(status, 200, "{answer}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/page.spec.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&app.url)
        .arg(&token)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_RUN, run)
        .await
        .expect("the browser test ends within its time")
        .expect("node runs: install Node.js 20+ and `npm ci` in tests/browser (scripts/test does)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    // What the browser did reached the provider: 200 messages, the 20 refused
    // ones twice; the scheduled batch it cancelled sent nothing, and the refused
    // batch was not stored.
    let listed = app
        .client
        .get(format!("{}/v1/batches?limit=10", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let page: serde_json::Value = listed.json().await.unwrap();
    let batches = page["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2, "{page}");
    assert_eq!(batches[0]["state"], "cancelled", "{page}");
    assert_eq!(batches[0]["counts"]["cancelled"], 2, "{page}");
    assert_eq!(batches[1]["counts"]["sent"], 200, "{page}");
    assert_eq!(batches[1]["counts"]["failed"], 0, "{page}");
    assert_eq!(server.count(), 220);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_serves_the_page_and_v1_describes_the_api() {
    let app = spawn_app(|_| {}).await;
    let page = app.client.get(&app.url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("/assets/app.js"));
    let script = app
        .client
        .get(format!("{}/assets/app.js", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );

    let (status, index) = app.get("/v1").await;
    assert_eq!(status, 200, "{index}");
    assert_eq!(index["name"], "herald", "{index}");
    assert!(index["routes"]["POST /v1/batches"].is_string(), "{index}");
}
