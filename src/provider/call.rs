//! What the template SMS providers (`aliyun`, `tencent`) share: they send only
//! templates approved on their side, take many numbers in one request and answer per
//! request or per number. This module reads what a request needs from a message,
//! groups a `send_many`'s messages into requests, and carries out one HTTP exchange.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;

use super::{Error, Message, Provider, Receipt};
use crate::domain::Channel;

/// Requests one `send_many` makes at once when it falls back to one request per
/// message: enough to finish a large group within the send timeout, few enough
/// not to burst past the provider's request rate.
pub(super) const FAN_OUT: usize = 8;

/// Both providers allow thousands of requests a second per account: a throttled
/// request can be tried again a second later.
pub(super) const THROTTLE_WAIT: Duration = Duration::from_secs(1);

/// How long to give the account's owner to top up an empty balance.
pub(super) const BALANCE_WAIT: Duration = Duration::from_secs(600);

/// The longest part of a provider's message quoted in an error's reason.
const QUOTED_CHARS: usize = 200;

/// Refuses a provider configured for channels other than SMS, so that no e-mail
/// channel picks it as its default.
pub(super) fn sms_only(provider: &str, channels: &[Channel]) -> Result<(), String> {
    if channels.is_empty() || channels.iter().any(|c| *c != Channel::Sms) {
        return Err(format!(
            "{provider} sends SMS only: set channels = [\"sms\"]"
        ));
    }
    Ok(())
}

/// The code of the provider-approved template a message names.
pub(super) fn template_code<'a>(message: &'a Message, provider: &str) -> Result<&'a str, Error> {
    if message.channel != Channel::Sms {
        return Err(Error::Permanent {
            reason: format!(
                "provider `{provider}` sends SMS only, not {}",
                message.channel
            ),
        });
    }
    message
        .template
        .as_ref()
        .and_then(|t| t.code.as_deref())
        .filter(|code| !code.trim().is_empty())
        .ok_or_else(|| Error::Permanent {
            reason: format!(
                "provider `{provider}` sends only templates it has approved: the stored \
                 template needs a code for this provider (`providers.{provider}.code`)"
            ),
        })
}

/// The sign name of a message: the stored template's, else the provider's default.
pub(super) fn sign_name<'a>(message: &'a Message, default: Option<&'a str>) -> Option<&'a str> {
    message
        .template
        .as_ref()
        .and_then(|t| t.sign_name.as_deref())
        .or(default)
        .filter(|sign| !sign.trim().is_empty())
}

/// The digits of an E.164 number (after the `+`); a recipient that is not one
/// cannot be sent to.
pub(super) fn e164_digits(to: &str) -> Result<&str, Error> {
    to.strip_prefix('+')
        .filter(|d| d.len() >= 4 && d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| Error::Undeliverable {
            reason: format!("`{to}` is not an E.164 phone number"),
        })
}

/// A template variable as the providers take it: they accept strings only, so
/// numbers and booleans are written out and `null` is empty.
pub(super) fn param_text(name: &str, value: &serde_json::Value) -> Result<String, Error> {
    match value {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        serde_json::Value::Null => Ok(String::new()),
        _ => Err(Error::Permanent {
            reason: format!(
                "template variable `{name}` is a list or an object; SMS templates take text"
            ),
        }),
    }
}

/// Splits messages into requests: messages of equal `key` share requests of at
/// most `max`, in the order given, and no request holds one number twice (answers
/// are matched to messages by number). Items are `(key, index, number)`; the
/// answer lists each request's key and message indices.
pub(super) fn group<K: Ord + Clone>(
    items: impl IntoIterator<Item = (K, usize, String)>,
    max: usize,
) -> Vec<(K, Vec<usize>)> {
    /// A request being filled: its messages and their numbers.
    #[derive(Default)]
    struct Filling {
        indices: Vec<usize>,
        numbers: HashSet<String>,
    }
    let mut by_key: BTreeMap<K, Vec<Filling>> = BTreeMap::new();
    for (key, index, number) in items {
        let requests = by_key.entry(key).or_default();
        let fits = requests
            .iter()
            .position(|r| r.indices.len() < max && !r.numbers.contains(&number));
        let request = match fits {
            Some(i) => &mut requests[i],
            None => {
                requests.push(Filling::default());
                requests.last_mut().expect("just pushed")
            }
        };
        request.indices.push(index);
        request.numbers.insert(number);
    }
    by_key
        .into_iter()
        .flat_map(|(key, requests)| requests.into_iter().map(move |r| (key.clone(), r.indices)))
        .collect()
}

/// `send` of a provider whose `send_many` does the work.
pub(super) async fn send_one<P: Provider>(
    provider: &P,
    message: &Message,
) -> Result<Receipt, Error> {
    provider
        .send_many(std::slice::from_ref(message))
        .await
        .pop()
        .expect("send_many answers once per message")
}

/// The outcome of one request for each of its messages, by message index.
pub(super) type Outcomes = Vec<(usize, Result<Receipt, Error>)>;

/// Runs requests, at most [`FAN_OUT`] at once, and answers one result per message:
/// `refused` holds the results of messages no request carries, the requests' own
/// outcomes fill the rest.
pub(super) async fn settle(
    mut refused: Vec<Option<Result<Receipt, Error>>>,
    requests: Vec<impl Future<Output = Outcomes>>,
) -> Vec<Result<Receipt, Error>> {
    let outcomes: Vec<Outcomes> = futures_util::stream::iter(requests)
        .buffer_unordered(FAN_OUT)
        .collect()
        .await;
    for (i, result) in outcomes.into_iter().flatten() {
        refused[i] = Some(result);
    }
    refused
        .into_iter()
        .map(|r| r.expect("every message is refused or in a request"))
        .collect()
}

/// `"{provider} {code}: {message}"`, the message cut to a readable length.
pub(super) fn reason(provider: &str, code: &str, message: &str) -> String {
    let mut quoted: String = message.trim().chars().take(QUOTED_CHARS).collect();
    if quoted.len() < message.trim().len() {
        quoted.push('…');
    }
    if quoted.is_empty() {
        format!("{provider} {code}")
    } else {
        format!("{provider} {code}: {quoted}")
    }
}

/// The time left until the next midnight in China (UTC+8), when both providers
/// reset their daily limits.
pub(super) fn until_midnight_in_china(now: jiff::Timestamp) -> Duration {
    let china = jiff::tz::TimeZone::fixed(jiff::tz::offset(8));
    let today = now.to_zoned(china.clone()).date();
    let midnight = today
        .tomorrow()
        .and_then(|d| d.to_zoned(china))
        .map_or(now, |z| z.timestamp());
    Duration::try_from(midnight.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// Parses a provider's `YYYY-MM-DD hh:mm:ss`, China time (UTC+8), into
/// milliseconds since the epoch.
pub(super) fn china_time_ms(text: &str) -> Option<i64> {
    let civil = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", text.trim()).ok()?;
    let zoned = civil
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
        .ok()?;
    Some(zoned.timestamp().as_millisecond())
}

/// What the adapters' tests share: messages to send, and a real HTTP server on
/// 127.0.0.1 that records each request it gets.
#[cfg(test)]
pub(super) mod harness {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::super::{Error, Message, ProviderConfig, ProviderKind};
    use crate::domain::ProviderTemplate;
    use crate::domain::{BatchId, Channel};

    /// An SMS to `to` through the approved template `code` with `vars`.
    pub fn sms(to: &str, code: Option<&str>, vars: serde_json::Value) -> Message {
        let serde_json::Value::Object(vars) = vars else {
            panic!("vars must be a JSON object");
        };
        Message {
            id: format!("m-{to}"),
            batch_id: batch(),
            reference: None,
            channel: Channel::Sms,
            to: to.to_string(),
            subject: None,
            body: "rendered text, not sent by template providers".into(),
            vars: Some(Arc::new(vars)),
            template: Some(ProviderTemplate {
                code: code.map(str::to_string),
                sign_name: None,
            }),
        }
    }

    /// The batch every test message belongs to: requests hold one batch's messages.
    pub fn batch() -> BatchId {
        BatchId::parse("0190a0a0-0000-7000-8000-000000000001").expect("a valid batch id")
    }

    /// `count` SMS to distinct mainland numbers, all alike.
    pub fn alike(count: usize, code: &str, vars: serde_json::Value) -> Vec<Message> {
        (0..count)
            .map(|i| sms(&format!("+86138{i:08}"), Some(code), vars.clone()))
            .collect()
    }

    /// An error worth trying again (transient, a throttle, a recipient's cap) as
    /// its reason, its hint in seconds and whether it is a throttle; anything else
    /// fails the test.
    pub fn transient(error: &Error) -> (&str, Option<u64>, bool) {
        let secs = |d: &Option<Duration>| d.map(|d| d.as_secs());
        match error {
            Error::Transient {
                reason,
                retry_after,
            } => (reason, secs(retry_after), false),
            Error::Throttled {
                reason,
                retry_after,
            } => (reason, secs(retry_after), true),
            Error::RecipientCapped { reason, wait } => (reason, Some(wait.as_secs()), false),
            other => panic!("not transient: {other:?}"),
        }
    }

    /// The kind of the first `[[providers]]` entry of `toml`, read as Herald reads
    /// its configuration file. Its secret, `s3cret`, must not show in `Debug`.
    pub fn configured(toml: &str) -> ProviderKind {
        /// The part of a configuration file that holds the providers.
        #[derive(serde::Deserialize)]
        struct File {
            providers: Vec<ProviderConfig>,
        }
        let file: File = Figment::from(Toml::string(toml))
            .extract()
            .expect("a valid configuration");
        let provider = &file.providers[0];
        assert!(
            !format!("{provider:?}").contains("s3cret"),
            "a secret leaked"
        );
        provider.kind.clone()
    }

    /// Serves `app` on 127.0.0.1 (a free port) until the test's runtime ends, and
    /// answers its base URL.
    pub async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free local port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// Requests as a server saw them, in arrival order.
    pub type Seen<T> = Arc<Mutex<Vec<T>>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_share_requests_up_to_the_limit_and_never_repeat_a_number() {
        let items = vec![
            ("a", 0, "+861".to_string()),
            ("b", 1, "+862".to_string()),
            ("a", 2, "+863".to_string()),
            ("a", 3, "+861".to_string()),
            ("a", 4, "+864".to_string()),
            ("a", 5, "+865".to_string()),
        ];
        assert_eq!(
            group(items, 3),
            vec![("a", vec![0, 2, 4]), ("a", vec![3, 5]), ("b", vec![1])]
        );
    }

    #[test]
    fn template_variables_become_text() {
        assert_eq!(param_text("n", &serde_json::json!(12)).unwrap(), "12");
        assert_eq!(param_text("n", &serde_json::json!("x")).unwrap(), "x");
        assert_eq!(param_text("n", &serde_json::json!(true)).unwrap(), "true");
        assert_eq!(param_text("n", &serde_json::Value::Null).unwrap(), "");
        assert!(matches!(
            param_text("n", &serde_json::json!([1])),
            Err(Error::Permanent { .. })
        ));
    }

    #[test]
    fn daily_limits_reset_at_midnight_in_china() {
        // 2019-02-25T16:44:25Z is 00:44:25 on the 26th in China.
        let now: jiff::Timestamp = "2019-02-25T16:44:25Z".parse().unwrap();
        assert_eq!(
            until_midnight_in_china(now),
            Duration::from_secs(23 * 3600 + 15 * 60 + 35)
        );
    }

    #[test]
    fn china_times_are_utc_plus_eight() {
        assert_eq!(
            china_time_ms("2017-01-01 08:00:00"),
            Some(1_483_228_800_000)
        );
        assert_eq!(china_time_ms("yesterday"), None);
    }

    #[test]
    fn long_messages_are_cut_in_reasons() {
        let long = "x".repeat(500);
        let r = reason("aliyun", "isv.X", &long);
        assert!(
            r.starts_with("aliyun isv.X: xxx") && r.ends_with('…'),
            "{r}"
        );
        assert_eq!(reason("tencent", "Code", " "), "tencent Code");
    }

    #[test]
    fn only_sms_channels_are_accepted() {
        assert!(sms_only("aliyun", &[Channel::Sms]).is_ok());
        assert!(sms_only("aliyun", &Channel::ALL).is_err());
        assert!(sms_only("aliyun", &[]).is_err());
    }
}
