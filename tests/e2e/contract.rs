//! `/openapi.json` held to the server by a property-based run: Schemathesis
//! (installed by `scripts/test`) generates requests for every operation from the
//! document a running Herald serves — with an API token configured, messages
//! going to the log provider — and the run fails on any 5xx, any answer outside
//! its documented status, media type or schema, and any schema-valid request the
//! server refuses. `contract_hooks.py` sets only the values no schema can hold
//! (real addresses, configured names, stored ids, times in the allowed window).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use herald::app;
use herald::auth::new_token;
use herald::config::Config;
use serde_json::json;

use crate::helpers::{TestApp, client};

/// The Schemathesis release the run is written for (`scripts/test` installs it).
const SCHEMATHESIS: &str = "4.32.5";
/// Generated cases per operation and phase, and the whole run's bound.
const MAX_EXAMPLES: &str = "30";
const RUN_WITHIN: Duration = Duration::from_secs(240);

/// Log provider for both channels; Aliyun and Tencent Cloud for their receipts,
/// a signed webhook for its (their sends would go to a closed loopback port, but
/// batches go to the log provider unless they name one of these); a status
/// webhook `app` and a callback secret, so that batches may give a `callback_url`
/// (their events' posts fail on closed ports, and are retried, as they would be).
fn config(dir: &Path, token_hash: &str) -> Config {
    let text = format!(
        r#"listen = "127.0.0.1:0"
store = {store:?}

[recipients]
default_region = "CN"
recent_window_secs = 3600

[defaults]
sms = "log"
email = "log"

[auth]
tokens = ["{token_hash}"]

[webhook]
callback_secret = "whsec_Y29udHJhY3QtcnVuLXNpZ25pbmctc2VjcmV0LTAxMjM="

[[webhooks]]
name = "app"
url = "http://127.0.0.1:9/events"
secret = "whsec_Y29udHJhY3QtcnVuLXNpZ25pbmctc2VjcmV0LTAxMjM="

[[providers]]
name = "log"
kind = "log"
price_per_message = 0.001
currency = "CNY"

[[providers]]
name = "ali"
kind = "aliyun"
channels = ["sms"]
access_key_id = "LTAIcontract"
access_key_secret = "contract"
sign_name = "Herald"
endpoint = "http://127.0.0.1:9"

[[providers]]
name = "tc"
kind = "tencent"
channels = ["sms"]
secret_id = "AKIDcontract"
secret_key = "contract"
sdk_app_id = "1400000000"
sign_name = "Herald"
endpoint = "http://127.0.0.1:9"

[[providers]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
secret = "contract"
"#,
        store = dir.join("store").display().to_string(),
    );
    Config::from_toml(&text).expect("the contract run's config")
}

/// Fails, saying how to get it, unless python3 can import Schemathesis.
async fn require_schemathesis() {
    let check = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import schemathesis, sys; print(schemathesis.__version__)",
        ])
        .output()
        .await;
    let installed = match check {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => panic!(
            "Schemathesis is not installed: `scripts/test` installs it, or run \
             `python3 -m pip install --user schemathesis=={SCHEMATHESIS}`"
        ),
    };
    assert_eq!(
        installed, SCHEMATHESIS,
        "this run is written for Schemathesis {SCHEMATHESIS}: \
         `python3 -m pip install --user schemathesis=={SCHEMATHESIS}`"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_answers_as_the_openapi_document_says() {
    require_schemathesis().await;
    let (token, hash) = new_token().expect("a token");
    let dir = tempfile::tempdir().expect("temp dir");
    let running = app::start(config(dir.path(), &hash.to_string()))
        .await
        .expect("herald starts");
    let app = TestApp {
        url: running.url().expect("the API runs"),
        client: client(),
        running: Some(running),
        dir,
    };
    // The stored templates the hooks name in batches, one per channel.
    for channel in ["sms", "email"] {
        let template = json!({"id": format!("{channel}-t"), "channel": channel, "subject": "Hi", "body": "Hello"});
        let response = app
            .client
            .post(format!("{}/v1/templates", app.url))
            .bearer_auth(&token)
            .json(&template)
            .send()
            .await
            .expect("store a template");
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }

    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/contract_hooks.py");
    let mut run = tokio::process::Command::new("python3");
    run.args(["-m", "schemathesis.cli", "run"])
        .arg(format!("{}/openapi.json", app.url))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,positive_data_acceptance",
            // Boundary values of every schema, random ones, then sequences
            // linking one operation's answers into the next one's requests.
            "--phases",
            "coverage,fuzzing,stateful",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            "1",
            "--workers",
            "2",
            "--generation-database",
            "none",
            "--request-timeout",
            "20",
            // A failure is shown as found: shrinking it takes minutes on 2 cores.
            "--no-shrink",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .current_dir(app.dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(RUN_WITHIN, run.output()).await {
        Ok(output) => output.expect("run python3 -m schemathesis.cli"),
        Err(_) => panic!("the Schemathesis run did not finish within {RUN_WITHIN:?}"),
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the API does not answer as /openapi.json says:\n{report}"
    );
    // A run that skipped operations would pass too.
    let document: serde_json::Value = app
        .client
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("the document is JSON");
    let operations: usize = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, |methods| methods.len()))
        .sum();
    // Schemathesis leaves out the document's own operation, `GET /openapi.json`.
    let tested = operations - 1;
    assert!(
        report.contains(&format!("Selected: {tested}/{tested}\n"))
            && report.contains(&format!("Tested: {tested}\n")),
        "the run did not test all {tested} operations:\n{report}"
    );
}
