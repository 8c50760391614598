//! The benches' `BENCH_…` settings from the environment.

use anyhow::Context;

/// The whole number in environment variable `name`, or `default` when unset.
pub(crate) fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}=`{v}` is not a whole number")),
        Err(_) => Ok(default),
    }
}
