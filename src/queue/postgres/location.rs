//! The PostgreSQL store's URL: tokio-postgres connection settings plus Herald's own
//! `schema` and `retention_days` parameters, which are taken off before connecting.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::Config;
use tokio_postgres::config::Host;

use super::cause;
use crate::queue::{Error, Result};

/// The schema Herald's tables live in when the URL names none.
const DEFAULT_SCHEMA: &str = "herald";

/// How long finished batches are kept when the URL does not say.
const DEFAULT_RETENTION_DAYS: u32 = 30;

/// Where the store is: the connection settings, Herald's schema and how long
/// finished batches are kept (`None`: forever).
#[derive(Debug)]
pub(super) struct Location {
    pub(super) config: Config,
    pub(super) schema: String,
    pub(super) retention: Option<Duration>,
}

/// Splits Herald's own parameters (`schema`, `retention_days`) off the URL and
/// parses the rest as tokio-postgres connection settings.
pub(super) fn parse_location(url: &str) -> Result<Location> {
    let invalid = |why: String| {
        Error::Unavailable(format!(
            "the PostgreSQL store URL is not valid: {why}; expected \
             postgres://user[:password]@host[:port]/database[?schema=NAME&retention_days=N]"
        ))
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut schema = DEFAULT_SCHEMA.to_owned();
    let mut retention_days = DEFAULT_RETENTION_DAYS;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = form_urlencoded::parse(pair.as_bytes()).next() else {
            continue;
        };
        match &*key {
            "schema" => schema = value.into_owned(),
            "retention_days" => {
                retention_days = value.parse().map_err(|_| {
                    invalid(format!(
                        "`retention_days={value}` is not a whole number of days (0 keeps everything)"
                    ))
                })?;
            }
            _ => kept.push(pair),
        }
    }
    let valid = schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(invalid(format!(
            "`schema={schema}`: a schema name is up to 63 letters, digits and _, not starting with a digit"
        )));
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let config = Config::from_str(&rest).map_err(|e| invalid(cause(&e)))?;
    Ok(Location {
        config,
        schema,
        retention: (retention_days > 0)
            .then(|| Duration::from_secs(u64::from(retention_days) * 24 * 3600)),
    })
}

/// `user@host:port/db`, never the password.
pub(super) fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let user = config.get_user().unwrap_or("?");
    format!(
        "{user}@{}:{}/{}",
        hosts.join(","),
        if ports.is_empty() {
            "5432".into()
        } else {
            ports.join(",")
        },
        config.get_dbname().unwrap_or(user)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_and_retention_are_taken_off_the_url() {
        let l = parse_location(
            "postgres://herald@db.example:6543/mail?schema=Tenant_1&connect_timeout=3&retention_days=7",
        )
        .unwrap();
        assert_eq!(l.schema, "Tenant_1");
        assert_eq!(l.retention, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(l.config.get_dbname(), Some("mail"));
        assert_eq!(l.config.get_ports(), &[6543]);
        assert_eq!(
            l.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
    }

    #[test]
    fn defaults_are_schema_herald_and_thirty_days() {
        let l = parse_location("postgresql://u@localhost/db").unwrap();
        assert_eq!(l.schema, "herald");
        assert_eq!(l.retention, Some(Duration::from_secs(30 * 86_400)));
    }

    #[test]
    fn zero_retention_days_keeps_everything() {
        let l = parse_location("postgres://u@localhost/db?retention_days=0").unwrap();
        assert_eq!(l.retention, None);
    }

    #[test]
    fn a_bad_schema_or_retention_is_refused_with_the_reason() {
        for (url, needle) in [
            ("postgres://u@h/db?schema=a;drop", "schema"),
            ("postgres://u@h/db?schema=1abc", "schema"),
            ("postgres://u@h/db?schema=", "schema"),
            ("postgres://u@h/db?retention_days=soon", "retention_days"),
            ("postgres://u@h/db?retention_days=-1", "retention_days"),
            ("postgres://u@h/db?frobnicate=1", "frobnicate"),
        ] {
            match parse_location(url) {
                Err(Error::Unavailable(m)) => assert!(m.contains(needle), "{url}: {m}"),
                other => panic!("{url}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_password_never_appears_in_descriptions() {
        let l = parse_location("postgres://u:s3cret@h:5433/db").unwrap();
        let d = describe(&l.config);
        assert_eq!(d, "u@h:5433/db");
        assert!(!format!("{l:?}").contains("s3cret"));
    }
}
