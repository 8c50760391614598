//! `GET /v1/spend`: what each provider with prices has spent on its local day,
//! its daily budget, and whether its sending is paused until its next day; and the
//! same as `/metrics` families.

use std::fmt::Write;

use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Serialize;

use super::error::Error;
use super::state::AppState;
use crate::domain::format_ms;
use crate::queue::spend::{Tariff, Today, from_micros};

/// One provider's spend on its local day.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct ProviderSpend {
    provider: String,
    /// The currency of its prices, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    /// Its local day (`budget_time_zone`, else UTC), `YYYY-MM-DD`.
    #[schemars(extend("format" = "date"))]
    day: String,
    /// What its messages were charged that day.
    spent: f64,
    /// Its `daily_budget`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    daily_budget: Option<f64>,
    /// When its budget is spent: its sending pauses until then, its next local
    /// midnight (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    paused_until: Option<String>,
}

/// `GET /v1/spend`'s answer: the providers with prices, by name.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct Spend {
    providers: Vec<ProviderSpend>,
}

/// The tariffs of the configured providers with prices, by name.
fn tariffs(state: &AppState) -> Vec<&Tariff> {
    let mut tariffs: Vec<&Tariff> = state
        .intake
        .registry()
        .routes()
        .filter_map(|r| r.limits.tariff.as_deref())
        .collect();
    tariffs.sort_by(|a, b| a.provider.cmp(&b.provider));
    tariffs
}

pub(super) async fn spend(State(state): State<AppState>) -> Result<Json<Spend>, Error> {
    let now = jiff::Timestamp::now();
    let mut providers = Vec::new();
    for tariff in tariffs(&state) {
        let Today {
            day,
            spent,
            paused_until,
        } = state.queue.today(tariff, now).await?;
        providers.push(ProviderSpend {
            provider: tariff.provider.clone(),
            currency: tariff.currency.clone(),
            day,
            spent: from_micros(spent),
            daily_budget: tariff.daily.as_ref().map(|d| from_micros(d.amount)),
            paused_until: paused_until.map(format_ms),
        });
    }
    Ok(Json(Spend { providers }))
}

/// The spend families of `/metrics`: each priced provider's spend on its local
/// day (a gauge) and whether a budget pauses it (0 or 1). A provider whose spend
/// cannot be read is left out, and the failure logged.
pub(super) async fn metrics(state: &AppState) -> String {
    let now = jiff::Timestamp::now();
    let mut spend = String::new();
    let mut paused = String::new();
    for tariff in tariffs(state) {
        let today = match state.queue.today(tariff, now).await {
            Ok(today) => today,
            Err(e) => {
                tracing::warn!(provider = %tariff.provider, error = %e, "cannot read the provider's spend for metrics");
                continue;
            }
        };
        let provider = crate::metrics::escape(&tariff.provider);
        let currency = crate::metrics::escape(tariff.currency.as_deref().unwrap_or(""));
        let _ = writeln!(
            spend,
            "herald_provider_spend{{provider=\"{provider}\",currency=\"{currency}\"}} {}",
            from_micros(today.spent)
        );
        if tariff.daily.is_some() {
            let _ = writeln!(
                paused,
                "herald_provider_budget_paused{{provider=\"{provider}\"}} {}",
                u8::from(today.paused_until.is_some())
            );
        }
    }
    format!(
        "# HELP herald_provider_spend What the provider's messages were charged on its local day.\n\
         # TYPE herald_provider_spend gauge\n{spend}\
         # HELP herald_provider_budget_paused 1 while the provider's daily budget is spent and its sending paused.\n\
         # TYPE herald_provider_budget_paused gauge\n{paused}"
    )
}
