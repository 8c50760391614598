//! The registry of configured providers: each built from its `[[providers]]`
//! entry as a [`Route`] (the adapter with its channels, rate limits and price),
//! and each channel's providers in order of preference, checked against each
//! other when Herald starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{
    AliyunProvider, LogProvider, Provider, ProviderConfig, ProviderKind, SmppProvider,
    SmtpProvider, TencentProvider, TwilioProvider, WebhookProvider,
};
use crate::domain::Channel;
use crate::queue::spend::{DailyBudget, Tariff, to_micros};
use crate::ratelimit::{Limits, Rate};

/// A provider with its name, channels and rate limit, as configured.
#[derive(Clone)]
pub struct Route {
    /// The provider's configured name.
    pub name: String,
    /// The channels it sends.
    pub channels: Vec<Channel>,
    /// The adapter that sends.
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
    /// What one message costs.
    pub per_message: f64,
    /// What one SMS segment costs, on top of the message.
    pub per_segment: f64,
    /// The prices' currency, e.g. `CNY`, when configured.
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

    /// What sending through provider `config` costs, with its daily budget, as
    /// claims charge it; `None` without prices (a budget needs them).
    fn tariff(config: &ProviderConfig, price: Option<&Price>) -> Result<Option<Tariff>, String> {
        let daily = match config.daily_budget {
            None => {
                if config.budget_time_zone.is_some() {
                    return Err("budget_time_zone needs daily_budget".into());
                }
                None
            }
            Some(amount) if !(amount > 0.0 && amount.is_finite()) => {
                return Err(format!(
                    "daily_budget must be a positive number, not {amount}"
                ));
            }
            Some(_) if price.is_none() => {
                return Err(
                    "daily_budget needs price_per_message or price_per_segment to count spend"
                        .into(),
                );
            }
            Some(amount) => {
                let name = config.budget_time_zone.as_deref().unwrap_or("UTC");
                let zone =
                    crate::window::time_zone(name).map_err(|e| format!("budget_time_zone: {e}"))?;
                Some(DailyBudget {
                    amount: to_micros(amount),
                    zone,
                })
            }
        };
        Ok(price.map(|p| Tariff {
            provider: config.name.clone(),
            per_message: to_micros(p.per_message),
            per_segment: to_micros(p.per_segment),
            currency: p.currency.clone(),
            daily,
            fails_over: false,
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
    /// The provider (or the `failover.{channel}` key) at fault.
    pub name: String,
    /// What is wrong with it.
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
                ProviderKind::Log {} => Arc::new(LogProvider::new(&config.name)),
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
                ProviderKind::Smpp(smpp) => Arc::new(
                    SmppProvider::new(&config.name, smpp, &config.channels, send_timeout)
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
            let price = Price::from_config(config).map_err(err)?;
            let tariff = Price::tariff(config, price.as_ref()).map_err(err)?;
            let route = Route {
                name: config.name.clone(),
                channels: config.channels.clone(),
                provider,
                limits: Limits {
                    rate,
                    segments,
                    per_recipient,
                    owner: Some(config.name.clone()),
                    tariff: tariff.map(Arc::new),
                },
                price,
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
        let mut registry = Registry {
            routes,
            failover: chosen,
        };
        // A provider over its day's budget sends its messages through a fallback
        // at once, when it has one.
        let failing_over: Vec<String> = registry
            .routes
            .keys()
            .filter(|name| !registry.fallbacks(name).is_empty())
            .cloned()
            .collect();
        for name in failing_over {
            if let Some(route) = registry.routes.get_mut(&name)
                && let Some(tariff) = &mut route.limits.tariff
            {
                Arc::make_mut(tariff).fails_over = true;
            }
        }
        Ok(registry)
    }

    /// The same registry with provider `name`'s adapter replaced by `provider`,
    /// its channels, limits and place on the failover lists kept: how tests put a
    /// scripted stub behind a configured route.
    ///
    /// # Panics
    /// When no provider is named `name`.
    #[cfg(test)]
    pub(crate) fn with_adapter(mut self, name: &str, provider: Arc<dyn Provider>) -> Registry {
        let route = self
            .routes
            .get_mut(name)
            .unwrap_or_else(|| panic!("no provider is named `{name}`"));
        route.provider = provider;
        self
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_daily_budget_is_counted_in_its_time_zone_and_needs_prices() {
        let priced = |budget: Option<f64>, zone: Option<&str>, price: Option<f64>| {
            let mut a = hook("a", &[Channel::Sms]);
            a.price_per_message = price;
            a.currency = Some("CNY".into());
            a.daily_budget = budget;
            a.budget_time_zone = zone.map(String::from);
            let failover = [(Channel::Sms, vec!["a".to_string(), "b".to_string()])].into();
            Registry::build(
                &[a, hook("b", &[Channel::Sms])],
                &HashMap::new(),
                &failover,
                Duration::from_secs(1),
            )
        };
        let r = priced(Some(100.0), Some("Asia/Shanghai"), Some(0.05)).unwrap();
        let tariff = r
            .route("a")
            .unwrap()
            .limits
            .tariff
            .clone()
            .expect("a tariff");
        assert_eq!(
            (tariff.per_message, tariff.currency.as_deref()),
            (50_000, Some("CNY"))
        );
        let daily = tariff.daily.as_ref().expect("a budget");
        assert_eq!(daily.amount, 100_000_000);
        assert_eq!(daily.zone.iana_name(), Some("Asia/Shanghai"));
        assert!(tariff.fails_over, "`a` has `b` after it");
        assert!(r.route("b").unwrap().limits.tariff.is_none(), "no prices");

        let refusal = |e: Result<Registry, ConfigError>| e.err().expect("refused").to_string();
        assert!(refusal(priced(Some(100.0), None, None)).contains("daily_budget needs price"));
        assert!(
            refusal(priced(Some(100.0), Some("Mars/Base"), Some(0.05)))
                .contains("budget_time_zone")
        );
        assert!(refusal(priced(Some(-1.0), None, Some(0.05))).contains("daily_budget must be"));
        assert!(refusal(priced(None, Some("UTC"), Some(0.05))).contains("needs daily_budget"));
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
}
