//! The ledger, `GET /v1/batches/{id}/messages`: pages by state with `next_after`,
//! each message's fields, and the refusal of a bad query.

use serde_json::Value;

use crate::helpers::{ProviderServer, Reply, sms_batch};

use super::{FINISH, app_sending_to};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_pages_by_state_with_next_after() {
    let server = ProviderServer::start().await;
    server.behave(|n, json| {
        let index: u32 = json["ref"].as_str().unwrap()[1..].parse().unwrap();
        if index % 2 == 1 {
            Reply::status(400).body("unknown subscriber")
        } else {
            Reply::ok().body(&format!(r#"{{"id":"p-{n}"}}"#))
        }
    });
    let app = app_sending_to(&server).await;
    let batch_id = app.submit(&sms_batch(25)).await;
    let batch = app.wait_finished(&batch_id, FINISH).await;
    assert_eq!(
        (
            batch["counts"]["sent"].as_u64(),
            batch["counts"]["failed"].as_u64()
        ),
        (Some(13), Some(12)),
        "{batch}"
    );
    let app = &app;
    let page = |query: &str| {
        let path = format!("/v1/batches/{batch_id}/messages?{query}");
        async move { app.get(&path).await }
    };
    let indices = |page: &Value| -> Vec<u64> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["index"].as_u64().unwrap())
            .collect()
    };

    let (status, first) = page("state=failed&limit=5").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(indices(&first), [1, 3, 5, 7, 9]);
    assert_eq!(first["next_after"], 9);
    let (_, second) = page("state=failed&limit=5&after=9").await;
    assert_eq!(indices(&second), [11, 13, 15, 17, 19]);
    assert_eq!(second["next_after"], 19);
    let (_, last) = page("state=failed&limit=5&after=19").await;
    assert_eq!(indices(&last), [21, 23]);
    assert!(
        last["next_after"].is_null(),
        "a short page is the last: {last}"
    );

    let (_, sent) = page("state=sent&limit=1000").await;
    assert_eq!(indices(&sent), (0..25).step_by(2).collect::<Vec<_>>());
    let (_, everything) = page("limit=10&after=19").await;
    assert_eq!(indices(&everything), [20, 21, 22, 23, 24]);

    for m in last["messages"].as_array().unwrap() {
        assert_eq!(m["state"], "failed", "{m}");
        assert_eq!(m["attempts"], 1, "{m}");
        assert!(m["last_error"].as_str().unwrap().contains("400"), "{m}");
        assert!(m["sent_at"].is_null(), "{m}");
    }
    for m in sent["messages"].as_array().unwrap() {
        assert_eq!(m["provider"], "hook", "{m}");
        assert!(
            m["provider_message_id"].as_str().unwrap().starts_with("p-"),
            "{m}"
        );
        assert!(m["last_error"].is_null(), "{m}");
        assert!(m["sent_at"].is_string(), "{m}");
        assert_eq!(m["id"], format!("{batch_id}-{}", m["index"]), "{m}");
    }

    for (query, field) in [
        ("state=lost", "state"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ] {
        let (status, answer) = page(query).await;
        assert_eq!(status, 422, "{query}: {answer}");
        assert_eq!(answer["field"], field, "{query}: {answer}");
    }
    let (status, answer) = page("limit=ten").await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "malformed_request", "{answer}");
}
