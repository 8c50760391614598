//! A bad configuration stops `herald serve` with a message naming the setting.

use std::time::Duration;

use crate::helpers::ProviderServer;

use super::{herald_command, output_within, write_config};

/// One way to get the configuration wrong, and what `herald serve` must say about it.
struct BadConfig {
    what: &'static str,
    /// The config file's text; `None`: the file given with `--config` does not exist.
    file: Option<String>,
    env: &'static [(&'static str, &'static str)],
    /// Substrings of stderr, compared case-insensitively (figment names environment
    /// keys in upper case).
    says: &'static [&'static str],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_stops_serve_with_a_message_naming_the_setting() {
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(write_config(dir.path(), &server)).unwrap();
    let cases = [
        BadConfig {
            what: "the default provider is not declared",
            file: Some(good.replace(r#"sms = "hook""#, r#"sms = "nope""#)),
            env: &[],
            says: &["`nope`", "default for sms", "not declared"],
        },
        BadConfig {
            what: "the lease is too short to be renewed",
            file: Some(good.clone()),
            env: &[("HERALD_WORKER__LEASE_MS", "500")],
            says: &["worker.lease_ms (500)", "at least 1000"],
        },
        BadConfig {
            what: "an unknown store scheme",
            file: Some(good.clone()),
            env: &[("HERALD_STORE", "foo://x")],
            says: &["store", "foo://"],
        },
        BadConfig {
            what: "a number that is not one, from the environment",
            file: Some(good.clone()),
            env: &[("HERALD_WORKER__MAX_IN_FLIGHT", "lots")],
            says: &["worker.max_in_flight", "lots"],
        },
        BadConfig {
            what: "max_in_flight of zero",
            file: Some(good.clone()),
            env: &[("HERALD_WORKER__MAX_IN_FLIGHT", "0")],
            says: &["worker.max_in_flight"],
        },
        BadConfig {
            what: "a misspelt key in the file",
            file: Some(good.replace("poll_interval_ms", "poll_interval")),
            env: &[],
            says: &[
                "unknown setting `poll_interval` in [worker] (",
                "bad.toml): did you mean `poll_interval_ms`?",
            ],
        },
        BadConfig {
            what: "a section's key at the top level",
            file: Some(format!("default_region = \"CN\"\n{good}")),
            env: &[],
            says: &[
                "unknown setting `default_region` in the top level",
                "did you mean `default_region` under [recipients]?",
            ],
        },
        BadConfig {
            what: "a key an SMTP provider does not read",
            file: Some(format!(
                "{good}\n[[providers]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\n\
                 from = \"herald@example.com\"\ntls = \"none\"\n"
            )),
            env: &[],
            says: &[
                "unknown setting `tls` in [[providers]] #2 (`mail`)",
                "the keys it reads include `host`, `port`, `security`",
            ],
        },
        BadConfig {
            what: "a section's key at the top level, from the environment",
            file: Some(good.clone()),
            env: &[("HERALD_DEFAULT_REGION", "CN")],
            says: &[
                "unknown setting `default_region` in the top level (HERALD_DEFAULT_REGION)",
                "under [recipients]",
            ],
        },
        BadConfig {
            what: "a --config file that does not exist",
            file: None,
            env: &[],
            says: &["absent.toml", "does not exist"],
        },
    ];
    for case in cases {
        let path = match &case.file {
            Some(text) => {
                let path = dir.path().join("bad.toml");
                std::fs::write(&path, text).unwrap();
                path
            }
            None => dir.path().join("absent.toml"),
        };
        let mut command = herald_command();
        command
            .args(["serve", "--config"])
            .arg(&path)
            .envs(case.env.iter().copied());
        let output = output_within(command, Duration::from_secs(15)).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let what = case.what;
        assert!(
            !output.status.success() && output.status.code().is_some(),
            "{what}: herald serve exited with {}; stderr:\n{stderr}",
            output.status
        );
        for needle in case.says {
            assert!(
                stderr.to_lowercase().contains(&needle.to_lowercase()),
                "{what}: stderr does not mention {needle:?}:\n{stderr}"
            );
        }
    }
}
