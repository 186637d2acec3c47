//! Where sessions live: [`SessionStore`] is the configured backend, one variant per file.
//!
//! - [`memory`]: this process's memory (moka), the default and the single-replica hot path,
//!   with a per-thread memo in front ([`near`]).
//! - [`redis`]: Redis, shared by several replicas; values sealed by [`seal`] and expired
//!   by Redis TTLs; single-flight refresh across replicas through [`redis_lock`].
//!
//! Dispatch is an enum rather than `dyn Trait` so the per-request lookup costs no boxed
//! future and the memory path no extra allocation; each backend implements
//! [`SessionBackend`]. What only a shared store needs (a refresh lock across processes,
//! a reachability check) is an inherent method here whose memory arm does nothing.

mod memory;
mod near;
mod opened;
pub mod redis;
mod redis_lock;
pub mod seal;

pub use memory::MemoryStore;
pub use redis::RedisStore;
pub use redis_lock::RedisRefreshLock;

use std::sync::Arc;
use std::time::Duration;

use super::{Session, SessionKey};
use crate::config::{Config, SessionStoreConfig};

/// Why the store could not answer. Every variant means "try again shortly" (503);
/// none carries a session, a token or a password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection to the store: refused, reset, DNS, TLS handshake (only distributed
    /// stores fail this way).
    #[error("session store unreachable: {0}")]
    Unavailable(String),
    /// The store did not answer within the configured timeout (`session.redis_timeout`).
    #[error("session store did not answer within {0:?}")]
    Timeout(Duration),
    /// The store answered with an error: out of memory, authentication, read-only replica.
    #[error("session store refused the command: {0}")]
    Refused(String),
    /// The store could not be set up from valid configuration (e.g. a wildcard address).
    #[error("session store cannot be set up: {0}")]
    Setup(String),
}

/// The contract of a session backend. `get` returns only live sessions: an expired one
/// (idle or absolute) is absent.
pub trait SessionBackend {
    fn get(
        &self,
        key: &SessionKey,
    ) -> impl std::future::Future<Output = Result<Option<Arc<Session>>, StoreError>> + Send;
    fn insert(
        &self,
        key: SessionKey,
        session: Arc<Session>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
    /// Ends a session, returning what was stored, so that the caller revokes the tokens
    /// it actually removed (a refresh may have stored newer ones since it last looked).
    fn remove(
        &self,
        key: &SessionKey,
    ) -> impl std::future::Future<Output = Result<Option<Arc<Session>>, StoreError>> + Send;
}

/// The configured store.
#[derive(Clone)]
pub enum SessionStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

/// What the refresh phase does once it holds the in-process gate and has found the
/// session due for a refresh. See [`SessionStore::refresh_turn`].
pub enum RefreshTurn {
    /// This request refreshes `session` (the freshest copy), then calls
    /// [`RefreshLock::release`] whatever the outcome.
    Refresh { session: Arc<Session>, lock: RefreshLock },
    /// Another replica refreshed meanwhile: use this session (`None`: it ended).
    Settled(Option<Arc<Session>>),
}

/// The right to refresh one session, held until released.
pub enum RefreshLock {
    /// The in-process gate is all there is (memory store).
    InProcess,
    /// A lock in Redis shared by every replica.
    Redis(RedisRefreshLock),
}

impl RefreshLock {
    /// Lets the next refresh of this session happen. Never fails: a lock that cannot be
    /// released expires by itself.
    pub async fn release(self) {
        match self {
            RefreshLock::InProcess => {}
            RefreshLock::Redis(lock) => lock.release().await,
        }
    }
}

impl SessionStore {
    /// The store `config` asks for. Nothing is contacted here: a Redis that is down at
    /// start is connected to when it comes up.
    pub fn new(config: &Config) -> Result<Self, StoreError> {
        Ok(match &config.session.store {
            SessionStoreConfig::Memory => SessionStore::Memory(MemoryStore::new(&config.session)),
            SessionStoreConfig::Redis(redis) => SessionStore::Redis(RedisStore::new(redis, config)?),
        })
    }

    /// The per-request lookup. The Redis arm's future is boxed: unboxed, its state
    /// (command, connection, timeout) would grow this future by about 500 bytes for every
    /// request of the memory store too, which is moved around on its hot path. One
    /// allocation is nothing beside a Redis round trip.
    pub async fn get(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        match self {
            SessionStore::Memory(store) => store.get(key).await,
            SessionStore::Redis(store) => Box::pin(store.get(key)).await,
        }
    }

    pub async fn insert(&self, key: SessionKey, session: Arc<Session>) -> Result<(), StoreError> {
        match self {
            SessionStore::Memory(store) => store.insert(key, session).await,
            SessionStore::Redis(store) => store.insert(key, session).await,
        }
    }

    /// Stores a refreshed session, unless the session ended meanwhile (a logout while the
    /// refresh was at the provider, here or on another replica): then it stays ended and
    /// this returns false.
    pub async fn replace(&self, key: SessionKey, session: Arc<Session>) -> Result<bool, StoreError> {
        match self {
            SessionStore::Memory(store) => store.replace(key, session).await,
            SessionStore::Redis(store) => store.replace(key, session).await,
        }
    }

    /// Ends a session; returns it as it was stored (expired or not), or `None` if there was none.
    pub async fn remove(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        match self {
            SessionStore::Memory(store) => store.remove(key).await,
            SessionStore::Redis(store) => store.remove(key).await,
        }
    }

    /// Single-flight refresh across processes. Runs while the caller holds the in-process
    /// [`super::refresh::RefreshGate`] for `key` and has found `current` due for a refresh.
    /// `settled` says whether a session read back no longer needs this refresh (another
    /// replica did it).
    ///
    /// Memory: returns `Refresh` with `current` at once (the gate is enough).
    /// Redis: takes the session's lock, or waits (bounded) for the replica that holds it
    /// and returns what it stored.
    pub async fn refresh_turn(
        &self,
        key: &SessionKey,
        current: Arc<Session>,
        settled: impl Fn(&Session) -> bool,
    ) -> Result<RefreshTurn, StoreError> {
        match self {
            SessionStore::Memory(_) => Ok(RefreshTurn::Refresh {
                session: current,
                lock: RefreshLock::InProcess,
            }),
            SessionStore::Redis(store) => store.refresh_turn(key, current, settled).await,
        }
    }

    /// Sessions held, when the store knows without a round trip (for the metrics):
    /// memory only; Redis holds other replicas' sessions too and is counted by Redis.
    pub async fn approximate_count(&self) -> Option<u64> {
        match self {
            SessionStore::Memory(store) => {
                // The count is kept by moka's housekeeping, which runs lazily.
                store.cache.run_pending_tasks().await;
                Some(store.cache.entry_count())
            }
            SessionStore::Redis(_) => None,
        }
    }

    /// Whether the store can serve requests now (for `/.auth/readyz`). Memory: always.
    pub async fn is_ready(&self) -> bool {
        match self {
            SessionStore::Memory(_) => true,
            SessionStore::Redis(store) => store.ping().await.is_ok(),
        }
    }

    /// Logs which store is in use and, for Redis, whether it can be reached now.
    pub async fn report_at_start(&self) {
        match self {
            SessionStore::Memory(_) => tracing::info!("session store: memory (this process)"),
            SessionStore::Redis(store) => store.report_at_start().await,
        }
    }
}
