use super::*;
use crate::domain::Secret;
use crate::provider::ProviderKind;
use crate::ratelimit::Cap;

/// Parses `text` inside figment's jail: the environment is read under a global
/// lock, so a test that sets `HERALD_…` variables cannot leak into another.
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn parse(text: &str) -> Config {
    let mut parsed = None;
    figment::Jail::expect_with(|_| {
        parsed = Some(Config::from_toml(text).expect("valid config"));
        Ok(())
    });
    parsed.expect("the jail ran")
}

#[test]
fn no_file_gives_working_defaults() {
    let c = parse("");
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert!(c.providers.is_empty());
    c.validate().unwrap();
}

#[test]
fn providers_and_defaults_come_from_toml() {
    let c = parse(
        r#"
        [defaults]
        sms = "hook"
        [[providers]]
        name = "hook"
        kind = "webhook"
        url = "http://127.0.0.1:9190/sms"
        channels = ["sms"]
        rate_per_sec = 500
        secret = "s3cret"
        per_recipient = { per_minute = 1, per_day = 10 }
        "#,
    );
    assert_eq!(c.defaults[&Channel::Sms], "hook");
    let p = &c.providers[0];
    assert_eq!(p.rate_per_sec, Some(500.0));
    assert_eq!(
        p.per_recipient.caps(),
        [
            Cap {
                count: 1,
                window_ms: 60_000
            },
            Cap {
                count: 10,
                window_ms: 86_400_000
            }
        ]
    );
    match &p.kind {
        ProviderKind::Webhook { url, secret } => {
            assert_eq!(url, "http://127.0.0.1:9190/sms");
            assert_eq!(secret.as_ref().map(Secret::expose), Some("s3cret"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "the secret leaked into Debug"
    );
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn environment_overrides_the_file() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("HERALD_WORKER__MAX_IN_FLIGHT", "7");
        jail.set_env(
            "HERALD_PROVIDERS",
            r#"[{name="hook", kind="webhook", url="http://127.0.0.1:1/x"}]"#,
        );
        let c = Config::from_toml("[worker]\nmax_in_flight = 3").unwrap();
        assert_eq!(c.worker.max_in_flight, 7);
        assert_eq!(c.providers[0].name, "hook");
        Ok(())
    });
}

#[test]
fn a_public_address_without_tokens_is_refused_and_with_one_allowed() {
    let c = parse("listen = \"0.0.0.0:8080\"");
    c.validate().unwrap();
    let err = c.check_listen().unwrap_err();
    assert!(
        err.contains("0.0.0.0:8080") && err.contains("herald token"),
        "{err}"
    );
    let hash = crate::auth::TokenHash::of("t").to_string();
    let c = parse(&format!(
        "listen = \"0.0.0.0:8080\"\n[auth]\ntokens = [\"{hash}\"]"
    ));
    c.check_listen().unwrap();
    assert_eq!(c.auth.tokens[0].hash.to_string(), hash);
    parse("listen = \"[::1]:8080\"").check_listen().unwrap();
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn a_malformed_token_hash_is_refused_naming_the_key() {
    let mut err = None;
    figment::Jail::expect_with(|_| {
        err = Config::from_toml("[auth]\ntokens = [\"abc\"]").err();
        Ok(())
    });
    let err = err.expect("refused").to_string();
    assert!(
        err.contains("auth.tokens") && err.contains("sha256:"),
        "{err}"
    );
}

#[test]
fn a_store_password_is_hidden_when_the_store_is_shown() {
    let shown = |store: &str| {
        Config::from_toml(&format!("store = {store:?}"))
            .expect("a valid configuration")
            .store
            .to_string()
    };
    assert_eq!(
        shown("postgres://herald:pa:ss@db.example:5432/herald?sslmode=disable"),
        "postgres://herald:***@db.example:5432/herald?sslmode=disable"
    );
    assert_eq!(
        shown("redis://:secret@127.0.0.1:6379/0"),
        "redis://:***@127.0.0.1:6379/0"
    );
    assert_eq!(shown("sqlite://herald-data"), "herald-data");
}

#[test]
fn a_malformed_store_url_stops_the_configuration_naming_its_problem() {
    let e = Config::from_toml(r#"store = "postgres://herald:s3cret@db:54x32/herald""#)
        .expect_err("a malformed store URL")
        .to_string();
    assert!(e.contains("invalid port number"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
    let e = Config::from_toml(r#"store = "mysql://db/herald""#)
        .expect_err("an unknown engine")
        .to_string();
    assert!(e.contains("postgres://") && e.contains("redis://"), "{e}");
}

#[test]
fn failover_lists_and_circuit_settings_come_from_toml() {
    let c = parse(
        r#"
        [failover]
        sms = ["ali", "tc"]
        [circuit]
        failure_rate = 0.6
        min_calls = 10
        cooldown_ms = 1000
        "#,
    );
    assert_eq!(c.failover[&Channel::Sms], ["ali", "tc"]);
    let circuit = &c.circuit;
    assert_eq!(
        (
            circuit.failure_rate,
            circuit.min_calls,
            circuit.window_calls,
            circuit.probes,
            circuit.cooldown_ms,
            circuit.max_cooldown_ms
        ),
        (0.6, 10, 100, 3, 1_000, 600_000)
    );
    c.validate().unwrap();
    for (toml, key) in [
        ("failure_rate = 0.0", "circuit.failure_rate"),
        ("failure_rate = 1.5", "circuit.failure_rate"),
        ("min_calls = 0", "circuit.min_calls"),
        ("min_calls = 200", "circuit.window_calls"),
        ("probes = 0", "circuit.probes"),
        ("probe_interval_ms = 0", "circuit.probe_interval_ms"),
        ("cooldown_ms = 700000", "max_cooldown_ms"),
    ] {
        let e = parse(&format!("[circuit]\n{toml}")).validate().unwrap_err();
        assert!(e.contains(key), "{toml}: {e}");
    }
}

#[test]
fn the_replaced_circuit_failures_key_is_refused_naming_what_replaced_it() {
    let e = Config::from_toml("[circuit]\nfailures = 5")
        .expect_err("a replaced key")
        .to_string();
    assert!(e.contains("circuit.failures"), "{e}");
    assert!(
        e.contains("circuit.failure_rate") && e.contains("circuit.min_calls"),
        "{e}"
    );
}

#[test]
fn ingest_sources_are_read_with_their_kind_and_defaults() {
    let c = parse(
        r#"
        [[ingest]]
        name = "legacy"
        kind = "redis-list"
        url = "redis://:pw@127.0.0.1:6379/0"
        key = "sms_queue"
        channel = "sms"
        provider = "ali"
        [[ingest]]
        name = "mq"
        kind = "amqp"
        url = "amqp://guest:guest@127.0.0.1:5672/%2f"
        queue = "sms_queue"
        "#,
    );
    c.validate().unwrap();
    let legacy = &c.ingest[0];
    assert_eq!(legacy.channel, Some(Channel::Sms));
    assert_eq!(legacy.provider.as_deref(), Some("ali"));
    match &legacy.kind {
        IngestKind::RedisList {
            key,
            processing_key,
            ..
        } => {
            assert_eq!(key, "sms_queue");
            assert_eq!(processing_key, &None);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(c.ingest[1].kind, IngestKind::Amqp { prefetch: 16, .. }),
        "{:?}",
        c.ingest[1]
    );
    assert!(
        !format!("{c:?}").contains("pw@"),
        "the URL leaked into Debug"
    );
}

#[test]
fn an_ingest_prefetch_of_zero_and_a_repeated_name_are_refused() {
    let c = parse(
        "[[ingest]]\nname = \"mq\"\nkind = \"amqp\"\nurl = \"amqp://h\"\nqueue = \"q\"\nprefetch = 0",
    );
    assert!(c.validate().unwrap_err().contains("prefetch"));
    let source =
        "[[ingest]]\nname = \"a\"\nkind = \"redis-list\"\nurl = \"redis://h\"\nkey = \"k\"\n";
    let c = parse(&format!("{source}{source}"));
    assert!(c.validate().unwrap_err().contains("unique"));
}

#[test]
fn a_lease_too_short_to_renew_is_refused_and_one_shorter_than_a_send_is_not() {
    let c = parse("[worker]\nlease_ms = 500");
    assert!(c.validate().unwrap_err().contains("worker.lease_ms (500)"));
    let c = parse("[worker]\nlease_ms = 1000\nsend_timeout_ms = 30000");
    assert_eq!(c.validate(), Ok(()), "renewal keeps a slow send's lease");
}

#[test]
fn a_deadline_default_comes_from_the_provider_else_the_channel() {
    let c = parse(
        r#"
        [valid_for]
        sms = 3600
        providers = { hook = 600 }
        [[providers]]
        name = "hook"
        kind = "webhook"
        url = "http://127.0.0.1:9190/sms"
        "#,
    );
    c.validate().unwrap();
    let secs = |channel, provider| c.valid_for.default_for(channel, provider);
    assert_eq!(secs(Channel::Sms, "hook"), Some(Duration::from_secs(600)));
    assert_eq!(secs(Channel::Sms, "log"), Some(Duration::from_secs(3600)));
    assert_eq!(secs(Channel::Email, "log"), None);
    let unknown = parse("[valid_for]\nproviders = { nobody = 60 }").validate();
    assert!(unknown.unwrap_err().contains("`nobody`"));
    let zero = parse("[valid_for]\nemail = 0").validate();
    assert!(zero.unwrap_err().contains("valid_for.email"));
}

/// `Config::from_toml(text)` with the environment set to `env`, in figment's jail.
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn read_with_env(text: &str, env: &[(&str, &str)]) -> Result<Config, Error> {
    let mut read = None;
    figment::Jail::expect_with(|jail| {
        for (name, value) in env {
            jail.set_env(name, value);
        }
        read = Some(Config::from_toml(text));
        Ok(())
    });
    read.expect("the jail ran")
}

/// The error `Config::from_toml(text)` refuses with, the environment set to `env`.
fn refusal(text: &str, env: &[(&str, &str)]) -> String {
    match read_with_env(text, env) {
        Ok(_) => panic!("{text} is taken"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_section_key_at_the_top_level_is_refused_naming_its_section() {
    let err = refusal("default_region = \"CN\"", &[]);
    assert_eq!(
        err,
        "unknown setting `default_region` in the top level (TOML source string): \
         did you mean `default_region` under [recipients]?"
    );
}

#[test]
fn a_misspelt_smtp_key_is_refused_naming_the_provider_and_the_nearest_key() {
    let err = refusal(
        r#"
        [[providers]]
        name = "log2"
        kind = "log"
        [[providers]]
        name = "mail"
        kind = "smtp"
        host = "127.0.0.1"
        from = "a@example.com"
        securty = "none"
        "#,
        &[],
    );
    assert!(
        err.starts_with(
            "unknown setting `securty` in [[providers]] #2 (`mail`) (TOML source string)"
        ) && err.ends_with("did you mean `security`?"),
        "{err}"
    );
    let err = refusal(
        "[[providers]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"a@example.com\"\ntls = \"none\"",
        &[],
    );
    assert!(
        err.starts_with("unknown setting `tls` in [[providers]] #1 (`mail`)")
            && err.contains("the keys it reads include `host`, `port`, `security`"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_refused_in_every_table() {
    for (text, key) in [
        ("[worker]\nmax_inflight = 3", "max_inflight"),
        ("[recipients]\ndefault_regoin = \"CN\"", "default_regoin"),
        (
            "[[providers]]\nname = \"l\"\nkind = \"log\"\nspeed = 1",
            "speed",
        ),
        (
            "[[providers]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\nsecert = \"s\"",
            "secert",
        ),
        (
            "[[ingest]]\nname = \"q\"\nkind = \"redis-list\"\nurl = \"redis://127.0.0.1/\"\nkey = \"k\"\nprocessing = \"p\"",
            "processing",
        ),
        ("[auth]\ntoken = []", "token"),
        ("[replies.sms]\nopt_outs = [\"STOP\"]", "opt_outs"),
        ("[replies]\nemail = {}", "email"),
    ] {
        let err = refusal(text, &[]);
        assert!(
            err.starts_with(&format!("unknown setting `{key}`")),
            "{text}: {err}"
        );
    }
}

#[test]
fn an_unknown_environment_variable_is_refused_by_its_name_and_others_still_work() {
    let err = refusal("", &[("HERALD_DEFAULT_REGION", "CN")]);
    assert!(
        err.contains("(HERALD_DEFAULT_REGION)") && err.contains("under [recipients]"),
        "{err}"
    );
    let parsed = read_with_env(
        "",
        &[
            ("HERALD_RECIPIENTS__DEFAULT_REGION", "CN"),
            ("HERALD_SERVER", "http://127.0.0.1:1"),
            ("HERALD_TOKEN", "t"),
            ("HERALD_LOG", "debug"),
            ("HERALD_LOG_FORMAT", "json"),
            ("HERALD_CONFIG", "herald.toml"),
        ],
    )
    .expect("the variables are Herald's");
    let region = parsed.recipients.default_region.map(|r| r.to_string());
    assert_eq!(region.as_deref(), Some("CN"));
}

#[test]
fn reply_keywords_default_to_the_common_words_and_are_checked() {
    let config = Config::from_toml("").unwrap();
    let keywords = config.replies.sms.keywords();
    assert_eq!(
        keywords.of("+8613800138000", "退订"),
        Some(crate::provider::Keyword::OptOut)
    );
    let config = Config::from_toml(
        "[replies.sms]\nopt_out = [\"ARRET\"]\nopt_out_reply = \"Vous êtes désinscrit.\"",
    )
    .unwrap();
    assert_eq!(config.replies.sms.opt_out, ["ARRET"]);
    assert_eq!(config.replies.sms.opt_in, ["START", "UNSTOP"]);
    config.validate().unwrap();
    for (text, says) in [
        (
            "[replies.sms]\nopt_out = [\"!!\"]",
            "replies.sms.opt_out: `!!`",
        ),
        ("[replies.sms]\nopt_in = [\"stop\"]", "`stop` is both"),
        (
            "[replies.sms]\nopt_in_reply = \" \"",
            "replies.sms.opt_in_reply must not be empty",
        ),
    ] {
        let err = Config::from_toml(text).unwrap().validate().unwrap_err();
        assert!(err.contains(says), "{text}: {err}");
    }
}

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn webhooks_and_their_settings_come_from_toml() {
    let c = parse(&format!(
        r#"
        [webhook]
        retry_for = "2h 30m"
        timeout = 5
        batch_size = 50
        callback_secret = "{WHSEC}"
        [[webhooks]]
        name = "app"
        url = "https://app.example/herald"
        secret = "{WHSEC}"
        channels = ["sms"]
        sources = ["api", "send-sms"]
        "#
    ));
    c.validate().unwrap();
    assert_eq!(c.webhook.retry_for, Duration::from_secs(9000));
    assert_eq!(c.webhook.timeout, Duration::from_secs(5));
    assert_eq!(c.webhook.batch_size, 50);
    assert!(c.webhook.callback_secret.is_some());
    let app = &c.webhooks[0];
    assert_eq!(app.url.as_str(), "https://app.example/herald");
    assert_eq!(app.channels.as_deref(), Some(&[Channel::Sms][..]));
    assert_eq!(app.sources.as_ref().unwrap(), &["api", "send-sms"]);
}

#[test]
fn webhook_settings_default_to_a_day_of_retries_and_a_hundred_events_a_post() {
    let c = parse("");
    assert_eq!(c.webhook.retry_for, Duration::from_secs(86_400));
    assert_eq!(c.webhook.batch_size, 100);
    assert!(c.webhook.callback_secret.is_none());
    assert!(c.webhooks.is_empty());
}

#[test]
fn a_webhook_secret_that_is_not_a_standard_webhooks_secret_is_refused_naming_the_key() {
    let err = refusal(
        "[[webhooks]]\nname = \"app\"\nurl = \"http://127.0.0.1:1/\"\nsecret = \"s3cret\"",
        &[],
    );
    assert!(err.contains("whsec_") && err.contains("secret"), "{err}");
    assert!(!err.contains("s3cret"), "the secret shows: {err}");
    let err = refusal("[webhook]\ncallback_secret = \"whsec_c2hvcnQ=\"", &[]);
    assert!(err.contains("callback_secret"), "{err}");
}

#[test]
fn a_webhook_url_that_is_not_http_is_refused_naming_the_key() {
    let err = refusal(
        &format!("[[webhooks]]\nname = \"app\"\nurl = \"ftp://x/\"\nsecret = \"{WHSEC}\""),
        &[],
    );
    assert!(
        err.contains("url") && err.contains("http or https"),
        "{err}"
    );
}

#[test]
fn a_span_that_is_not_a_span_is_refused_saying_how_to_write_one() {
    let err = refusal("[webhook]\nretry_for = \"a day\"", &[]);
    assert!(err.contains("retry_for") && err.contains("24h"), "{err}");
}

#[test]
fn webhook_names_must_be_unique_and_not_callback() {
    let entry = |name: &str| {
        format!(
            "[[webhooks]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:1/\"\nsecret = \"{WHSEC}\"\n"
        )
    };
    let twice = parse(&(entry("app") + &entry("app")))
        .validate()
        .unwrap_err();
    assert!(twice.contains("`app`"), "{twice}");
    let callback = parse(&entry("callback")).validate().unwrap_err();
    assert!(callback.contains("`callback`"), "{callback}");
    let zero = parse("[webhook]\nbatch_size = 0").validate().unwrap_err();
    assert!(zero.contains("webhook.batch_size"), "{zero}");
}

#[test]
fn unknown_webhook_keys_are_refused_naming_the_endpoint_or_the_section() {
    let err = refusal(
        &format!(
            "[[webhooks]]\nname = \"app\"\nurl = \"http://127.0.0.1:1/\"\nsecret = \"{WHSEC}\"\nevent = []"
        ),
        &[],
    );
    assert!(
        err.starts_with("unknown setting `event` in [[webhooks]] #1 (`app`)"),
        "{err}"
    );
    let err = refusal("[webhook]\nretry = \"1h\"", &[]);
    assert!(
        err.starts_with("unknown setting `retry` in [webhook]"),
        "{err}"
    );
    let err = refusal("retry_for = \"1h\"", &[]);
    assert!(err.contains("`retry_for` under [webhook]"), "{err}");
}

#[test]
fn a_providers_daily_budget_and_its_time_zone_come_from_toml() {
    let config = parse(
        r#"
[[providers]]
name = "ali"
kind = "log"
price_per_message = 0.045
currency = "CNY"
daily_budget = 500
budget_time_zone = "Asia/Shanghai"
"#,
    );
    let ali = &config.providers[0];
    assert_eq!(ali.daily_budget, Some(500.0));
    assert_eq!(ali.budget_time_zone.as_deref(), Some("Asia/Shanghai"));
}
