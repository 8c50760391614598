//! A local server that speaks Dysmsapi: it checks each request's signature with its
//! own implementation of the documented algorithm and refuses mismatches as Aliyun
//! does, then answers as `answer` says.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

use super::*;
use crate::provider::call::harness::{Seen, serve};

pub(super) type Params = BTreeMap<String, String>;
pub(super) type Answer = Box<dyn Fn(&Params) -> (StatusCode, Value) + Send + Sync>;

pub(super) struct Dysmsapi {
    answer: Answer,
    /// Every request that arrived, signed well or not.
    pub(super) hits: AtomicUsize,
    /// The parameters of every request that passed the checks.
    seen: Seen<Params>,
    nonces: Mutex<HashSet<String>>,
}

/// Aliyun's own percent-encoding as its documentation describes it: form-encode,
/// then `+` → `%20`, `*` → `%2A`, `%7E` → `~`.
pub(super) fn pop_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
        .replace('*', "%2A")
        .replace("%7E", "~")
}

pub(super) fn server_signature(params: &Params) -> (String, String) {
    let query = params
        .iter()
        .map(|(k, v)| format!("{}={}", pop_encode(k), pop_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let string_to_sign = format!("POST&{}&{}", pop_encode("/"), pop_encode(&query));
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{SECRET}&").as_bytes()).unwrap();
    mac.update(string_to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (string_to_sign, signature)
}

pub(super) fn refusal(status: StatusCode, code: &str, message: &str) -> (StatusCode, String) {
    let body = json!({
        "RequestId": "8906582E-6722-409A-A6C4-0E7863B733A5",
        "HostId": "dysmsapi.aliyuncs.com",
        "Code": code,
        "Message": message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}"),
    });
    (status, body.to_string())
}

pub(super) async fn dysmsapi(
    State(server): State<Arc<Dysmsapi>>,
    body: Bytes,
) -> (StatusCode, String) {
    server.hits.fetch_add(1, Ordering::SeqCst);
    let mut params: Params = form_urlencoded::parse(&body).into_owned().collect();
    let Some(signature) = params.remove("Signature") else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "MissingSignature",
            "Signature is mandatory for this action.",
        );
    };
    let (string_to_sign, expected) = server_signature(&params);
    if signature != expected {
        return refusal(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            &format!(
                "Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"
            ),
        );
    }
    let expect = [
        ("AccessKeyId", KEY_ID),
        ("Format", "JSON"),
        ("RegionId", "cn-hangzhou"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("Version", "2017-05-25"),
    ];
    for (name, value) in expect {
        if params.get(name).map(String::as_str) != Some(value) {
            return refusal(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                &format!("{name} is not {value}"),
            );
        }
    }
    let fresh = params.get("Timestamp").is_some_and(|t| {
        jiff::civil::DateTime::strptime("%Y-%m-%dT%H:%M:%SZ", t)
            .ok()
            .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .is_some_and(|z| {
                z.timestamp()
                    .duration_since(jiff::Timestamp::now())
                    .abs()
                    .as_secs()
                    < 900
            })
    });
    if !fresh {
        return refusal(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        );
    }
    let nonce = params.get("SignatureNonce").cloned().unwrap_or_default();
    if nonce.is_empty() || !server.nonces.lock().unwrap().insert(nonce) {
        return refusal(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        );
    }
    server.seen.lock().unwrap().push(params.clone());
    let (status, body) = (server.answer)(&params);
    (status, body.to_string())
}

/// Aliyun's answer to an accepted request; the `BizId` is made from the nonce so
/// tests can tell which request carried a message.
pub(super) fn accepted(params: &Params) -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({"Message": "OK", "RequestId": "F655A8D5-B967-440B-8683-DAD6FF8DE990",
               "Code": "OK", "BizId": biz_id(params)}),
    )
}

pub(super) fn biz_id(params: &Params) -> String {
    format!("9006197469364984^{}", params["SignatureNonce"])
}

pub(super) async fn dysmsapi_server(
    secret: &str,
    answer: impl Fn(&Params) -> (StatusCode, Value) + Send + Sync + 'static,
) -> (AliyunProvider, Arc<Dysmsapi>) {
    let server = Arc::new(Dysmsapi {
        answer: Box::new(answer),
        hits: AtomicUsize::new(0),
        seen: Seen::default(),
        nonces: Mutex::new(HashSet::new()),
    });
    let app = axum::Router::new()
        .route("/", axum::routing::post(dysmsapi))
        .with_state(server.clone());
    let config = AliyunConfig {
        access_key_id: KEY_ID.into(),
        access_key_secret: Secret::new(secret),
        sign_name: Some(DEFAULT_SIGN.into()),
        region_id: default_region(),
        endpoint: serve(app).await,
    };
    let provider = AliyunProvider::new("ali", &config, &[Channel::Sms], Duration::from_secs(5))
        .expect("a valid configuration");
    (provider, server)
}

pub(super) fn seen(server: &Dysmsapi) -> Vec<Params> {
    server.seen.lock().unwrap().clone()
}

/// Aliyun's `QuerySendDetails` answer (its documented sample's shape) listing
/// `records` as (phone, OutId).
pub(super) fn details(records: &[(&str, &str)]) -> (StatusCode, Value) {
    let dtos: Vec<Value> = records
        .iter()
        .map(|(phone, out_id)| {
            json!({"ErrCode": "DELIVERED", "TemplateCode": "SMS_1", "OutId": out_id,
                   "ReceiveDate": "2024-03-01 12:00:03", "SendDate": "2024-03-01 12:00:00",
                   "PhoneNum": phone, "Content": "【Herald】Your code is 1234", "SendStatus": 3})
        })
        .collect();
    (
        StatusCode::OK,
        json!({"Code": "OK", "Message": "OK", "RequestId": "819BE656-D2E0-4858-8B21-B2E47708500B",
               "TotalCount": dtos.len(), "SmsSendDetailDTOs": {"SmsSendDetailDTO": dtos}}),
    )
}
