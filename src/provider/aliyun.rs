//! Aliyun SMS: the Dysmsapi RPC API (version 2017-05-25), which sends only templates
//! approved in the Aliyun console. Requests are `POST`ed as forms and signed with
//! Aliyun's RPC signature (HMAC-SHA1 over the canonicalized parameters).
//!
//! `send_many` groups the messages of one batch: those with one template, sign and
//! parameters share a `SendSms` request (up to 1,000 numbers); the others of one
//! template share a `SendBatchSms` request (up to 100, each with its own sign and
//! parameters). Aliyun answers per request: one `Code` and one `BizId` for all its
//! numbers. Every request carries its batch id as `OutId`, so that `query`
//! (`QuerySendDetails`) can tell whether an attempt whose outcome was unknown
//! reached Aliyun: a batch has each number once.
//!
//! `signature` signs each request; `query` reads `QuerySendDetails`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::Deserialize;

mod query;
mod signature;

use self::query::{DETAILS_PAGES, DETAILS_PER_PAGE, send_dates};
use self::signature::{canonicalize, percent_encode, signature, string_to_sign};
use super::Answer;
use super::call::{self, BALANCE_WAIT, FAN_OUT, Outcomes, THROTTLE_WAIT};
use super::{
    Error, Inbound, Lookup, Message, Provider, Receipt, ReceiptError, ReceiptRequest, Receipts,
    http_client, inbound, receipt,
};
use crate::domain::Channel;
use crate::domain::Secret;

/// The most numbers one `SendSms` request takes.
const SEND_SMS_NUMBERS: usize = 1000;
/// The most numbers one `SendBatchSms` request takes.
const SEND_BATCH_SMS_NUMBERS: usize = 100;
const VERSION: &str = "2017-05-25";

/// `kind = "aliyun"` in `[[providers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliyunConfig {
    /// The AccessKey id requests are signed as.
    pub access_key_id: String,
    /// The AccessKey secret requests are signed with.
    pub access_key_secret: Secret,
    /// The sign name used when the stored template gives none.
    #[serde(default)]
    pub sign_name: Option<String>,
    /// The region sent as `RegionId`; default `cn-hangzhou`.
    #[serde(default = "default_region")]
    pub region_id: String,
    /// The API's base URL; tests point it at a local server.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
}

fn default_region() -> String {
    "cn-hangzhou".into()
}

fn default_endpoint() -> String {
    "https://dysmsapi.aliyuncs.com".into()
}

/// Sends SMS templates through one Aliyun account, many numbers per request.
pub struct AliyunProvider {
    name: String,
    config: AliyunConfig,
    url: reqwest::Url,
    client: reqwest::Client,
}

impl AliyunProvider {
    /// `name` is the provider's configured name, quoted in errors; `timeout` bounds
    /// each request.
    pub fn new(
        name: &str,
        config: &AliyunConfig,
        channels: &[Channel],
        timeout: Duration,
    ) -> Result<Self, String> {
        call::sms_only("aliyun", channels)?;
        let url = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| format!("endpoint `{}` is not a URL: {e}", config.endpoint))?;
        if config.access_key_id.is_empty() || config.access_key_secret.expose().is_empty() {
            return Err("access_key_id and access_key_secret must not be empty".into());
        }
        Ok(AliyunProvider {
            name: name.to_string(),
            config: config.clone(),
            url,
            client: http_client(timeout)?,
        })
    }

    fn prepare<'a>(&'a self, message: &'a Message) -> Result<Prepared<'a>, Error> {
        Ok(Prepared {
            code: call::template_code(message, &self.name)?,
            sign: call::sign_name(message, self.config.sign_name.as_deref()).ok_or_else(|| {
                Error::Permanent {
                    reason: format!(
                        "provider `{}` needs a sign name: set `sign_name` on the provider or \
                         `providers.{}.sign_name` on the stored template",
                        self.name, self.name
                    ),
                }
            })?,
            number: aliyun_number(&message.to)?,
            params: template_param(message.vars.as_deref())?,
            batch: message.batch_id.to_string(),
        })
    }

    /// Makes one request and answers for each of its messages.
    async fn run(&self, request: &Request, prepared: &[Option<Prepared<'_>>]) -> Outcomes {
        let get = |i: usize| {
            prepared[i]
                .as_ref()
                .expect("requests hold prepared messages")
        };
        let indices = request.indices();
        let group: Vec<&Prepared> = indices.iter().map(|&i| get(i)).collect();
        let outcome = match request {
            Request::Same(_) => self.send_sms(&group).await,
            Request::Varied(_) => self.send_batch_sms(&group).await,
        };
        match outcome {
            Ok(biz_id) => indices
                .iter()
                .map(|&i| {
                    let receipt = Receipt {
                        provider_message_id: biz_id.clone(),
                        segment_ids: Vec::new(),
                    };
                    (i, Ok(receipt))
                })
                .collect(),
            // Aliyun refuses a request whole, before sending anything (no BizId), when
            // one of its numbers is invalid or over its limit; alone, each other
            // number goes through and only the one at fault fails.
            Err(Refusal {
                code: Some(code), ..
            }) if indices.len() > 1 && names_one_recipient(&code) => {
                let alone: Vec<_> = indices
                    .iter()
                    .map(|&i| async move {
                        let result = self.send_sms(&[get(i)]).await;
                        let result = result
                            .map(|id| Receipt {
                                provider_message_id: id,
                                segment_ids: Vec::new(),
                            })
                            .map_err(|refusal| refusal.error);
                        (i, result)
                    })
                    .collect();
                futures_util::stream::iter(alone)
                    .buffer_unordered(FAN_OUT)
                    .collect()
                    .await
            }
            Err(refusal) => indices
                .iter()
                .map(|&i| (i, Err(refusal.error.clone())))
                .collect(),
        }
    }

    /// `SendSms`: the first message's template, sign and parameters to every number.
    async fn send_sms(&self, group: &[&Prepared<'_>]) -> Result<Option<String>, Refusal> {
        let first = group[0];
        let numbers: Vec<&str> = group.iter().map(|p| p.number.as_str()).collect();
        let mut params = BTreeMap::from([
            ("PhoneNumbers", numbers.join(",")),
            ("SignName", first.sign.to_string()),
            ("TemplateCode", first.code.to_string()),
            ("OutId", first.batch.clone()),
        ]);
        if first.params != "{}" {
            params.insert("TemplateParam", first.params.clone());
        }
        self.call("SendSms", params).await
    }

    /// `SendBatchSms`: one template, each number with its own sign and parameters.
    async fn send_batch_sms(&self, all: &[&Prepared<'_>]) -> Result<Option<String>, Refusal> {
        let json = |values: Vec<&str>| serde_json::to_string(&values).expect("strings serialize");
        let mut params = BTreeMap::from([
            (
                "PhoneNumberJson",
                json(all.iter().map(|p| p.number.as_str()).collect()),
            ),
            ("SignNameJson", json(all.iter().map(|p| p.sign).collect())),
            ("TemplateCode", all[0].code.to_string()),
            ("OutId", all[0].batch.clone()),
        ]);
        if all.iter().any(|p| p.params != "{}") {
            let objects: Vec<&str> = all.iter().map(|p| p.params.as_str()).collect();
            params.insert("TemplateParamJson", format!("[{}]", objects.join(",")));
        }
        self.call("SendBatchSms", params).await
    }

    /// Signs and makes one send request; answers the `BizId`, or why Aliyun refused.
    async fn call(
        &self,
        action: &str,
        params: BTreeMap<&str, String>,
    ) -> Result<Option<String>, Refusal> {
        let now = jiff::Timestamp::now();
        let answer = self
            .request(action, params, now)
            .await
            .map_err(|error| Refusal { code: None, error })?;
        read_answer(&answer, now)
    }

    /// Signs and makes one request of `action` with `params`, at `now`.
    async fn request(
        &self,
        action: &str,
        mut params: BTreeMap<&str, String>,
        now: jiff::Timestamp,
    ) -> Result<Answer, Error> {
        params.extend([
            ("AccessKeyId", self.config.access_key_id.clone()),
            ("Action", action.to_string()),
            ("Format", "JSON".to_string()),
            ("RegionId", self.config.region_id.clone()),
            ("SignatureMethod", "HMAC-SHA1".to_string()),
            ("SignatureNonce", uuid::Uuid::now_v7().to_string()),
            ("SignatureVersion", "1.0".to_string()),
            ("Timestamp", now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            ("Version", VERSION.to_string()),
        ]);
        let canonical = canonicalize(&params);
        let signature = signature(
            self.config.access_key_secret.expose(),
            &string_to_sign("POST", &canonical),
        );
        let body = format!("{canonical}&Signature={}", percent_encode(&signature));
        let request = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        super::exchange(request, "aliyun").await
    }
}

#[async_trait]
impl Provider for AliyunProvider {
    async fn send(&self, message: &Message) -> Result<Receipt, Error> {
        call::send_one(self, message).await
    }

    fn batch_limit(&self) -> usize {
        SEND_SMS_NUMBERS
    }

    /// Looks for the number's records (`QuerySendDetails`) on the days from the
    /// unknown attempt to today: one whose `OutId` is the message's batch means the
    /// attempt reached Aliyun (its `BizId` is not in the records). Aliyun lists a
    /// message as soon as it takes it, waiting for its receipt or not, so none
    /// means it never arrived.
    async fn query(&self, message: &Message, since_ms: i64) -> Lookup {
        let Ok(number) = aliyun_number(&message.to) else {
            return Lookup::CannotTell(format!("`{}` is not a number Aliyun takes", message.to));
        };
        let batch = message.batch_id.to_string();
        for date in send_dates(since_ms, jiff::Timestamp::now()) {
            for page in 1..=DETAILS_PAGES {
                let (records, total) = match self.details(&number, &date, page).await {
                    Ok(found) => found,
                    Err(why) => return Lookup::CannotTell(why),
                };
                if records
                    .iter()
                    .any(|r| r.out_id.as_deref() == Some(batch.as_str()))
                {
                    return Lookup::Sent {
                        provider_message_id: None,
                    };
                }
                let seen = u64::from(page * DETAILS_PER_PAGE);
                if records.is_empty() || seen >= total {
                    break;
                }
                if page == DETAILS_PAGES {
                    return Lookup::CannotTell(format!(
                        "the number has more than {seen} records on {date}"
                    ));
                }
            }
        }
        Lookup::NotSent
    }

    /// Aliyun's `SmsReport` push (a JSON array, unsigned).
    fn read_receipts(&self, request: &ReceiptRequest<'_>) -> Result<Receipts, ReceiptError> {
        receipt::read_pushed(request, receipt::parse_aliyun, receipt::ALIYUN_ANSWER)
    }

    /// Aliyun's `SmsUp` HTTP batch push (a JSON array, unsigned, as its receipts).
    fn read_inbound(&self, request: &ReceiptRequest<'_>) -> Result<Inbound, ReceiptError> {
        receipt::read_pushed_replies(
            request,
            inbound::parse_aliyun_uplink,
            receipt::ALIYUN_ANSWER,
        )
    }

    fn needs_template_code(&self) -> bool {
        true
    }

    async fn send_many(&self, messages: &[Message]) -> Vec<Result<Receipt, Error>> {
        let mut results: Vec<Option<Result<Receipt, Error>>> = vec![None; messages.len()];
        let prepared: Vec<Option<Prepared>> = messages
            .iter()
            .zip(results.iter_mut())
            .map(|(message, result)| {
                self.prepare(message)
                    .map_err(|e| *result = Some(Err(e)))
                    .ok()
            })
            .collect();
        let requests = plan(&prepared);
        // Made first and run later: a stream mapping a closure over borrowed items
        // is not provably `Send` to `async_trait`.
        let runs = requests.iter().map(|r| self.run(r, &prepared)).collect();
        call::settle(results, runs).await
    }
}

/// A message as a request needs it.
struct Prepared<'a> {
    code: &'a str,
    sign: &'a str,
    /// Aliyun's form of the number.
    number: String,
    /// The `TemplateParam` JSON object; `{}` when the template takes none.
    params: String,
    /// The message's batch id, sent as `OutId`: a request holds one batch's messages.
    batch: String,
}

/// One request to make, by message index.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `SendSms`: one template, sign and parameters for every number.
    Same(Vec<usize>),
    /// `SendBatchSms`: one template, a sign and parameters per number.
    Varied(Vec<usize>),
}

impl Request {
    fn indices(&self) -> &[usize] {
        match self {
            Request::Same(i) | Request::Varied(i) => i,
        }
    }
}

/// Why Aliyun did not accept a request: its error code, when it gave one.
struct Refusal {
    code: Option<String>,
    error: Error,
}

/// Groups the prepared messages into requests, each of one batch: messages that
/// are alike share a `SendSms`; the rest of each template share `SendBatchSms`
/// requests, which Aliyun delivers a little later (it says so), so alike messages
/// are never put there.
fn plan(prepared: &[Option<Prepared>]) -> Vec<Request> {
    let alike = call::group(
        prepared.iter().enumerate().filter_map(|(i, p)| {
            let p = p.as_ref()?;
            Some((
                (p.batch.as_str(), p.code, p.sign, p.params.as_str()),
                i,
                p.number.clone(),
            ))
        }),
        SEND_SMS_NUMBERS,
    );
    let mut requests = Vec::new();
    let mut lone: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for ((batch, code, _, _), indices) in alike {
        if indices.len() > 1 {
            requests.push(Request::Same(indices));
        } else {
            lone.entry((batch, code)).or_default().extend(indices);
        }
    }
    for indices in lone.into_values() {
        for chunk in indices.chunks(SEND_BATCH_SMS_NUMBERS) {
            requests.push(if chunk.len() == 1 {
                Request::Same(chunk.to_vec())
            } else {
                Request::Varied(chunk.to_vec())
            });
        }
    }
    requests
}

/// Aliyun's answer body.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Reply {
    code: Option<String>,
    #[serde(default)]
    message: String,
    biz_id: Option<String>,
}

fn read_answer(answer: &Answer, now: jiff::Timestamp) -> Result<Option<String>, Refusal> {
    let reply = serde_json::from_slice::<Reply>(&answer.body).ok();
    let Some(Reply {
        code: Some(code),
        message,
        biz_id,
    }) = reply
    else {
        return Err(Refusal {
            code: None,
            error: answer.unexplained(),
        });
    };
    if code == "OK" && answer.status.is_success() {
        return Ok(biz_id);
    }
    let error = if answer.status.is_server_error() {
        Error::Transient {
            reason: call::reason("aliyun", &code, &format!("HTTP {}", answer.status.as_u16())),
            retry_after: answer.retry_after,
        }
    } else {
        classify(&code, &message, now)
    };
    Err(Refusal {
        code: Some(code),
        error,
    })
}

/// Whether an error code, for a request of many numbers, may be about one of them.
fn names_one_recipient(code: &str) -> bool {
    matches!(
        code,
        "isv.MOBILE_NUMBER_ILLEGAL" | "isv.BUSINESS_LIMIT_CONTROL"
    )
}

/// Classifies Aliyun's error codes (its "API error codes" page).
fn classify(code: &str, message: &str, now: jiff::Timestamp) -> Error {
    // This refusal's message quotes the whole string to sign: numbers and
    // parameters do not belong in an error's reason.
    let message = if code == "SignatureDoesNotMatch" {
        "the signature does not match: check access_key_secret"
    } else {
        message
    };
    let reason = call::reason("aliyun", code, message);
    match code {
        "isv.MOBILE_NUMBER_ILLEGAL" => Error::Undeliverable { reason },
        // The number's own frequency cap (by default 1 a minute, 5 an hour and 10 a
        // day per sign for verification codes); the message says which was hit.
        "isv.BUSINESS_LIMIT_CONTROL" => {
            Error::recipient_capped(reason, business_limit_wait(message, now))
        }
        // Quotas for the whole account, set in the console.
        "isv.DAY_LIMIT_CONTROL" | "isv.MONTH_LIMIT_CONTROL" => {
            Error::throttled(reason, Some(call::until_midnight_in_china(now)))
        }
        c if c.starts_with("Throttling") || c.contains("FLOW") => {
            Error::throttled(reason, Some(THROTTLE_WAIT))
        }
        "isv.AMOUNT_NOT_ENOUGH" | "isv.OUT_OF_SERVICE" => Error::Transient {
            reason,
            retry_after: Some(BALANCE_WAIT),
        },
        "SignatureNonceUsed" | "ServiceUnavailable" | "InternalError" => Error::Transient {
            reason,
            retry_after: None,
        },
        c if c.starts_with("isp.") && c != "isp.RAM_PERMISSION_DENY" => Error::Transient {
            reason,
            retry_after: None,
        },
        _ => Error::Permanent { reason },
    }
}

/// How long a number stays over its frequency cap: Aliyun's message names the
/// window (`触发分钟级流控`, `小时级`, `天级`); without it, the shortest (a minute).
fn business_limit_wait(message: &str, now: jiff::Timestamp) -> Duration {
    if message.contains("天级") {
        call::until_midnight_in_china(now)
    } else if message.contains("小时级") {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(60)
    }
}

/// Aliyun's form of an E.164 number: mainland China numbers without the country
/// code (`13800138000`), others as country code and number without `+`
/// (`85261234567`).
fn aliyun_number(e164: &str) -> Result<String, Error> {
    let digits = call::e164_digits(e164)?;
    Ok(digits.strip_prefix("86").unwrap_or(digits).to_string())
}

/// The `TemplateParam` JSON object of a message's variables, keys in order.
fn template_param(
    vars: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<String, Error> {
    let mut params = BTreeMap::new();
    for (name, value) in vars.into_iter().flatten() {
        params.insert(name.as_str(), call::param_text(name, value)?);
    }
    Ok(serde_json::to_string(&params).expect("a map of strings serializes"))
}

#[cfg(test)]
mod tests;
