//! Scratch stores: a fresh, empty store of any engine for one test or one benchmark
//! process, removed when dropped (also when a test panics) — a temp directory for
//! SQLite, a schema of its own on PostgreSQL, a key prefix of its own on Redis. The
//! end-to-end tests use it, and `benches/delivery.rs` includes this file too.

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::time::Duration;

use tempfile::TempDir;

/// The PostgreSQL server used unless `HERALD_TEST_POSTGRES` names another (the same
/// variable and default as the queue conformance suite).
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The Redis server used unless `HERALD_TEST_REDIS` names another.
const REDIS: &str = "redis://127.0.0.1:6379/0";

/// How long reaching a server, or cleaning up after a store, may take.
const SERVER_TIMEOUT: Duration = Duration::from_secs(20);

/// A queue engine, and for a server engine the server's URL (without Herald's
/// `schema` / `prefix` parameter: each scratch store adds its own).
#[derive(Debug, Clone)]
pub enum Engine {
    Sqlite,
    Postgres(String),
    Redis(String),
}

impl Engine {
    /// `sqlite`, `postgres` (the server in `HERALD_TEST_POSTGRES`, by default
    /// PostgreSQL on 127.0.0.1:5432), `redis` (`HERALD_TEST_REDIS`, by default Redis
    /// on 127.0.0.1:6379, database 0), or a `postgres://` / `redis://` server URL.
    pub fn parse(text: &str) -> Result<Engine, String> {
        let from_env = |var: &str, default: &str| std::env::var(var).unwrap_or(default.into());
        let url = match text {
            "sqlite" => return Ok(Engine::Sqlite),
            "postgres" => from_env("HERALD_TEST_POSTGRES", POSTGRES),
            "redis" => from_env("HERALD_TEST_REDIS", REDIS),
            url => url.to_owned(),
        };
        let query = url.split_once('?').map_or("", |(_, q)| q);
        if query
            .split('&')
            .any(|p| p.starts_with("schema=") || p.starts_with("prefix="))
        {
            return Err(format!(
                "{url} names a schema or key prefix: leave it out, every scratch store makes its own"
            ));
        }
        match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("postgres" | "postgresql") => Ok(Engine::Postgres(url)),
            Some("redis" | "rediss") => Ok(Engine::Redis(url)),
            _ => Err(format!(
                "unknown engine `{url}`: use sqlite, postgres, redis, or a postgres:// or redis:// server URL"
            )),
        }
    }

    /// A fresh store: checks the server answers, and names a schema / key prefix
    /// `herald_{label}_{pid}_{random}` that Herald creates on first use. Fails,
    /// saying which server and how to get one, when the server cannot be reached.
    pub async fn scratch(&self, label: &str) -> Result<Scratch, String> {
        let name = format!(
            "herald_{label}_{}_{:08x}",
            std::process::id(),
            fastrand::u32(..)
        );
        match self {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().map_err(|e| format!("a temp dir for SQLite: {e}"))?;
                Ok(Scratch {
                    url: dir.path().join("store").display().to_string(),
                    cleanup: Cleanup::Dir { _dir: dir },
                })
            }
            Engine::Postgres(server) => {
                within(SERVER_TIMEOUT, postgres_ping(server))
                    .await
                    .map_err(|e| self.unreachable(&e))?;
                Ok(Scratch {
                    // Named after the schema too, so the cleanup can end stray connections.
                    url: format!(
                        "{server}{}schema={name}&application_name={name}",
                        joiner(server)
                    ),
                    cleanup: Cleanup::Schema {
                        server: server.clone(),
                        schema: name,
                    },
                })
            }
            Engine::Redis(server) => {
                within(SERVER_TIMEOUT, redis_ping(server))
                    .await
                    .map_err(|e| self.unreachable(&e))?;
                Ok(Scratch {
                    url: format!("{server}{}prefix={name}", joiner(server)),
                    cleanup: Cleanup::Prefix {
                        server: server.clone(),
                        prefix: name,
                    },
                })
            }
        }
    }

    fn unreachable(&self, error: &str) -> String {
        let (var, port) = match self {
            Engine::Redis(_) => ("HERALD_TEST_REDIS", 6379),
            _ => ("HERALD_TEST_POSTGRES", 5432),
        };
        format!(
            "{self} cannot be reached ({error}). Start it on 127.0.0.1:{port} (scripts/test does) \
             or point {var} at a server"
        )
    }

    /// `SQLite`, `PostgreSQL` or `Redis`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres(_) => "PostgreSQL",
            Engine::Redis(_) => "Redis",
        }
    }

    /// The server's version and the settings that decide what an acknowledged
    /// write costs (and survives); `None` for SQLite.
    #[allow(dead_code, reason = "only the delivery bench reports it")]
    pub async fn settings(&self) -> Result<Option<String>, String> {
        match self {
            Engine::Sqlite => Ok(None),
            Engine::Postgres(server) => {
                within(SERVER_TIMEOUT, async {
                    let row = postgres_client(server)
                        .await
                        .map_err(|e| self.unreachable(&e))?
                        .query_one(
                            "SELECT current_setting('server_version'), \
                         current_setting('synchronous_commit'), current_setting('fsync')",
                            &[],
                        )
                        .await
                        .map_err(|e| causes(&e))?;
                    let (version, commit, fsync): (String, String, String) =
                        (row.get(0), row.get(1), row.get(2));
                    Ok(Some(format!(
                        "PostgreSQL {version}, synchronous_commit={commit}, fsync={fsync}"
                    )))
                })
                .await
            }
            Engine::Redis(server) => {
                within(SERVER_TIMEOUT, async {
                    let mut conn = redis_connection(server)
                        .await
                        .map_err(|e| self.unreachable(&e))?;
                    let info: String = redis::cmd("INFO")
                        .arg("server")
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| causes(&e))?;
                    let version = info
                        .lines()
                        .find_map(|l| l.strip_prefix("redis_version:"))
                        .unwrap_or("(unknown version)")
                        .trim()
                        .to_owned();
                    let mut settings = Vec::new();
                    for name in ["appendonly", "appendfsync"] {
                        let answer: std::collections::HashMap<String, String> =
                            redis::cmd("CONFIG")
                                .arg("GET")
                                .arg(name)
                                .query_async(&mut conn)
                                .await
                                .map_err(|e| causes(&e))?;
                        let value = answer.get(name).map_or("?", String::as_str);
                        settings.push(format!("{name}={value}"));
                    }
                    Ok(Some(format!("Redis {version}, {}", settings.join(", "))))
                })
                .await
            }
        }
    }
}

impl fmt::Display for Engine {
    /// The engine and its server, with any password in the URL masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::Sqlite => write!(f, "SQLite"),
            Engine::Postgres(url) | Engine::Redis(url) => {
                write!(f, "{} at {}", self.name(), masked(url))
            }
        }
    }
}

/// `scheme://user:password@host…` → `scheme://user:***@host…`.
fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        _ => url.to_owned(),
    }
}

/// A store that exists until this is dropped.
pub struct Scratch {
    url: String,
    cleanup: Cleanup,
}

impl Scratch {
    /// The `store` setting (`HERALD_STORE`) that names it.
    pub fn url(&self) -> &str {
        &self.url
    }
}

enum Cleanup {
    /// Removed by the directory's own drop.
    Dir {
        _dir: TempDir,
    },
    Schema {
        server: String,
        schema: String,
    },
    Prefix {
        server: String,
        prefix: String,
    },
}

impl Drop for Scratch {
    /// Drops the schema or deletes the prefix's keys on a thread of its own with a
    /// runtime of its own (this may run inside a test's runtime, which must not be
    /// blocked on), within [`SERVER_TIMEOUT`]. A failure is reported, not raised:
    /// it must not hide the panic a test may be unwinding from.
    fn drop(&mut self) {
        let (what, work): (String, Box<dyn FnOnce() -> Result<(), String> + Send>) =
            match &self.cleanup {
                Cleanup::Dir { .. } => return,
                Cleanup::Schema { server, schema } => {
                    let (server, schema) = (server.clone(), schema.clone());
                    (
                        format!("the PostgreSQL schema {schema}"),
                        Box::new(move || block_on(drop_schema(&server, &schema))),
                    )
                }
                Cleanup::Prefix { server, prefix } => {
                    let (server, prefix) = (server.clone(), prefix.clone());
                    (
                        format!("the Redis keys {prefix}:*"),
                        Box::new(move || block_on(delete_prefix(&server, &prefix))),
                    )
                }
            };
        match std::thread::spawn(work).join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not remove {what}: {e}"),
            Err(_) => eprintln!("could not remove {what}: the cleanup panicked"),
        }
    }
}

/// An error and its sources: tokio-postgres keeps the useful part in the source.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Some errors repeat their source in their own message.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

fn joiner(url: &str) -> char {
    if url.contains('?') { '&' } else { '?' }
}

async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

fn block_on(work: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| causes(&e))?
        .block_on(within(SERVER_TIMEOUT, work))
}

async fn postgres_client(server: &str) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::from_str(server).map_err(|e| causes(&e))?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| causes(&e))?;
    tokio::spawn(connection);
    Ok(client)
}

async fn postgres_ping(server: &str) -> Result<(), String> {
    let client = postgres_client(server).await?;
    client
        .simple_query("SELECT 1")
        .await
        .map(drop)
        .map_err(|e| causes(&e))
}

/// Ends the store's connections still open (one left inside a transaction would
/// hold locks the drop waits for), then drops the schema and everything in it.
async fn drop_schema(server: &str, schema: &str) -> Result<(), String> {
    let client = postgres_client(server).await?;
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&schema],
        )
        .await
        .map_err(|e| causes(&e))?;
    // The name is ours: letters, digits and `_` only, so quoting it is enough.
    client
        .batch_execute(&format!(r#"DROP SCHEMA IF EXISTS "{schema}" CASCADE"#))
        .await
        .map_err(|e| causes(&e))
}

async fn redis_connection(server: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    redis::Client::open(server)
        .map_err(|e| causes(&e))?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| causes(&e))
}

async fn redis_ping(server: &str) -> Result<(), String> {
    let mut conn = redis_connection(server).await?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(drop)
        .map_err(|e| causes(&e))
}

/// Deletes every key under `prefix:` with SCAN and DEL, in at most 10,000 steps.
async fn delete_prefix(server: &str, prefix: &str) -> Result<(), String> {
    let mut conn = redis_connection(server).await?;
    let pattern = format!("{prefix}:*");
    let mut cursor = 0u64;
    for _ in 0..10_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| causes(&e))?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| causes(&e))?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
    Err("more keys than 10,000 SCAN steps reach".into())
}

#[test]
fn a_server_url_is_shown_with_its_password_masked() {
    assert_eq!(
        masked("postgres://herald:s3cret@db.local:5432/herald?sslmode=disable"),
        "postgres://herald:***@db.local:5432/herald?sslmode=disable"
    );
    assert_eq!(
        masked("redis://:s3cret@127.0.0.1:6379/0"),
        "redis://:***@127.0.0.1:6379/0"
    );
    assert_eq!(
        masked("postgres://postgres@127.0.0.1:5432/postgres"),
        "postgres://postgres@127.0.0.1:5432/postgres"
    );
}
