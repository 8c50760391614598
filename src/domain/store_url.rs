//! Where the store is: a directory for the embedded engine, or a server's URL.
//! Parsed once, when the configuration is read, so that a malformed URL stops
//! Herald at start with what is wrong; a password in it never shows in `Debug`
//! output, logs or messages.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;
use url::Url;

/// The store's location, one variant per engine.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum StoreUrl {
    /// The embedded SQLite engine: a directory path, or `sqlite://DIR`.
    Sqlite(PathBuf),
    /// `postgres://` or `postgresql://`: a PostgreSQL server.
    Postgres(Url),
    /// `redis://` or `rediss://`: a Redis server.
    Redis(Url),
}

/// Why a store URL was refused; the message quotes the URL with its password
/// hidden.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidStoreUrl(String);

/// What each engine's URL looks like, for the messages of a refused one.
const FORMS: &str = "use a directory path or `sqlite://DIR` for the embedded store, \
                     `postgres://USER@HOST[:PORT]/DATABASE` for PostgreSQL, or \
                     `redis://HOST[:PORT][/DB]` for Redis";

impl StoreUrl {
    /// Parses a store's location: a string without `://` is a directory.
    pub fn parse(s: &str) -> Result<StoreUrl, InvalidStoreUrl> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return if s.is_empty() {
                Err(InvalidStoreUrl(format!("the store is empty: {FORMS}")))
            } else {
                Ok(StoreUrl::Sqlite(PathBuf::from(s)))
            };
        };
        let server = |wrap: fn(Url) -> StoreUrl| {
            let url = Url::parse(s).map_err(|e| {
                InvalidStoreUrl(format!(
                    "the store URL `{}` is not valid: {e}",
                    redact_text(s)
                ))
            })?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(InvalidStoreUrl(format!(
                    "the store URL `{}` names no host: {FORMS}",
                    redact_text(s)
                )));
            }
            Ok(wrap(url))
        };
        match scheme {
            "sqlite" if rest.is_empty() => Err(InvalidStoreUrl(format!(
                "`sqlite://` names no directory: {FORMS}"
            ))),
            "sqlite" => Ok(StoreUrl::Sqlite(PathBuf::from(rest))),
            "postgres" | "postgresql" => server(StoreUrl::Postgres),
            "redis" | "rediss" => server(StoreUrl::Redis),
            _ => Err(InvalidStoreUrl(format!(
                "unknown store `{scheme}://`: {FORMS}"
            ))),
        }
    }
}

impl FromStr for StoreUrl {
    type Err = InvalidStoreUrl;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StoreUrl::parse(s)
    }
}

impl TryFrom<String> for StoreUrl {
    type Error = InvalidStoreUrl;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        StoreUrl::parse(&s)
    }
}

/// The location as logs and messages show it: a password replaced by `***`.
impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(dir) => write!(f, "{}", dir.display()),
            StoreUrl::Postgres(url) | StoreUrl::Redis(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

fn redact(url: &Url) -> String {
    if url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Only URLs that cannot have a password refuse one.
    let _ = shown.set_password(Some("***"));
    shown.to_string()
}

/// `s` with what stands between the first `:` and the last `@` of its authority
/// hidden, for a URL too malformed to parse.
fn redact_text(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_or_sqlite_url_is_the_embedded_store() {
        assert_eq!(
            StoreUrl::parse("herald-data").unwrap(),
            StoreUrl::Sqlite("herald-data".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/herald").unwrap(),
            StoreUrl::Sqlite("/var/lib/herald".into())
        );
    }

    #[test]
    fn server_urls_are_parsed_and_their_passwords_never_shown() {
        let url =
            StoreUrl::parse("postgres://herald:s3cret@db.internal:5433/herald?schema=h").unwrap();
        let StoreUrl::Postgres(parsed) = &url else {
            panic!("a PostgreSQL store: {url:?}");
        };
        assert_eq!(parsed.password(), Some("s3cret"));
        assert_eq!(parsed.port(), Some(5433));
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(
                shown.contains("herald:***@db.internal:5433/herald"),
                "{shown}"
            );
        }
        assert!(matches!(
            StoreUrl::parse("rediss://:pw@cache:6380/2?prefix=h").unwrap(),
            StoreUrl::Redis(_)
        ));
    }

    #[test]
    fn a_malformed_url_says_what_is_wrong_without_its_password() {
        let e = StoreUrl::parse("postgres://herald:s3cret@db:54x32/herald").unwrap_err();
        assert!(e.to_string().contains("invalid port number"), "{e}");
        assert!(e.to_string().contains("herald:***@db:54x32"), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = StoreUrl::parse("redis://").unwrap_err();
        assert!(
            e.to_string().contains("not valid") || e.to_string().contains("no host"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_scheme_lists_every_engine() {
        let e = StoreUrl::parse("mysql://db/herald")
            .unwrap_err()
            .to_string();
        for form in ["sqlite://DIR", "postgres://", "redis://"] {
            assert!(e.contains(form), "{e}");
        }
    }
}
