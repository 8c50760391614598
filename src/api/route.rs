//! The routes table: every path, who may call it, its handlers and what its
//! methods take and answer. The router, the OpenAPI document (`GET /openapi.json`)
//! and the index (`GET /v1`) are all built from it here, with the token check
//! and the small routes that describe the server (`/healthz`, `/metrics`).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};

use super::error::Error;
use super::openapi::{self, Describe, Operation, Schemas, json_of, op, path, text};
use super::state::AppState;
use super::{
    audit, batch, erase, events, inbound, messages, receipts, replies, seed, spend, submit,
    suppressions, templates, webhooks,
};
use crate::audit::{Actor, AuditAction, Outcome};
use crate::auth::Access;

/// Every route: its path, who may call it, its handlers and what they take and
/// answer. [`router`] serves exactly these, the OpenAPI document lists exactly
/// these paths with the security of their access, the `/v1` index names exactly
/// these, and tests hold the token check to them.
pub(super) fn routes() -> Vec<(&'static str, Access, MethodRouter<AppState>, Describe)> {
    use Access::{Public, Token};
    vec![
        ("/", Public, get(crate::web::page), path::page),
        (
            "/assets/{name}",
            Public,
            get(crate::web::asset),
            path::assets,
        ),
        ("/v1", Public, get(index), index_operations),
        (
            "/healthz",
            Public,
            get(|| async { Json(Health { status: "ok" }) }),
            health_operations,
        ),
        (
            "/v1/batches",
            Token,
            post(submit::create_batch).get(batch::list_batches),
            path::batches,
        ),
        (
            "/v1/batches/{id}",
            Token,
            get(batch::get_batch),
            path::batch,
        ),
        (
            "/v1/batches/{id}/messages",
            Token,
            get(batch::list_messages),
            path::messages,
        ),
        (
            "/v1/batches/{id}/events",
            Token,
            get(events::batch_events),
            path::events,
        ),
        (
            "/v1/batches/{id}/{action}",
            Token,
            post(batch::control_batch),
            path::control,
        ),
        (
            "/v1/templates",
            Token,
            post(templates::create).get(templates::list),
            path::templates,
        ),
        (
            "/v1/templates/{id}",
            Token,
            get(templates::get)
                .put(templates::replace)
                .delete(templates::delete),
            path::template,
        ),
        (
            "/v1/suppressions",
            Token,
            post(suppressions::add)
                .get(suppressions::list)
                .delete(suppressions::remove),
            path::suppressions,
        ),
        ("/v1/replies", Token, get(replies::list), path::replies),
        ("/v1/webhooks", Token, get(webhooks::list), path::webhooks),
        (
            "/v1/webhooks/{endpoint}/deliveries",
            Token,
            get(webhooks::deliveries),
            path::webhook_deliveries,
        ),
        (
            "/v1/webhooks/{endpoint}/replay",
            Token,
            post(webhooks::replay),
            path::webhook_replay,
        ),
        ("/send-sms", Token, post(seed::send_sms), path::send_sms),
        // Providers cannot present a bearer token: each request is checked by the
        // provider's own signature where it has one (see the README).
        (
            "/v1/receipts/{provider}",
            Public,
            post(receipts::receive),
            path::receipts,
        ),
        (
            "/v1/inbound/{provider}",
            Public,
            post(inbound::receive),
            path::inbound,
        ),
        ("/metrics", Token, get(metrics), metrics_operations),
        ("/openapi.json", Public, get(document), document_operations),
        ("/v1/spend", Token, get(spend::spend), path::spend),
        (
            "/v1/messages",
            Token,
            get(messages::search),
            path::search_messages,
        ),
        (
            "/v1/recipients/{address}",
            Token,
            delete(erase::erase),
            path::recipient,
        ),
        ("/v1/audit", Token, get(audit::list), path::audit),
    ]
}

/// The whole API. `max_body_bytes` bounds every request body. With API tokens
/// configured, every route of [`Access::Token`] needs one.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let check = axum::middleware::from_fn_with_state(state.clone(), require_token);
    let mut router = Router::new();
    for (path, access, handlers, _) in routes() {
        router = router.route(
            path,
            match access {
                Access::Public => handlers,
                Access::Token => handlers.route_layer(check.clone()),
            },
        );
    }
    router
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Any path the table does not serve.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Error {
    Error::NotFound(format!(
        "no route {method} {}: `GET /v1` lists the routes",
        uri.path()
    ))
}

/// The longest error body of axum's own (an extractor's rejection) turned into JSON.
const MAX_PLAIN_ERROR: usize = 64 * 1024;

/// Makes every error answer JSON with a stable `error` code, as the routes' own
/// are: axum's rejections (a path that does not decode, a wrong method) and the
/// page's missing assets answer plain text or nothing, which becomes the message.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_ERROR)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let error = match status {
        axum::http::StatusCode::NOT_FOUND => Error::NotFound(message),
        axum::http::StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(axum::http::header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            Error::MethodNotAllowed(format!("this path answers {allowed}"))
        }
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE => Error::UnsupportedMediaType(message),
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge {
            field: None,
            message,
        },
        s if s.is_server_error() => Error::Internal(message),
        _ => Error::Malformed {
            message,
            field: None,
        },
    };
    let mut answer = error.into_response();
    *answer.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

/// Lets the request through when it carries one of the configured tokens as
/// `Authorization: Bearer <token>`, naming its caller for the audit trail, or
/// when there are none (the caller is `anonymous`); else `401`, and a token that
/// was presented and refused is recorded (never the token itself).
async fn require_token(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if state.tokens.is_empty() {
        request.extensions_mut().insert(Actor::anonymous());
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = presented else {
        return Error::Unauthorized(
            "this server needs an API token: send `Authorization: Bearer <token>`".into(),
        )
        .into_response();
    };
    if let Some(name) = state.tokens.name_of(token) {
        let actor = Actor::token(name);
        request.extensions_mut().insert(actor);
        return next.run(request).await;
    }
    let refused = Error::Unauthorized("the API token is not one this server accepts".into());
    let target = format!("{} {}", request.method(), request.uri().path());
    state
        .audit
        .record(
            &Actor::unknown(),
            AuditAction::TokenRejected,
            target,
            Outcome::Status(refused.status().as_u16()),
        )
        .await;
    refused.into_response()
}

/// `GET /metrics`: Prometheus's text format.
async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render(&state.queue).await;
    text.push_str(&spend::metrics(&state).await);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /healthz`'s answer: the server is up.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// `GET /v1`'s answer: what this server is and where its routes are. (Its
/// fields are in the order the answer has always been written in.)
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Index {
    /// `herald`.
    name: &'static str,
    /// `METHOD path` to what it does, for every route and method served.
    routes: BTreeMap<String, String>,
    version: &'static str,
}

/// What this server is and where its routes are, for a script exploring the API
/// (`/` is the web page): every route of [`routes`], each method by the summary
/// the OpenAPI document gives it.
async fn index() -> Json<Index> {
    Json(Index {
        name: "herald",
        version: env!("CARGO_PKG_VERSION"),
        routes: INDEX.clone(),
    })
}

/// `GET /v1`'s routes: `METHOD path` to the summary of that operation, for every
/// route of [`routes`].
static INDEX: LazyLock<BTreeMap<String, String>> = LazyLock::new(|| {
    let paths = &DESCRIBED["paths"];
    routes()
        .into_iter()
        .flat_map(|(path, ..)| {
            let operations = paths[path].as_object().cloned().unwrap_or_default();
            operations.into_iter().map(move |(method, operation)| {
                let summary = operation["summary"].as_str().unwrap_or_default().to_owned();
                (format!("{} {path}", method.to_uppercase()), summary)
            })
        })
        .collect()
});

/// The OpenAPI document of [`routes`], built once.
static DESCRIBED: LazyLock<Value> = LazyLock::new(|| {
    openapi::build(
        routes()
            .into_iter()
            .map(|(path, access, _, describe)| (path, access, describe)),
    )
});

/// The document, as served.
pub(super) static DOCUMENT: LazyLock<String> = LazyLock::new(|| DESCRIBED.to_string());

/// `GET /openapi.json`: the API described in OpenAPI 3.1.
async fn document() -> Response {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

/// What `/v1` takes and answers.
fn index_operations(s: &mut Schemas) -> Vec<Operation> {
    vec![op("get", "What this server is").answer(
        200,
        "The server's name, version and main routes.",
        [json_of(s.answer::<Index>())],
    )]
}

/// What `/healthz` takes and answers.
fn health_operations(s: &mut Schemas) -> Vec<Operation> {
    vec![op("get", "Liveness").answer(200, "Alive.", [json_of(s.answer::<Health>())])]
}

/// What `/openapi.json` takes and answers.
fn document_operations(_s: &mut Schemas) -> Vec<Operation> {
    vec![op("get", "This document").answer(
        200,
        "The OpenAPI document.",
        [json_of(json!({"type": "object"}))],
    )]
}

/// What `/metrics` takes and answers.
fn metrics_operations(_s: &mut Schemas) -> Vec<Operation> {
    vec![op("get", "Prometheus metrics").answer(
        200,
        "Prometheus's text format 0.0.4.",
        [("text/plain", text())],
    )]
}
