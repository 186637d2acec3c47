//! The Redis store: sessions shared by several replicas behind a load balancer.
//!
//! - **Keys**: `<prefix><hex of the SessionKey>` (SHA-256 of the cookie id), never the
//!   cookie id itself: a dump of Redis yields no usable cookie.
//! - **Values**: sealed by [`super::seal`] (AES-256-GCM under a key derived from the
//!   session secret, the Redis key as associated data). A value that does not open is
//!   no session (logged at warn without content), never an error page.
//! - **Expiry**: a write sets the TTL to min(idle timeout, time left to the absolute
//!   deadline); a lookup is one `GETEX key PX <idle>` round trip that slides the idle
//!   TTL. Only in a session's last idle-timeout window would that slide pass the
//!   deadline, and only then a second command pins the TTL to the deadline.
//! - **Identity headers** are built from the stored claims when a value is opened rather
//!   than stored (nor is the access verdict): one source of truth, a change of
//!   `[identity]` or `[policy]` applies to every session at once, and replicas in a
//!   rolling deploy each send the headers their configuration asks for. A value is
//!   opened once per replica: while `GETEX` returns the same bytes, the session opened
//!   from them is used again ([`super::opened`]).
//! - **Connection**: one multiplexed, auto-reconnecting `ConnectionManager` per thread
//!   that uses the store (see [`crate::per_thread`]), created lazily so portcullis
//!   starts while Redis is down. Every command is bounded by
//!   `session.redis_timeout`; a failure is a [`StoreError`] (503), and reachability
//!   changes are logged once per change, naming the endpoint but never the password.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo, RedisError};

use super::opened::OpenedSessions;
use super::seal::Sealer;
use super::{SessionBackend, StoreError};
use crate::config::{Config, IdentityConfig, RedisConfig};
use crate::per_thread::PerThread;
use crate::policy::Rule;
use crate::session::{Session, SessionKey};

/// A store in Redis. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct RedisStore {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    managers: Managers,
    sealer: Sealer,
    pub(super) prefix: String,
    /// Bound on every command (`session.redis_timeout`).
    pub(super) timeout: Duration,
    pub(super) idle_timeout: Duration,
    identity: IdentityConfig,
    /// The access rule, judged anew on every load like the headers (neither is stored).
    rule: Rule,
    /// How long a refresh lock lives when its holder never releases it (crashed, or its
    /// request was dropped): longer than any refresh can take.
    pub(super) lock_ttl: Duration,
    /// Where Redis is, for log lines: the URL without its password.
    endpoint: String,
    /// Last known reachability, so a change is logged once rather than per request.
    reachable: AtomicBool,
    /// What stored values opened to, so an unchanged value is not opened again.
    opened: OpenedSessions,
}

/// One connection manager per thread using the store ([`PerThread`]), each made on the
/// thread's first command: each connection worker talks to Redis over a connection of
/// its own (on one shared connection the benchmark's p99 with the Redis store was
/// 5.9x the memory store's).
struct Managers {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Clone per command: commands need `&mut`, clones share one multiplexed connection.
    by_thread: PerThread<ConnectionManager>,
}

impl Managers {
    /// Checks the settings by making the first manager, for this thread.
    fn new(client: redis::Client, config: ConnectionManagerConfig) -> Result<Self, RedisError> {
        let managers = Managers {
            client,
            config,
            by_thread: PerThread::new(),
        };
        managers.here()?;
        Ok(managers)
    }

    /// This thread's manager, made now if it has none yet.
    fn here(&self) -> Result<ConnectionManager, RedisError> {
        self.by_thread
            .get_or_try_make(|| ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()))
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.by_thread.count()
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("endpoint", &self.inner.endpoint)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Sets up the connection without contacting Redis.
    pub fn new(redis: &RedisConfig, config: &Config) -> Result<Self, StoreError> {
        let setup = |error: RedisError| StoreError::Setup(error.to_string());
        let mut info = redis.url.as_str().into_connection_info().map_err(setup)?;
        if let Some(password) = &redis.password {
            let settings = info.redis_settings().clone().set_password(password.expose());
            info = info.set_redis_settings(settings);
        }
        if redis.url.scheme() == "rediss" {
            // redis-rs builds its TLS client from the process-wide rustls provider. Name
            // ours (ring, the one every other TLS client here uses) so that choice never
            // depends on which rustls features happen to be compiled in. An error means
            // a provider is installed already, which is just as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match &redis.ca {
            // Only these CAs are trusted then, not the system roots.
            Some(ca) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(setup)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(redis.timeout))
            .set_response_timeout(Some(redis.timeout))
            // Few, quick retries: a request waiting on a reconnect must fail within the
            // timeout; the next request starts another attempt.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let managers = Managers::new(client, manager_config).map_err(setup)?;
        let lock_ttl = 2 * config.oidc.http_timeout + 2 * redis.timeout;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                managers,
                sealer: Sealer::new(&config.session.secret),
                prefix: redis.key_prefix.clone(),
                timeout: redis.timeout,
                idle_timeout: config.session.idle_timeout,
                identity: config.identity.clone(),
                rule: Rule::new(&config.policy.allowed_groups, &config.policy.allowed_email_domains),
                lock_ttl,
                endpoint: redis.url.to_string(),
                reachable: AtomicBool::new(true),
                opened: OpenedSessions::new(),
            }),
        })
    }

    /// `<prefix><64 hex digits>`, built with one allocation.
    pub(super) fn session_key(&self, key: &SessionKey) -> String {
        let mut out = String::with_capacity(self.inner.prefix.len() + 64);
        out.push_str(&self.inner.prefix);
        key.push_hex(&mut out);
        out
    }

    /// Runs one command (or pipeline) within the timeout, classifying failures.
    ///
    /// A command that finds the connection dropped (Redis restarted while this replica
    /// was idle) is sent once more: the manager reconnects on that error, and the
    /// request should not pay for an outage that is already over. Both attempts share
    /// one timeout.
    pub(super) async fn run<T: FromRedisValue>(&self, command: Command<'_>) -> Result<T, StoreError> {
        let attempts = async {
            match self.send(&command).await {
                Err(error) if is_connection_lost(&error) => self.send(&command).await,
                outcome => outcome,
            }
        };
        let result = match tokio::time::timeout(self.inner.timeout, attempts).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(classify(&error)),
            Err(_) => Err(StoreError::Timeout(self.inner.timeout)),
        };
        self.note_reachability(&result);
        result
    }

    async fn send<T: FromRedisValue>(&self, command: &Command<'_>) -> Result<T, RedisError> {
        let mut connection = self.inner.managers.here()?;
        match command {
            Command::One(cmd) => cmd.query_async(&mut connection).await,
            Command::Pipeline(pipe) => pipe.query_async(&mut connection).await,
            Command::Script(invocation) => invocation.invoke_async(&mut connection).await,
        }
    }

    fn note_reachability<T>(&self, result: &Result<T, StoreError>) {
        let reachable = !matches!(result, Err(StoreError::Unavailable(_) | StoreError::Timeout(_)));
        if self.inner.reachable.swap(reachable, Ordering::Relaxed) == reachable {
            return;
        }
        if reachable {
            tracing::info!(endpoint = %self.inner.endpoint, "Redis session store reachable again");
        } else if let Err(error) = result {
            tracing::warn!(
                endpoint = %self.inner.endpoint,
                %error,
                "Redis session store unreachable: requests that need a session get 503 until it is back"
            );
        }
    }

    /// Opens a stored value, keeps the TTL within the absolute deadline, and prepares the
    /// upstream headers. Anything that is not a live session is `None`.
    pub(super) async fn decode(
        &self,
        key: &SessionKey,
        store_key: &str,
        value: &[u8],
        now: SystemTime,
    ) -> Option<Arc<Session>> {
        let session = match self.inner.opened.get(key, value) {
            Some(session) => session,
            None => {
                let mut session = match self.inner.sealer.open(store_key.as_bytes(), value) {
                    Ok(session) => session,
                    Err(error) => {
                        tracing::warn!(session = ?key, %error, "stored session ignored");
                        return None;
                    }
                };
                session.prepare(&self.inner.identity, &self.inner.rule);
                let session = Arc::new(session);
                self.inner.opened.put(*key, value, session.clone());
                session
            }
        };
        if session.is_expired(now) {
            return None;
        }
        if let Some(deadline) = slide_passes_deadline(now, session.expires_at, self.inner.idle_timeout) {
            let pin = redis::cmd("PEXPIREAT")
                .arg(store_key)
                .arg(unix_millis(deadline))
                .to_owned();
            if let Err(error) = self.run::<i64>(Command::One(&pin)).await {
                // The session is still ended at its deadline (checked on every load); only
                // the cleanup of its key may come up to one idle timeout late.
                tracing::warn!(session = ?key, %error, "could not pin the session's TTL to its deadline");
            }
        }
        Some(session)
    }

    /// `SET key <sealed> PX <ttl> [XX]`; `false` when `only_if_present` found no key.
    async fn write(&self, key: &SessionKey, session: &Arc<Session>, only_if_present: bool) -> Result<bool, StoreError> {
        let store_key = self.session_key(key);
        let Some(ttl) = write_ttl(SystemTime::now(), session.expires_at, self.inner.idle_timeout) else {
            // Already past its deadline: there is nothing to keep.
            self.inner.opened.forget(key);
            let del = redis::cmd("DEL").arg(&store_key).to_owned();
            self.run::<i64>(Command::One(&del)).await?;
            return Ok(false);
        };
        let sealed = self.inner.sealer.seal(store_key.as_bytes(), session).map_err(|error| {
            tracing::error!(session = ?key, %error, "session could not be sealed");
            StoreError::Refused(error.to_string())
        })?;
        let mut set = redis::cmd("SET");
        set.arg(&store_key).arg(&sealed).arg("PX").arg(millis(ttl));
        if only_if_present {
            set.arg("XX");
        }
        let reply: Option<String> = self.run(Command::One(&set)).await?;
        if reply.is_some() {
            // The next request reads these bytes back: no need to open them.
            self.inner.opened.put(*key, &sealed, session.clone());
        }
        Ok(reply.is_some())
    }

    /// Stores a refreshed session only if it still exists (`SET … XX`): a logout on
    /// another replica during the refresh is not undone.
    pub async fn replace(&self, key: SessionKey, session: Arc<Session>) -> Result<bool, StoreError> {
        self.write(&key, &session, true).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run::<String>(Command::One(&redis::cmd("PING"))).await.map(drop)
    }

    pub async fn report_at_start(&self) {
        let endpoint = &self.inner.endpoint;
        match self.ping().await {
            Ok(()) => tracing::info!(%endpoint, prefix = %self.inner.prefix, "session store: Redis"),
            // Already logged by `note_reachability` as the store became unreachable.
            Err(StoreError::Unavailable(_) | StoreError::Timeout(_)) => {}
            Err(error) => tracing::warn!(
                %endpoint,
                %error,
                "session store: Redis, not usable for now; requests that need a session get 503 until it is"
            ),
        }
    }
}

impl SessionBackend for RedisStore {
    /// One round trip: `GETEX key PX <idle timeout>` reads and slides the idle TTL.
    async fn get(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        let store_key = self.session_key(key);
        let getex = redis::cmd("GETEX")
            .arg(&store_key)
            .arg("PX")
            .arg(millis(self.inner.idle_timeout))
            .to_owned();
        let value: Option<Vec<u8>> = self.run(Command::One(&getex)).await?;
        match value {
            None => Ok(None),
            Some(value) => Ok(self.decode(key, &store_key, &value, SystemTime::now()).await),
        }
    }

    async fn insert(&self, key: SessionKey, session: Arc<Session>) -> Result<(), StoreError> {
        self.write(&key, &session, false).await.map(drop)
    }

    /// `GETDEL`: the session is read and removed in one step, so no refresh on another
    /// replica can store newer tokens between the read and the removal.
    async fn remove(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        self.inner.opened.forget(key);
        let store_key = self.session_key(key);
        let getdel = redis::cmd("GETDEL").arg(&store_key).to_owned();
        let value: Option<Vec<u8>> = self.run(Command::One(&getdel)).await?;
        // Only its tokens are wanted (to revoke them): no headers or verdict to prepare.
        Ok(
            value.and_then(|value| match self.inner.sealer.open(store_key.as_bytes(), &value) {
                Ok(session) => Some(Arc::new(session)),
                Err(error) => {
                    tracing::warn!(session = ?key, %error, "removed a stored value that is no session");
                    None
                }
            }),
        )
    }
}

/// What [`RedisStore::run`] sends.
pub(super) enum Command<'a> {
    One(&'a redis::Cmd),
    Pipeline(&'a redis::Pipeline),
    Script(&'a redis::ScriptInvocation<'a>),
}

/// The connection broke under the command (not a refusal to connect, not a timeout).
fn is_connection_lost(error: &RedisError) -> bool {
    !error.is_timeout() && (error.is_connection_dropped() || error.is_unrecoverable_error())
}

/// Connection trouble is `Unavailable` (or `Timeout`); an error reply is `Refused`.
/// The text is redis-rs' description, which names no password.
fn classify(error: &RedisError) -> StoreError {
    if error.is_timeout() {
        StoreError::Unavailable(format!("timed out: {error}"))
    } else if error.is_io_error() || error.is_connection_refusal() || error.is_connection_dropped() {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Refused(error.to_string())
    }
}

/// TTL of a session written at `now`: the idle timeout, cut short by the absolute
/// deadline. `None` when the deadline has passed.
pub(crate) fn write_ttl(now: SystemTime, deadline: SystemTime, idle: Duration) -> Option<Duration> {
    let left = deadline.duration_since(now).ok().filter(|left| !left.is_zero())?;
    Some(left.min(idle))
}

/// When a lookup at `now` slides the TTL to `now + idle` past the absolute deadline,
/// the deadline to pin it to instead.
pub(crate) fn slide_passes_deadline(now: SystemTime, deadline: SystemTime, idle: Duration) -> Option<SystemTime> {
    (now + idle > deadline).then_some(deadline)
}

/// Milliseconds for `PX`, at least 1 (Redis refuses 0) and rounded up.
pub(crate) fn millis(duration: Duration) -> u64 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

/// Milliseconds since the Unix epoch for `PEXPIREAT`.
fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, millis)
}

#[cfg(test)]
#[path = "redis_tests.rs"]
mod tests;
