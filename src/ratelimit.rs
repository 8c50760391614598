//! Per-provider rate limits: a token bucket refilled continuously at the configured
//! rate. Workers take tokens *before* claiming messages, so waiting for the limit
//! never holds a lease and never counts as a delivery attempt.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket; `unlimited` never makes anyone wait.
#[derive(Debug)]
pub struct RateLimiter {
    limit: Option<Limit>,
}

#[derive(Debug)]
struct Limit {
    /// Tokens added per second.
    rate: f64,
    /// The most tokens the bucket holds: the largest burst.
    burst: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    pub fn unlimited() -> Self {
        RateLimiter { limit: None }
    }

    /// `rate` messages per second. `burst` (default: a tenth of a second's worth,
    /// at least 1) bounds how many may go at once; a small burst keeps every
    /// one-second window close to `rate`.
    pub fn per_second(rate: f64, burst: Option<u32>) -> Self {
        let burst = burst.map_or((rate / 10.0).ceil(), f64::from).max(1.0);
        RateLimiter {
            limit: Some(Limit {
                rate,
                burst,
                bucket: Mutex::new(Bucket {
                    tokens: burst,
                    refilled: Instant::now(),
                }),
            }),
        }
    }

    /// Takes up to `want` tokens. `Ok(n)` with `1 <= n <= want` when any are
    /// available; otherwise `Err(wait)`: how long until one is.
    pub fn take_up_to(&self, want: usize) -> Result<usize, Duration> {
        let Some(limit) = &self.limit else {
            return Ok(want);
        };
        let mut bucket = limit.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.rate).min(limit.burst);
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - bucket.tokens) / limit.rate));
        }
        let n = (bucket.tokens.floor() as usize).min(want);
        bucket.tokens -= n as f64;
        Ok(n)
    }

    /// Returns tokens that were taken but not used.
    pub fn refund(&self, n: usize) {
        if let Some(limit) = &self.limit {
            let mut bucket = limit.bucket.lock().unwrap_or_else(|p| p.into_inner());
            bucket.tokens = (bucket.tokens + n as f64).min(limit.burst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_limit_admits_its_rate_over_time_and_no_more() {
        let limiter = RateLimiter::per_second(100.0, None);
        let start = Instant::now();
        let mut sent = 0;
        while Instant::now() - start < Duration::from_secs(10) {
            match limiter.take_up_to(64) {
                Ok(n) => sent += n,
                Err(wait) => tokio::time::advance(wait).await,
            }
        }
        // 10 s at 100/s plus the initial burst of 10.
        assert!((1000..=1010).contains(&sent), "{sent}");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_time_is_what_one_token_needs() {
        let limiter = RateLimiter::per_second(4.0, Some(1));
        assert_eq!(limiter.take_up_to(5), Ok(1));
        let wait = limiter.take_up_to(5).unwrap_err();
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-6, "{wait:?}");
        tokio::time::advance(wait).await;
        assert_eq!(limiter.take_up_to(5), Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn refunded_tokens_can_be_taken_again() {
        let limiter = RateLimiter::per_second(10.0, Some(5));
        assert_eq!(limiter.take_up_to(5), Ok(5));
        limiter.refund(3);
        assert_eq!(limiter.take_up_to(5), Ok(3));
    }

    #[test]
    fn unlimited_never_waits() {
        assert_eq!(RateLimiter::unlimited().take_up_to(1000), Ok(1000));
    }
}
