//! Logging: human-readable text by default, JSON lines with `--log-format json`.
//! The level comes from `HERALD_LOG` (or `RUST_LOG`), `info` by default. Nothing
//! logged at info or above holds a message body or a secret — but the log
//! provider's line, whose job is to show the message: bodies and subjects go to
//! debug, secrets (`domain::Secret`) never, store passwords are masked.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber; logs go to standard error.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("HERALD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = subscriber(
        format,
        filter,
        std::io::stderr,
        std::io::stderr().is_terminal(),
    );
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The subscriber `init` installs, writing to `writer` (tests capture it).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    }
}
