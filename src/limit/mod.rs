//! Rate limits on the calls portcullis makes to the provider on behalf of anonymous
//! clients. Starting a login costs a PAR request, so a flood of unauthenticated requests
//! must neither be amplified onto the identity provider nor let one client use up the
//! budget and lock everyone else out of signing in.
//!
//! [`LoginLimiter`] asks two token buckets, in this order:
//! 1. the client's own ([`clients`]): one IPv4 address, or one IPv6 /64, gets its share
//!    (`oidc.login_rate_per_client_*`);
//! 2. the global one: the cap on what reaches the provider, whoever asks
//!    (`oidc.login_rate_per_second`, `oidc.login_rate_burst`).
//!
//! The client's bucket comes first so that a client refused its share spends nothing of
//! the global budget. When the global bucket refuses, the token the client's bucket gave
//! is handed back: a user who met someone else's flood is not also held to their own
//! limit afterwards, and only logins that reached the provider hold per-client state
//! (which is what bounds how much of it there can be, see [`clients::slots_for`]).
//!
//! Only login starts ask: requests with a session never reach the limiter.

mod clients;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::OidcConfig;

pub use clients::ClientKey;
use clients::ClientTable;

/// Why a login start was refused (answered in `crate::error`). The client's own limit is
/// the client's doing, `429 Too Many Requests` (RFC 6585 §4); the global one protects the
/// provider, a matter of capacity, `503`. Both say in `Retry-After` when the bucket that
/// refused holds a token again, and they differ in the metric label and the log line too,
/// which is what an operator needs to tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefused {
    /// This client (an IPv4 address, or an IPv6 /64) started more logins than its own
    /// share. Likely a script or a flood from one host; or many users behind one
    /// address: a large NAT, or a reverse proxy missing from `server.trusted_proxies`.
    #[error("the login rate limit of client {client} is reached")]
    Client {
        client: ClientKey,
        /// The first refusal since this client's bucket was last full: the one worth a
        /// log line (the others would flood the log along with the flood).
        first: bool,
        /// When this client's bucket holds a token again ([`Bucket::retry_after`]): up
        /// to a minute.
        retry_after: Duration,
    },
    /// All clients together started more logins than the provider is to be asked for.
    /// A flood from many addresses, or a busy moment with a cap set too low.
    #[error("the global login rate limit is reached")]
    Global {
        /// As for [`LoginRefused::Client`], for the global bucket.
        first: bool,
        /// As for [`LoginRefused::Client`], for the global bucket: one second, as it
        /// refills at a token a second at least (and other clients may take that token
        /// first: the global budget is no one's in particular).
        retry_after: Duration,
    },
}

impl LoginRefused {
    /// When to try again, for `Retry-After`: whole seconds, at least one.
    pub fn retry_after(&self) -> Duration {
        match *self {
            LoginRefused::Client { retry_after, .. } | LoginRefused::Global { retry_after, .. } => retry_after,
        }
    }
}

/// The per-client buckets in front of the global one (see the module comment).
pub struct LoginLimiter {
    global: RateLimiter,
    /// `None` when the per-client limit is off (`login_rate_per_client_per_minute = 0`).
    clients: Option<ClientTable>,
}

impl LoginLimiter {
    pub fn new(config: &OidcConfig) -> Self {
        let global = Rate::per_second(config.login_rate_per_second, config.login_rate_burst);
        LoginLimiter::with_rates(global, client_rate(config))
    }

    fn with_rates(global: Rate, client: Option<Rate>) -> Self {
        LoginLimiter {
            global: RateLimiter::new(global),
            clients: client.map(|rate| ClientTable::new(rate, clients::slots_for(global, rate))),
        }
    }

    /// Takes a token for a login started by `client` (the address after trusted proxies),
    /// from its own bucket and then from the global one.
    pub fn try_acquire(&self, client: IpAddr) -> Result<(), LoginRefused> {
        self.try_acquire_at(client, Instant::now())
    }

    fn try_acquire_at(&self, client: IpAddr, now: Instant) -> Result<(), LoginRefused> {
        let key = ClientKey::of(client);
        if let Some(clients) = &self.clients {
            if let Take::Refused { first, retry_after } = clients.take(key, now) {
                return Err(LoginRefused::Client {
                    client: key,
                    first,
                    retry_after,
                });
            }
        }
        if let Take::Refused { first, retry_after } = self.global.take(now) {
            if let Some(clients) = &self.clients {
                clients.give_back(key, now);
            }
            return Err(LoginRefused::Global { first, retry_after });
        }
        Ok(())
    }
}

/// The per-client rate, or `None` when that limit is off.
fn client_rate(config: &OidcConfig) -> Option<Rate> {
    (config.login_rate_per_client_per_minute > 0).then(|| {
        Rate::per_minute(
            config.login_rate_per_client_per_minute,
            config.login_rate_per_client_burst,
        )
    })
}

/// How many slots the per-client table has for `config`, and the memory they take in
/// bytes (allocated once, at start-up); `None` when the per-client limit is off. For
/// `portcullis check`.
pub fn client_table_size(config: &OidcConfig) -> Option<(usize, usize)> {
    let global = Rate::per_second(config.login_rate_per_second, config.login_rate_burst);
    let slots = clients::slots_for(global, client_rate(config)?);
    Some((slots, clients::table_bytes(slots)))
}

/// How fast a bucket refills, and how many tokens it holds at most.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    /// Both at least 1: a bucket that never holds a whole token would refuse everything.
    fn per_second(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
        }
    }

    fn per_minute(per_minute: u32, burst: u32) -> Rate {
        Rate {
            per_second: f64::from(per_minute.max(1)) / 60.0,
            burst: f64::from(burst.max(1)),
        }
    }

    /// Seconds an empty bucket takes to fill up.
    fn refill_seconds(self) -> f64 {
        self.burst / self.per_second
    }
}

/// What a bucket answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    Granted,
    /// `first`: the first refusal since the bucket was last full; `retry_after`: when the
    /// bucket holds a token again (see [`Bucket::retry_after`]).
    Refused {
        first: bool,
        retry_after: Duration,
    },
}

/// A token bucket's state: `tokens` as of `updated`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    /// Set by a refusal, cleared when the bucket is full again: tells the first refusal of
    /// a run. A grant does not end the run, or a client flooding faster than its rate
    /// would start a new one at every token it earns.
    refusing: bool,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            updated: now,
            refusing: false,
        }
    }

    /// The tokens held at `now`: those of `updated` plus what has trickled in since,
    /// at most the burst.
    fn level(&self, rate: Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * rate.per_second).min(rate.burst)
    }

    fn take(&mut self, rate: Rate, now: Instant) -> Take {
        self.tokens = self.level(rate, now);
        self.updated = now;
        if self.tokens >= rate.burst {
            self.refusing = false;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Take::Granted
        } else {
            let first = !self.refusing;
            self.refusing = true;
            Take::Refused {
                first,
                retry_after: self.retry_after(rate),
            }
        }
    }

    /// How long after `updated` the bucket holds a whole token again, for `Retry-After`:
    /// whole seconds, rounded up so that a client that waits as told finds the token, and
    /// at least one (`Retry-After: 0` would invite an immediate retry). At most a minute,
    /// a token at the slowest rate (1/min).
    fn retry_after(&self, rate: Rate) -> Duration {
        let wait = (1.0 - self.tokens) / rate.per_second;
        // A float cast saturates; a wait is finite and small (see above).
        let mut seconds = (wait.ceil() as u64).max(1);
        // The bucket's own sum decides, as in `level`: where rounding left the quotient a
        // hair short of a whole second, its ceiling is a second early.
        if self.tokens + seconds as f64 * rate.per_second < 1.0 {
            seconds += 1;
        }
        Duration::from_secs(seconds)
    }

    /// Undoes a [`Bucket::take`] that was granted.
    fn give_back(&mut self, rate: Rate, now: Instant) {
        self.tokens = (self.level(rate, now) + 1.0).min(rate.burst);
        self.updated = now;
    }
}

/// One bucket behind a lock: the global cap.
struct RateLimiter {
    rate: Rate,
    state: Mutex<Bucket>,
}

impl RateLimiter {
    fn new(rate: Rate) -> Self {
        RateLimiter {
            rate,
            state: Mutex::new(Bucket::full(rate, Instant::now())),
        }
    }

    fn take(&self, now: Instant) -> Take {
        // A poisoned lock only means another thread panicked mid-update; the bucket is
        // still a few numbers, so keep using it.
        let mut bucket = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        bucket.take(self.rate, now)
    }
}
