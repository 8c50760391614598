//! What the send path makes of a provider's answers, on a real SQLite store with
//! a scripted stub provider and the tokio clock paused: each test makes a
//! claimer's rounds one at a time ([`Bench::turn`]) and reads the outcome back
//! through the queue's API and the stub's recorded calls.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{batch, store};
use crate::circuit::{CircuitState, Circuits};
use crate::config::Config;
use crate::domain::{BatchId, Channel, MessageState, now_ms};
use crate::metrics::Metrics;
use crate::provider::{self, Lookup, Message, Provider, ProviderConfig, Receipt, Registry};
use crate::queue::{Claim, MessageQuery, MessageRecord, Outcome, Queue};
use crate::recipient;
use crate::worker::Pool;
use crate::worker::failover::{Choice, Routing};

/// What the stub does with one send, in script order.
enum Step {
    /// Answers this.
    Answer(Result<Receipt, provider::Error>),
    /// Never answers: the send times out, its outcome unknown.
    Hang,
}

/// A call the stub received, with the message's recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Send(String),
    Query(String),
}

/// A provider that answers sends and status queries from a script, recording
/// every call. A send past the end of its script fails the test.
#[derive(Default)]
struct Stub {
    sends: Mutex<VecDeque<Step>>,
    lookups: Mutex<VecDeque<Lookup>>,
    /// Status queries never answer.
    lookups_hang: std::sync::atomic::AtomicBool,
    calls: Mutex<Vec<Call>>,
}

impl Stub {
    fn new(sends: impl IntoIterator<Item = Step>) -> Arc<Stub> {
        Arc::new(Stub {
            sends: Mutex::new(sends.into_iter().collect()),
            ..Stub::default()
        })
    }

    fn looking_up(self: Arc<Stub>, lookups: impl IntoIterator<Item = Lookup>) -> Arc<Stub> {
        self.lookups.lock().unwrap().extend(lookups);
        self
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Provider for Stub {
    async fn send(&self, message: &Message) -> Result<Receipt, provider::Error> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Send(message.to.clone()));
        let step = self.sends.lock().unwrap().pop_front();
        match step.expect("the stub's script has an answer for every send") {
            Step::Answer(answer) => answer,
            Step::Hang => std::future::pending().await,
        }
    }

    async fn query(&self, message: &Message, _since_ms: i64) -> Lookup {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Query(message.to.clone()));
        if self.lookups_hang.load(std::sync::atomic::Ordering::SeqCst) {
            return std::future::pending().await;
        }
        let lookup = self.lookups.lock().unwrap().pop_front();
        lookup.unwrap_or_else(|| Lookup::CannotTell("unscripted".into()))
    }
}

fn transient(reason: &str) -> Step {
    Step::Answer(Err(provider::Error::Transient {
        reason: reason.into(),
        retry_after: None,
    }))
}

fn sent(id: &str) -> Step {
    Step::Answer(Ok(Receipt {
        provider_message_id: Some(id.into()),
        segment_ids: Vec::new(),
    }))
}

/// A pool whose SMS providers are stubs, in failover order, on a fresh store.
struct Bench {
    pool: Pool,
    queue: Queue,
    _dir: tempfile::TempDir,
}

impl Bench {
    /// `stubs` as the SMS providers, the first the default and the rest its
    /// fallbacks, under `config`.
    async fn new(stubs: &[(&str, Arc<Stub>)], mut config: Config) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let queue = store(&dir).await;
        let names: Vec<String> = stubs.iter().map(|(n, _)| n.to_string()).collect();
        let configs: Vec<ProviderConfig> = names
            .iter()
            .map(|name| ProviderConfig {
                name: name.clone(),
                channels: vec![Channel::Sms],
                ..ProviderConfig::log()
            })
            .collect();
        config.failover = HashMap::from([(Channel::Sms, names.clone())]);
        let mut registry = Registry::build(
            &configs,
            &config.defaults,
            &config.failover,
            config.send_timeout(),
        )
        .expect("a valid registry");
        for (name, stub) in stubs {
            registry = registry.with_adapter(name, stub.clone());
        }
        let circuits = Circuits::for_registry(&registry, &config.circuit);
        let pool = Pool::new(
            queue.clone(),
            registry,
            circuits,
            &config,
            Metrics::default(),
        );
        Bench {
            pool,
            queue,
            _dir: dir,
        }
    }

    /// Stores a batch of one SMS for `provider`, due now.
    async fn accept(&self, provider: &str) -> BatchId {
        let id = BatchId::new();
        self.queue.accept(batch(id, provider, 1)).await.unwrap();
        id
    }

    /// One round of `own`'s claimer, as `claim_loop` makes it without its waits:
    /// the failover choice, a claim within the chosen provider's limits, one send
    /// per message, and the outcomes written back. Answers the outcomes.
    async fn turn(&self, own: &str) -> Vec<Outcome> {
        let pool = &self.pool;
        let own = pool.inner.registry.route(own).expect("configured").clone();
        let (via, mut probe) = match pool.choose(&own) {
            Choice::Send { via, probe } => (via.clone(), probe),
            Choice::Wait(_) => return Vec::new(),
        };
        let claimed = match self
            .queue
            .claim_within(&own.name, 8, pool.inner.lease, &via.limits)
            .await
            .unwrap()
        {
            Claim::Messages(claimed) => claimed,
            Claim::Wait(_) => return Vec::new(),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        for claimed in claimed {
            let slot = pool.inner.slots.clone().try_acquire_owned().unwrap();
            let routing = Routing {
                own: own.clone(),
                via: via.clone(),
            };
            let group = vec![(claimed, slot)];
            pool.clone()
                .send(routing, probe.take(), group, tx.clone())
                .await;
        }
        drop(tx);
        let mut settlements = Vec::new();
        while let Some((settlement, _slot)) = rx.recv().await {
            settlements.push(settlement);
        }
        let outcomes = settlements.iter().map(|s| s.outcome.clone()).collect();
        self.queue.settle(settlements).await.unwrap();
        outcomes
    }

    /// The one message of batch `id`, as the ledger has it.
    async fn message(&self, id: BatchId) -> MessageRecord {
        let query = MessageQuery {
            state: None,
            after: None,
            limit: 2,
        };
        let mut messages = self.queue.messages(id, query).await.unwrap();
        assert_eq!(messages.len(), 1, "{messages:?}");
        messages.remove(0)
    }

    fn circuit(&self, provider: &str) -> CircuitState {
        let states = self.pool.circuits().states();
        states.into_iter().find(|(n, _)| n == provider).unwrap().1
    }
}

/// A configuration whose retries are due at once, so a test can make the next
/// attempt without waiting on the wall clock the store keeps time by.
fn retry_at_once(max_attempts: u32) -> Config {
    let mut config = Config::default();
    config.retry.max_attempts = max_attempts;
    config.retry.base_delay_ms = 0;
    config.retry.max_delay_ms = 0;
    config
}

/// The recipient of the first message of a [`batch`].
const TO: &str = "+8613800000000";

#[tokio::test(start_paused = true)]
async fn a_transient_error_is_retried_after_the_policys_delay() {
    let stub = Stub::new([transient("HTTP 503")]);
    let mut config = Config::default();
    config.retry.base_delay_ms = 60_000;
    config.retry.max_delay_ms = 600_000;
    let bench = Bench::new(&[("primary", stub.clone())], config).await;
    let id = bench.accept("primary").await;

    let before = now_ms();
    let outcomes = bench.turn("primary").await;
    let after = now_ms();
    // Equal jitter: between half and all of the first delay.
    assert!(
        matches!(outcomes.as_slice(), [Outcome::Retry { at_ms, .. }]
            if (before + 30_000..=after + 60_000).contains(at_ms)),
        "{outcomes:?}"
    );
    let message = bench.message(id).await;
    assert_eq!(message.state, MessageState::Pending);
    assert_eq!(message.attempts, 1);
    assert_eq!(message.last_error.as_deref(), Some("HTTP 503"));
    // Not due before its delay: the next round claims nothing.
    assert!(bench.turn("primary").await.is_empty());
    assert_eq!(stub.calls(), [Call::Send(TO.into())]);
}

#[tokio::test(start_paused = true)]
async fn a_throttle_paces_the_provider_and_waits_without_spending_an_attempt() {
    let throttle = || {
        Step::Answer(Err(provider::Error::throttled(
            "HTTP 429",
            Some(Duration::ZERO),
        )))
    };
    let stub = Stub::new([throttle(), throttle(), throttle()]);
    let bench = Bench::new(&[("primary", stub.clone())], retry_at_once(2)).await;
    let id = bench.accept("primary").await;
    assert_eq!(bench.pool.pace("primary", |p| p.rate()), Some(None));

    bench.turn("primary").await;
    let message = bench.message(id).await;
    assert_eq!(message.state, MessageState::Pending);
    assert_eq!(message.attempts, 0);
    assert_eq!(message.last_error.as_deref(), Some("throttled: HTTP 429"));
    assert_eq!(bench.pool.pace("primary", |p| p.rate()), Some(Some(1.0)));
    // A throttle is an answer: the circuit stays closed.
    assert_eq!(bench.circuit("primary"), CircuitState::Closed);

    // More throttles than the two attempts allowed: still waiting, none spent.
    bench.turn("primary").await;
    bench.turn("primary").await;
    let message = bench.message(id).await;
    assert_eq!(message.state, MessageState::Pending);
    assert_eq!(message.attempts, 0);
    assert_eq!(message.last_error.as_deref(), Some("throttled: HTTP 429"));
    assert_eq!(stub.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_outcome_is_asked_about_first_and_a_sent_answer_settles_it_unsent() {
    let stub = Stub::new([Step::Hang]).looking_up([Lookup::Sent {
        provider_message_id: Some("SM-1".into()),
    }]);
    let mut config = retry_at_once(3);
    config.worker.send_timeout_ms = 5_000;
    let bench = Bench::new(&[("primary", stub.clone())], config).await;
    let id = bench.accept("primary").await;

    // The paused clock runs the send timeout out at once.
    bench.turn("primary").await;
    let message = bench.message(id).await;
    assert_eq!(message.state, MessageState::Unknown);
    assert_eq!(message.attempts, 1);
    assert_eq!(
        message.last_error.as_deref(),
        Some("no answer within 5000 ms")
    );

    let outcomes = bench.turn("primary").await;
    assert!(
        matches!(outcomes.as_slice(), [Outcome::Confirmed { .. }]),
        "{outcomes:?}"
    );
    let message = bench.message(id).await;
    assert_eq!(message.state, MessageState::Sent);
    assert_eq!(message.attempts, 1);
    assert_eq!(message.provider_message_id.as_deref(), Some("SM-1"));
    assert_eq!(
        stub.calls(),
        [Call::Send(TO.into()), Call::Query(TO.into())],
        "asked, and not sent again"
    );
}

#[tokio::test(start_paused = true)]
async fn an_undeliverable_recipient_fails_and_is_suppressed() {
    let stub = Stub::new([Step::Answer(Err(provider::Error::Undeliverable {
        reason: "21211 not a mobile number".into(),
    }))]);
    let bench = Bench::new(&[("primary", stub.clone())], Config::default()).await;
    let id = bench.accept("primary").await;

    bench.turn("primary").await;
    let message = bench.message(id).await;
    assert_eq!(message.state, MessageState::Failed);
    assert_eq!(message.attempts, 1);
    assert_eq!(
        message.last_error.as_deref(),
        Some("21211 not a mobile number")
    );
    let address = recipient::address_key(Channel::Sms, TO);
    let suppressed = bench
        .queue
        .records()
        .suppressed(Channel::Sms, &[address.as_str()])
        .await
        .unwrap();
    assert!(suppressed.contains(&address), "{suppressed:?}");
    assert_eq!(stub.calls(), [Call::Send(TO.into())]);
}

#[tokio::test(start_paused = true)]
async fn with_a_fallback_an_open_circuit_sends_through_it_until_a_probe_succeeds() {
    let primary = Stub::new([transient("HTTP 503"), sent("P-2")]);
    let backup = Stub::new([sent("B-1")]);
    let mut config = retry_at_once(3);
    // One failure in one call opens it; one successful probe closes it.
    config.circuit.min_calls = 1;
    config.circuit.probes = 1;
    config.circuit.cooldown_ms = 30_000;
    let stubs = [("primary", primary.clone()), ("backup", backup.clone())];
    let bench = Bench::new(&stubs, config).await;
    let first = bench.accept("primary").await;

    bench.turn("primary").await;
    assert_eq!(bench.circuit("primary"), CircuitState::Open);
    assert_eq!(bench.message(first).await.state, MessageState::Pending);

    bench.turn("primary").await;
    let message = bench.message(first).await;
    assert_eq!(message.state, MessageState::Sent);
    assert_eq!(message.provider, "backup", "the ledger names who sent it");
    assert_eq!(message.provider_message_id.as_deref(), Some("B-1"));
    assert_eq!(message.attempts, 2);
    assert_eq!(backup.calls(), [Call::Send(TO.into())]);

    // Once the cooldown is over, the next message probes the primary again.
    let second = bench.accept("primary").await;
    tokio::time::advance(Duration::from_secs(30)).await;
    bench.turn("primary").await;
    let message = bench.message(second).await;
    assert_eq!(message.state, MessageState::Sent);
    assert_eq!(message.provider, "primary");
    assert_eq!(bench.circuit("primary"), CircuitState::Closed);
    assert_eq!(primary.calls().len(), 2);
    assert_eq!(backup.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_gives_back_at_once_the_claimed_messages_whose_request_never_started() {
    let wire = Stub::new([Step::Hang]);
    let asking = Stub::new([]);
    asking
        .lookups_hang
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut config = Config::default();
    config.worker.shutdown_grace_ms = 200;
    config.worker.poll_interval_ms = 10;
    let bench = Bench::new(
        &[("wire", wire.clone()), ("asking", asking.clone())],
        config,
    )
    .await;
    // A message of `asking` whose earlier attempt's outcome is unknown: the next
    // claim asks about it first, and the question never comes back.
    let unknown = bench.accept("asking").await;
    let route = bench.pool.inner.registry.route("asking").unwrap().clone();
    let Claim::Messages(claimed) = bench
        .queue
        .claim_within("asking", 1, bench.pool.inner.lease, &route.limits)
        .await
        .unwrap()
    else {
        panic!("nothing to claim");
    };
    let settlements = claimed
        .into_iter()
        .map(|c| crate::queue::Settlement {
            lease: c.lease,
            outcome: Outcome::Unknown {
                at_ms: now_ms(),
                error: "no answer".into(),
            },
            sent_by: None,
        })
        .collect();
    bench.queue.settle(settlements).await.unwrap();
    // A message of `wire` whose request is made and never answered.
    let on_the_wire = bench.accept("wire").await;

    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(bench.pool.clone().run(shutdown.clone()));
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(wire.calls().contains(&Call::Send(TO.into()))
        && asking.calls().contains(&Call::Query(TO.into())))
    {
        assert!(tokio::time::Instant::now() < until, "the sends never began");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the pool stops after its grace period")
        .unwrap();

    // Never near the provider: back in the queue, its attempts as they were, and
    // still to be asked about before its next attempt.
    let given_back = bench.message(unknown).await;
    assert_eq!(
        (given_back.state, given_back.attempts),
        (MessageState::Pending, 1),
        "{given_back:?}"
    );
    assert!(!asking.calls().contains(&Call::Send(TO.into())));
    // May have reached the provider: left to its lease, to be asked about then.
    let in_doubt = bench.message(on_the_wire).await;
    assert_eq!(in_doubt.state, MessageState::Sending, "{in_doubt:?}");
}
