//! `QuerySendDetails`: the records Aliyun keeps of the messages to one number,
//! read to tell whether an attempt whose outcome was unknown reached Aliyun.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::AliyunProvider;
use crate::provider::call;

impl AliyunProvider {
    /// One page of `QuerySendDetails`: the records of `number` on `date`
    /// (`yyyyMMdd`, China time), and how many there are in all.
    pub(super) async fn details(
        &self,
        number: &str,
        date: &str,
        page: u32,
    ) -> Result<(Vec<SendDetail>, u64), String> {
        let params = BTreeMap::from([
            ("PhoneNumber", number.to_string()),
            ("SendDate", date.to_string()),
            ("PageSize", DETAILS_PER_PAGE.to_string()),
            ("CurrentPage", page.to_string()),
        ]);
        let answer = self
            .request("QuerySendDetails", params, jiff::Timestamp::now())
            .await
            .map_err(|e| e.to_string())?;
        let reply: DetailsReply =
            serde_json::from_slice(&answer.body).map_err(|_| answer.unexplained().to_string())?;
        if reply.code != "OK" || !answer.status.is_success() {
            return Err(call::reason("aliyun", &reply.code, &reply.message));
        }
        Ok((reply.details.detail, reply.total_count.unwrap_or(0)))
    }
}

/// Records asked for per `QuerySendDetails` page (its most).
pub(super) const DETAILS_PER_PAGE: u32 = 50;
/// Pages read per day: a number gets few messages a day, and a query must end.
pub(super) const DETAILS_PAGES: u32 = 4;
/// Days looked at, from the unknown attempt's to today (Aliyun keeps 30).
const DETAILS_DAYS: usize = 3;

/// The answer of `QuerySendDetails`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DetailsReply {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default, deserialize_with = "total_count")]
    total_count: Option<u64>,
    #[serde(default, rename = "SmsSendDetailDTOs")]
    details: Details,
}

#[derive(Default, Deserialize)]
struct Details {
    #[serde(default, rename = "SmsSendDetailDTO")]
    detail: Vec<SendDetail>,
}

/// One record of a message to the number: `OutId` is the batch id Herald sent.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SendDetail {
    #[serde(default)]
    pub(super) out_id: Option<String>,
}

/// `TotalCount`, which Aliyun writes as a number or as a string of digits.
fn total_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

/// The days (`yyyyMMdd`, China time) from `since_ms` to `now`, the latest first,
/// at most [`DETAILS_DAYS`].
pub(super) fn send_dates(since_ms: i64, now: jiff::Timestamp) -> Vec<String> {
    let china = jiff::tz::TimeZone::fixed(jiff::tz::offset(8));
    let first = jiff::Timestamp::from_millisecond(since_ms)
        .unwrap_or(now)
        .to_zoned(china.clone())
        .date();
    let mut day = now.to_zoned(china).date();
    let mut dates = Vec::new();
    while dates.len() < DETAILS_DAYS {
        dates.push(day.strftime("%Y%m%d").to_string());
        match day.yesterday() {
            Ok(before) if day > first => day = before,
            _ => break,
        }
    }
    dates
}
