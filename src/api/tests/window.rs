//! Quiet hours through the API: the report of who waits for their window, the
//! refusals of a window, zone or override that cannot be used, and a batch
//! stored waiting.

use std::time::Duration;

use super::*;
use crate::window::Window;

fn batch(to: &[&str], extra: Value) -> Value {
    let recipients: Vec<Value> = to.iter().map(|t| json!({ "to": t })).collect();
    let mut batch = json!({"channel": "sms", "template": {"body": "Hi"}, "recipients": recipients});
    if to.iter().any(|t| t.contains('@')) {
        batch["channel"] = json!("email");
        batch["template"]["subject"] = json!("Hi");
    }
    for (key, value) in extra.as_object().expect("an object") {
        batch[key] = value.clone();
    }
    batch
}

/// A window of an hour that opens two hours from now in `zone`, whatever the
/// time is.
fn opening_in_two_hours(zone: &str) -> String {
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get(zone).unwrap());
    let opens = now.checked_add(jiff::Span::new().hours(2)).unwrap();
    format!("{:02}:00-{:02}:00", opens.hour(), (opens.hour() + 1) % 24)
}

/// Checks the two messages submitted wait: pending, and none is claimed.
async fn two_wait(queue: &crate::queue::Queue) {
    let claimed = queue
        .claim("log", 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        claimed.is_empty(),
        "a message outside its window was claimed"
    );
    assert_eq!(queue.pending("log", 10).await.unwrap(), 2);
}

#[tokio::test]
async fn a_batch_to_china_the_us_and_britain_reports_who_waits_until_when() {
    let (state, _dir) = test_state().await;
    let router = router(state, 1 << 20);
    // 06:00 UTC on a Monday: 14:00 in Shanghai, 07:00 in London, 02:00 in New
    // York, 01:00 in Chicago, 23:00 (Sunday) in Los Angeles.
    let request = batch(
        &[
            "+8613800138000",
            "+447911123456",
            "+447911123457",
            "+12125550100",
            "+13125550100",
            "+13105550100",
        ],
        json!({"window": "08:00-21:00", "send_at": "2030-06-03T06:00:00Z"}),
    );
    let (status, report) = call(&router, post_json("/v1/batches?dry_run=true", &request)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report["window"],
        json!({
            "window": "08:00-21:00",
            "timezone": "UTC",
            "waiting": 5,
            "opens": [
                {"at": "2030-06-03T07:00:00Z", "count": 2},
                {"at": "2030-06-03T12:00:00Z", "count": 1},
                {"at": "2030-06-03T13:00:00Z", "count": 1},
                {"at": "2030-06-03T15:00:00Z", "count": 1},
            ],
        })
    );
}

#[tokio::test]
async fn a_configured_window_applies_unless_the_batch_ignores_it() {
    let mut config = Config::default();
    config.windows.email = Some(Window::parse("mon-fri 09:00-17:00").unwrap());
    config.windows.timezone = Some("Europe/London".into());
    let (state, _dir) = test_state_with(config).await;
    let router = router(state, 1 << 20);
    // Saturday noon: a mailbox waits for Monday 09:00 in London (BST).
    let saturday = json!({"send_at": "2030-06-08T12:00:00Z"});
    let (status, report) = call(
        &router,
        post_json(
            "/v1/batches?dry_run=true",
            &batch(&["a@example.com"], saturday),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["window"]["timezone"], "Europe/London");
    assert_eq!(
        report["window"]["opens"],
        json!([{"at": "2030-06-10T08:00:00Z", "count": 1}])
    );

    let ignoring = json!({"send_at": "2030-06-08T12:00:00Z", "ignore_window": true});
    let (status, report) = call(
        &router,
        post_json(
            "/v1/batches?dry_run=true",
            &batch(&["a@example.com"], ignoring),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report.get("window"), None, "{report}");
}

#[tokio::test]
async fn a_window_zone_or_override_that_cannot_be_used_is_refused_naming_the_field() {
    let (state, _dir) = test_state().await;
    let router = router(state, 1 << 20);
    for (extra, field) in [
        (json!({"window": "8 till 9"}), "window"),
        (json!({"window": "09:00-09:00"}), "window"),
        (
            json!({"window": "08:00-21:00", "timezone": "Mars/Olympus"}),
            "timezone",
        ),
        (
            json!({"window": "08:00-21:00", "ignore_window": true}),
            "ignore_window",
        ),
    ] {
        let (status, body) = call(
            &router,
            post_json("/v1/batches", &batch(&["+8613800138000"], extra.clone())),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{extra}: {body}");
        assert_eq!(body["field"], field, "{extra}: {body}");
    }
}

#[tokio::test]
async fn a_batch_outside_its_window_is_stored_waiting_and_not_claimed() {
    let (state, _dir) = test_state().await;
    let queue = state.queue.clone();
    let router = router(state, 1 << 20);
    let window = opening_in_two_hours("UTC");
    let request = json!({
        "channel": "email",
        "template": {"subject": "Hi", "body": "Hi"},
        "recipients": [{"to": "a@example.com"}, {"to": "b@example.com"}],
        "window": window,
    });
    let (status, report) = call(&router, post_json("/v1/batches", &request)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{report}");
    assert_eq!(report["window"]["waiting"], 2, "{report}");
    two_wait(&queue).await;
}

#[tokio::test]
async fn send_sms_takes_a_window_as_json_or_a_form_and_refuses_one_that_cannot_be_used() {
    let (state, _dir) = test_state().await;
    let queue = state.queue.clone();
    let router = router(state, 1 << 20);
    // Shanghai's, where the numbers are.
    let window = opening_in_two_hours("Asia/Shanghai");
    let json = post_json(
        "/send-sms",
        &json!({"mobiles": ["+8613800138000"], "content": "Hi", "window": window}),
    );
    let encoded: String = form_urlencoded::byte_serialize(window.as_bytes()).collect();
    let form = Request::post("/send-sms")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "mobiles[]=%2B8613800138001&content=Hi&window={encoded}&ignore_window=0"
        )))
        .expect("a request");
    for request in [json, form] {
        let (status, answer) = call(&router, request).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    two_wait(&queue).await;
    for (extra, field) in [
        (json!({"window": "8 till 9"}), "window"),
        (
            json!({"window": "08:00-21:00", "ignore_window": true}),
            "ignore_window",
        ),
        (json!({"ignore_window": "sometimes"}), "ignore_window"),
        (
            json!({"window": "08:00-21:00", "timezone": "Mars/Olympus"}),
            "timezone",
        ),
    ] {
        let mut request = json!({"mobiles": ["+8613800138002"], "content": "Hi"});
        for (key, value) in extra.as_object().expect("an object") {
            request[key] = value.clone();
        }
        let (status, body) = call(&router, post_json("/send-sms", &request)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{extra}: {body}");
        assert_eq!(body["field"], field, "{extra}: {body}");
    }
}
