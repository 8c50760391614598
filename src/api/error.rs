//! The API's one error type: 4xx bodies say exactly what was wrong and where;
//! 5xx bodies are generic and the cause is logged once.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

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
    /// The path is served, but not with this method.
    MethodNotAllowed(String),
    /// The body's content type is not one the route reads.
    UnsupportedMediaType(String),
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
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body: `error` (a stable code), `message`, and where it applies.
    pub fn body(&self) -> ErrorBody {
        let (error, message, field, rejected) = match self {
            Error::Malformed { message, field } => (
                Code::MalformedRequest,
                message.clone(),
                Some(field.clone()),
                None,
            ),
            Error::Invalid { field, message } => (
                Code::InvalidField,
                format!("{field}: {message}"),
                Some(Some(field.clone())),
                None,
            ),
            Error::TooLarge { field, message } => {
                (Code::TooLarge, message.clone(), Some(field.clone()), None)
            }
            Error::NoneAccepted(rejected) => (
                Code::NoValidRecipients,
                format!(
                    "none of the {} recipients can be sent to; see `rejected`",
                    rejected.len()
                ),
                None,
                Some(rejected.clone()),
            ),
            Error::NotFound(what) => (Code::NotFound, what.clone(), None, None),
            Error::MethodNotAllowed(why) => (Code::MethodNotAllowed, why.clone(), None, None),
            Error::UnsupportedMediaType(why) => {
                (Code::UnsupportedMediaType, why.clone(), None, None)
            }
            Error::Conflict(why) => (Code::Conflict, why.clone(), None, None),
            Error::Unauthorized(why) => (Code::Unauthorized, why.clone(), None, None),
            Error::Unavailable(_) => (
                Code::Unavailable,
                "the store is unavailable; try again shortly".into(),
                None,
                None,
            ),
            Error::Internal(_) => (
                Code::Internal,
                "internal error; the cause is in the server log".into(),
                None,
                None,
            ),
        };
        ErrorBody {
            error,
            message,
            field,
            rejected,
            success: None,
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

/// The body of every error answer. (Its fields are in the order the body has
/// always been written in.)
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    /// What kind of error, for a program.
    pub error: Code,
    /// The field, recipient (`recipients[3].to`) or line (`line 12`) at fault:
    /// present (perhaps `null`) on `malformed_request`, `invalid_field` and
    /// `too_large`, absent on the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<Option<String>>,
    /// What was wrong, for a person.
    pub message: String,
    /// On `no_valid_recipients`: every recipient, and why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Vec<Rejection>>,
    /// On `/send-sms`: `false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
}

/// An error's stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    MalformedRequest,
    InvalidField,
    TooLarge,
    NoValidRecipients,
    NotFound,
    MethodNotAllowed,
    UnsupportedMediaType,
    Conflict,
    Unauthorized,
    Unavailable,
    Internal,
}

/// Seconds a client is asked to wait, in `Retry-After`, before trying again
/// while the store does not answer: long enough for a restart or failover to
/// show, short enough that a client is not held up once it is over.
const STORE_RETRY_AFTER_SECS: &str = "5";

impl Error {
    /// The answer: this error's status, `body`, and the headers the status calls
    /// for (`WWW-Authenticate` on 401, `Retry-After` on 503).
    fn respond(&self, body: ErrorBody) -> Response {
        use axum::http::{HeaderValue, header};
        self.log();
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Error::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Error::Unavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(STORE_RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.respond(self.body())
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
        let mut body = self.0.body();
        body.success = Some(false);
        self.0.respond(body)
    }
}

impl From<Error> for SeedError {
    fn from(e: Error) -> Self {
        SeedError(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_outage_answers_503_with_retry_after_on_both_error_shapes() {
        let plain = Error::Unavailable("connection refused".into()).into_response();
        let seed = SeedError(Error::Unavailable("connection refused".into())).into_response();
        for response in [plain, seed] {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                response.headers().get(axum::http::header::RETRY_AFTER),
                Some(&axum::http::HeaderValue::from_static("5"))
            );
        }
    }

    #[test]
    fn other_errors_carry_no_retry_after() {
        let response = Error::Conflict("the batch is cancelled".into()).into_response();
        assert!(
            response
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .is_none()
        );
    }
}
