//! Twilio: the pure parts (signatures, error codes, callbacks, configuration),
//! then sends against a local server that speaks the Messages API's wire format.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::*;
use crate::domain::BatchId;
use crate::provider::{ProviderConfig, ProviderKind};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "auth-token-1";

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// Twilio's "Webhooks security" guide works this example through: auth token
// 12345, a POST to https://mycompany.com/myapp.php?foo=1&bar=2 with CallSid
// CA1234567890ABCDE, Caller +12349013030, Digits 1234, From +12349013030 and To
// +18005551212, signed 0/KCTR6DLpKmkAf8muzZqo1nDgQ=. Its earlier edition used
// +14158675309 for Caller and From, signed RSOYDt4T1cUTdK1PDd93/VVr8B8=.
#[test]
fn twilios_published_signature_examples_verify() {
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    for (caller, signature) in [
        ("+12349013030", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        ("+14158675309", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    ] {
        // Out of order on purpose: the signature sorts them.
        let params = pairs(&[
            ("To", "+18005551212"),
            ("Digits", "1234"),
            ("CallSid", "CA1234567890ABCDE"),
            ("From", caller),
            ("Caller", caller),
        ]);
        assert!(verify_twilio_signature("12345", url, &params, signature));
        assert!(verify_twilio_signature(
            "12345",
            url,
            &params,
            &format!("{signature}\n")
        ));
        assert!(!verify_twilio_signature("54321", url, &params, signature));
        assert!(!verify_twilio_signature(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &params,
            signature
        ));
        let mut tampered = params.clone();
        tampered[1].1 = "9999".into();
        assert!(!verify_twilio_signature("12345", url, &tampered, signature));
        assert!(!verify_twilio_signature(
            "12345",
            url,
            &params,
            "not base64!"
        ));
        assert!(!verify_twilio_signature("12345", url, &params, ""));
    }
}

#[test]
fn twilio_error_codes_decide_the_class() {
    let answer = |code: u32, status: u16| {
        let body = format!(
            r#"{{"code": {code}, "message": "m{code}", "more_info": "https://www.twilio.com/docs/errors/{code}", "status": {status}}}"#
        );
        classify(status, None, body.as_bytes())
    };
    for code in [21211, 21610, 21614, 21635, 30005, 30006] {
        assert!(
            matches!(answer(code, 400), Error::Undeliverable { .. }),
            "{code}"
        );
        assert!(code_names_the_recipient(&code.to_string()), "{code}");
    }
    for code in [20003, 21408, 21606, 21612, 21659] {
        let status = if code == 20003 { 401 } else { 400 };
        assert!(
            matches!(answer(code, status), Error::Permanent { .. }),
            "{code}"
        );
        assert!(!code_names_the_recipient(&code.to_string()), "{code}");
    }
    assert!(!code_names_the_recipient("30003"));
    assert!(!code_names_the_recipient(""));
    assert_eq!(
        answer(21211, 400),
        Error::Undeliverable {
            reason: "Twilio error 21211: m21211 (HTTP 400)".into()
        }
    );
    // Codes without a rule of their own follow the HTTP status.
    assert!(matches!(answer(20500, 500), Error::Transient { .. }));
    assert!(matches!(answer(21602, 400), Error::Permanent { .. }));
}

#[test]
fn throttling_is_transient_and_marked_however_it_is_said() {
    let wait = Some(Duration::from_secs(7));
    let by_code = classify(
        400,
        wait,
        br#"{"code": 20429, "message": "Too Many Requests"}"#,
    );
    let by_status = classify(429, wait, br#"{"code": 14107, "message": "Rate limit"}"#);
    let bare = classify(429, wait, b"slow down");
    for e in [by_code, by_status, bare] {
        match e {
            Error::Throttled { retry_after, .. } => assert_eq!(retry_after, wait),
            other => panic!("{other:?}"),
        }
    }
    match classify(503, wait, b"<html>busy</html>") {
        Error::Transient { retry_after, .. } => assert_eq!(retry_after, wait),
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_final_statuses_make_a_report() {
    let callback = |status: &str, code: Option<&str>| {
        let mut params = pairs(&[
            ("AccountSid", ACCOUNT),
            ("ApiVersion", "2010-04-01"),
            ("From", "+15005550001"),
            ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
            ("MessageStatus", status),
            ("SmsSid", "SM0123456789abcdef0123456789abcdef"),
            ("SmsStatus", status),
            ("To", "+15005550006"),
        ]);
        if let Some(code) = code {
            params.push(("ErrorCode".into(), code.into()));
        }
        parse_twilio_callback(&params)
    };
    for status in ["accepted", "queued", "sending", "sent", "read"] {
        assert_eq!(callback(status, None), Ok(None), "{status}");
    }
    assert_eq!(
        callback("delivered", None),
        Ok(Some(DeliveryReport {
            provider_message_id: "SM0123456789abcdef0123456789abcdef".into(),
            to: Some("+15005550006".into()),
            delivered: true,
            code: None,
            at_ms: None,
        }))
    );
    for status in ["undelivered", "failed"] {
        let report = callback(status, Some("30005")).unwrap().unwrap();
        assert!(!report.delivered);
        assert_eq!(report.code.as_deref(), Some("30005"));
    }
    assert!(
        parse_twilio_callback(&pairs(&[("MessageStatus", "delivered")]))
            .unwrap_err()
            .contains("MessageSid")
    );
    assert!(
        parse_twilio_callback(&pairs(&[("MessageSid", "SM1")]))
            .unwrap_err()
            .contains("MessageStatus")
    );
}

fn config() -> TwilioConfig {
    TwilioConfig {
        account_sid: ACCOUNT.into(),
        auth_token: Some(Secret::new(TOKEN)),
        api_key_sid: None,
        api_key_secret: None,
        from: Some("+15005550001".into()),
        messaging_service_sid: None,
        base_url: None,
        status_callback_url: None,
        inbound_url: None,
    }
}

#[test]
fn the_providers_block_reads_from_toml() {
    use figment::providers::{Format, Toml};
    let provider: ProviderConfig = figment::Figment::from(Toml::string(
        r#"
        name = "twilio"
        kind = "twilio"
        channels = ["sms"]
        account_sid = "AC0123456789abcdef0123456789abcdef"
        auth_token = "t0ken"
        messaging_service_sid = "MG0123456789abcdef0123456789abcdef"
        status_callback_url = "https://herald.example/v1/receipts/twilio"
        "#,
    ))
    .extract()
    .expect("a valid twilio block");
    let ProviderKind::Twilio(twilio) = &provider.kind else {
        panic!("{:?}", provider.kind);
    };
    assert_eq!(
        twilio.auth_token.as_ref().map(Secret::expose),
        Some("t0ken")
    );
    assert_eq!(twilio.from, None);
    assert!(!format!("{provider:?}").contains("t0ken"));
    TwilioProvider::new(twilio, &provider.channels, Duration::from_secs(1)).unwrap();
}

#[test]
fn configuration_mistakes_are_named() {
    let check = |tweak: fn(&mut TwilioConfig), channels: &[Channel], expected: &str| {
        let mut config = config();
        tweak(&mut config);
        let e = TwilioProvider::new(&config, channels, Duration::from_secs(1))
            .err()
            .expect("a mistake");
        assert!(e.contains(expected), "{e}");
    };
    let sms = &[Channel::Sms];
    check(|_| {}, &Channel::ALL, "channels = [\"sms\"]");
    check(|c| c.account_sid = "AC/../x".into(), sms, "account_sid");
    check(|c| c.auth_token = None, sms, "needs auth_token");
    check(|c| c.api_key_sid = Some("SK1".into()), sms, "together");
    check(|c| c.from = None, sms, "needs a sender");
    check(|c| c.base_url = Some("ftp://x".into()), sms, "base_url");
    check(
        |c| c.status_callback_url = Some("/v1/receipts".into()),
        sms,
        "status_callback_url",
    );
    check(
        |c| {
            c.status_callback_url = Some("https://herald.example/v1/receipts/twilio".into());
            c.auth_token = None;
            c.api_key_sid = Some("SK1".into());
            c.api_key_secret = Some(Secret::new("key-secret"));
        },
        sms,
        "status_callback_url needs auth_token",
    );
}

/// One request the local Twilio received.
#[derive(Debug, Clone)]
struct Request {
    method: Method,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    form: Vec<(String, String)>,
}

/// What the local Twilio answers every request with.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    retry_after: Option<&'static str>,
    body: String,
    /// Waits this long before answering.
    stall: Duration,
}

impl Answer {
    fn json(status: u16, body: impl Into<String>) -> Self {
        Answer {
            status: StatusCode::from_u16(status).expect("a valid status"),
            retry_after: None,
            body: body.into(),
            stall: Duration::ZERO,
        }
    }

    /// Twilio's error answer.
    fn refusal(status: u16, code: u32, message: &str) -> Self {
        Answer::json(
            status,
            serde_json::json!({
                "code": code,
                "message": message,
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                "status": status,
            })
            .to_string(),
        )
    }
}

#[derive(Clone)]
struct LocalTwilio {
    base_url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl LocalTwilio {
    async fn start(answer: Answer) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .fallback(receive)
            .with_state((requests.clone(), answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the local Twilio");
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        LocalTwilio {
            base_url: format!("http://{addr}"),
            requests,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn provider(&self, tweak: impl FnOnce(&mut TwilioConfig)) -> TwilioProvider {
        let mut config = config();
        config.base_url = Some(self.base_url.clone());
        tweak(&mut config);
        TwilioProvider::new(&config, &[Channel::Sms], Duration::from_millis(500)).unwrap()
    }
}

async fn receive(
    State((requests, answer)): State<(Arc<Mutex<Vec<Request>>>, Answer)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    requests.lock().unwrap().push(Request {
        method,
        path: uri.path().to_string(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        form: form_urlencoded::parse(&body).into_owned().collect(),
    });
    tokio::time::sleep(answer.stall).await;
    let mut response = (
        answer.status,
        [("content-type", "application/json")],
        answer.body,
    )
        .into_response();
    if let Some(value) = answer.retry_after {
        response
            .headers_mut()
            .insert("retry-after", value.parse().unwrap());
    }
    response
}

fn message(body: &str) -> Message {
    Message {
        id: "01a2-0".into(),
        batch_id: BatchId::new(),
        reference: None,
        channel: Channel::Sms,
        to: "+15005550006".into(),
        subject: None,
        body: body.into(),
        vars: None,
        template: None,
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
}

/// The shape of Twilio's `201 Created` answer to a new message.
fn created(sid: &str) -> Answer {
    Answer::json(
        201,
        serde_json::json!({
            "account_sid": ACCOUNT,
            "api_version": "2010-04-01",
            "body": "ignored",
            "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
            "date_sent": null,
            "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
            "direction": "outbound-api",
            "error_code": null,
            "error_message": null,
            "from": "+15005550001",
            "messaging_service_sid": null,
            "num_media": "0",
            "num_segments": "1",
            "price": null,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {
                "media": format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}/Media.json")
            },
            "to": "+15005550006",
            "uri": format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json"),
        })
        .to_string(),
    )
}

#[tokio::test]
async fn a_send_posts_the_documented_form_and_keeps_the_sid() {
    let twilio = LocalTwilio::start(created("SM0123456789abcdef0123456789abcdef")).await;
    let callback = "https://herald.example/v1/receipts/twilio";
    let provider = twilio.provider(|c| c.status_callback_url = Some(callback.into()));
    let body = "Grüße, Zoë 👋 你好 & a+b=c%20";

    let receipt = provider.send(&message(body)).await.unwrap();

    assert_eq!(
        receipt.provider_message_id.as_deref(),
        Some("SM0123456789abcdef0123456789abcdef")
    );
    let requests = twilio.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json")
    );
    assert_eq!(request.authorization, Some(basic(ACCOUNT, TOKEN)));
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        request.form,
        pairs(&[
            ("To", "+15005550006"),
            ("From", "+15005550001"),
            ("Body", body),
            ("StatusCallback", callback),
        ])
    );
}

#[tokio::test]
async fn a_messaging_service_and_an_api_key_replace_from_and_the_auth_token() {
    let twilio = LocalTwilio::start(created("SM1")).await;
    let provider = twilio.provider(|c| {
        c.from = None;
        c.messaging_service_sid = Some("MG0123456789abcdef0123456789abcdef".into());
        c.api_key_sid = Some("SK0123456789abcdef0123456789abcdef".into());
        c.api_key_secret = Some(Secret::new("key-secret"));
    });

    provider.send(&message("hi")).await.unwrap();

    let request = &twilio.requests()[0];
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json")
    );
    assert_eq!(
        request.authorization,
        Some(basic("SK0123456789abcdef0123456789abcdef", "key-secret"))
    );
    assert_eq!(
        request.form,
        pairs(&[
            ("To", "+15005550006"),
            ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
            ("Body", "hi"),
        ])
    );
}

#[tokio::test]
async fn an_invalid_number_is_undeliverable_and_bad_credentials_permanent() {
    let invalid = "The 'To' number +15005550001 is not a valid phone number.";
    for (answer, expected) in [
        (
            Answer::refusal(400, 21211, invalid),
            Error::Undeliverable {
                reason: format!("Twilio error 21211: {invalid} (HTTP 400)"),
            },
        ),
        (
            Answer::refusal(401, 20003, "Authenticate"),
            Error::Permanent {
                reason: "Twilio error 20003: Authenticate (HTTP 401)".into(),
            },
        ),
    ] {
        let twilio = LocalTwilio::start(answer).await;
        let outcome = twilio.provider(|_| {}).send(&message("hi")).await;
        assert_eq!(outcome, Err(expected));
        assert_eq!(twilio.requests().len(), 1);
    }
}

#[tokio::test]
async fn too_many_requests_is_a_throttle_with_its_retry_after() {
    let mut answer = Answer::refusal(429, 20429, "Too Many Requests");
    answer.retry_after = Some("3");
    let twilio = LocalTwilio::start(answer).await;
    match twilio.provider(|_| {}).send(&message("hi")).await {
        Err(Error::Throttled {
            reason,
            retry_after,
        }) => {
            assert!(reason.starts_with("Twilio error 20429"), "{reason}");
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_server_error_is_transient_but_no_throttle() {
    let twilio = LocalTwilio::start(Answer::json(500, "internal error")).await;
    match twilio.provider(|_| {}).send(&message("hi")).await {
        Err(Error::Transient {
            reason,
            retry_after: None,
        }) => assert_eq!(reason, "HTTP 500: internal error"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = config();
    config.base_url = Some(format!("http://{addr}"));
    let provider =
        TwilioProvider::new(&config, &[Channel::Sms], Duration::from_millis(500)).unwrap();
    match provider.send(&message("hi")).await {
        Err(Error::Transient { reason, .. }) => {
            assert!(
                reason.starts_with("Twilio request failed: could not connect: "),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_stalled_answer_is_an_unknown_outcome_within_the_timeout() {
    let mut answer = created("SM1");
    answer.stall = Duration::from_secs(30);
    let twilio = LocalTwilio::start(answer).await;
    let provider = twilio.provider(|_| {});
    let started = Instant::now();

    let outcome = tokio::time::timeout(Duration::from_secs(5), provider.send(&message("hi")))
        .await
        .expect("the send's own timeout ends it first");

    // The request was written: Twilio may have taken it.
    match outcome {
        Err(Error::Unknown { reason }) => {
            assert_eq!(reason, "Twilio request failed: timed out")
        }
        other => panic!("{other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(twilio.requests().len(), 1);
}
