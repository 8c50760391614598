//! The herald a benchmark runs, and the commit it was built from, for its report.

use std::process::Command;

/// The short commit, marked when `src/` or `Cargo.toml` has uncommitted changes.
pub(crate) fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&[
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "src",
                "Cargo.toml",
            ])
            .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev} + uncommitted changes in src/")
            } else {
                rev
            }
        }
        None => "unknown".into(),
    }
}

/// The herald executable a bench runs: `BENCH_HERALD` when set (another build, to
/// compare two revisions in one sitting), else the one cargo built beside the bench.
pub(crate) fn herald_bin() -> std::path::PathBuf {
    std::env::var_os("BENCH_HERALD").map_or_else(
        || env!("CARGO_BIN_EXE_herald").into(),
        std::path::PathBuf::from,
    )
}

/// What the report says of the herald it ran: its commit, or the other build.
pub(crate) fn herald_label() -> String {
    match std::env::var_os("BENCH_HERALD") {
        Some(path) => format!(
            "the build given in BENCH_HERALD ({})",
            path.to_string_lossy()
        ),
        None => format!("{} ({})", revision(), env!("CARGO_BIN_EXE_herald")),
    }
}
