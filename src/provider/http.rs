//! What the HTTP adapters share: one way to build their client, to make an
//! exchange and read its answer (telling "never reached the provider" from "outcome
//! unknown"), and to classify a status the provider's own error format did not
//! explain.

use std::time::Duration;

use super::Error;

/// An HTTP client for provider adapters: rustls, pooled keep-alive connections,
/// `timeout` on every request.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    // reqwest is built without a bundled crypto backend; install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        // Providers answer, they do not redirect; and a proxy lookup per request
        // costs CPU on the hot path.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Classifies a non-2xx HTTP answer: 429 is a throttle ([`Error::throttled`]), 408
/// and 5xx are transient, other statuses permanent. The reason (logged at warn,
/// kept as the message's `last_error`) holds what [`error_text`] finds safe in
/// the body; the whole body is logged at debug.
pub fn classify_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Error {
    if !body.is_empty() {
        let answer = String::from_utf8_lossy(body);
        tracing::debug!(status, answer = %answer, "a provider's error answer");
    }
    let reason = match error_text(body) {
        Some(text) => format!("HTTP {status}: {text}"),
        None => format!("HTTP {status}"),
    };
    if status == 429 {
        Error::throttled(reason, retry_after)
    } else if status == 408 || status >= 500 {
        Error::Transient {
            reason,
            retry_after,
        }
    } else {
        Error::Permanent { reason }
    }
}

/// The most an error text quotes of an answer, in characters.
const ERROR_TEXT_CHARS: usize = 120;

/// What of an error answer's `body` can be kept where messages' text may not be:
/// many services echo the request in their error answers, and the request holds
/// the recipient's message (a one-time code, say). Of a JSON object, only its
/// error code and message (`error`, `code`, `error_code`; `message`, `error_description`,
/// `detail`, `title`; also inside an `error` object), never other fields; of any
/// other answer but an HTML page, its first line. Cut to [`ERROR_TEXT_CHARS`].
pub fn error_text(body: &[u8]) -> Option<String> {
    use serde_json::Value;
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(answer)) => {
            let field = |object: &serde_json::Map<String, Value>, names: &[&str]| {
                names.iter().find_map(|name| match object.get(*name)? {
                    Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
            };
            let inner = match answer.get("error") {
                Some(Value::Object(inner)) => inner,
                _ => &answer,
            };
            let code = field(inner, &["code", "error_code"])
                .or_else(|| field(&answer, &["error", "code", "error_code"]));
            let message = field(inner, &["message", "error_description", "detail", "title"])
                .or_else(|| {
                    field(
                        &answer,
                        &["message", "error_description", "detail", "title"],
                    )
                });
            match (code, message) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(text), None) | (None, Some(text)) => text,
                (None, None) => return None,
            }
        }
        _ => {
            let answer = String::from_utf8_lossy(body);
            let first = answer
                .trim()
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if first.starts_with('<') {
                return None;
            }
            first
        }
    };
    if text.is_empty() {
        return None;
    }
    let mut cut: String = text.chars().take(ERROR_TEXT_CHARS).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    Some(cut)
}

/// A provider's HTTP answer, read to the end.
pub struct Answer {
    /// The answer's HTTP status.
    pub status: reqwest::StatusCode,
    /// The `Retry-After` header, parsed.
    pub retry_after: Option<Duration>,
    /// The whole body, as it came.
    pub body: Vec<u8>,
}

impl Answer {
    /// The error of an answer the provider's own error format did not explain, by
    /// its status (see [`classify_status`]).
    pub fn unexplained(&self) -> Error {
        classify_status(self.status.as_u16(), self.retry_after, &self.body)
    }
}

/// Sends `request` and reads the whole answer, whatever its status, with errors
/// whose reason starts with `who` (the provider, e.g. `Twilio`). A request that
/// could not connect (refused, no route, a name that does not resolve, a connect
/// timeout) was never written: [`Error::Transient`]. Any later failure — a timeout
/// waiting for the answer, a connection lost mid-way, an answer cut off — may
/// follow a request the provider received: [`Error::Unknown`].
pub async fn exchange(request: reqwest::RequestBuilder, who: &str) -> Result<Answer, Error> {
    let transient = |what: &str, e: reqwest::Error| {
        if e.is_connect() {
            return Error::Transient {
                reason: format!("{who} {what}: could not connect: {}", cause(&e)),
                retry_after: None,
            };
        }
        let cause = if e.is_timeout() {
            "timed out".to_string()
        } else {
            cause(&e)
        };
        Error::Unknown {
            reason: format!("{who} {what}: {cause}"),
        }
    };
    let response = request
        .send()
        .await
        .map_err(|e| transient("request failed", e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = response
        .bytes()
        .await
        .map_err(|e| transient("answer was cut off", e))?;
    Ok(Answer {
        status,
        retry_after,
        body: body.into(),
    })
}

/// What an HTTP client error comes down to: its innermost cause (reqwest's own
/// message is only "error sending request for url …").
fn cause(e: &reqwest::Error) -> String {
    let mut innermost: &dyn std::error::Error = e;
    while let Some(inner) = innermost.source() {
        innermost = inner;
    }
    innermost.to_string()
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (a date in the past
/// means "now").
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let delta = at.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(delta).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
        let http_date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&later)
            .unwrap();
        let d = parse_retry_after(&http_date).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn an_error_answer_echoing_the_request_keeps_only_its_code_and_message() {
        let echoed = br#"{"error":"bad_request","message":"template rejected",
            "request":{"to":"+8613800000001","body":"Your code is 99887"}}"#;
        let e = classify_status(400, None, echoed);
        assert_eq!(e.to_string(), "HTTP 400: bad_request: template rejected");
        let nested = br#"{"error":{"code":21211,"message":"Invalid 'To'"},"body":"code 99887"}"#;
        assert_eq!(
            classify_status(400, None, nested).to_string(),
            "HTTP 400: 21211: Invalid 'To'"
        );
        let nothing_safe = br#"{"body":"Your code is 99887","to":"+8613800000001"}"#;
        assert_eq!(
            classify_status(400, None, nothing_safe).to_string(),
            "HTTP 400"
        );
        let page = b"<html><body>Your code is 99887</body></html>";
        assert_eq!(classify_status(502, None, page).to_string(), "HTTP 502");
        let long = "x".repeat(500);
        let cut = error_text(long.as_bytes()).unwrap();
        assert_eq!(cut.chars().count(), ERROR_TEXT_CHARS + 1, "{cut}");
        assert_eq!(
            error_text(b"busy\nRequest: body=Your code is 99887").as_deref(),
            Some("busy")
        );
    }

    #[test]
    fn throttles_and_server_errors_are_transient_other_4xx_permanent() {
        for status in [408, 500, 502, 503] {
            assert!(
                matches!(classify_status(status, None, b""), Error::Transient { .. }),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(
                matches!(classify_status(status, None, b""), Error::Permanent { .. }),
                "{status}"
            );
        }
        let throttle = classify_status(429, Some(Duration::from_secs(2)), b"slow down");
        assert!(throttle.is_throttle(), "{throttle:?}");
        assert_eq!(throttle.to_string(), "throttled: HTTP 429: slow down");
        assert!(!classify_status(503, None, b"").is_throttle());
        let e = classify_status(503, Some(Duration::from_secs(3)), b"busy");
        assert_eq!(
            e,
            Error::Transient {
                reason: "HTTP 503: busy".into(),
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }
}
