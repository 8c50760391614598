//! The accept report of `POST /v1/batches`: each rejected recipient with its
//! index, reason and, for a missing variable, the variable's name.

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_invalid_recipients_reports_each_index_and_reason() {
    let app = spawn_app(|config| config.worker.enabled = false).await;
    let batch = json!({
        "channel": "sms",
        "template": {"body": "Hi {{ name }}, you have {{ points + 1 }} points"},
        "recipients": [
            {"to": "+8613800000000", "vars": {"name": "Li", "points": 1}, "ref": "a"},
            {"to": "12ab", "vars": {"name": "Wang", "points": 2}},
            {"to": "+8613800000002", "vars": {"points": 3}},
            {"to": "+8613800000003", "vars": {"name": "Zhao", "points": "many"}},
            {"to": "+86 138-0000-0004", "vars": {"name": "Qian", "points": 41}, "ref": "e"},
            {"to": "+8613800000005", "vars": {"name": "Sun", "points": 0}, "ref": "r".repeat(300)},
        ],
    });

    let (status, report) = app.post("/v1/batches", &batch).await;

    assert_eq!(status, 202, "{report}");
    assert_eq!(report["accepted"], 2, "{report}");
    let rejected = report["rejected"].as_array().unwrap();
    let summary: Vec<(u64, &str, &str)> = rejected
        .iter()
        .map(|r| {
            let index = r["index"].as_u64().unwrap();
            (
                index,
                r["to"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "12ab", "invalid_address"),
            (2, "+8613800000002", "missing_variable"),
            (3, "+8613800000003", "render_failed"),
            (5, "+8613800000005", "invalid_ref"),
        ],
        "{report}"
    );
    assert_eq!(
        rejected[1]["variable"], "name",
        "the missing variable is named"
    );
    assert!(rejected[0].get("variable").is_none(), "{report}");
    for r in rejected {
        assert!(!r["detail"].as_str().unwrap().is_empty(), "{r}");
    }

    let batch_id = report["batch_id"].as_str().unwrap();
    let (status, view) = app.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["counts"]["total"], 2, "{view}");
    assert_eq!(view["state"], "queued", "{view}");
    assert_eq!(view["source"], "api", "{view}");
    let messages = app.messages(batch_id).await;
    let stored: Vec<(u64, &str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["index"].as_u64().unwrap(),
                m["to"].as_str().unwrap(),
                m["ref"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stored,
        [(0, "+8613800000000", "a"), (4, "+8613800000004", "e")],
        "messages keep their index in the submitted list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variable_missing_inside_an_expression_is_reported_as_missing_and_named() {
    let app = spawn_app(|config| config.worker.enabled = false).await;
    let batch = json!({
        "channel": "sms",
        "template": {"body": "You have {{ points + 1 }} points"},
        "recipients": [
            {"to": "+8613800000000", "vars": {"points": 1}},
            {"to": "+8613800000001", "vars": {}},
        ],
    });

    let (status, report) = app.post("/v1/batches", &batch).await;

    assert_eq!(status, 202, "{report}");
    let rejected = &report["rejected"][0];
    assert_eq!(rejected["index"], 1, "{report}");
    assert_eq!(rejected["reason"], "missing_variable", "{report}");
    assert_eq!(rejected["variable"], "points", "{report}");
}
