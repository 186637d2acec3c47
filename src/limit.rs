//! A token bucket for calls portcullis makes to the provider on behalf of anonymous
//! clients (starting a login costs a PAR request), so a flood of unauthenticated
//! requests cannot be amplified onto the identity provider.

use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimiter {
    rate_per_second: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate_per_second: f64::from(rate_per_second.max(1)),
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                updated: Instant::now(),
            }),
        }
    }

    /// Takes one token if available.
    pub fn try_acquire(&self) -> bool {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> bool {
        // A poisoned lock only means another thread panicked mid-update; the bucket is
        // still two numbers, so keep using it.
        let mut bucket = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate_per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_burst_is_allowed_then_the_rate_applies() {
        let limiter = RateLimiter::new(10, 5);
        let start = Instant::now();
        assert_eq!((0..20).filter(|_| limiter.try_acquire_at(start)).count(), 5);
        let later = start + Duration::from_millis(500);
        assert_eq!((0..20).filter(|_| limiter.try_acquire_at(later)).count(), 5);
    }

    #[test]
    fn the_clock_driven_entry_point_spends_the_same_bucket() {
        // One token per second: back-to-back calls cannot earn a third.
        let limiter = RateLimiter::new(1, 2);
        assert_eq!(
            (0..3).map(|_| limiter.try_acquire()).collect::<Vec<_>>(),
            [true, true, false]
        );
    }
}
