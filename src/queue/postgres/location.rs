//! The PostgreSQL store's URL: tokio-postgres connection settings plus Herald's own
//! `schema` and `retention_days` parameters, which are taken off before connecting.
//! `retention_days` is the older spelling of `[retention] days`, read when the
//! configuration does not set that.

use std::str::FromStr;

use tokio_postgres::Config;
use tokio_postgres::config::Host;
use url::Url;

use super::cause;
use crate::queue::{Error, Result};

/// The schema Herald's tables live in when the URL names none.
const DEFAULT_SCHEMA: &str = "herald";

/// Where the store is: the connection settings, Herald's schema and, if the URL
/// says, how many days finished batches are kept (0: forever).
#[derive(Debug)]
pub(super) struct Location {
    pub(super) config: Config,
    pub(super) schema: String,
    pub(super) retention_days: Option<u32>,
}

impl Location {
    /// Takes Herald's own parameters (`schema`, `retention_days`) off `url` and
    /// reads the rest as tokio-postgres connection settings. `Error::Unsupported`
    /// names what is wrong (a parameter, with the form it takes) and the form of
    /// the whole URL.
    pub(super) fn parse(url: &Url) -> Result<Location> {
        let invalid = |why: String| {
            Error::Unsupported(format!(
                "the PostgreSQL store URL is not valid: {why}; expected \
                 postgres://user[:password]@host[:port]/database[?schema=NAME&retention_days=N]"
            ))
        };
        let mut schema = DEFAULT_SCHEMA.to_owned();
        let mut retention_days = None;
        for (key, value) in url.query_pairs() {
            match &*key {
                "schema" => schema = value.into_owned(),
                "retention_days" => {
                    retention_days = Some(value.parse().map_err(|_| {
                        invalid(format!(
                            "`retention_days={value}` is not a whole number of days (0 keeps everything)"
                        ))
                    })?);
                }
                _ => {}
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
        let config =
            Config::from_str(connection_url(url).as_str()).map_err(|e| invalid(cause(&e)))?;
        Ok(Location {
            config,
            schema,
            retention_days,
        })
    }
}

/// `url` without Herald's own parameters: what tokio-postgres reads. The other
/// parameters are kept as written, since tokio-postgres decodes `%20`, not `+`.
fn connection_url(url: &Url) -> Url {
    let ours = |pair: &&str| {
        form_urlencoded::parse(pair.as_bytes())
            .next()
            .is_some_and(|(key, _)| key == "schema" || key == "retention_days")
    };
    let kept: Vec<&str> = url
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && !ours(pair))
        .collect();
    let mut rest = url.clone();
    rest.set_query((!kept.is_empty()).then(|| kept.join("&")).as_deref());
    rest
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
    use std::time::Duration;

    use super::*;

    fn parse_location(url: &str) -> Result<Location> {
        Location::parse(&Url::parse(url).expect("a URL"))
    }

    #[test]
    fn the_schema_and_retention_are_taken_off_the_url() {
        let l = parse_location(
            "postgres://herald@db.example:6543/mail?schema=Tenant_1&connect_timeout=3&retention_days=7",
        )
        .unwrap();
        assert_eq!(l.schema, "Tenant_1");
        assert_eq!(l.retention_days, Some(7));
        assert_eq!(l.config.get_dbname(), Some("mail"));
        assert_eq!(l.config.get_ports(), &[6543]);
        assert_eq!(
            l.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
    }

    #[test]
    fn defaults_are_schema_herald_and_no_retention_of_the_urls_own() {
        let l = parse_location("postgresql://u@localhost/db").unwrap();
        assert_eq!(l.schema, "herald");
        assert_eq!(l.retention_days, None);
    }

    #[test]
    fn zero_retention_days_is_read_as_written() {
        let l = parse_location("postgres://u@localhost/db?retention_days=0").unwrap();
        assert_eq!(l.retention_days, Some(0));
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
                Err(Error::Unsupported(m)) => assert!(m.contains(needle), "{url}: {m}"),
                other => panic!("{url}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn other_parameters_and_escapes_reach_the_connection_settings_as_written() {
        let l = parse_location(
            "postgres://us%40r:p%2Fw@h/db?options=-c%20search_path%3Dx&schema=s&application_name=a+b",
        )
        .unwrap();
        assert_eq!(l.schema, "s");
        assert_eq!(l.config.get_user(), Some("us@r"));
        assert_eq!(l.config.get_password(), Some(&b"p/w"[..]));
        assert_eq!(l.config.get_options(), Some("-c search_path=x"));
        // tokio-postgres decodes `%20`, not `+`: a `+` stays one.
        assert_eq!(l.config.get_application_name(), Some("a+b"));
    }

    #[tokio::test]
    async fn a_malformed_parameter_is_a_configuration_error_before_any_connection() {
        for url in [
            "postgres://u@127.0.0.1:1/db?retention_days=soon",
            "postgres://u@127.0.0.1:1/db?schema=a-b",
        ] {
            match crate::queue::Queue::open(&url.parse().expect("a store URL")).await {
                Err(Error::Unsupported(m)) => assert!(m.contains("expected"), "{url}: {m}"),
                Err(other) => panic!("{url}: expected Unsupported, got {other:?}"),
                Ok(_) => panic!("{url}: opened"),
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
