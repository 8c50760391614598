//! The Redis store URL: what the redis crate connects to, and the key prefix.

use crate::queue::{Error, Result};

const DEFAULT_PREFIX: &str = "herald";

/// where it is for messages (no user name or password).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct StoreUrl {
    pub(super) connect: String,
    pub(super) prefix: String,
    pub(super) place: String,
}

impl StoreUrl {
    /// Parses `redis[s]://[user:password@]host[:port][/db][?prefix=NAME]`, taking
    /// out `prefix` and leaving any other parameter to the redis crate.
    pub(super) fn parse(url: &str) -> Result<StoreUrl> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut prefix = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("prefix", value)) if prefix.is_none() => prefix = Some(value),
                Some(("prefix", _)) => {
                    return Err(Error::Unsupported(
                        "the redis store URL names `prefix` twice".into(),
                    ));
                }
                None if pair == "prefix" => {
                    return Err(Error::Unsupported(
                        "the redis store URL's `prefix` needs a value: `?prefix=NAME`".into(),
                    ));
                }
                _ => rest.push(pair),
            }
        }
        let prefix = prefix.unwrap_or(DEFAULT_PREFIX);
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
        if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(valid) {
            return Err(Error::Unsupported(format!(
                "the redis key prefix `{prefix}` is not allowed: use 1 to 64 letters, digits, `_`, `-`, `.` or `:`"
            )));
        }
        let connect = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let authority = base.split_once("://").map_or(base, |(_, rest)| rest);
        let place = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        Ok(StoreUrl {
            connect,
            prefix: format!("{prefix}:"),
            place: place.to_owned(),
        })
    }
}
