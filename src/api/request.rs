//! Reading requests: query strings, bodies, content types, JSON with the path
//! of the field that does not fit, and listing limits.

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::{HeaderMap, StatusCode};

use super::error::Error;

/// Messages per page when the caller does not say, and at most.
pub(super) const DEFAULT_PAGE: u32 = 100;
pub(super) const MAX_PAGE: u32 = 1000;

/// A listing's `limit`: `DEFAULT_PAGE` when absent, at most `MAX_PAGE`.
pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, Error> {
    limit_within(limit, DEFAULT_PAGE, MAX_PAGE)
}

/// The cursor of the page after `page` (one of `limit` items), read from its
/// last item by `cursor`; none when the page is not full, so was the last.
pub(super) fn next_cursor<T, C>(page: &[T], limit: u32, cursor: impl Fn(&T) -> C) -> Option<C> {
    (page.len() == limit as usize)
        .then(|| page.last().map(cursor))
        .flatten()
}

/// `limit`, or `default` when absent; an error naming the field unless 1 to `max`.
pub(super) fn limit_within(limit: Option<u32>, default: u32, max: u32) -> Result<u32, Error> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(Error::Invalid {
            field: "limit".into(),
            message: format!("must be between 1 and {max}, not {limit}"),
        })
    }
}

/// A query string parsed into `T`; a bad one is a `400` naming the problem.
pub(crate) fn query_params<T>(params: Result<Query<T>, QueryRejection>) -> Result<T, Error> {
    params
        .map(|Query(params)| params)
        .map_err(|e| Error::Malformed {
            message: e.body_text(),
            field: None,
        })
}

/// Reads the body, turning a too-large or broken body into a JSON error.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Error> {
    body.map_err(|rejection| {
        let message = rejection.body_text();
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::TooLarge {
                field: None,
                message,
            }
        } else {
            Error::Malformed {
                message,
                field: None,
            }
        }
    })
}

/// The media type of the request's content type, in lower case, without parameters.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get("content-type")?.to_str().ok()?;
    let media = content_type.split(';').next()?.trim();
    Some(media.to_ascii_lowercase())
}

/// Refuses a body of a content type other than JSON or one of `also` with `415`,
/// naming the types the route reads (a body without a content type is read as
/// JSON): `text/plain`, XML or a form would otherwise be parsed as JSON.
pub(crate) fn accept_content(headers: &HeaderMap, also: &[&str]) -> Result<(), Error> {
    match media_type(headers) {
        Some(media) if media != "application/json" && !also.contains(&media.as_str()) => {
            let reads = std::iter::once("application/json")
                .chain(also.iter().copied())
                .collect::<Vec<_>>()
                .join(", ");
            Err(Error::UnsupportedMediaType(format!(
                "this route does not read `{media}`: send {reads}"
            )))
        }
        _ => Ok(()),
    }
}

/// The `charset` parameter of the content type, if any.
pub(crate) fn charset(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get("content-type")?.to_str().ok()?;
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// Parses JSON, naming the path of the first field that does not fit.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // The fast parse first; only a failed one is parsed again to find the path.
    if let Ok(parsed) = serde_json::from_slice(bytes) {
        return Ok(parsed);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = (path != "." && path != "?").then_some(path);
        let message = inner.to_string();
        match field {
            Some(field) if message.starts_with(crate::template::TOO_DEEP) => {
                Error::Invalid { field, message }
            }
            field => Error::Malformed { message, field },
        }
    })?;
    de.end().map_err(|e| Error::Malformed {
        message: e.to_string(),
        field: None,
    })?;
    Ok(parsed)
}
