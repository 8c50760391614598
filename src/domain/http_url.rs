//! An http or https URL that Herald posts to (a webhook provider's, a status
//! webhook's, a batch's `callback_url`): parsed once, where it is given, so that a
//! malformed one is refused naming it rather than failing every post later.

use std::fmt;

use serde::Deserialize;
use url::Url;

/// What the API's documents say of an [`HttpUrl`]: a pattern every string of
/// which parses as one (narrower than what [`HttpUrl::parse`] takes, so a value
/// the document allows is never refused).
pub const HTTP_URL_PATTERN: &str =
    "^https?://[a-z0-9]+(\\.[a-z0-9]+)*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~/-]*)?$";

/// An absolute `http://` or `https://` URL with a host.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HttpUrl(Url);

impl HttpUrl {
    /// Parses `s`; the error quotes it and says what is wrong.
    pub fn parse(s: &str) -> Result<HttpUrl, String> {
        let url = Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`{s}` must be an http or https URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("`{s}` has no host"));
        }
        Ok(HttpUrl(url))
    }

    /// The URL, as parsed.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<String> for HttpUrl {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        HttpUrl::parse(&s)
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpUrl({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_urls_with_a_host_are_taken() {
        for s in [
            "http://127.0.0.1:9000/hook",
            "https://app.example/herald?x=1",
        ] {
            assert_eq!(HttpUrl::parse(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn other_schemes_and_non_urls_are_refused_saying_why() {
        let ftp = HttpUrl::parse("ftp://example.com/x").unwrap_err();
        assert!(ftp.contains("http or https"), "{ftp}");
        let relative = HttpUrl::parse("/hooks").unwrap_err();
        assert!(relative.contains("is not a URL"), "{relative}");
        let mail = HttpUrl::parse("mailto:ops@example.com").unwrap_err();
        assert!(mail.contains("http or https"), "{mail}");
    }
}
