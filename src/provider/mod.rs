//! Providers: the services that actually deliver a message.
//!
//! - [`Provider`] is the adapter trait: one `send` per message, answering with a
//!   [`Receipt`] or an [`Error`] that says whether trying again can help (or that
//!   the outcome is unknown), and a `query` that asks about an unknown outcome.
//! - `log` writes each message to the log (the default, for trying Herald out).
//! - `webhook` POSTs each message as signed JSON to a URL.
//! - `twilio` sends SMS through Twilio's Messages API.
//! - `smtp` hands each e-mail to a mail server over SMTP.
//! - `aliyun` and `tencent` send provider-approved SMS templates through Aliyun
//!   and Tencent Cloud, many numbers per request (`call` holds what they share).
//! - `receipt` holds what a delivery receipt request reads into
//!   ([`Provider::read_receipts`]) and Aliyun's and Tencent's push parsers.
//!
//! Adapters never sleep or retry: the worker decides, from the error's class.

mod aliyun;
mod call;
mod log;
pub mod receipt;
mod settings;
mod smtp;
mod tencent;
mod twilio;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::aliyun::{AliyunConfig, AliyunProvider};
pub use self::log::LogProvider;
pub use self::receipt::{DeliveryReport, ReceiptAnswer, ReceiptError, ReceiptRequest, Receipts};
pub use self::settings::{PerRecipient, ProviderConfig, ProviderKind};
pub use self::smtp::{SmtpConfig, SmtpProvider};
pub use self::tencent::{TencentConfig, TencentProvider};
pub use self::twilio::{
    SIGNATURE_HEADER as TWILIO_SIGNATURE_HEADER, TwilioConfig, TwilioProvider,
    code_names_the_recipient as twilio_code_names_the_recipient, parse_twilio_callback,
    verify_twilio_signature,
};
pub(crate) use self::webhook::WireReceipt;
pub use self::webhook::{
    SIGNATURE_HEADER as WEBHOOK_SIGNATURE_HEADER, WebhookProvider, parse_webhook_receipts,
    verify_webhook_signature,
};
use crate::domain::ProviderTemplate;
use crate::domain::{BatchId, Channel};
use crate::ratelimit::{Limits, Rate};

/// One message as a provider sees it.
#[derive(Debug, Clone)]
pub struct Message {
    /// Stable across every attempt: providers pass it on as the idempotency key.
    pub id: String,
    pub batch_id: BatchId,
    pub reference: Option<String>,
    pub channel: Channel,
    pub to: String,
    pub subject: Option<String>,
    pub body: String,
    /// The recipient's template variables, for providers that render pre-approved
    /// templates on their side (Aliyun, Tencent Cloud); `None` when not stored.
    pub vars: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// The stored template's code and sign name at this provider, when the batch
    /// used a stored template that has them.
    pub template: Option<ProviderTemplate>,
}

/// What a provider says after accepting a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's own id for the message, when it gives one.
    pub provider_message_id: Option<String>,
}

/// Why a send did not succeed, classified for the retry decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Worth trying again: a timeout, a throttle, a server error. `retry_after` is
    /// the provider's own hint (e.g. `Retry-After`), when it gave one.
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help: the request itself was refused.
    #[error("{reason}")]
    Permanent { reason: String },
    /// Trying again cannot help because of the recipient: an invalid or
    /// unassigned number, a mailbox that does not exist (a hard bounce). Besides
    /// failing the message, the worker adds the address to the suppression list.
    #[error("{reason}")]
    Undeliverable { reason: String },
    /// The request may have reached the provider but no answer came back (a
    /// timeout after it was written, a connection lost before the answer): the
    /// message may have been sent. The worker marks it `unknown` and, before trying
    /// again, asks the provider about it ([`Provider::query`]).
    #[error("{reason}")]
    Unknown { reason: String },
}

/// What a provider says about an earlier attempt whose outcome was unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The attempt reached the provider: the message is sent, with the id the
    /// provider gave it when it says.
    Sent { provider_message_id: Option<String> },
    /// The provider has no record of it: sending again is safe.
    NotSent,
    /// The provider cannot say (it has no status query, the query failed, or its
    /// records lag): the next attempt goes ahead, and the idempotency key, for
    /// providers that take one, is what keeps it from being sent twice.
    CannotTell(String),
}

/// How a throttle's reason starts: see [`Error::throttled`].
pub const THROTTLED: &str = "throttled: ";

/// How a recipient's frequency cap's reason starts: see [`Error::recipient_capped`].
pub const RECIPIENT_CAPPED: &str = "recipient capped: ";

impl Error {
    /// A transient error that says the provider is throttling this account (too
    /// many requests, a quota for the whole account), as opposed to one recipient's
    /// limit or a failure: sending slower helps. Marked by the reason starting
    /// with [`THROTTLED`], so the variants stay as they are.
    pub fn throttled(reason: impl std::fmt::Display, retry_after: Option<Duration>) -> Error {
        Error::Transient {
            reason: format!("{THROTTLED}{reason}"),
            retry_after,
        }
    }

    /// Whether this is a throttle made by [`Error::throttled`].
    pub fn is_throttle(&self) -> bool {
        matches!(self, Error::Transient { reason, .. } if reason.starts_with(THROTTLED))
    }

    /// A transient error that says the recipient is over the provider's frequency
    /// cap for one number (Aliyun `isv.BUSINESS_LIMIT_CONTROL`, Tencent
    /// `LimitExceeded.PhoneNumber…`): nothing was sent, and the message can go once
    /// the cap's window has passed, `wait` from now. Neither a throttle nor a
    /// failure of the provider. Marked by the reason starting with
    /// [`RECIPIENT_CAPPED`].
    pub fn recipient_capped(reason: impl std::fmt::Display, wait: Duration) -> Error {
        Error::Transient {
            reason: format!("{RECIPIENT_CAPPED}{reason}"),
            retry_after: Some(wait),
        }
    }

    /// Whether this is a recipient's frequency cap made by [`Error::recipient_capped`].
    pub fn is_recipient_capped(&self) -> bool {
        matches!(self, Error::Transient { reason, .. } if reason.starts_with(RECIPIENT_CAPPED))
    }
}

/// A delivery adapter. Implementations must be cheap to share across tasks.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Makes one delivery attempt. Must not retry or sleep on its own.
    async fn send(&self, message: &Message) -> Result<Receipt, Error>;

    /// The most messages one [`Provider::send_many`] call takes: more than 1 for
    /// providers with a batch API (one request for many numbers).
    fn batch_limit(&self) -> usize {
        1
    }

    /// Makes one delivery attempt for each of `messages` (at most
    /// [`Provider::batch_limit`]), in as few requests as the provider allows, and
    /// answers one result per message, in order.
    async fn send_many(&self, messages: &[Message]) -> Vec<Result<Receipt, Error>> {
        futures_util::future::join_all(messages.iter().map(|m| self.send(m))).await
    }

    /// Asks the provider whether an attempt at `message` made at `since_ms` (ms
    /// since the epoch) or later, whose outcome was unknown, reached it. Must not
    /// retry or sleep; by default the provider cannot tell.
    async fn query(&self, message: &Message, since_ms: i64) -> Lookup {
        let _ = (message, since_ms);
        Lookup::CannotTell("the provider has no status query".into())
    }

    /// Reads a delivery-receipt request the provider made to
    /// `POST /v1/receipts/{name}`: checks that it comes from the provider, and
    /// parses its reports. By default the provider sends none.
    fn read_receipts(&self, request: &ReceiptRequest<'_>) -> Result<Receipts, ReceiptError> {
        let _ = request;
        Err(ReceiptError::NotTaken(
            "this kind of provider sends no delivery receipts".into(),
        ))
    }

    /// Whether a receipt's `undelivered` code says the recipient itself cannot
    /// receive messages (so the address is suppressed, as for
    /// [`Error::Undeliverable`]). By default no code does.
    fn receipt_names_the_recipient(&self, code: &str) -> bool {
        let _ = code;
        false
    }

    /// Whether it sends only its own approved templates, so that a message needs
    /// the stored template's code at this provider ([`Message::template`]).
    fn needs_template_code(&self) -> bool {
        false
    }
}

/// A provider with its name, channels and rate limit, as configured.
#[derive(Clone)]
pub struct Route {
    pub name: String,
    pub channels: Vec<Channel>,
    pub provider: Arc<dyn Provider>,
    /// The provider's rate limit and per-recipient caps, kept in the store and
    /// shared by every process.
    pub limits: Limits,
    /// What sending through it costs, when configured.
    pub price: Option<Price>,
}

/// A provider's prices, per message and per SMS segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub per_message: f64,
    pub per_segment: f64,
    pub currency: Option<String>,
}

impl Price {
    fn from_config(config: &ProviderConfig) -> Result<Option<Price>, String> {
        for (name, value) in [
            ("price_per_message", config.price_per_message),
            ("price_per_segment", config.price_per_segment),
        ] {
            if let Some(v) = value
                && !(v >= 0.0 && v.is_finite())
            {
                return Err(format!("{name} must be zero or more, not {v}"));
            }
        }
        if config.price_per_message.is_none() && config.price_per_segment.is_none() {
            return Ok(None);
        }
        Ok(Some(Price {
            per_message: config.price_per_message.unwrap_or(0.0),
            per_segment: config.price_per_segment.unwrap_or(0.0),
            currency: config.currency.clone(),
        }))
    }

    /// The cost of `messages` messages of `segments` SMS segments in all.
    pub fn cost(&self, messages: usize, segments: usize) -> f64 {
        self.per_message * messages as f64 + self.per_segment * segments as f64
    }
}

/// Every configured provider by name, and each channel's providers in order of
/// preference (the first is the default; most channels have only it).
#[derive(Clone)]
pub struct Registry {
    routes: HashMap<String, Route>,
    failover: HashMap<Channel, Vec<String>>,
}

/// A configuration mistake found while building the providers.
#[derive(Debug, thiserror::Error)]
#[error("provider `{name}`: {message}")]
pub struct ConfigError {
    pub name: String,
    pub message: String,
}

impl Registry {
    /// Builds every provider from its configuration. The `log` provider always exists
    /// (unless a provider of that name is configured) and is the default for any
    /// channel no configured provider serves. A channel's `failover` list, when
    /// given, starts with its default.
    pub fn build(
        providers: &[ProviderConfig],
        defaults: &HashMap<Channel, String>,
        failover: &HashMap<Channel, Vec<String>>,
        send_timeout: Duration,
    ) -> Result<Registry, ConfigError> {
        let mut routes = HashMap::new();
        let mut all = providers.to_vec();
        if !all.iter().any(|p| p.name == "log") {
            all.push(ProviderConfig::log());
        }
        for config in &all {
            let err = |message: String| ConfigError {
                name: config.name.clone(),
                message,
            };
            if config.name.is_empty() {
                return Err(err("the name must not be empty".into()));
            }
            let provider: Arc<dyn Provider> = match &config.kind {
                ProviderKind::Log => Arc::new(LogProvider::new(&config.name)),
                ProviderKind::Webhook { url, secret } => {
                    Arc::new(WebhookProvider::new(url, secret.clone(), send_timeout).map_err(err)?)
                }
                ProviderKind::Twilio(twilio) => Arc::new(
                    TwilioProvider::new(twilio, &config.channels, send_timeout).map_err(err)?,
                ),
                ProviderKind::Smtp(smtp) => {
                    Arc::new(SmtpProvider::new(smtp, send_timeout).map_err(err)?)
                }
                ProviderKind::Aliyun(aliyun) => Arc::new(
                    AliyunProvider::new(&config.name, aliyun, &config.channels, send_timeout)
                        .map_err(err)?,
                ),
                ProviderKind::Tencent(tencent) => Arc::new(
                    TencentProvider::new(&config.name, tencent, &config.channels, send_timeout)
                        .map_err(err)?,
                ),
            };
            let segments = checked_rate(
                "segments_per_sec",
                config.segments_per_sec,
                config.segment_burst,
            )
            .map_err(err)?;
            let rate =
                checked_rate("rate_per_sec", config.rate_per_sec, config.burst).map_err(err)?;
            let per_recipient = config.per_recipient.caps();
            if per_recipient.iter().any(|cap| cap.count == 0) {
                return Err(err(
                    "a per_recipient cap must allow at least 1 message (leave it out for no cap)"
                        .into(),
                ));
            }
            let route = Route {
                name: config.name.clone(),
                channels: config.channels.clone(),
                provider,
                limits: Limits {
                    rate,
                    segments,
                    per_recipient,
                    owner: Some(config.name.clone()),
                },
                price: Price::from_config(config).map_err(err)?,
            };
            if routes.insert(config.name.clone(), route).is_some() {
                return Err(err("is declared twice".into()));
            }
        }
        let mut chosen = HashMap::new();
        for channel in Channel::ALL {
            let listed = failover.get(&channel);
            let first = listed.and_then(|names| names.first());
            if listed.is_some() && first.is_none() {
                return Err(ConfigError {
                    name: format!("failover.{channel}"),
                    message: "must list at least one provider".into(),
                });
            }
            let name = match (defaults.get(&channel), first) {
                (Some(default), Some(first)) if default != first => {
                    return Err(ConfigError {
                        name: default.clone(),
                        message: format!(
                            "is the default for {channel} (defaults.{channel}) but failover.{channel} starts with `{first}`: leave out defaults.{channel}, or make them agree"
                        ),
                    });
                }
                (Some(name), _) | (None, Some(name)) => name.clone(),
                (None, None) => all
                    .iter()
                    .find(|p| p.channels.contains(&channel))
                    .map_or_else(|| "log".to_string(), |p| p.name.clone()),
            };
            let names = listed.cloned().unwrap_or_else(|| vec![name]);
            for (i, name) in names.iter().enumerate() {
                let role = if listed.is_some() {
                    format!("is in failover.{channel}")
                } else {
                    format!("is the default for {channel} (defaults.{channel})")
                };
                let err = |message: String| ConfigError {
                    name: name.clone(),
                    message,
                };
                match routes.get(name) {
                    None => {
                        return Err(err(format!("{role} but is not declared in [[providers]]")));
                    }
                    Some(route) if !route.channels.contains(&channel) => {
                        return Err(err(format!(
                            "{role} but its channels do not include {channel}"
                        )));
                    }
                    Some(_) if names[..i].contains(name) => {
                        return Err(err(format!("is listed twice in failover.{channel}")));
                    }
                    Some(_) => {}
                }
            }
            chosen.insert(channel, names);
        }
        Ok(Registry {
            routes,
            failover: chosen,
        })
    }

    /// Picks the provider for a batch: the one asked for, or the channel's default.
    /// The error says why the asked-for one cannot be used.
    pub fn resolve(&self, channel: Channel, asked: Option<&str>) -> Result<&Route, String> {
        let name = asked.unwrap_or_else(|| &self.failover[&channel][0]);
        let route = self
            .routes
            .get(name)
            .ok_or_else(|| format!("no provider is named `{name}`"))?;
        if !route.channels.contains(&channel) {
            return Err(format!("provider `{name}` does not send {channel}"));
        }
        Ok(route)
    }

    /// Every provider.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    /// The provider named `name`, if it is configured.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }

    /// `channel`'s providers in order of preference; the first is its default.
    pub fn failover(&self, channel: Channel) -> &[String] {
        self.failover.get(&channel).map_or(&[], Vec::as_slice)
    }

    /// Where `provider`'s messages may go when its circuit is open: the other
    /// providers of every failover list it is on, in list order (channels in
    /// [`Channel::ALL`] order), each once. Empty for a provider on no list but its
    /// own.
    pub fn fallbacks(&self, provider: &str) -> Vec<&Route> {
        let mut names: Vec<&str> = Vec::new();
        for channel in Channel::ALL {
            let list = self.failover(channel);
            if list.iter().any(|n| n == provider) {
                for name in list {
                    if name != provider && !names.contains(&name.as_str()) {
                        names.push(name);
                    }
                }
            }
        }
        names.into_iter().filter_map(|n| self.route(n)).collect()
    }

    /// Whether a message of `channel` for provider `from` may be sent through `to`
    /// instead: both are on the channel's failover list.
    pub fn fails_over(&self, channel: Channel, from: &str, to: &str) -> bool {
        let list = self.failover(channel);
        list.iter().any(|n| n == from) && list.iter().any(|n| n == to)
    }
}

/// A configured rate (`name` is its key, for the error), checked.
fn checked_rate(
    name: &str,
    per_sec: Option<f64>,
    burst: Option<u32>,
) -> Result<Option<Rate>, String> {
    match per_sec {
        Some(rate) if !(rate > 0.0 && rate.is_finite()) => {
            Err(format!("{name} must be a positive number, not {rate}"))
        }
        Some(rate) => Ok(Some(Rate::new(rate, burst))),
        None => Ok(None),
    }
}

/// An HTTP client for provider adapters: rustls, pooled keep-alive connections,
/// `timeout` on every request.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    // reqwest is built without a bundled crypto backend; install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        // Providers answer, they do not redirect; and a proxy lookup per request
        // costs CPU on the hot path.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Classifies a non-2xx HTTP answer: 429 is a throttle ([`Error::throttled`]), 408
/// and 5xx are transient, other statuses permanent. The reason quotes the start of
/// the answer's body.
pub fn classify_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Error {
    let snippet: String = String::from_utf8_lossy(body).chars().take(200).collect();
    let reason = if snippet.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", snippet.trim())
    };
    if status == 429 {
        Error::throttled(reason, retry_after)
    } else if status == 408 || status >= 500 {
        Error::Transient {
            reason,
            retry_after,
        }
    } else {
        Error::Permanent { reason }
    }
}

/// A provider's HTTP answer, read to the end.
pub struct Answer {
    pub status: reqwest::StatusCode,
    /// The `Retry-After` header, parsed.
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The error of an answer the provider's own error format did not explain, by
    /// its status (see [`classify_status`]).
    pub fn unexplained(&self) -> Error {
        classify_status(self.status.as_u16(), self.retry_after, &self.body)
    }
}

/// Sends `request` and reads the whole answer, whatever its status, with errors
/// whose reason starts with `who` (the provider, e.g. `Twilio`). A request that
/// could not connect (refused, no route, a name that does not resolve, a connect
/// timeout) was never written: [`Error::Transient`]. Any later failure — a timeout
/// waiting for the answer, a connection lost mid-way, an answer cut off — may
/// follow a request the provider received: [`Error::Unknown`].
pub async fn exchange(request: reqwest::RequestBuilder, who: &str) -> Result<Answer, Error> {
    let transient = |what: &str, e: reqwest::Error| {
        if e.is_connect() {
            return Error::Transient {
                reason: format!("{who} {what}: could not connect: {}", cause(&e)),
                retry_after: None,
            };
        }
        let cause = if e.is_timeout() {
            "timed out".to_string()
        } else {
            cause(&e)
        };
        Error::Unknown {
            reason: format!("{who} {what}: {cause}"),
        }
    };
    let response = request
        .send()
        .await
        .map_err(|e| transient("request failed", e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = response
        .bytes()
        .await
        .map_err(|e| transient("answer was cut off", e))?;
    Ok(Answer {
        status,
        retry_after,
        body: body.into(),
    })
}

/// What an HTTP client error comes down to: its innermost cause (reqwest's own
/// message is only "error sending request for url …").
fn cause(e: &reqwest::Error) -> String {
    let mut innermost: &dyn std::error::Error = e;
    while let Some(inner) = innermost.source() {
        innermost = inner;
    }
    innermost.to_string()
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (a date in the past
/// means "now").
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let delta = at.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(delta).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
        let http_date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&later)
            .unwrap();
        let d = parse_retry_after(&http_date).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    fn hook(name: &str, channels: &[Channel]) -> ProviderConfig {
        ProviderConfig {
            name: name.into(),
            kind: ProviderKind::Webhook {
                url: "http://127.0.0.1:1/hook".into(),
                secret: None,
            },
            channels: channels.to_vec(),
            ..ProviderConfig::log()
        }
    }

    fn build(
        failover: &[(Channel, &[&str])],
        defaults: &[(Channel, &str)],
    ) -> Result<Registry, ConfigError> {
        let providers = [
            hook("a", &[Channel::Sms]),
            hook("b", &[Channel::Sms, Channel::Email]),
            hook("c", &[Channel::Sms]),
            hook("m", &[Channel::Email]),
        ];
        let failover = failover
            .iter()
            .map(|(c, names)| (*c, names.iter().map(|n| n.to_string()).collect()))
            .collect();
        let defaults = defaults.iter().map(|(c, n)| (*c, n.to_string())).collect();
        Registry::build(&providers, &defaults, &failover, Duration::from_secs(1))
    }

    #[test]
    fn a_failover_list_sets_the_default_and_each_providers_fallbacks_in_order() {
        let r = build(
            &[
                (Channel::Sms, &["a", "b", "c"]),
                (Channel::Email, &["m", "b"]),
            ],
            &[(Channel::Sms, "a")],
        )
        .unwrap();
        assert_eq!(r.resolve(Channel::Sms, None).unwrap().name, "a");
        assert_eq!(r.resolve(Channel::Email, None).unwrap().name, "m");
        let names =
            |p: &str| -> Vec<String> { r.fallbacks(p).iter().map(|r| r.name.clone()).collect() };
        assert_eq!(names("a"), ["b", "c"]);
        assert_eq!(names("b"), ["a", "c", "m"]);
        assert!(names("log").is_empty());
        assert!(r.fails_over(Channel::Email, "m", "b"));
        assert!(!r.fails_over(Channel::Email, "b", "a"));
    }

    #[test]
    fn a_failover_list_naming_an_unfit_provider_or_disagreeing_with_the_default_is_refused() {
        let error = |failover: &[(Channel, &[&str])], defaults: &[(Channel, &str)]| {
            build(failover, defaults)
                .err()
                .expect("refused")
                .to_string()
        };
        let e = error(&[(Channel::Sms, &["a", "x"])], &[]);
        assert!(e.contains("`x`") && e.contains("not declared"), "{e}");
        let e = error(&[(Channel::Sms, &["a", "m"])], &[]);
        assert!(e.contains("`m`") && e.contains("do not include sms"), "{e}");
        let e = error(&[(Channel::Sms, &["a", "b", "a"])], &[]);
        assert!(e.contains("twice"), "{e}");
        let e = error(&[(Channel::Sms, &[])], &[]);
        assert!(e.contains("failover.sms"), "{e}");
        let e = error(&[(Channel::Sms, &["a", "b"])], &[(Channel::Sms, "b")]);
        assert!(e.contains("starts with `a`"), "{e}");
    }

    #[test]
    fn throttles_and_server_errors_are_transient_other_4xx_permanent() {
        for status in [408, 429, 500, 502, 503] {
            assert!(
                matches!(classify_status(status, None, b""), Error::Transient { .. }),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(
                matches!(classify_status(status, None, b""), Error::Permanent { .. }),
                "{status}"
            );
        }
        let throttle = classify_status(429, Some(Duration::from_secs(2)), b"slow down");
        assert!(throttle.is_throttle(), "{throttle:?}");
        assert_eq!(throttle.to_string(), "throttled: HTTP 429: slow down");
        assert!(!classify_status(503, None, b"").is_throttle());
        let e = classify_status(503, Some(Duration::from_secs(3)), b"busy");
        assert_eq!(
            e,
            Error::Transient {
                reason: "HTTP 503: busy".into(),
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }
}
