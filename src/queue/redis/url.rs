//! The Redis store URL: what the redis crate connects to, and the key prefix.

use crate::queue::{Error, Result};

const DEFAULT_PREFIX: &str = "herald";

/// The parts of a store URL: what the redis crate connects to, the key prefix, and
/// where it is for messages (no user name or password).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) connect: String,
    pub(super) prefix: String,
    pub(super) place: String,
}

impl Target {
    /// Reads `redis[s]://[user:password@]host[:port][/db][?prefix=NAME]`, taking
    /// out `prefix` and leaving any other parameter to the redis crate.
    pub(super) fn parse(url: &::url::Url) -> Result<Target> {
        let mut prefix = None;
        let mut rest = Vec::new();
        for (name, value) in url.query_pairs() {
            match (name.as_ref(), prefix.is_some()) {
                ("prefix", true) => {
                    return Err(Error::Unsupported(
                        "the redis store URL names `prefix` twice".into(),
                    ));
                }
                ("prefix", false) if value.is_empty() => {
                    return Err(Error::Unsupported(
                        "the redis store URL's `prefix` needs a value: `?prefix=NAME`".into(),
                    ));
                }
                ("prefix", false) => prefix = Some(value),
                _ => rest.push((name, value)),
            }
        }
        let prefix = prefix.as_deref().unwrap_or(DEFAULT_PREFIX);
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
        if prefix.len() > 64 || !prefix.chars().all(valid) {
            return Err(Error::Unsupported(format!(
                "the redis key prefix `{prefix}` is not allowed: use 1 to 64 letters, digits, `_`, `-`, `.` or `:`"
            )));
        }
        let mut connect = url.clone();
        connect.set_query(None);
        if !rest.is_empty() {
            connect.query_pairs_mut().extend_pairs(rest);
        }
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let place = format!("{}{port}{}", url.host_str().unwrap_or(""), url.path());
        Ok(Target {
            connect: connect.into(),
            prefix: format!("{prefix}:"),
            place,
        })
    }
}
