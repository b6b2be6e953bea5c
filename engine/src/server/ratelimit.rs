//! Per-client-address rate limits on room creation and joins: a token
//! bucket per address holding one minute's worth, refilled continuously.
//! A refused request gets 429 with `Retry-After` (RFC 6585 section 4).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at once; beyond it, full buckets (addresses that have
/// not been limited lately) are forgotten, then the table is cleared: a
/// flood of spoofed-looking addresses costs memory only up to this bound.
const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One limit (e.g. room creations per minute) for every address.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// `per_minute` requests per address per minute; 0 allows everything.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request's token for `ip`; `Err(wait)` when the bucket is
    /// empty, with how long until the next token.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        // A panic while holding the lock (a bug) leaves plain numbers behind.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec < capacity
            });
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * per_sec;
        b.tokens = (b.tokens + refill).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minutes_worth_then_one_every_interval() {
        let limit = RateLimiter::new(3);
        let t0 = Instant::now();
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        for _ in 0..3 {
            limit.check(a, t0).unwrap();
        }
        let wait = limit.check(a, t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another address has its own bucket.
        limit.check(b, t0).unwrap();
        // 20 s later one more token.
        limit.check(a, t0 + Duration::from_secs(20)).unwrap();
        assert!(limit.check(a, t0 + Duration::from_secs(20)).is_err());
        // Off.
        let off = RateLimiter::new(0);
        for _ in 0..1000 {
            off.check(a, t0).unwrap();
        }
    }
}
