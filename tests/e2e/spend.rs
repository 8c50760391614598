//! Spend caps end to end: a batch whose estimate is over its `max_cost` is
//! refused and nothing is stored; one that reaches its cap while sending is held
//! with why, resumed with a higher cap through the API and the CLI; and
//! `GET /v1/spend` and `/metrics` show each provider's spend today.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    ProviderServer, TestApp, client, rfc3339_from_now, route_all_to, sms_batch, spawn_app,
    test_config, wait_for,
};
use crate::process::{herald_command, output_within};

const FINISH: Duration = Duration::from_secs(10);

/// `server`'s provider entry at `price` CNY a message, with `budget` a day.
fn priced(
    server: &ProviderServer,
    price: f64,
    budget: Option<f64>,
) -> herald::provider::ProviderConfig {
    let mut provider = server.provider(None);
    provider.price_per_message = Some(price);
    provider.currency = Some("CNY".into());
    provider.daily_budget = budget;
    provider
}

/// Herald on the store in `dir`, sending through `provider`.
async fn herald_on(dir: tempfile::TempDir, provider: herald::provider::ProviderConfig) -> TestApp {
    let mut config = test_config(&dir.path().join("store"));
    route_all_to(&mut config, provider);
    let running = herald::app::start(config).await.expect("herald starts");
    TestApp {
        url: running.url().expect("the API runs"),
        client: client(),
        running: Some(running),
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_estimate_over_max_cost_is_refused_naming_it_and_nothing_is_stored() {
    let server = ProviderServer::start().await;
    let app = spawn_app(|config| route_all_to(config, priced(&server, 0.05, None))).await;
    let mut batch = sms_batch(3);
    batch["max_cost"] = json!(0.1);

    let (status, answer) = app.post("/v1/batches", &batch).await;

    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "max_cost", "{answer}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("estimated cost 0.15 CNY") && message.contains("max_cost 0.10 CNY"),
        "{answer}"
    );
    // The same for an upload, whose options come in the query.
    let (status, _, answer) = app
        .post_raw(
            "/v1/batches?channel=sms&template=hi&max_cost=0.01",
            "text/csv",
            &[],
            "to\n+8613800138001\n",
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "max_cost", "{answer}");
    assert!(app.batches().await.is_empty(), "a refused batch was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_cost_for_a_provider_without_prices_is_refused_as_unenforceable() {
    let server = ProviderServer::start().await;
    let app = spawn_app(|config| route_all_to(config, server.provider(None))).await;
    let mut batch = sms_batch(1);
    batch["max_cost"] = json!(5);

    let (status, answer) = app.post("/v1/batches", &batch).await;

    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "max_cost", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("no prices")),
        "{answer}"
    );
}

/// Waits until batch `id` has `held` messages and nothing left to send.
async fn held(app: &TestApp, id: &str) -> Value {
    wait_for(FINISH, &format!("batch {id} to be held"), || async {
        let (_, batch) = app.get(&format!("/v1/batches/{id}")).await;
        (batch["state"] == "held").then_some(batch)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_held_at_its_cap_resumes_with_a_higher_one_through_the_api_and_the_cli() {
    let server = ProviderServer::start().await;
    // Accepted at 0.50 a message (estimate 2.00, under the cap of 2.50), due in
    // a moment; then the price is 1.00: each batch reaches its cap after two.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = herald_on(dir, priced(&server, 0.5, None)).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut batch = sms_batch(4);
        batch["max_cost"] = json!(2.5);
        batch["send_at"] = json!(rfc3339_from_now(1_500));
        ids.push(first.submit(&batch).await);
    }
    first.stop().await;
    let dir = first.dir;
    let app = herald_on(dir, priced(&server, 1.0, None)).await;

    for id in &ids {
        let batch = held(&app, id).await;
        assert_eq!(batch["counts"]["sent"], 2, "{batch}");
        assert_eq!(batch["counts"]["held"], 2, "{batch}");
        assert_eq!(
            (batch["spent"].as_f64(), batch["max_cost"].as_f64()),
            (Some(2.0), Some(2.5))
        );
    }
    let (_, page) = app
        .get(&format!("/v1/batches/{}/messages?state=held", ids[0]))
        .await;
    assert_eq!(
        page["messages"][0]["last_error"], "spend cap 2.50 CNY reached (spent 2.00)",
        "{page}"
    );

    // Resuming without a higher cap says why; nothing moves.
    let resume = format!("/v1/batches/{}/resume", ids[0]);
    let (status, answer) = app.post(&resume, &json!({})).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_cost")),
        "{answer}"
    );
    let (status, answer) = app.post(&resume, &json!({"max_cost": 2.0})).await;
    assert_eq!(status, 409, "{answer}");

    // Through the API…
    let (status, answer) = app.post(&resume, &json!({"max_cost": 5})).await;
    assert_eq!(status, 200, "{answer}");
    let done = app.wait_finished(&ids[0], FINISH).await;
    assert_eq!(
        (done["counts"]["sent"].as_u64(), done["spent"].as_f64()),
        (Some(4), Some(4.0))
    );

    // …and through the CLI.
    let mut command = herald_command();
    command.args(["resume", &ids[1], "--max-cost", "5", "--server", &app.url]);
    let output = output_within(command, Duration::from_secs(20)).await;
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("of its cap of 5"), "{printed}");
    let done = app.wait_finished(&ids[1], FINISH).await;
    assert_eq!(done["counts"]["sent"], 4, "{done}");
    assert_eq!(server.count(), 8, "each message went once");
    // The provider's day counts what the capped batches spent through it.
    let (_, spend) = app.get("/v1/spend").await;
    assert_eq!(
        spend["providers"][0]["spent"].as_f64(),
        Some(8.0),
        "{spend}"
    );
    assert!(
        spend["providers"][0].get("paused_until").is_none(),
        "{spend}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_daily_budget_pauses_the_provider_and_says_so_in_spend_and_metrics() {
    let server = ProviderServer::start().await;
    let app = spawn_app(|config| route_all_to(config, priced(&server, 1.0, Some(2.5)))).await;
    let id = app.submit(&sms_batch(4)).await;

    let spend = wait_for(FINISH, "the budget to pause the provider", || async {
        let (_, spend) = app.get("/v1/spend").await;
        spend["providers"][0]["paused_until"]
            .is_string()
            .then_some(spend)
    })
    .await;
    let provider = &spend["providers"][0];
    assert_eq!(provider["provider"], "hook", "{spend}");
    assert_eq!(
        (
            provider["spent"].as_f64(),
            provider["daily_budget"].as_f64()
        ),
        (Some(2.0), Some(2.5))
    );
    assert_eq!(provider["currency"], "CNY");
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.sample("herald_provider_spend{provider=\"hook\",currency=\"CNY\"}"),
        "2"
    );
    assert_eq!(
        metrics.sample("herald_provider_budget_paused{provider=\"hook\"}"),
        "1"
    );
    // The rest wait for tomorrow, unattempted, saying why.
    let (_, batch) = app.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(
        (
            batch["counts"]["sent"].as_u64(),
            batch["counts"]["pending"].as_u64()
        ),
        (Some(2), Some(2)),
        "{batch}"
    );
    assert_eq!(server.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classic_send_sms_takes_max_cost_as_a_batch_does() {
    let server = ProviderServer::start().await;
    let app = spawn_app(|config| route_all_to(config, priced(&server, 0.05, None))).await;
    let form = |max_cost: &str| {
        format!(
            "mobiles%5B%5D=%2B8613800138001&mobiles%5B%5D=%2B8613800138002&content=hi&max_cost={max_cost}"
        )
    };

    let (status, _, refused) = app
        .post_raw(
            "/send-sms",
            "application/x-www-form-urlencoded",
            &[],
            form("0.05"),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.to_string().contains("max_cost"), "{refused}");

    let (status, _, accepted) = app
        .post_raw(
            "/send-sms",
            "application/x-www-form-urlencoded",
            &[],
            form("0.1"),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["batch_id"].as_str().expect("a batch id");
    let done = app.wait_finished(id, FINISH).await;
    assert_eq!(
        (done["max_cost"].as_f64(), done["spent"].as_f64()),
        (Some(0.1), Some(0.1)),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_over_its_budget_hands_its_messages_to_the_next_on_its_failover_list() {
    let (first, second) = (ProviderServer::start().await, ProviderServer::start().await);
    let app = spawn_app(|config| {
        let mut budgeted = priced(&first, 1.0, Some(1.5));
        budgeted.name = "first".into();
        let mut fallback = second.provider(None);
        fallback.name = "second".into();
        config.providers = vec![budgeted, fallback];
        config.failover.insert(
            herald::domain::Channel::Sms,
            vec!["first".into(), "second".into()],
        );
        config.worker.max_in_flight = 1;
    })
    .await;

    let id = app.submit(&sms_batch(4)).await;

    let done = app.wait_finished(&id, FINISH).await;
    assert_eq!(done["counts"]["sent"], 4, "{done}");
    assert_eq!((first.count(), second.count()), (1, 3));
    let providers: Vec<Value> = app
        .messages(&id)
        .await
        .into_iter()
        .map(|m| m["provider"].clone())
        .collect();
    assert_eq!(
        providers.iter().filter(|p| **p == "second").count(),
        3,
        "{providers:?}"
    );
}
