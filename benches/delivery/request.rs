//! What the bench sends to herald and how it reads the answers: the 10,000-recipient
//! batch body, `POST` and `GET` with their checks, and short JSON for messages.

use anyhow::{Context, ensure};
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use serde_json::{Value, json};

use crate::{BATCH_SIZE, TEMPLATE};

/// `{"channel":"sms","template":…,"recipients":[…]}` with [`BATCH_SIZE`] distinct
/// valid numbers starting at number `first`.
pub(crate) fn batch_body(first: usize) -> Bytes {
    let recipients: Vec<Value> = (first..first + BATCH_SIZE)
        .map(|i| {
            json!({
                "to": format!("+86138{i:08}"),
                "vars": {"name": format!("User{i}"), "code": format!("{:06}", (i * 7919) % 1_000_000)},
            })
        })
        .collect();
    to_bytes(&json!({"channel": "sms", "template": {"body": TEMPLATE}, "recipients": recipients}))
}

/// A JSON value shown in a message: at most 200 characters of it.
pub(crate) fn shorten(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

pub(crate) fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("a JSON value always serializes"))
}

/// Submits one batch and returns its id, once herald has answered 202 with every
/// recipient accepted.
pub(crate) async fn submit(
    client: &reqwest::Client,
    url: &str,
    body: &Bytes,
) -> anyhow::Result<String> {
    accepted_all(&post_batch(client, url, body).await?)
}

/// `POST /v1/batches`; herald's answer, once it is a 202.
pub(crate) async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    body: &Bytes,
) -> anyhow::Result<String> {
    let (status, text) = post(client, url, "/v1/batches", body).await?;
    ensure!(
        status == StatusCode::ACCEPTED,
        "POST /v1/batches answered {status}: {}",
        text.chars().take(300).collect::<String>()
    );
    Ok(text)
}

/// The batch id of a submit answer that accepted all [`BATCH_SIZE`] recipients.
pub(crate) fn accepted_all(answer: &str) -> anyhow::Result<String> {
    let report: Value = serde_json::from_str(answer).context("the submit answer is not JSON")?;
    ensure!(
        report["accepted"] == BATCH_SIZE
            && report["rejected"].as_array().is_some_and(Vec::is_empty),
        "not every recipient was accepted: {}",
        answer.chars().take(300).collect::<String>()
    );
    report["batch_id"]
        .as_str()
        .map(String::from)
        .context("the submit answer has no batch_id")
}

/// POSTs a JSON `body` to herald's `path`; the answer's status and text.
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    body: &Bytes,
) -> anyhow::Result<(StatusCode, String)> {
    let response = client
        .post(format!("{url}{path}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.clone())
        .send()
        .await
        .with_context(|| format!("POST {path}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the answer to POST {path}"))?;
    Ok((status, text))
}

pub(crate) async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    ensure!(status.is_success(), "GET {url} answered {status}");
    response
        .json()
        .await
        .with_context(|| format!("GET {url}: the answer is not JSON"))
}
