use super::*;

/// Opens at half of at least 4 of the last 10 calls; 2 probes close it; with a
/// fallback ("a", "b") probes come after 1 s, doubling up to 3 s; without one
/// ("solo") every 250 ms.
fn config() -> CircuitConfig {
    CircuitConfig {
        failure_rate: 0.5,
        min_calls: 4,
        window_calls: 10,
        window_ms: 10_000,
        probes: 2,
        probe_interval_ms: 250,
        cooldown_ms: 1_000,
        max_cooldown_ms: 3_000,
    }
}

fn circuits() -> Circuits {
    Circuits::build([("a", true), ("b", true), ("solo", false)], &config())
}

fn state(c: &Circuits, name: &str) -> CircuitState {
    c.states()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .expect("a known provider")
}

fn probe(c: &Circuits, name: &str) -> Probe {
    match c.admit(name) {
        Admission::Probe(p) => p,
        other => panic!("expected a probe, got {other:?}"),
    }
}

fn down(c: &Circuits, name: &str, times: usize) {
    for _ in 0..times {
        c.record(name, Verdict::Down, None);
    }
}

/// Sends `calls` through `name` 1 ms apart, each failing when `fails` says so,
/// and answers whether the circuit stayed closed and admitting throughout.
async fn stays_closed(
    c: &Circuits,
    name: &str,
    calls: usize,
    mut fails: impl FnMut(usize) -> bool,
) {
    for i in 0..calls {
        assert!(
            matches!(c.admit(name), Admission::Closed),
            "{name} refused at call {i}"
        );
        let verdict = if fails(i) { Verdict::Down } else { Verdict::Up };
        c.record(name, verdict, None);
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    assert_eq!(state(c, name), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_circuit_opens_when_half_of_at_least_the_minimum_calls_failed() {
    let c = circuits();
    down(&c, "a", 3);
    assert_eq!(state(&c, "a"), CircuitState::Closed, "3 calls are too few");
    down(&c, "a", 1);
    assert_eq!(state(&c, "a"), CircuitState::Open);
    assert!(matches!(
        c.admit("a"),
        Admission::Refused { until: Some(_) }
    ));
    assert_eq!(c.opens_in("a"), Duration::from_secs(1));
    // One provider's failures leave another's circuit alone.
    assert_eq!(state(&c, "b"), CircuitState::Closed);

    // Failures between answers count too: no streak to reset.
    for verdict in [Verdict::Up, Verdict::Down, Verdict::Up] {
        c.record("b", verdict, None);
    }
    assert_eq!(state(&c, "b"), CircuitState::Closed);
    down(&c, "b", 1);
    assert_eq!(state(&c, "b"), CircuitState::Open, "2 of 4 failed");
}

#[tokio::test(start_paused = true)]
async fn calls_leave_the_window_by_count_and_by_age() {
    let c = circuits();
    // 3 old failures, then 7 answers: 3 of 10 failed.
    down(&c, "a", 3);
    stays_closed(&c, "a", 7, |_| false).await;
    // Each new failure pushes an old one out: still at most 3 of 10.
    stays_closed(&c, "a", 3, |_| true).await;
    // Past the window's age only the newest count: 10 s later, 4 calls, 2 failed.
    tokio::time::advance(Duration::from_secs(11)).await;
    stays_closed(&c, "a", 3, |i| i == 0).await;
    down(&c, "a", 1);
    assert_eq!(state(&c, "a"), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_provider_failing_a_fifth_of_its_calls_stays_closed_over_thousands_of_calls() {
    let defaults = CircuitConfig::default();
    for fallback in [true, false] {
        let c = Circuits::build([("p", fallback)], &defaults);
        stays_closed(&c, "p", 5_000, |i| i % 5 == 4).await;
        // Failures at random, a fifth of them, in bursts as they come.
        let mut rng = fastrand::Rng::with_seed(16);
        stays_closed(&c, "p", 5_000, |_| rng.f64() < 0.2).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_provider_failing_everything_opens_at_the_minimum_calls() {
    let defaults = CircuitConfig::default();
    let c = Circuits::build([("p", false)], &defaults);
    stays_closed(&c, "p", 19, |_| true).await;
    down(&c, "p", 1);
    assert_eq!(state(&c, "p"), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn with_a_fallback_probes_go_after_the_cooldown_and_their_successes_close_the_circuit() {
    let c = circuits();
    down(&c, "a", 4);
    tokio::time::advance(Duration::from_millis(999)).await;
    assert!(matches!(c.admit("a"), Admission::Refused { .. }));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(state(&c, "a"), CircuitState::HalfOpen);
    // Both probes at once: the rest of the messages go to the fallback meanwhile.
    let (p1, p2) = (probe(&c, "a"), probe(&c, "a"));
    assert!(matches!(c.admit("a"), Admission::Refused { until: None }));
    // Late answers of sends made before the circuit opened change nothing.
    c.record("a", Verdict::Up, None);
    assert_eq!(state(&c, "a"), CircuitState::HalfOpen);
    c.record("a", Verdict::Up, Some(p1));
    assert_eq!(state(&c, "a"), CircuitState::HalfOpen, "one probe of two");
    c.record("a", Verdict::Up, Some(p2));
    assert_eq!(state(&c, "a"), CircuitState::Closed);
    assert!(matches!(c.admit("a"), Admission::Closed));
    // Closed again, the window starts empty: it takes the minimum calls to open.
    down(&c, "a", 3);
    assert_eq!(state(&c, "a"), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn with_a_fallback_a_failed_probe_reopens_the_circuit_for_twice_as_long_up_to_the_ceiling() {
    let c = circuits();
    down(&c, "a", 4);
    let mut waits = Vec::new();
    for _ in 0..3 {
        tokio::time::advance(c.opens_in("a")).await;
        let p = probe(&c, "a");
        c.record("a", Verdict::Down, Some(p));
        assert_eq!(state(&c, "a"), CircuitState::Open);
        waits.push(c.opens_in("a"));
    }
    assert_eq!(
        waits,
        [2_000, 3_000, 3_000].map(Duration::from_millis),
        "doubled, then held at max_cooldown_ms"
    );
    tokio::time::advance(c.opens_in("a")).await;
    for _ in 0..2 {
        let p = probe(&c, "a");
        c.record("a", Verdict::Up, Some(p));
    }
    // Closed resets the cool-down: the next opening lasts the first one again.
    down(&c, "a", 4);
    assert_eq!(c.opens_in("a"), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_probe_dropped_unsent_lets_the_next_caller_probe() {
    let c = circuits();
    down(&c, "a", 4);
    tokio::time::advance(Duration::from_secs(1)).await;
    drop(probe(&c, "a"));
    assert_eq!(state(&c, "a"), CircuitState::HalfOpen);
    let p = probe(&c, "a");
    c.record("a", Verdict::Down, Some(p));
    assert_eq!(state(&c, "a"), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn without_a_fallback_an_open_circuit_probes_steadily_and_closes_once_the_provider_answers() {
    let c = circuits();
    down(&c, "solo", 4);
    assert_eq!(c.opens_in("solo"), Duration::from_millis(250));
    // Down for 10 s: one probe at a time, one every 250 ms, each failing.
    let mut probes = 0;
    for _ in 0..1_000 {
        match c.admit("solo") {
            Admission::Probe(p) => {
                probes += 1;
                assert!(matches!(
                    c.admit("solo"),
                    Admission::Refused { until: None }
                ));
                c.record("solo", Verdict::Down, Some(p));
            }
            Admission::Refused { .. } => {}
            Admission::Closed => panic!("closed while down"),
        }
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    assert_eq!(probes, 39, "one every 250 ms, from 250 ms to 9.75 s");
    // Back: the next probe comes within 250 ms; once it succeeds the others go at
    // once, and their successes close the circuit.
    tokio::time::advance(c.opens_in("solo")).await;
    let first = probe(&c, "solo");
    c.record("solo", Verdict::Up, Some(first));
    assert_eq!(state(&c, "solo"), CircuitState::HalfOpen);
    let second = probe(&c, "solo");
    c.record("solo", Verdict::Up, Some(second));
    assert_eq!(state(&c, "solo"), CircuitState::Closed);
    assert!(matches!(c.admit("solo"), Admission::Closed));
}

#[test]
fn throttles_and_recipient_caps_are_answers_failures_and_timeouts_are_not() {
    let transient = |reason: &str| provider::Error::Transient {
        reason: reason.into(),
        retry_after: None,
    };
    let ok = || Ok(provider::Receipt::default());
    assert_eq!(Verdict::of(&[]), None);
    assert_eq!(
        Verdict::of(&[Err(transient("HTTP 503")), Err(transient("timed out"))]),
        Some(Verdict::Down)
    );
    assert_eq!(
        Verdict::of(&[Err(transient("HTTP 503")), ok()]),
        Some(Verdict::Up)
    );
    let unknown = || {
        Err(provider::Error::Unknown {
            reason: "no answer within 30000 ms".into(),
        })
    };
    assert_eq!(
        Verdict::of(&[unknown(), Err(transient("HTTP 503"))]),
        Some(Verdict::Down)
    );
    assert_eq!(Verdict::of(&[unknown(), ok()]), Some(Verdict::Up));
    assert_eq!(
        Verdict::of(&[Err(provider::Error::throttled("HTTP 429", None))]),
        Some(Verdict::Up)
    );
    assert_eq!(
        Verdict::of(&[Err(provider::Error::recipient_capped(
            "daily limit",
            Duration::from_secs(60)
        ))]),
        Some(Verdict::Up)
    );
    assert_eq!(
        Verdict::of(&[Err(provider::Error::Permanent {
            reason: "HTTP 400".into()
        })]),
        Some(Verdict::Up)
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_show_each_providers_circuit_as_one_series_per_state() {
    let c = Circuits::build([("a", true), ("b", true)], &config());
    down(&c, "a", 4);
    let mut text = String::new();
    c.write(&mut text);
    assert!(
        text.starts_with("# HELP herald_provider_circuit_state "),
        "{text}"
    );
    assert!(text.contains("# TYPE herald_provider_circuit_state gauge\n"));
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        samples,
        [
            r#"herald_provider_circuit_state{provider="a",state="closed"} 0"#,
            r#"herald_provider_circuit_state{provider="a",state="open"} 1"#,
            r#"herald_provider_circuit_state{provider="a",state="half_open"} 0"#,
            r#"herald_provider_circuit_state{provider="b",state="closed"} 1"#,
            r#"herald_provider_circuit_state{provider="b",state="open"} 0"#,
            r#"herald_provider_circuit_state{provider="b",state="half_open"} 0"#,
        ]
    );
    tokio::time::advance(Duration::from_millis(1_000)).await;
    text.clear();
    c.write(&mut text);
    assert!(
        text.contains(r#"herald_provider_circuit_state{provider="a",state="half_open"} 1"#),
        "{text}"
    );
}
