//! The client commands (`herald send` with and without `--wait`, `status`,
//! `batches`, `retry`, `cancel`, `token`), run as the real executable against an
//! in-process Herald: what they print, the CSV line numbers in their messages,
//! their exit codes, and what reaches the provider. `person` holds `messages`,
//! `export` and `erase`.

mod person;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{ProviderServer, Reply, TestApp, route_all_to, sms_batch, spawn_app};
use crate::process::{herald_command, output_within};

const FINISH: Duration = Duration::from_secs(10);

/// What a `herald` command did.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_succeeded(&self) {
        assert!(
            self.success,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }
}

/// Runs `herald ARGS` with `env`, bounded in time.
async fn herald(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = herald_command();
    command.args(args).envs(env.iter().copied());
    let output = output_within(command, Duration::from_secs(20)).await;
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `herald send --channel sms --template TEMPLATE --csv CSV --server APP`, then `extra`.
async fn send(app: &TestApp, template: &str, csv: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "send",
        "--channel",
        "sms",
        "--template",
        template,
        "--csv",
        csv,
        "--server",
        &app.url,
    ];
    args.extend_from_slice(extra);
    herald(&args, &[]).await
}

/// Writes `contents` to `name` in the app's temp dir; returns the path as text.
fn write_csv(app: &TestApp, name: &str, contents: &str) -> String {
    let path: PathBuf = app.dir.path().join(name);
    std::fs::write(&path, contents).expect("write the CSV");
    path.display().to_string()
}

/// The batch id in `batch <id> accepted: …`, the first line `herald send` prints.
fn accepted_batch(run: &Run) -> String {
    run.stdout
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("batch "))
        .and_then(|rest| rest.split_once(' '))
        .map(|(id, _)| id.to_string())
        .unwrap_or_else(|| {
            panic!(
                "no `batch <id> accepted` line; stdout:\n{}\nstderr:\n{}",
                run.stdout, run.stderr
            )
        })
}

async fn app_sending_to(server: &ProviderServer) -> TestApp {
    spawn_app(|config| {
        route_all_to(config, server.provider(None));
        // One message at a time, in stored order: once a later batch is delivered,
        // everything stored before it has reached the provider.
        config.worker.max_in_flight = 1;
    })
    .await
}

/// What the provider received, by recipient: `(body, ref)`.
fn by_recipient(server: &ProviderServer) -> HashMap<String, (Value, Value)> {
    server
        .received()
        .into_iter()
        .map(|r| {
            let to = r.json["to"].as_str().expect("a recipient").to_string();
            (to, (r.json["body"].clone(), r.json["ref"].clone()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_queues_a_csv_and_its_messages_reach_the_provider_rendered_with_their_refs() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let csv = write_csv(
        &app,
        "people.csv",
        "to,ref,name\n+8613800000001,o-1,Li\n+8613800000002,o-2,Wang\n+8613800000003,,Zhao\n",
    );

    let run = send(&app, "Hi {{name}}", &csv, &[]).await;

    run.assert_succeeded();
    let batch_id = accepted_batch(&run);
    assert_eq!(
        run.stdout,
        format!("batch {batch_id} accepted: 3 of 3 recipients queued\n")
    );
    let batch = app.wait_finished(&batch_id, FINISH).await;
    assert_eq!(batch["counts"]["sent"], 3, "{batch}");
    let received = by_recipient(&server);
    assert_eq!(received.len(), 3, "{received:?}");
    assert_eq!(received["+8613800000001"], ("Hi Li".into(), "o-1".into()));
    assert_eq!(received["+8613800000002"], ("Hi Wang".into(), "o-2".into()));
    assert_eq!(received["+8613800000003"], ("Hi Zhao".into(), Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_csv_row_fails_naming_the_file_and_line_and_stores_nothing() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let csv = write_csv(
        &app,
        "short.csv",
        "to,ref,name\n+8613800000001,o-1,Li\n+8613800000002,o-2\n+8613800000003,o-3,Zhao\n",
    );

    let run = send(&app, "Hi {{name}}", &csv, &[]).await;

    assert!(!run.success, "stdout:\n{}", run.stdout);
    assert!(
        run.stderr.contains(&format!("{csv} line 3")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("expected 3 fields"), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    // A batch stored by the failed send would be delivered before this one.
    let sentinel = app.submit(&sms_batch(1)).await;
    app.wait_finished(&sentinel, FINISH).await;
    let received = server.received();
    assert_eq!(received.len(), 1, "only the sentinel reached the provider");
    assert!(received[0].key.starts_with(&sentinel));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_the_server_rejects_are_printed_with_their_csv_line_numbers() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    // The first record spans lines 2 and 3 (a quoted newline), so the invalid
    // number is on line 4, though it is the second recipient.
    let csv = write_csv(
        &app,
        "some.csv",
        "to,ref,name\n+8613800000001,o-1,\"Li\nJr\"\n12ab,o-2,Wang\n+8613800000003,o-3,Zhao\n",
    );

    let run = send(&app, "Hi {{name}}", &csv, &[]).await;

    run.assert_succeeded();
    let batch_id = accepted_batch(&run);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("batch {batch_id} accepted: 2 of 3 recipients queued")
    );
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[1].contains(&format!("{csv} line 4 (12ab): invalid_address")),
        "{}",
        lines[1]
    );
    app.wait_finished(&batch_id, FINISH).await;
    let received = by_recipient(&server);
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received["+8613800000001"].0, "Hi Li\nJr");
    assert_eq!(received["+8613800000003"].1, "o-3");

    let all_rejected = write_csv(
        &app,
        "none.csv",
        "to,name\n+8613800000001,Li\n+8613800000002,Wang\n",
    );
    let run = send(&app, "Hi {{name}}, use {{coupon}}", &all_rejected, &[]).await;

    assert!(!run.success, "stdout:\n{}", run.stdout);
    assert!(run.stderr.contains("not accepted"), "{}", run.stderr);
    assert!(
        run.stderr.contains("none of the 2 recipients"),
        "{}",
        run.stderr
    );
    let output = format!("{}{}", run.stdout, run.stderr);
    for (line, to) in [(2, "+8613800000001"), (3, "+8613800000002")] {
        let expected = format!("{all_rejected} line {line} ({to}): missing_variable");
        assert!(output.contains(&expected), "no {expected:?} in:\n{output}");
    }
    assert!(output.contains("coupon"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_numbers_count_lines_in_a_csv_with_windows_line_endings() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let rejected = write_csv(
        &app,
        "crlf.csv",
        "to,name\r\n+8613800000001,Li\r\n12ab,Wang\r\n+8613800000003,Zhao\r\n",
    );
    let short = write_csv(
        &app,
        "crlf-short.csv",
        "to,name\r\n+8613800000001,Li\r\n+8613800000002\r\n",
    );

    let run = send(&app, "Hi {{name}}", &rejected, &[]).await;
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("{rejected} line 3 (12ab): invalid_address")),
        "12ab is on line 3:\n{}",
        run.stdout
    );
    let run = send(&app, "Hi {{name}}", &short, &[]).await;
    assert!(!run.success, "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!("{short} line 3:")),
        "the short row is line 3:\n{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_state_and_counts_or_json_and_fails_on_an_unknown_batch() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let batch_id = app.submit(&sms_batch(3)).await;
    app.wait_finished(&batch_id, FINISH).await;

    let run = herald(&["status", &batch_id, "--server", &app.url], &[]).await;
    assert!(run.success, "{}", run.stderr);
    assert!(run.stdout.contains(&batch_id), "{}", run.stdout);
    assert!(run.stdout.contains("done"), "{}", run.stdout);
    assert!(run.stdout.contains("total 3"), "{}", run.stdout);
    assert!(run.stdout.contains("sent 3"), "{}", run.stdout);
    assert!(run.stdout.contains("failed 0"), "{}", run.stdout);

    // The server may also come from HERALD_SERVER.
    let run = herald(
        &["status", &batch_id, "--json"],
        &[("HERALD_SERVER", &app.url)],
    )
    .await;
    assert!(run.success, "{}", run.stderr);
    let json: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{}", run.stdout));
    assert_eq!(json["id"], batch_id.as_str());
    assert_eq!(json["state"], "done");
    assert_eq!(json["counts"]["total"], 3);
    assert_eq!(json["counts"]["sent"], 3);

    let unknown = herald::domain::BatchId::new().to_string();
    let run = herald(&["status", &unknown, "--server", &app.url], &[]).await;
    assert!(!run.success, "{}", run.stdout);
    assert!(
        run.stderr
            .contains(&format!("no batch has the id `{unknown}`")),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{closed}");
    let run = herald(&["status", &batch_id, "--server", &url], &[]).await;
    assert!(!run.success);
    assert!(
        run.stderr
            .contains(&format!("cannot reach a Herald server at {url}"))
            && run.stderr.contains("`herald serve`")
            && run.stderr.contains("--server")
            && run.stderr.matches(&url).count() == 1,
        "says once where it tried and what to do: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_send_with_the_same_idempotency_key_returns_the_same_batch() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let csv = write_csv(
        &app,
        "people.csv",
        "to,name\n+8613800000001,Li\n+8613800000002,Wang\n",
    );
    let key = ["--idempotency-key", "campaign-7"];

    let first = send(&app, "Hi {{name}}", &csv, &key).await;
    let second = send(&app, "Hi {{name}}", &csv, &key).await;

    assert!(first.success, "{}", first.stderr);
    assert!(second.success, "{}", second.stderr);
    let batch_id = accepted_batch(&first);
    assert_eq!(
        first.stdout, second.stdout,
        "the replay prints the same report"
    );
    assert_eq!(accepted_batch(&second), batch_id);
    app.wait_finished(&batch_id, FINISH).await;
    // Stored after any second batch would have been, so it is delivered after it.
    let sentinel = app.submit(&sms_batch(1)).await;
    app.wait_finished(&sentinel, FINISH).await;
    assert_eq!(server.count(), 3, "two recipients once, then the sentinel");

    let other = write_csv(&app, "other.csv", "to,name\n+8613800000009,Sun\n");
    let run = send(&app, "Hi {{name}}", &other, &key).await;
    assert!(!run.success, "{}", run.stdout);
    assert!(
        run.stderr.contains("Idempotency-Key `campaign-7`")
            && run.stderr.contains("different request"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gbk_csv_from_excel_is_read_and_an_undecodable_one_is_refused() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let text = "to,name\r\n+8613800000001,李雷\r\n\r\n+8613800000002,韩梅梅\r\n";
    let (gbk, _, _) = encoding_rs::GBK.encode(text);
    let path = app.dir.path().join("gbk.csv");
    std::fs::write(&path, &gbk).unwrap();
    let csv = path.display().to_string();

    let run = send(&app, "{{name}}，您好", &csv, &[]).await;
    run.assert_succeeded();
    let batch = app.wait_finished(&accepted_batch(&run), FINISH).await;
    assert_eq!(batch["counts"]["sent"], 2, "{batch}");
    let received = by_recipient(&server);
    assert_eq!(received["+8613800000001"].0, "李雷，您好");
    assert_eq!(received["+8613800000002"].0, "韩梅梅，您好");

    // Told it is UTF-8, the same file is refused, naming the file.
    let run = send(&app, "{{name}}", &csv, &["--encoding", "utf-8"]).await;
    assert!(!run.success);
    assert!(
        run.stderr.contains("gbk.csv") && run.stderr.contains("not valid UTF-8"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_follows_the_batch_to_its_end_and_exits_0_when_all_were_sent() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let csv = write_csv(
        &app,
        "people.csv",
        "to,name\n+8613800000001,Li\n+8613800000002,Wang\n+8613800000003,Zhao\n",
    );

    let run = send(&app, "Hi {{name}}", &csv, &["--wait"]).await;

    run.assert_succeeded();
    let batch_id = accepted_batch(&run);
    assert_eq!(
        run.stdout.lines().last(),
        Some(format!("batch {batch_id} done: 3 sent, 0 failed, 0 cancelled of 3").as_str()),
        "{}",
        run.stdout
    );
    assert_eq!(server.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_exits_1_when_a_message_failed_and_retry_sends_it_again() {
    let server = ProviderServer::start().await;
    server.behave(|_, json| match json["to"].as_str() {
        Some("+8613800000002") => Reply::status(400).body("no such number"),
        _ => Reply::ok(),
    });
    let app = app_sending_to(&server).await;
    let csv = write_csv(
        &app,
        "people.csv",
        "to,name\n+8613800000001,Li\n+8613800000002,Wang\n",
    );

    let run = send(&app, "Hi {{name}}", &csv, &["--wait"]).await;

    assert!(!run.success, "stdout:\n{}", run.stdout);
    let batch_id = accepted_batch(&run);
    assert!(
        run.stdout.ends_with(&format!(
            "batch {batch_id} done: 1 sent, 1 failed, 0 cancelled of 2\n"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains(&format!("herald retry {batch_id}")),
        "{}",
        run.stderr
    );

    server.behave(|_, _| Reply::ok());
    let retried = herald(&["retry", &batch_id, "--server", &app.url], &[]).await;
    assert!(retried.success, "{}", retried.stderr);
    assert!(
        retried
            .stdout
            .starts_with(&format!("batch {batch_id}  sms")),
        "{}",
        retried.stdout
    );
    let batch = app.wait_finished(&batch_id, FINISH).await;
    assert_eq!(batch["counts"]["sent"], 2, "{batch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_lists_newest_first_and_cancel_stops_a_scheduled_batch() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let csv = write_csv(&app, "one.csv", "to\n+8613800000001\n");
    let first = accepted_batch(&send(&app, "Hi", &csv, &[]).await);
    let later = crate::helpers::rfc3339_from_now(3_600_000);
    let scheduled = accepted_batch(&send(&app, "Later", &csv, &["--send-at", &later]).await);

    let cancelled = herald(&["cancel", &scheduled, "--server", &app.url], &[]).await;
    assert!(cancelled.success, "{}", cancelled.stderr);
    assert!(
        cancelled.stdout.contains(" cancelled "),
        "{}",
        cancelled.stdout
    );

    let listed = herald(&["batches", "--server", &app.url], &[]).await;
    assert!(listed.success, "{}", listed.stderr);
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert!(lines[0].starts_with("ID "), "{}", listed.stdout);
    assert!(
        lines[1].starts_with(&scheduled) && lines[1].contains(" cancelled "),
        "{}",
        listed.stdout
    );
    assert!(lines[2].starts_with(&first), "{}", listed.stdout);

    let page = herald(&["batches", "--limit", "1", "--server", &app.url], &[]).await;
    assert!(
        page.stdout
            .ends_with(&format!("next page: herald batches --before {scheduled}\n")),
        "{}",
        page.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_send_the_token_from_herald_token() {
    let made = herald(&["token"], &[]).await;
    assert!(made.success, "{}", made.stderr);
    let field = |name: &str| {
        made.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no `{name}` in {}", made.stdout))
    };
    let (token, hash) = (field("token:"), field("hash:"));
    let hash = herald::auth::TokenHash::parse(&hash).expect("a hash herald token printed");
    let app = spawn_app(|config| config.auth.tokens = vec![hash.into()]).await;

    let refused = herald(&["batches", "--server", &app.url], &[]).await;
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("needs an API token"),
        "{}",
        refused.stderr
    );
    let allowed = herald(
        &["batches", "--server", &app.url],
        &[("HERALD_TOKEN", &token)],
    )
    .await;
    assert!(allowed.success, "{}", allowed.stderr);
    let flag = herald(&["batches", "--server", &app.url, "--token", &token], &[]).await;
    assert!(flag.success, "{}", flag.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_takes_a_window_and_says_who_waits_for_it_or_ignores_the_configured_one() {
    let server = ProviderServer::start().await;
    let app = spawn_app(|config| {
        route_all_to(config, server.provider(None));
        config.windows.sms = Some(
            herald::window::Window::parse(&window_closed_in_shanghai_now()).expect("a window"),
        );
    })
    .await;
    let csv = write_csv(&app, "people.csv", "to,name\n+8613800000001,Li\n");

    let closed = window_closed_in_shanghai_now();
    let waiting = send(&app, "Hi {{name}}", &csv, &["--window", &closed]).await;
    waiting.assert_succeeded();
    let line = waiting
        .stdout
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(
        line.starts_with(&format!("1 wait for their sending window ({closed} in")),
        "{}",
        waiting.stdout
    );
    let waiting_id = accepted_batch(&waiting);

    let now = send(&app, "Hi {{name}}", &csv, &["--ignore-window"]).await;
    now.assert_succeeded();
    let batch = app.wait_finished(&accepted_batch(&now), FINISH).await;
    assert_eq!(batch["counts"]["sent"], 1, "{batch}");
    // Sent one at a time in stored order: the windowed batch, stored first, is
    // still waiting once the later one went out.
    let (_, held) = app.get(&format!("/v1/batches/{waiting_id}")).await;
    assert_eq!(held["counts"]["pending"], 1, "{held}");
    assert_eq!(server.received().len(), 1);

    let both = send(&app, "Hi", &csv, &["--window", &closed, "--ignore-window"]).await;
    assert!(
        !both.success && both.stderr.contains("--ignore-window"),
        "{}",
        both.stderr
    );
}

/// A half-hour window twelve hours away from now in Shanghai (where +86 numbers
/// are), so closed for a good while.
fn window_closed_in_shanghai_now() -> String {
    let now = jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::get("Asia/Shanghai").expect("a zone"));
    let hour = (i32::from(now.hour()) + 12) % 24;
    format!("{hour:02}:00-{hour:02}:30")
}
