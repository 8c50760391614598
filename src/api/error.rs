//! The API's one error type: 4xx bodies say exactly what was wrong and where;
//! 5xx bodies are generic and the cause is logged once.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::intake::{self, Rejection};
use crate::queue;

#[derive(Debug)]
pub enum Error {
    /// The body is not JSON of the expected shape; `field` is the path, e.g. `recipients[3].to`.
    Malformed {
        message: String,
        field: Option<String>,
    },
    /// A field has a value the API cannot use.
    Invalid {
        field: String,
        message: String,
    },
    TooLarge {
        field: Option<String>,
        message: String,
    },
    NoneAccepted(Vec<Rejection>),
    NotFound(String),
    Conflict(String),
    /// The request does not prove who sent it: no API token, or not one of the
    /// server's; a provider's receipt without its signature, or a wrong one.
    Unauthorized(String),
    /// The store did not answer; the request may be retried.
    Unavailable(String),
    Internal(String),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Malformed { .. } => StatusCode::BAD_REQUEST,
            Error::Invalid { .. } | Error::NoneAccepted(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body: `error` (a stable code), `message`, and where it applies.
    pub fn body(&self) -> Value {
        match self {
            Error::Malformed { message, field } => {
                json!({"error": "malformed_request", "message": message, "field": field})
            }
            Error::Invalid { field, message } => {
                json!({"error": "invalid_field", "message": format!("{field}: {message}"), "field": field})
            }
            Error::TooLarge { field, message } => {
                json!({"error": "too_large", "message": message, "field": field})
            }
            Error::NoneAccepted(rejected) => json!({
                "error": "no_valid_recipients",
                "message": format!("none of the {} recipients can be sent to; see `rejected`", rejected.len()),
                "rejected": rejected,
            }),
            Error::NotFound(what) => json!({"error": "not_found", "message": what}),
            Error::Conflict(why) => json!({"error": "conflict", "message": why}),
            Error::Unauthorized(why) => json!({"error": "unauthorized", "message": why}),
            Error::Unavailable(_) => {
                json!({"error": "unavailable", "message": "the store is unavailable; try again shortly"})
            }
            Error::Internal(_) => {
                json!({"error": "internal", "message": "internal error; the cause is in the server log"})
            }
        }
    }

    fn log(&self) {
        match self {
            Error::Unavailable(cause) | Error::Internal(cause) => {
                tracing::error!(cause = %cause, "request failed")
            }
            _ => {}
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log();
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, Error::Unauthorized(_)) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<queue::Error> for Error {
    fn from(e: queue::Error) -> Self {
        match e {
            queue::Error::Conflict(why) => Error::Conflict(why),
            queue::Error::Unavailable(_) => Error::Unavailable(e.to_string()),
            queue::Error::Corrupt(_) | queue::Error::Unsupported(_) => {
                Error::Internal(e.to_string())
            }
        }
    }
}

impl From<intake::Error> for Error {
    fn from(e: intake::Error) -> Self {
        match e {
            intake::Error::Invalid { field, message } => Error::Invalid { field, message },
            intake::Error::Malformed { field, message } => Error::Malformed { field, message },
            intake::Error::TooLarge { field, message } => Error::TooLarge {
                field: Some(field),
                message,
            },
            intake::Error::NoneAccepted(rejected) => Error::NoneAccepted(rejected),
            intake::Error::Store(e) => e.into(),
        }
    }
}

/// Errors in the shape the seed's `/send-sms` callers expect: `success: false`.
pub struct SeedError(pub Error);

impl IntoResponse for SeedError {
    fn into_response(self) -> Response {
        self.0.log();
        let mut body = self.0.body();
        body["success"] = json!(false);
        (self.0.status(), Json(body)).into_response()
    }
}

impl From<Error> for SeedError {
    fn from(e: Error) -> Self {
        SeedError(e)
    }
}
