//! The seed's `/send-sms`: form and JSON posts, one SMS per mobile with the
//! content as its body, and errors that say `success: false` with the field.

use serde_json::json;

use crate::helpers::{ProviderServer, sms_batch};

use super::{FINISH, app_sending_to};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_sms_form_posts_queue_one_sms_per_mobile_with_content_as_body() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let form = "template_id=1&mobiles%5B%5D=13800000001&mobiles%5B%5D=13800000002&mobiles%5B%5D=x1&content=Your+order+has+shipped%21";

    let (status, _, answer) = app
        .post_raw(
            "/send-sms",
            "application/x-www-form-urlencoded; charset=UTF-8",
            &[],
            form,
        )
        .await;

    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(answer["template_id"], "1", "{answer}");
    assert_eq!(answer["rejected"][0]["index"], 2, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("2 messages queued"),
        "{answer}"
    );
    let batch_id = answer["batch_id"].as_str().unwrap();
    let batch = app.wait_finished(batch_id, FINISH).await;
    assert_eq!(batch["source"], "send-sms", "{batch}");
    assert_eq!(batch["counts"]["sent"], 2, "{batch}");
    let sent = server.sent();
    assert_eq!(
        sent,
        [
            (
                "+8613800000001".to_string(),
                "Your order has shipped!".to_string()
            ),
            (
                "+8613800000002".to_string(),
                "Your order has shipped!".to_string()
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_sms_json_takes_a_mobile_list_or_a_comma_separated_string() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let requests = [
        json!({"template_id": 7, "mobiles": ["13800000001", 13800000002_u64], "content": "{{ not a template }}"}),
        json!({"template_id": "7", "mobiles": "13800000003, 13800000004", "content": "{{ not a template }}"}),
    ];

    for request in requests {
        let (status, _, answer) = app
            .post_raw("/send-sms", "application/json", &[], request.to_string())
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["success"], true, "{answer}");
        assert_eq!(answer["template_id"], "7", "{answer}");
        let batch = app
            .wait_finished(answer["batch_id"].as_str().unwrap(), FINISH)
            .await;
        assert_eq!(batch["counts"]["sent"], 2, "{batch}");
    }

    let mut to: Vec<String> = server
        .received()
        .iter()
        .map(|r| r.json["to"].as_str().unwrap().into())
        .collect();
    to.sort();
    assert_eq!(
        to,
        [
            "+8613800000001",
            "+8613800000002",
            "+8613800000003",
            "+8613800000004"
        ]
    );
    assert!(
        server
            .received()
            .iter()
            .all(|r| r.json["body"] == "{{ not a template }}"),
        "content is sent as is"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_sms_errors_say_success_false_with_the_field() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let form = "application/x-www-form-urlencoded";
    let cases: [(&str, &str, u16, &str, Option<&str>); 7] = [
        (
            form,
            "template_id=1&content=hi",
            422,
            "invalid_field",
            Some("mobiles"),
        ),
        (
            form,
            "mobiles%5B%5D=13800000001",
            422,
            "invalid_field",
            Some("content"),
        ),
        (
            form,
            "mobiles%5B%5D=13800000001&content=+++",
            422,
            "invalid_field",
            Some("content"),
        ),
        (
            form,
            "mobiles%5B%5D=abc&content=hi",
            422,
            "no_valid_recipients",
            None,
        ),
        (
            "application/json",
            r#"{"mobiles": [true], "content": "hi"}"#,
            422,
            "invalid_field",
            Some("mobiles[0]"),
        ),
        (
            "application/json",
            r#"{"mobiles": {"a": 1}, "content": "hi"}"#,
            422,
            "invalid_field",
            Some("mobiles"),
        ),
        (
            "application/json",
            r#"{"mobiles": ["13800000001"], "#,
            400,
            "malformed_request",
            None,
        ),
    ];

    for (content_type, body, status, error, field) in cases {
        let (got, _, answer) = app.post_raw("/send-sms", content_type, &[], body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["success"], false, "{body}: {answer}");
        assert_eq!(answer["error"], error, "{body}: {answer}");
        assert!(
            !answer["message"].as_str().unwrap_or("").is_empty(),
            "{body}: {answer}"
        );
        if let Some(field) = field {
            assert_eq!(answer["field"], field, "{body}: {answer}");
        }
    }

    let too_large = format!(
        "mobiles%5B%5D=13800000001&content={}",
        "x".repeat(20 * 1024)
    );
    let (status, _, answer) = app.post_raw("/send-sms", form, &[], too_large).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["success"], false, "{answer}");
    assert_eq!(answer["error"], "too_large", "{answer}");

    let batch_id = app.submit(&sms_batch(1)).await;
    app.wait_finished(&batch_id, FINISH).await;
    assert_eq!(server.count(), 1, "no refused /send-sms request was stored");
}
