//! `herald messages` finds the messages to an address or with a ref across
//! batches; `herald erase` forgets a person. Both are clients of the API
//! (`GET /v1/messages`, `DELETE /v1/recipients/{address}`).

use std::process::ExitCode;

use anyhow::Context;

use super::server::call;
use super::{EraseArgs, FindArgs, MessagesArgs};
use crate::api::{ErasureView, FoundPage};

/// `key=value` pairs of `find`, as a query string (without the `?`).
pub(super) fn find_query(find: &FindArgs) -> form_urlencoded::Serializer<'static, String> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in [
        ("to", &find.to),
        ("ref", &find.reference),
        ("state", &find.state),
        ("since", &find.since),
        ("until", &find.until),
    ] {
        if let Some(value) = value {
            query.append_pair(key, value);
        }
    }
    query
}

pub(super) async fn messages(args: MessagesArgs) -> anyhow::Result<ExitCode> {
    let mut query = find_query(&args.find);
    query.append_pair("limit", &args.limit.to_string());
    if let Some(before) = args.before {
        query.append_pair("before", &before.to_string());
    }
    let path = format!("/v1/messages?{}", query.finish());
    let Some(body) = call(&args.server, reqwest::Method::GET, &path).await? else {
        return Ok(ExitCode::FAILURE);
    };
    if args.json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let page: FoundPage =
        serde_json::from_str(&body).context("the server's answer is not a page of messages")?;
    if page.messages.is_empty() {
        println!("no messages found");
    }
    for found in &page.messages {
        let m = &found.message;
        println!(
            "{}  {}  {:<11}  {}  ref {}  via {}{}",
            m.created_at,
            m.id,
            serde_json::to_value(m.state)?.as_str().unwrap_or_default(),
            m.to,
            m.reference.as_deref().unwrap_or("-"),
            m.provider,
            m.last_error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default(),
        );
    }
    if let Some(before) = page.next_before {
        println!("next page: --before {before}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn erase(args: EraseArgs) -> anyhow::Result<ExitCode> {
    let address: String =
        percent_encoding::utf8_percent_encode(&args.address, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let path = format!("/v1/recipients/{address}");
    let Some(body) = call(&args.server, reqwest::Method::DELETE, &path).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let erased: ErasureView =
        serde_json::from_str(&body).context("the server's answer is not an erasure")?;
    println!(
        "erased {}: {} messages ({} cancelled), {} replies, {} webhook events",
        erased.address, erased.messages, erased.cancelled, erased.replies, erased.events
    );
    println!("now stored as {}", erased.erased_as);
    Ok(ExitCode::SUCCESS)
}
