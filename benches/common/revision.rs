//! The commit a benchmark ran on, for its report: both benches print it.

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
