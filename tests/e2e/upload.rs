//! Streamed uploads of big batches: NDJSON and CSV bodies read line by line and
//! staged in chunks of 10,000 recipients; a bad line fails the upload with its
//! number and leaves nothing stored.

use std::fmt::Write;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, wait_for};

const NDJSON: &str = "application/x-ndjson";

/// Herald with Chinese numbers without a country code, and no workers: the tests
/// look at what is stored.
async fn app() -> TestApp {
    spawn_app(|config| {
        config.worker.enabled = false;
        config.recipients.default_region = Some("CN".parse().unwrap());
    })
    .await
}

/// An NDJSON upload: the options line, then `n` recipients with distinct numbers
/// (the last one repeats the first).
fn ndjson(n: usize) -> String {
    let mut body = json!({"channel": "sms", "template": {"body": "Hi {{ name }}"}}).to_string();
    for i in 0..n {
        let number = if i == n - 1 { 0 } else { i };
        write!(
            body,
            "\n{}",
            json!({"to": format!("138{number:08}"), "vars": {"name": format!("n{i}")}})
        )
        .unwrap();
    }
    body.push('\n');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ndjson_upload_of_many_chunks_is_stored_whole_with_one_report() {
    let app = app().await;
    let n = 25_001;
    let (status, _, report) = app.post_raw("/v1/batches", NDJSON, &[], ndjson(n)).await;
    assert_eq!(status, 202, "{report}");
    // The last recipient repeats the first, two chunks earlier.
    assert_eq!(report["accepted"], n - 1, "{}", report["rejected"]);
    assert_eq!(
        report["rejected"],
        json!([{"index": n - 1, "to": "+8613800000000", "reason": "duplicate",
                "first_index": 0, "detail": "`+8613800000000` is also recipient 0"}])
    );
    assert_eq!(report["sms"]["segments"], n - 1);
    let batch_id = report["batch_id"].as_str().unwrap();
    let (_, batch) = app.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(batch["counts"]["total"], n - 1, "{batch}");
    assert_eq!(batch["counts"]["pending"], n - 1, "{batch}");
    assert_eq!(app.stored().await, (1, n as u64 - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_anywhere_fails_the_upload_by_its_number_and_stores_nothing() {
    let app = app().await;
    let mut body = ndjson(15_000);
    // Line 1 is the options; recipient 12,000 is on line 12,002.
    let mut lines: Vec<&str> = body.lines().collect();
    lines[12_001] = r#"{"to": 13800000001}"#;
    body = lines.join("\n");
    let (status, _, error) = app.post_raw("/v1/batches", NDJSON, &[], body).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "line 12002", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("invalid type"),
        "{error}"
    );
    assert_eq!(
        app.stored().await,
        (0, 0),
        "the failed upload left no batch"
    );

    let (status, _, error) = app
        .post_raw("/v1/batches", NDJSON, &[], r#"{"channel": "sms"}"#)
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "template", "{error}");
    let (status, _, error) = app
        .post_raw(
            "/v1/batches",
            NDJSON,
            &[],
            r#"{"channel": "sms", "template": {"body": "x"}, "recipients": [{"to": "13800000000"}]}"#,
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "line 1", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_with_an_idempotency_key_is_stored_once() {
    let app = app().await;
    let key = [("idempotency-key", "upload-1")];
    let (status, _, first) = app
        .post_raw("/v1/batches", NDJSON, &key, ndjson(12_000))
        .await;
    assert_eq!(status, 202, "{first}");
    let (status, headers, again) = app
        .post_raw("/v1/batches", NDJSON, &key, ndjson(12_000))
        .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["batch_id"], first["batch_id"]);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(app.stored().await, (1, 11_999));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_upload_reads_excel_files_in_utf8_or_gbk() {
    let app = app().await;
    let csv =
        "to,ref,name,note\r\n13800000000,r1,李雷,\"two\r\nlines\"\r\n\r\n13800000001,,韩梅梅,x\r\n";
    let query =
        "/v1/batches?channel=sms&template=%7B%7B%20name%20%7D%7D%3A%20%7B%7B%20note%20%7D%7D";
    let utf8_bom = [b"\xEF\xBB\xBF".as_slice(), csv.as_bytes()].concat();
    let (gbk, _, _) = encoding_rs::GBK.encode(csv);
    for (content_type, body) in [
        ("text/csv", utf8_bom),
        ("text/csv; charset=gbk", gbk.to_vec()),
        ("text/csv", gbk.to_vec()),
    ] {
        let (status, _, report) = app.post_raw(query, content_type, &[], body).await;
        assert_eq!(status, 202, "{content_type}: {report}");
        assert_eq!(report["accepted"], 2, "{content_type}: {report}");
        let messages = app.messages(report["batch_id"].as_str().unwrap()).await;
        let got: Vec<(&str, Value)> = messages
            .iter()
            .map(|m| (m["to"].as_str().unwrap(), m["ref"].clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("+8613800000000", json!("r1")),
                ("+8613800000001", Value::Null)
            ],
            "{content_type}"
        );
    }
    // A dry run reports and stores nothing more.
    let (status, _, report) = app
        .post_raw(&format!("{query}&dry_run=true"), "text/csv", &[], csv)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["dry_run"], true, "{report}");
    assert_eq!(app.stored().await.0, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_upload_errors_name_the_line_or_the_option() {
    let app = app().await;
    let query = "/v1/batches?channel=sms&template=hi";
    let cases = [
        ("name\nx\n", "line 1", "no `to` column"),
        (
            "to,name\n13800000000,a\n\n,b\n",
            "line 4",
            "the `to` column is empty",
        ),
        (
            "to,name\n13800000000,a,extra\n",
            "line 2",
            "expected 2 fields",
        ),
        ("to,name\n13800000000,\"open\n", "line 2", "not closed"),
    ];
    for (csv, field, message) in cases {
        let (status, _, error) = app.post_raw(query, "text/csv", &[], csv).await;
        assert_eq!(status, 422, "{csv:?}: {error}");
        assert_eq!(error["field"], field, "{csv:?}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{csv:?}: {error}"
        );
    }
    let (status, _, error) = app
        .post_raw("/v1/batches?template=hi", "text/csv", &[], "to\n1\n")
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "query", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("channel"),
        "{error}"
    );
    let (status, _, error) = app
        .post_raw(query, "text/csv; charset=klingon", &[], "to\n1\n")
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "content-type", "{error}");
    assert_eq!(app.stored().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_match_its_content_digest_is_refused_and_not_stored() {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let app = app().await;
    let body = ndjson(12_000);
    let digest = |bytes: &[u8]| {
        format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
        )
    };
    let wrong = digest(b"something else");
    let (status, _, error) = app
        .post_raw(
            "/v1/batches",
            NDJSON,
            &[("content-digest", &wrong)],
            body.clone(),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "content-digest", "{error}");
    assert_eq!(app.stored().await, (0, 0));

    let right = digest(body.as_bytes());
    let (status, _, report) = app
        .post_raw("/v1/batches", NDJSON, &[("content-digest", &right)], body)
        .await;
    assert_eq!(status, 202, "{report}");
    let (status, _, error) = app
        .post_raw("/v1/batches", NDJSON, &[("content-digest", "md5=:x:")], "")
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "content-digest", "{error}");
}

/// Spooled uploads left in the temporary directory.
fn spooled() -> usize {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("herald-upload-")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_batch_bigger_than_memory_allows_is_spooled_and_read_in_chunks() {
    let app = spawn_app(|config| {
        config.worker.enabled = false;
        config.recipients.default_region = Some("CN".parse().unwrap());
        config.limits.max_body_bytes = 64 * 1024;
    })
    .await;
    let error = a_big_json_batch_is_read_in_chunks(&app).await;
    assert_eq!(error["error"], "invalid_field", "{error}");
    assert_eq!(error["field"], "recipients[15000]", "{error}");
    // The file goes when its reader, on a blocking thread, is done.
    wait_for(
        Duration::from_secs(5),
        "the spooled bodies to be removed",
        || async { (spooled() == 0).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_json_batch_in_memory_is_parsed_checked_and_stored_chunk_by_chunk() {
    // Over a megabyte, under max_body_bytes: parsed on one thread while the chunk
    // before is checked, and stored in one transaction as the chunks come.
    let error = a_big_json_batch_is_read_in_chunks(&app().await).await;
    // Named as in a body parsed whole.
    assert_eq!(error["error"], "malformed_request", "{error}");
    assert_eq!(error["field"], "recipients[15000].vars", "{error}");
}

/// A batch of 25,001 recipients, over a megabyte of JSON, with its options last:
/// accepted with its duplicate reported, replayed by its key; one with a malformed
/// recipient past the first chunk is refused, and leaves nothing stored: its
/// error is the answer.
async fn a_big_json_batch_is_read_in_chunks(app: &TestApp) -> Value {
    let n = 25_001;
    let recipients: Vec<Value> = (0..n)
        .map(|i| json!({"to": format!("138{:08}", if i == n - 1 { 0 } else { i }), "vars": {"name": "x"}}))
        .collect();
    // The options come after the recipients: the first pass reads them anyway.
    let body =
        json!({"recipients": recipients, "channel": "sms", "template": {"body": "Hi {{ name }}"}})
            .to_string();
    assert!(body.len() > 1_000_000);
    let key = [("idempotency-key", "big-json")];
    let (status, _, report) = app
        .post_raw("/v1/batches", "application/json", &key, body.clone())
        .await;
    assert_eq!(status, 202, "{report}");
    assert_eq!(report["accepted"], n - 1, "{report}");
    assert_eq!(report["rejected"][0]["first_index"], 0, "{report}");
    let (status, headers, again) = app
        .post_raw("/v1/batches", "application/json", &key, body)
        .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again["batch_id"], report["batch_id"]);
    assert_eq!(app.stored().await, (1, n as u64 - 1));

    let mut broken: Vec<Value> = (0..40_000)
        .map(|i| json!({"to": format!("139{i:08}"), "vars": {"name": "x"}}))
        .collect();
    broken[15_000] = json!({"to": "13900000001", "vars": [1]});
    let body =
        json!({"channel": "sms", "template": {"body": "x"}, "recipients": broken}).to_string();
    assert!(body.len() > 1 << 20);
    let (status, _, error) = app
        .post_raw("/v1/batches", "application/json", &[], body)
        .await;
    assert!(status == 400 || status == 422, "{status} {error}");
    assert_eq!(
        app.stored().await,
        (1, n as u64 - 1),
        "nothing of it is stored"
    );
    error
}
