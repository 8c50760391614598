//! The rate limit arithmetic's unit tests: token buckets, paces and per-recipient caps.

use super::*;

/// Claims greedily for `secs` of simulated time, waiting as told; returns how
/// many were claimed and the most in any window of one second.
fn simulate(rate: Rate, want: usize, secs: i64) -> (usize, usize) {
    let mut bucket = None;
    let mut now = 0;
    let mut claims: Vec<(i64, usize)> = Vec::new();
    for _ in 0..1_000_000 {
        if now >= secs * 1000 {
            break;
        }
        match rate.take(bucket, now, want) {
            Ok((n, b)) => {
                claims.push((now, n));
                bucket = Some(b.spend(n));
            }
            Err(wait) => {
                bucket = Some(rate.refill(bucket, now));
                now += crate::domain::millis(wait).max(1);
            }
        }
    }
    let total = claims.iter().map(|c| c.1).sum();
    let worst = claims
        .iter()
        .map(|&(start, _)| {
            claims
                .iter()
                .filter(|c| c.0 >= start && c.0 < start + 1000)
                .map(|c| c.1)
                .sum()
        })
        .max()
        .unwrap_or(0);
    (total, worst)
}

#[test]
fn a_limit_admits_its_rate_over_time_and_no_more() {
    let (total, worst) = simulate(Rate::new(200.0, None), 512, 10);
    // 10 s at 200/s plus the initial burst of 10.
    assert!((1990..=2010).contains(&total), "{total}");
    assert!(worst <= 210, "{worst} in one second");
}

#[test]
fn a_slow_limit_admits_one_at_a_time() {
    let (total, worst) = simulate(Rate::new(2.0, None), 64, 10);
    assert!((20..=21).contains(&total), "{total}");
    assert!(worst <= 3, "{worst}");
}

#[test]
fn a_new_bucket_is_full_and_refills_to_burst_only() {
    let rate = Rate::new(100.0, Some(8));
    assert_eq!(rate.refill(None, 5).tokens, 8.0);
    let empty = Bucket {
        tokens: 0.0,
        at_ms: 0,
    };
    assert_eq!(rate.refill(Some(empty), 50).tokens, 5.0);
    assert_eq!(rate.refill(Some(empty), 60_000).tokens, 8.0);
}

#[test]
fn a_clock_that_went_backwards_refills_nothing() {
    let rate = Rate::new(100.0, Some(8));
    let b = Bucket {
        tokens: 2.0,
        at_ms: 1_000,
    };
    assert_eq!(rate.refill(Some(b), 900), b);
    assert_eq!(rate.refill(Some(b), 1_100).tokens, 8.0);
}

#[test]
fn claims_wait_for_a_chunk_of_half_the_burst() {
    let rate = Rate::new(100.0, Some(20));
    let b = Bucket {
        tokens: 4.0,
        at_ms: 0,
    };
    // 10 tokens are wanted for a chunk; 6 more take 60 ms.
    assert_eq!(rate.allowance(&b, 500), Err(Duration::from_millis(60)));
    // Wanting fewer than a chunk, those few may go.
    assert_eq!(rate.allowance(&b, 3), Ok(3));
    let full = Bucket {
        tokens: 20.0,
        at_ms: 0,
    };
    assert_eq!(rate.allowance(&full, 500), Ok(20));
}

#[test]
fn a_segment_rate_takes_the_messages_its_tokens_pay_for() {
    let rate = Rate::new(10.0, Some(10));
    let full = Bucket {
        tokens: 10.0,
        at_ms: 0,
    };
    assert_eq!(rate.fit(&full, &[4, 4, 4]), Ok(2));
    assert_eq!(rate.fit(&full, &[1; 20]), Ok(10));
    assert_eq!(rate.fit(&full, &[]), Ok(0));
    // Short of a chunk (half the burst, or all that is wanted): wait for it.
    let low = Bucket {
        tokens: 2.0,
        at_ms: 0,
    };
    assert_eq!(rate.fit(&low, &[4]), Err(Duration::from_millis(200)));
    assert_eq!(rate.fit(&low, &[1, 1]), Ok(2));
    // A message longer than the burst goes alone when the bucket is full.
    assert_eq!(rate.fit(&full, &[12, 1]), Ok(1));
    let nine = Bucket {
        tokens: 9.0,
        at_ms: 0,
    };
    assert_eq!(rate.fit(&nine, &[12]), Err(Duration::from_millis(100)));
}

#[test]
fn segment_claims_admit_the_segment_rate_over_time() {
    // 3-segment messages under 30 segments a second: 10 messages a second.
    let rate = Rate::new(30.0, None);
    let mut stored = None;
    let mut segments = 0;
    for tick in 0..10_000_i64 {
        let bucket = rate.refill(stored, tick);
        match rate.fit(&bucket, &[3; 64]) {
            Ok(n) => {
                segments += 3 * n;
                stored = Some(bucket.spend(3 * n));
            }
            Err(_) => stored = Some(bucket),
        }
    }
    // Ten seconds at 30 a second, plus the burst the bucket starts with.
    assert!((300..=302).contains(&segments), "{segments}");
}

#[test]
fn the_default_burst_is_a_twentieth_of_a_second() {
    assert_eq!(Rate::new(500.0, None).burst, 25.0);
    assert_eq!(Rate::new(3.0, None).burst, 1.0);
    assert_eq!(Rate::new(3.0, Some(7)).burst, 7.0);
}

mod cap_tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn candidates(tos: &[&str]) -> Vec<Candidate<usize>> {
        tos.iter()
            .enumerate()
            .map(|(key, to)| Candidate {
                key,
                to: (*to).to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_recipient_gets_its_cap_and_the_rest_wait_for_the_window() {
        let caps = [Cap {
            count: 1,
            window_ms: MINUTE,
        }];
        let picked = pick(
            &caps,
            candidates(&["a", "b", "a", "a"]),
            HashMap::new(),
            1_000,
        );
        let claimed: Vec<usize> = picked.claim.iter().map(|c| c.key).collect();
        assert_eq!(claimed, [0, 1]);
        assert_eq!(picked.defer, [(2, 1_000 + MINUTE), (3, 1_000 + MINUTE)]);
    }

    #[test]
    fn earlier_sends_count_and_the_strictest_cap_decides() {
        let caps = [
            Cap {
                count: 2,
                window_ms: MINUTE,
            },
            Cap {
                count: 3,
                window_ms: 60 * MINUTE,
            },
        ];
        let now = 100 * MINUTE;
        // "a": two in the last hour, one of them in the last minute: one more fits
        // both caps, then the hourly cap is full until its oldest send is an hour old.
        let recent = HashMap::from([
            ("a".to_owned(), vec![now - 30 * MINUTE, now - 1_000]),
            ("b".to_owned(), vec![now - 61 * MINUTE, now - 2 * MINUTE]),
        ]);
        let picked = pick(&caps, candidates(&["a", "a", "b"]), recent, now);
        let claimed: Vec<usize> = picked.claim.iter().map(|c| c.key).collect();
        assert_eq!(claimed, [0, 2]);
        assert_eq!(picked.defer, [(1, now - 30 * MINUTE + 60 * MINUTE)]);
    }

    #[test]
    fn no_caps_claims_everything() {
        let picked = pick(&[], candidates(&["a", "a"]), HashMap::new(), 0);
        assert_eq!(picked.claim.len(), 2);
        assert!(picked.defer.is_empty());
    }
}
