//! A person's messages end to end: `GET /v1/messages` across batches, the CSV
//! exports of a search and of a batch, and `DELETE /v1/recipients/{address}`.

use serde_json::{Value, json};

use crate::helpers::{ProviderServer, TestApp, rfc3339_from_now};

use super::{FINISH, app_sending_to};

/// A batch of one SMS message to each of `tos`, with the refs `refs`.
fn batch(tos: &[&str], refs: &[&str], send_at: Option<String>) -> Value {
    let recipients: Vec<Value> = tos
        .iter()
        .zip(refs)
        .map(|(to, reference)| json!({"to": to, "ref": reference}))
        .collect();
    let mut batch =
        json!({"channel": "sms", "template": {"body": "Hello"}, "recipients": recipients});
    if let Some(at) = send_at {
        batch["send_at"] = at.into();
    }
    batch
}

/// The body of `GET path` as text, with its status and content type.
async fn text(app: &TestApp, path: &str) -> (u16, String, String) {
    let response = app
        .client
        .get(format!("{}{path}", app.url))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, response.text().await.unwrap())
}

/// The (batch id, index) of each message of a search page.
fn places(page: &Value) -> Vec<(String, u64)> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {page}"))
        .iter()
        .map(|m| {
            (
                m["batch_id"].as_str().unwrap().to_owned(),
                m["index"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_an_address_are_found_across_batches_and_exported_as_csv() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let older = app
        .submit(&batch(
            &["+8613800000001", "+8613800000002"],
            &["订单-1", "o-2"],
            None,
        ))
        .await;
    app.wait_finished(&older, FINISH).await;
    let newer = app
        .submit(&batch(
            &["+8613800000003", "+8613800000001"],
            &["o-3", "订单-1"],
            None,
        ))
        .await;
    app.wait_finished(&newer, FINISH).await;

    // Written as a national number, normalised as recipients are.
    let (status, first) = app.get("/v1/messages?to=138%200000%200001&limit=1").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(places(&first), [(newer.clone(), 1)]);
    assert_eq!(first["messages"][0]["to"], "+8613800000001");
    assert_eq!(first["messages"][0]["state"], "sent");
    let before = first["next_before"]
        .as_i64()
        .expect("a full page has a cursor");
    let (_, second) = app
        .get(&format!(
            "/v1/messages?to=%2B8613800000001&limit=1&before={before}"
        ))
        .await;
    assert_eq!(places(&second), [(older.clone(), 0)]);
    let (_, by_ref) = app.get("/v1/messages?ref=%E8%AE%A2%E5%8D%95-1").await;
    assert_eq!(places(&by_ref), [(newer.clone(), 1), (older.clone(), 0)]);
    assert!(by_ref["next_before"].is_null(), "{by_ref}");
    let (_, failed) = app
        .get("/v1/messages?to=%2B8613800000001&state=failed")
        .await;
    assert_eq!(places(&failed), []);
    let later = rfc3339_from_now(60_000).replace('+', "%2B");
    let (_, none_yet) = app
        .get(&format!("/v1/messages?to=%2B8613800000001&since={later}"))
        .await;
    assert_eq!(places(&none_yet), []);

    for (query, field) in [
        ("", "to"),
        ("to=not-a-number", "to"),
        ("to=%2B8613800000001&state=lost", "state"),
        ("to=%2B8613800000001&since=yesterday", "since"),
        ("to=%2B8613800000001&format=xml", "format"),
    ] {
        let (status, refused) = app.get(&format!("/v1/messages?{query}")).await;
        assert_eq!(status, 422, "{query}: {refused}");
        assert_eq!(refused["field"], field, "{query}: {refused}");
    }

    let (status, kind, csv) = text(&app, "/v1/messages?to=%2B8613800000001&format=csv").await;
    assert_eq!((status, kind.as_str()), (200, "text/csv; charset=utf-8"));
    let csv = csv
        .strip_prefix('\u{feff}')
        .expect("a byte-order mark first");
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, herald::api::CSV_COLUMNS);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    let column = |row: &csv::StringRecord, name: &str| {
        let at = header.iter().position(|h| h == name).unwrap();
        row[at].to_owned()
    };
    assert_eq!(column(&rows[0], "id"), format!("{newer}-1"));
    assert_eq!(column(&rows[0], "ref"), "订单-1");
    assert_eq!(column(&rows[0], "state"), "sent");
    assert!(column(&rows[0], "sent_at").ends_with('Z'), "{:?}", rows[0]);
    assert_eq!(column(&rows[1], "batch_id"), older);

    let (status, _, batch_csv) =
        text(&app, &format!("/v1/batches/{older}/messages?format=csv")).await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = batch_csv.trim_end().split("\r\n").collect();
    assert_eq!(lines.len(), 3, "{batch_csv}");
    assert!(
        lines[1].starts_with(&format!("{older}-0,{older},0,+8613800000001,订单-1,sent")),
        "{batch_csv}"
    );
    let (status, unknown) = app
        .get("/v1/batches/01a2b3c4-0000-7000-8000-000000000000/messages?format=csv")
        .await;
    assert_eq!(status, 404, "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_recipient_cancels_what_is_queued_hashes_the_rest_and_keeps_the_suppression() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let sent = app
        .submit(&batch(
            &["+8613800000001", "+8613800000002"],
            &["a", "b"],
            None,
        ))
        .await;
    app.wait_finished(&sent, FINISH).await;
    let queued = app
        .submit(&batch(
            &["+8613800000001", "+8613800000002"],
            &["c", "d"],
            Some(rfc3339_from_now(3_600_000)),
        ))
        .await;
    let (status, added) = app
        .post(
            "/v1/suppressions",
            &json!({"channel": "sms", "addresses": ["+8613800000001"], "reason": "asked"}),
        )
        .await;
    assert_eq!(status, 200, "{added}");

    let (status, erased) = app
        .call(
            reqwest::Method::DELETE,
            "/v1/recipients/13800000001",
            &Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["address"], "+8613800000001");
    assert_eq!(
        (erased["messages"].as_u64(), erased["cancelled"].as_u64()),
        (Some(2), Some(1)),
        "{erased}"
    );
    let hashed = erased["erased_as"].as_str().unwrap().to_owned();
    assert!(hashed.starts_with("erased:"), "{erased}");

    let (_, gone) = app.get("/v1/messages?to=%2B8613800000001").await;
    assert_eq!(places(&gone), []);
    let (_, found) = app.get(&format!("/v1/messages?to={hashed}")).await;
    assert_eq!(places(&found), [(queued.clone(), 0), (sent.clone(), 0)]);
    assert_eq!(found["messages"][0]["state"], "cancelled");
    assert_eq!(found["messages"][1]["to"], hashed.as_str());
    let (_, batch) = app.get(&format!("/v1/batches/{queued}")).await;
    assert_eq!(
        (
            batch["counts"]["cancelled"].as_u64(),
            batch["counts"]["pending"].as_u64()
        ),
        (Some(1), Some(1)),
        "{batch}"
    );
    let (_, suppressions) = app.get("/v1/suppressions?channel=sms").await;
    assert!(
        suppressions.to_string().contains("+8613800000001"),
        "{suppressions}"
    );

    let (status, again) = app
        .call(
            reqwest::Method::DELETE,
            "/v1/recipients/%2B8613800000001",
            &Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{again}");
    for count in ["messages", "replies", "events", "cancelled"] {
        assert_eq!(again[count], 0, "{again}");
    }
    let (status, refused) = app
        .call(
            reqwest::Method::DELETE,
            "/v1/recipients/nobody",
            &Value::Null,
        )
        .await;
    assert_eq!(
        (status, refused["field"].as_str()),
        (422, Some("address")),
        "{refused}"
    );
    // The audit trail names the person by their erased value, never the address.
    let (_, audit) = app.get("/v1/audit?action=erase").await;
    let targets: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["target"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        targets,
        [
            ("", "422"),
            (hashed.as_str(), "ok"),
            (hashed.as_str(), "ok")
        ],
        "{audit}"
    );
}
