use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::*;
use crate::domain::SigningSecret;

/// A signed request: the secret as configured, its headers and its body.
type Signed<'a> = (&'a str, Vec<(&'static str, String)>, &'a [u8]);

/// Verifies each `(secret, headers, body)` with the `standardwebhooks` package
/// (`tests/webhook/verify.py`) and answers the payloads it verified, or what it
/// said of the first that did not verify; panics when the package is missing.
fn verified_by_standardwebhooks(requests: &[Signed<'_>]) -> Result<Vec<Value>, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhook/verify.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test installs it)");
    let mut stdin = child.stdin.take().expect("piped stdin");
    for (secret, headers, body) in requests {
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), json!(value)))
            .collect();
        let line = json!({
            "secret": secret,
            "headers": headers,
            "body": std::str::from_utf8(body).expect("a UTF-8 body"),
        });
        writeln!(stdin, "{line}").expect("write to verify.py");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("verify.py ran");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(3), "{stderr}");
    if !out.status.success() {
        return Err(stderr);
    }
    Ok(String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect())
}

#[test]
fn a_herald_signed_request_verifies_with_the_standardwebhooks_package() {
    let secret_text = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let secret = SigningSecret::parse(secret_text).unwrap();
    let body = br#"[{"id":"m1.sent","type":"message.sent"}]"#;
    let id = request_id(["m1.sent"]);
    let now = jiff::Timestamp::now().as_second();
    let headers = headers(&secret, &id, now, body).to_vec();
    let payloads = verified_by_standardwebhooks(&[(secret_text, headers, body)]).unwrap();
    assert_eq!(
        payloads,
        [json!([{"id": "m1.sent", "type": "message.sent"}])]
    );
}

#[test]
fn a_tampered_body_does_not_verify_with_the_standardwebhooks_package() {
    let secret_text = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let secret = SigningSecret::parse(secret_text).unwrap();
    let now = jiff::Timestamp::now().as_second();
    let headers = headers(&secret, "msg_1", now, b"[1]").to_vec();
    let refused = verified_by_standardwebhooks(&[(secret_text, headers, b"[2]")])
        .expect_err("a tampered body must not verify");
    assert!(refused.contains("does not verify"), "{refused}");
}
