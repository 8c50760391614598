//! The server a client command talks to, and the exchange with it: a request
//! with the token, the answer's status and body, the server's error message.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct ServerArg {
    /// The Herald server to talk to.
    #[arg(long, env = "HERALD_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The API token, for a server with `[auth] tokens`.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArg {
    /// A request to `path` on the server, with the token when there is one.
    pub(super) fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> (reqwest::RequestBuilder, String) {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let mut request = client.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        (request, url)
    }
}

pub(super) fn client() -> anyhow::Result<reqwest::Client> {
    crate::provider::http_client(Duration::from_secs(300)).map_err(anyhow::Error::msg)
}

/// Sends `request` to `url`; the answer's status and body.
pub(super) async fn exchange(
    request: reqwest::RequestBuilder,
    url: &str,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let response = request.send().await.map_err(|e| unreachable(&e, url))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .context("reading the server's answer")?;
    Ok((status, body))
}

/// Why the server at `url` could not be asked, once (reqwest's own message
/// repeats the URL): its innermost cause and, when nothing answered, what to do.
pub(super) fn unreachable(e: &reqwest::Error, url: &str) -> anyhow::Error {
    let mut cause: &dyn std::error::Error = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if e.is_connect() {
        anyhow::anyhow!(
            "cannot reach a Herald server at {url}: {cause}. Start one with `herald serve`, \
             or name yours with --server (or HERALD_SERVER)"
        )
    } else if e.is_timeout() {
        anyhow::anyhow!("the Herald server at {url} did not answer in time: {cause}")
    } else {
        anyhow::anyhow!("cannot reach a Herald server at {url}: {cause}")
    }
}

/// The server's error message, from its JSON body when it has one.
pub(super) fn server_error(status: reqwest::StatusCode, body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => {
            let message = v["message"].as_str().unwrap_or(body).to_string();
            match v["field"].as_str() {
                Some(field) if !message.starts_with(field) => {
                    format!("{message} (field `{field}`)")
                }
                _ => message,
            }
        }
        Err(_) => format!("HTTP {status}: {body}"),
    }
}

/// Calls `path` on the server: the answer's body when it succeeded; `None`
/// (with the server's message printed) when it did not.
pub(super) async fn call(
    server: &ServerArg,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<Option<String>> {
    call_with(server, method, path, None).await
}

/// [`call`] with a JSON `body`.
pub(super) async fn call_with(
    server: &ServerArg,
    method: reqwest::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<Option<String>> {
    let (mut request, url) = server.request(&client()?, method, path);
    if let Some(body) = body {
        request = request.json(body);
    }
    let (status, body) = exchange(request, &url).await?;
    if !status.is_success() {
        eprintln!("herald: {}", server_error(status, &body));
        return Ok(None);
    }
    Ok(Some(body))
}
