//! Ingest from a RabbitMQ queue: messages published by the producing application
//! reach the provider, bad ones are dead-lettered, a closed connection is reopened,
//! and a SIGKILL loses and doubles no message, with or without message ids.

use super::*;

/// A RabbitMQ queue of the test's own and its dead-letter queue, deleted when dropped.
struct AmqpQueue {
    name: String,
    connection: Connection,
    channel: Channel,
}

impl AmqpQueue {
    /// Declares a durable queue, as the producing application would.
    async fn new(label: &str) -> Self {
        let url = reqwest::Url::parse(&amqp_url()).unwrap();
        let args = OpenConnectionArguments::new(
            url.host_str().unwrap(),
            url.port().unwrap_or(5672),
            url.username(),
            url.password().unwrap_or("guest"),
        );
        let connection = Connection::open(&args)
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ at {} is not reachable: {e}", amqp_url()));
        let channel = connection.open_channel(None).await.unwrap();
        let name = unique(label);
        channel
            .queue_declare(QueueDeclareArguments::durable_client_named(&name))
            .await
            .unwrap();
        AmqpQueue {
            name,
            connection,
            channel,
        }
    }

    fn dead(&self) -> String {
        format!("{}.dead", self.name)
    }

    /// Publishes `body`, persistent, with `message_id` when given.
    async fn publish(&self, body: &str, message_id: Option<&str>) {
        let mut properties = BasicProperties::default();
        properties.with_persistence(true);
        if let Some(id) = message_id {
            properties.with_message_id(id);
        }
        self.channel
            .basic_publish(
                properties,
                body.as_bytes().to_vec(),
                BasicPublishArguments::new("", &self.name),
            )
            .await
            .unwrap();
    }

    fn source(&self, name: &str) -> IngestConfig {
        IngestConfig {
            name: name.into(),
            kind: IngestKind::Amqp {
                url: Secret::new(amqp_url()),
                queue: self.name.clone(),
                dead_letter_queue: None,
                prefetch: 4,
            },
            channel: None,
            provider: None,
            template_id: None,
        }
    }

    /// How many messages wait in the queue (not those delivered and unacknowledged).
    async fn waiting(&self) -> u32 {
        let declared = self
            .channel
            .queue_declare(
                QueueDeclareArguments::new(&self.name)
                    .passive(true)
                    .finish(),
            )
            .await
            .unwrap();
        declared.map_or(0, |(_, count, _)| count)
    }

    /// The next message of the dead-letter queue: its body and `x-herald-reason`.
    async fn next_dead(&self) -> Option<(String, String)> {
        let (_, properties, body) = self
            .channel
            .basic_get(BasicGetArguments::new(&self.dead()).no_ack(true).finish())
            .await
            .unwrap()?;
        let reason = properties
            .headers()
            .and_then(|h| {
                h.get(&"x-herald-reason".try_into().unwrap())
                    .and_then(|v| match v {
                        FieldValue::S(s) => Some(s.to_string()),
                        _ => None,
                    })
            })
            .unwrap_or_default();
        Some((String::from_utf8(body).unwrap(), reason))
    }

    async fn delete(self) {
        for queue in [self.name.clone(), self.dead()] {
            let _ = self
                .channel
                .queue_delete(QueueDeleteArguments::new(&queue))
                .await;
        }
        let _ = self.channel.close().await;
        let _ = self.connection.close().await;
    }
}

/// Closes the broker's connections whose client name contains `name`, from the
/// broker's side, with `rabbitmqctl`.
fn close_connections_named(name: &str) -> usize {
    let listed = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("run rabbitmqctl (it comes with rabbitmq-server)");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let mut closed = 0;
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        if !line.contains(name) {
            continue;
        }
        let pid = line.split_whitespace().next().unwrap();
        let status = Command::new("rabbitmqctl")
            .args([
                "-q",
                "close_connection",
                pid,
                "closed by the reconnect test",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        closed += 1;
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_to_rabbitmq_reach_the_provider_and_bad_ones_are_dead_lettered() {
    let queue = AmqpQueue::new("amqp").await;
    let server = ProviderServer::start().await;
    let app = herald_with(&server, vec![queue.source("rabbit")]).await;
    let job = json!({"template_id": 1, "mobiles": ["13800000011"], "content": "From RabbitMQ"});
    queue.publish(&job.to_string(), Some("job-1")).await;
    queue.publish("{broken", None).await;
    // The same message id again (a producer's retry) is the same batch.
    queue.publish(&job.to_string(), Some("job-1")).await;
    queue
        .publish(
            &json!({"mobiles": "13800000012", "content": "no id"}).to_string(),
            None,
        )
        .await;

    let by_to = delivered_to(&server, &["+8613800000011", "+8613800000012"]).await;
    assert_eq!(by_to["+8613800000011"][0]["body"], "From RabbitMQ");
    assert_eq!(
        source_of(&app, &by_to["+8613800000011"][0]).await,
        "ingest:rabbit"
    );
    let dead = wait_for(
        WITHIN,
        "the broken message in the dead-letter queue",
        || async { queue.next_dead().await },
    )
    .await;
    assert_eq!(dead.0, "{broken");
    assert!(dead.1.starts_with("not JSON"), "{dead:?}");
    let metrics = app.running.as_ref().unwrap().ingest_metrics().clone();
    let counts = wait_for(WITHIN, "every message to be counted", || {
        let counts = metrics.counts("ingest:rabbit").unwrap();
        std::future::ready((counts.ingested == 3).then_some(counts))
    })
    .await;
    assert_eq!(counts.dead_lettered, 1);
    let batches: HashSet<String> = server
        .received()
        .iter()
        .filter(|r| r.json["to"] == "+8613800000011")
        .map(|r| r.json["batch_id"].to_string())
        .collect();
    assert_eq!(batches.len(), 1, "one message id, one batch");
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_ingest_reconnects_after_the_broker_closes_its_connection() {
    let queue = AmqpQueue::new("reconnect").await;
    let server = ProviderServer::start().await;
    let name = unique("src");
    let _app = herald_with(&server, vec![queue.source(&name)]).await;
    queue
        .publish(
            &json!({"mobiles": ["13800000021"], "content": "before"}).to_string(),
            None,
        )
        .await;
    delivered_to(&server, &["+8613800000021"]).await;

    let closed = wait_for(WITHIN, "Herald's connection to be listed", || {
        std::future::ready(Some(close_connections_named(&name)).filter(|&n| n > 0))
    })
    .await;
    assert_eq!(closed, 1);
    queue
        .publish(
            &json!({"mobiles": ["13800000022"], "content": "after"}).to_string(),
            None,
        )
        .await;
    let by_to = delivered_to(&server, &["+8613800000022"]).await;
    assert_eq!(by_to["+8613800000022"][0]["body"], "after");
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_amqp_ingest_loses_no_message_and_doubles_none_with_message_ids() {
    const MESSAGES: usize = 300;
    let queue = AmqpQueue::new("kill").await;
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_ingest(
        dir.path(),
        &server,
        &format!(
            "name = \"amqp-kill\"\nkind = \"amqp\"\nurl = {:?}\nqueue = {:?}\nprefetch = 32",
            amqp_url(),
            queue.name
        ),
    );
    for i in 0..MESSAGES {
        let job = json!({"mobiles": [format!("+86137{i:08}")], "content": format!("message {i}")});
        queue
            .publish(&job.to_string(), Some(&format!("m-{i}")))
            .await;
    }

    let herald = Herald::serve(&config, &KILL_ENV).await;
    wait_for(WITHIN, "ingestion to be under way", || {
        std::future::ready((server.count() >= 30).then_some(()))
    })
    .await;
    herald.kill();
    let waiting = wait_for(
        WITHIN,
        "the broker to take back the unacknowledged messages",
        || async {
            let waiting = queue.waiting().await;
            (waiting > 0).then_some(waiting)
        },
    )
    .await;
    assert!(
        waiting < MESSAGES as u32,
        "nothing was ingested before the kill"
    );

    let herald = Herald::serve(&config, &KILL_ENV).await;
    let expected: HashSet<String> = (0..MESSAGES).map(|i| format!("+86137{i:08}")).collect();
    received_exactly(&server, &expected).await;
    wait_for(WITHIN, "the queue to be drained", || async {
        (queue.waiting().await == 0).then_some(())
    })
    .await;
    assert_eq!(
        batches_of(&herald, "ingest:amqp-kill").await,
        MESSAGES,
        "one batch per message, none lost, none doubled"
    );
    herald.kill();
    queue.delete().await;
}

/// How many batches of `source` the API of `herald` lists.
async fn batches_of(herald: &Herald, source: &str) -> usize {
    herald.api.batches_of(source).await.len()
}

/// A TCP proxy on 127.0.0.1 to the AMQP broker that can be told to stop passing
/// what the client sends (the broker's frames still reach the client): the
/// acknowledgement of whatever Herald is storing then never reaches the broker.
struct FreezingProxy {
    url: String,
    frozen: Arc<AtomicBool>,
}

impl FreezingProxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let broker = reqwest::Url::parse(&amqp_url()).unwrap();
        let upstream = format!(
            "{}:{}",
            broker.host_str().unwrap(),
            broker.port().unwrap_or(5672)
        );
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let flag = flag.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                        if flag.load(Ordering::SeqCst) {
                            continue;
                        }
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
            }
        });
        let mut url = broker;
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(port)).unwrap();
        FreezingProxy {
            url: url.to_string(),
            frozen,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_before_the_broker_takes_an_ack_makes_no_second_batch_of_a_message_without_id() {
    const MESSAGES: usize = 100;
    let queue = AmqpQueue::new("kill-noid").await;
    let proxy = FreezingProxy::start().await;
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);
    let base = std::fs::read_to_string(&config).unwrap();
    let with_url = |url: &str| {
        format!(
            "{base}\n[[ingest]]\nname = \"noid\"\nkind = \"amqp\"\nurl = {url:?}\nqueue = {:?}\nprefetch = 8\n",
            queue.name
        )
    };
    std::fs::write(&config, with_url(&proxy.url)).unwrap();
    let job =
        |i: usize| json!({"mobiles": [format!("+86138{i:08}")], "content": format!("message {i}")});
    for i in 0..MESSAGES {
        queue.publish(&job(i).to_string(), None).await;
    }
    // The same message published twice on purpose is two batches.
    queue.publish(&job(0).to_string(), None).await;

    let herald = Herald::serve(&config, &KILL_ENV).await;
    wait_for(WITHIN, "ingestion to be under way", || async {
        (batches_of(&herald, "ingest:noid").await >= 10).then_some(())
    })
    .await;
    proxy.frozen.store(true, Ordering::SeqCst);
    // Herald stores at most one more batch, then waits for the broker's answer to
    // its acknowledgement, which never comes.
    let last = std::cell::Cell::new(usize::MAX);
    wait_for(
        WITHIN,
        "ingestion to stop at the frozen acknowledgement",
        || async {
            let now = batches_of(&herald, "ingest:noid").await;
            let settled = now == last.replace(now);
            tokio::time::sleep(Duration::from_millis(300)).await;
            settled.then_some(())
        },
    )
    .await;
    herald.kill();
    wait_for(
        WITHIN,
        "the broker to take back the unacknowledged messages",
        || async { (queue.waiting().await > 0).then_some(()) },
    )
    .await;

    std::fs::write(&config, with_url(&amqp_url())).unwrap();
    let herald = Herald::serve(&config, &KILL_ENV).await;
    wait_for(WITHIN, "the queue to be drained", || async {
        (queue.waiting().await == 0 && batches_of(&herald, "ingest:noid").await > MESSAGES)
            .then_some(())
    })
    .await;
    let expected: HashSet<String> = (0..MESSAGES).map(|i| format!("+86138{i:08}")).collect();
    received_exactly(&server, &expected).await;
    assert_eq!(
        batches_of(&herald, "ingest:noid").await,
        MESSAGES + 1,
        "one batch per message published, the one stored before the kill not doubled"
    );
    herald.kill();
    queue.delete().await;
}
