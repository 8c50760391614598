//! The routes table: every path, who may call it and its handlers, and the
//! router built from it (with the token check), plus the small routes that
//! describe the server (`/v1`, `/healthz`, `/metrics`).

use std::collections::BTreeMap;

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    AppState, Error, batch, events, openapi, receipts, seed, submit, suppressions, templates,
};
use crate::auth::Tokens;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone: the route shows nothing of the store.
    Public,
    /// With API tokens configured, only a caller presenting one.
    Token,
}

/// Every route: its path, who may call it and its handlers. [`router`] serves
/// exactly these, the OpenAPI document lists exactly these paths with the
/// security of their access, and tests hold the token check to them.
pub(crate) fn routes() -> Vec<(&'static str, Access, MethodRouter<AppState>)> {
    use Access::{Public, Token};
    vec![
        ("/", Public, get(crate::web::page)),
        ("/assets/{name}", Public, get(crate::web::asset)),
        ("/v1", Public, get(index)),
        (
            "/healthz",
            Public,
            get(|| async { Json(Health { status: "ok" }) }),
        ),
        (
            "/v1/batches",
            Token,
            post(submit::create_batch).get(batch::list_batches),
        ),
        ("/v1/batches/{id}", Token, get(batch::get_batch)),
        (
            "/v1/batches/{id}/messages",
            Token,
            get(batch::list_messages),
        ),
        ("/v1/batches/{id}/events", Token, get(events::batch_events)),
        (
            "/v1/batches/{id}/{action}",
            Token,
            post(batch::control_batch),
        ),
        (
            "/v1/templates",
            Token,
            post(templates::create).get(templates::list),
        ),
        (
            "/v1/templates/{id}",
            Token,
            get(templates::get)
                .put(templates::replace)
                .delete(templates::delete),
        ),
        (
            "/v1/suppressions",
            Token,
            post(suppressions::add)
                .get(suppressions::list)
                .delete(suppressions::remove),
        ),
        ("/send-sms", Token, post(seed::send_sms)),
        // Providers cannot present a bearer token: each request is checked by the
        // provider's own signature where it has one (see the README).
        ("/v1/receipts/{provider}", Public, post(receipts::receive)),
        ("/metrics", Token, get(metrics)),
        ("/openapi.json", Public, get(openapi::document)),
    ]
}

/// The whole API. `max_body_bytes` bounds every request body. With API tokens
/// configured, every route of [`Access::Token`] needs one.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let check = axum::middleware::from_fn_with_state(state.tokens.clone(), require_token);
    let mut router = Router::new();
    for (path, access, handlers) in routes() {
        router = router.route(
            path,
            match access {
                Access::Public => handlers,
                Access::Token => handlers.route_layer(check.clone()),
            },
        );
    }
    router
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Lets the request through when it carries one of `tokens` as
/// `Authorization: Bearer <token>`, or when there are none; else `401`.
async fn require_token(
    State(tokens): State<Tokens>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if tokens.accept(token) => next.run(request).await,
        Some(_) => Error::Unauthorized("the API token is not one this server accepts".into())
            .into_response(),
        None => Error::Unauthorized(
            "this server needs an API token: send `Authorization: Bearer <token>`".into(),
        )
        .into_response(),
    }
}

/// `GET /metrics`: Prometheus's text format.
async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(&state.queue).await;
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

/// `GET /v1`'s answer: what this server is and where its main routes are. (Its
/// fields are in the order the answer has always been written in.)
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Index {
    /// `herald`.
    name: &'static str,
    /// `METHOD path` to what it does.
    routes: BTreeMap<&'static str, &'static str>,
    version: &'static str,
}

/// What this server is and where its routes are, for a script exploring the API
/// (`/` is the web page).
async fn index() -> Json<Index> {
    Json(Index {
        name: "herald",
        version: env!("CARGO_PKG_VERSION"),
        routes: BTreeMap::from([
            (
                "POST /v1/batches",
                "accept a batch: {channel, template: {body, subject?}, recipients: [{to, vars?, ref?}]}",
            ),
            (
                "GET /v1/batches?limit=&before=",
                "the batches, newest first",
            ),
            ("GET /v1/batches/{id}", "state and counts"),
            (
                "GET /v1/batches/{id}/events",
                "progress as server-sent events, until the batch is finished",
            ),
            (
                "GET /v1/batches/{id}/messages?state=&after=&limit=",
                "the per-recipient ledger",
            ),
            (
                "POST /v1/batches/{id}/pause|resume|cancel|retry",
                "control a batch",
            ),
            (
                "POST /v1/templates, GET /v1/templates?after=&limit=",
                "store a template, list them",
            ),
            (
                "GET|PUT|DELETE /v1/templates/{id}",
                "read, replace or delete a template",
            ),
            (
                "POST|GET|DELETE /v1/suppressions",
                "add, list or remove recipients who must not be messaged",
            ),
            (
                "POST /send-sms",
                "the classic request: template_id, mobiles[], content",
            ),
            (
                "POST /v1/receipts/{provider}",
                "delivery receipts from a configured provider",
            ),
            ("GET /healthz", "liveness"),
            ("GET /", "the web page"),
            ("GET /metrics", "Prometheus metrics"),
            ("GET /openapi.json", "every route, in OpenAPI 3.1"),
        ]),
    })
}
