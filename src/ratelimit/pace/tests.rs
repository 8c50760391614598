use super::*;

/// A provider that takes `per_sec` requests a second (a token bucket holding a
/// tenth of a second's worth, full at the start) and throttles the rest, and one
/// process sending through it as fast as its pace (and its configured rate, kept
/// as the store keeps it) allow: 50 requests in flight, each decided by the
/// provider 10 ms after it was made and answered 20 ms after (a throttle 12 ms
/// after: throttles are read before the acceptances of the same burst). Every
/// step is one millisecond of a virtual clock.
struct Sim {
    pace: Pace,
    configured: Option<Rate>,
    store: Option<Bucket>,
    provider: (f64, Bucket),
    limit: f64,
    /// Requests in flight: (made at, answered at, accepted).
    in_flight: VecDeque<(i64, i64, bool)>,
    first_throttle: Option<i64>,
    /// Accepted requests by the second of the provider's clock they were taken in.
    accepted_at: Vec<i64>,
}

const IN_FLIGHT: usize = 50;

impl Sim {
    fn new(limit: f64, configured: Option<f64>) -> Sim {
        Sim {
            pace: Pace::new(configured),
            configured: configured.map(|r| Rate::new(r, None)),
            store: None,
            provider: (
                limit,
                Bucket {
                    tokens: limit / 10.0,
                    at_ms: 0,
                },
            ),
            limit,
            in_flight: VecDeque::new(),
            first_throttle: None,
            accepted_at: Vec::new(),
        }
    }

    fn provider_takes(&mut self, at_ms: i64) -> bool {
        let (per_sec, bucket) = &mut self.provider;
        let capacity = (*per_sec / 10.0).max(1.0);
        let elapsed = (at_ms - bucket.at_ms) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * *per_sec).min(capacity);
        bucket.at_ms = at_ms;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn run(&mut self, until_ms: i64) {
        for now in 0..until_ms {
            while self.in_flight.front().is_some_and(|&(_, at, _)| at <= now) {
                let (made, _, accepted) = self.in_flight.pop_front().expect("just seen");
                if accepted {
                    self.pace.accepted(1, made, now);
                } else {
                    self.first_throttle.get_or_insert(now);
                    self.pace.throttled(made, now);
                }
            }
            let free = IN_FLIGHT - self.in_flight.len();
            if free == 0 {
                continue;
            }
            let Ok(paced) = self.pace.take(free, now) else {
                continue;
            };
            let sent = match self.configured {
                None => paced,
                Some(rate) => match rate.take(self.store, now, paced) {
                    Ok((n, bucket)) => {
                        self.store = Some(bucket.spend(n));
                        n
                    }
                    Err(_) => 0,
                },
            };
            self.pace.refund(paced - sent);
            for _ in 0..sent {
                let taken = self.provider_takes(now + 10);
                if taken {
                    self.accepted_at.push(now + 10);
                }
                let answered = if taken { now + 20 } else { now + 12 };
                self.in_flight.push_back((now, answered, taken));
            }
            self.in_flight
                .make_contiguous()
                .sort_by_key(|&(_, at, _)| at);
        }
    }

    /// Accepted requests in each whole second from `from_ms`, up to `to_ms`.
    fn per_second(&self, from_ms: i64, to_ms: i64) -> Vec<usize> {
        (from_ms..to_ms)
            .step_by(1000)
            .map(|start| {
                self.accepted_at
                    .iter()
                    .filter(|&&at| at >= start && at < start + 1000)
                    .count()
            })
            .collect()
    }

    /// Asserts that from 10 s after the first throttle the provider took within
    /// 10 % of its limit in every second, for a minute.
    fn settles_at_the_limit(&mut self) {
        self.run(75_000);
        let first = self.first_throttle.expect("the provider throttled");
        assert!(first < 1_000, "throttled first at {first} ms");
        let seconds = self.per_second(first + 10_000, first + 70_000);
        let limit = self.limit;
        let off: Vec<_> = seconds
            .iter()
            .filter(|&&n| (n as f64 - limit).abs() > 0.1 * limit)
            .collect();
        assert!(off.is_empty(), "limit {limit}/s, seconds: {seconds:?}");
    }
}

#[test]
fn without_a_configured_rate_the_pace_settles_at_the_providers_limit_within_ten_seconds() {
    for limit in [100.0, 1_000.0, 30.0] {
        Sim::new(limit, None).settles_at_the_limit();
    }
}

#[test]
fn a_configured_rate_above_the_providers_limit_settles_at_the_limit_too() {
    Sim::new(100.0, Some(250.0)).settles_at_the_limit();
    Sim::new(1_000.0, Some(1_500.0)).settles_at_the_limit();
}

#[test]
fn a_configured_rate_below_the_providers_limit_is_never_throttled_and_holds() {
    let mut sim = Sim::new(100.0, Some(60.0));
    sim.run(60_000);
    assert_eq!(sim.first_throttle, None);
    assert_eq!(sim.pace.rate(), None);
    let seconds = sim.per_second(1_000, 60_000);
    assert!(
        seconds.iter().all(|&n| (59..=62).contains(&n)),
        "{seconds:?}"
    );
}

#[test]
fn a_throttle_paces_at_the_rate_accepted_over_the_last_second() {
    let mut pace = Pace::new(None);
    assert_eq!(pace.take(500, 0), Ok(500), "unthrottled: the limits decide");
    // 350 accepted, 249 of them in the second before the throttle.
    for ms in (0..1_400).step_by(4) {
        pace.accepted(1, ms, ms);
    }
    pace.throttled(1_390, 1_400);
    assert_eq!(pace.rate(), Some(249.0));
    // Many throttles from one burst cut once; sends made before the cut, never.
    pace.throttled(1_405, 1_410);
    pace.throttled(1_390, 2_900);
    assert_eq!(pace.rate(), Some(249.0));
    // Nothing accepted since: the next cut goes to the least rate.
    pace.throttled(2_800, 2_900);
    assert_eq!(pace.rate(), Some(1.0));
}

#[test]
fn acceptances_of_sends_before_a_cut_read_after_it_raise_the_pace() {
    let mut pace = Pace::new(None);
    pace.throttled(0, 12);
    assert_eq!(pace.rate(), Some(1.0), "nothing accepted yet");
    pace.accepted(10, 0, 20);
    assert_eq!(pace.rate(), Some(100.0));
    // Sends made since the cut, or answers a second later, revise nothing.
    pace.accepted(50, 30, 40);
    pace.accepted(50, 0, 1_100);
    assert_eq!(pace.rate(), Some(100.0));
}

#[test]
fn a_second_of_the_providers_worth_taken_at_once_reads_as_its_rate_after_the_first_second() {
    let mut pace = Pace::new(None);
    for ms in (0..2_000).step_by(10) {
        pace.throttled(ms, ms);
    }
    // The provider took 100 at once, then nothing: 100 a second, not 1,000.
    pace.accepted(100, 1_990, 2_000);
    pace.throttled(1_995, 2_050);
    assert_eq!(pace.rate(), Some(100.0));
}

#[test]
fn the_first_throttle_counts_a_burst_over_a_tenth_of_a_second_at_least() {
    let mut pace = Pace::new(None);
    pace.accepted(10, 0, 5);
    pace.throttled(5, 8);
    assert_eq!(pace.rate(), Some(100.0));
    let mut capped = Pace::new(Some(40.0));
    capped.accepted(10, 0, 5);
    capped.throttled(5, 8);
    assert_eq!(capped.rate(), Some(40.0), "never above the configured rate");
}

#[test]
fn a_pace_grows_only_while_it_holds_sending_back_and_lifts_at_the_configured_rate() {
    let mut pace = Pace::new(Some(200.0));
    for ms in (10..=1_000).step_by(10) {
        pace.accepted(1, ms, ms);
    }
    pace.throttled(0, 1_000);
    let cut = pace.rate().expect("paced");
    assert!((100.0..102.0).contains(&cut), "{cut}");
    // Claims of one, never held back: ten seconds later the pace is the same.
    for s in 1..=10 {
        assert_eq!(pace.take(1, 1_000 + s * 1_000), Ok(1));
    }
    assert_eq!(pace.rate(), Some(cut));
    // Held back for ten seconds: about 5 % a second, compounded.
    for ms in (11_000..=21_000).step_by(10) {
        let _ = pace.take(50, ms);
    }
    let grown = pace.rate().expect("still paced");
    assert!((grown - cut * 1.05f64.powi(10)).abs() < 1.0, "{grown}");
    // Back at the configured rate, the pace lifts.
    for ms in (21_000..=41_000).step_by(10) {
        let _ = pace.take(50, ms);
    }
    assert_eq!(pace.rate(), None);
}

#[test]
fn refunded_tokens_are_there_again() {
    let mut pace = Pace::new(None);
    pace.accepted(100, 0, 0);
    pace.throttled(0, 100);
    while pace.take(1, 1_100).is_ok() {}
    assert!(pace.take(3, 1_100).is_err());
    pace.refund(3);
    assert_eq!(pace.take(3, 1_100), Ok(3));
}
