//! The posting loop's tests: grouping, targets, waking and gathering, against a
//! real store and a local receiver.

use super::*;
use crate::config::Config;
use crate::domain::StoreUrl;
use crate::queue::{Event, EventKind};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn poster(toml: &str) -> (Poster, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = Queue::open(&StoreUrl::Sqlite(dir.path().join("store")))
        .await
        .expect("a store");
    let config = Config::from_toml(toml).expect("a configuration");
    let poster = Poster::new(queue, &config.webhooks, &config.webhook, Metrics::default())
        .expect("a poster");
    (poster, dir)
}

fn delivery(row: i64, endpoint: &str, url: Option<&str>) -> Delivery {
    Delivery {
        key: DeliveryKey { row, token: 1 },
        endpoint: endpoint.into(),
        url: url.map(String::from),
        event: Event {
            id: format!("m{row}.sent"),
            kind: EventKind::Sent,
            at_ms: 0,
            batch_id: None,
            message_id: None,
            channel: None,
            source: None,
            to: None,
            reference: None,
            provider: None,
            provider_message_id: None,
            code: None,
            counts: None,
            data: None,
        },
        attempts: 0,
        first_at_ms: 0,
    }
}

#[tokio::test]
async fn claimed_deliveries_go_in_groups_per_endpoint_and_url_of_at_most_batch_size() {
    let (poster, _dir) = poster(&format!(
        "[webhook]\nbatch_size = 2\ncallback_secret = \"{SECRET}\"\n\
         [[webhooks]]\nname = \"app\"\nurl = \"http://127.0.0.1:1/app\"\nsecret = \"{SECRET}\""
    ))
    .await;
    let (a, b) = (Some("http://127.0.0.1:2/a"), Some("http://127.0.0.1:2/b"));
    let claimed = vec![
        delivery(1, "app", None),
        delivery(2, CALLBACK, a),
        delivery(3, "app", None),
        delivery(4, CALLBACK, b),
        delivery(5, "app", None),
        delivery(6, CALLBACK, a),
    ];
    let groups: Vec<(String, Vec<i64>)> = poster
        .groups(claimed)
        .into_iter()
        .map(|g| (g.lane, g.deliveries.iter().map(|d| d.key.row).collect()))
        .collect();
    let lane = |url: Option<&str>| format!("callback {}", url.unwrap());
    assert_eq!(
        groups,
        [
            ("app".to_string(), vec![1, 3]),
            ("app".to_string(), vec![5]),
            (lane(a), vec![2, 6]),
            (lane(b), vec![4]),
        ]
    );
}

#[tokio::test]
async fn an_endpoint_no_longer_configured_or_an_unsigned_callback_has_no_target() {
    let (poster, _dir) = poster("").await;
    let gone = poster.target("app", None).err().unwrap_or_default();
    assert!(gone.contains("`app`"), "{gone}");
    let unsigned = poster
        .target(CALLBACK, Some("http://127.0.0.1:2/a"))
        .err()
        .unwrap_or_default();
    assert!(unsigned.contains("callback_secret"), "{unsigned}");
}

/// A receiver on 127.0.0.1 that sends each POST's events on a channel; its
/// first answer waits for `gate`.
async fn receiver(
    gate: Arc<tokio::sync::Semaphore>,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Vec<serde_json::Value>>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let receiver = axum::Router::new().route(
        "/events",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (tx, gate, first) = (tx.clone(), gate.clone(), first.clone());
            async move {
                let events: Vec<serde_json::Value> =
                    serde_json::from_slice(&body).unwrap_or_default();
                let _ = tx.send(events);
                if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    let _ = gate.acquire().await;
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, receiver).await });
    (addr, arrived, server)
}

/// A poster of one endpoint, `crm`, at `addr`.
async fn crm_poster(addr: std::net::SocketAddr) -> (Poster, tempfile::TempDir) {
    poster(&format!(
        "[[webhooks]]\nname = \"crm\"\nurl = \"http://{addr}/events\"\nsecret = \"{SECRET}\""
    ))
    .await
}

#[tokio::test]
async fn an_idle_poster_posts_an_event_recorded_in_its_process_at_once() {
    let (addr, mut arrived, server) = receiver(Arc::new(tokio::sync::Semaphore::new(1))).await;
    let (mut poster, _dir) = crm_poster(addr).await;
    // Idle, it would next look a minute later.
    (poster.poll, poster.idle_poll) = (Duration::from_secs(30), Duration::from_secs(60));
    let queue = poster.queue.clone();
    let stop = CancellationToken::new();
    let running = tokio::spawn(poster.run(stop.clone()));
    // Its first claim found nothing: it waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    crate::queue::tests::outbox::sent_events(&queue, 2).await;
    let posted = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("posted long before the idle wait ends")
        .unwrap();
    let kinds: Vec<_> = posted
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds, ["message.sent", "message.sent"]);
    stop.cancel();
    running.await.unwrap();
    server.abort();
}

#[tokio::test]
async fn events_claimed_while_an_endpoint_has_a_post_in_flight_gather_into_one_post() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (addr, mut arrived, server) = receiver(gate.clone()).await;
    let (mut poster, _dir) = crm_poster(addr).await;
    (poster.poll, poster.idle_poll) = (Duration::from_millis(10), Duration::from_millis(20));
    let queue = poster.queue.clone();
    let stop = CancellationToken::new();
    let running = tokio::spawn(poster.run(stop.clone()));
    crate::queue::tests::outbox::sent_events(&queue, 1).await;
    let first = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.len(), 1);
    // Its answer waits: three more events, each settled and claimed apart.
    for _ in 0..3 {
        crate::queue::tests::outbox::sent_events(&queue, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ample time for the last one's claim, however busy the machine.
    tokio::time::sleep(Duration::from_millis(500)).await;
    gate.add_permits(1);
    let second = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.len(), 3, "one post once the endpoint answered");
    stop.cancel();
    running.await.unwrap();
    server.abort();
    assert!(arrived.recv().await.is_none(), "no other post");
}
