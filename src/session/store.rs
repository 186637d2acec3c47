//! Where sessions live. The in-memory store (moka) is the default; a distributed store
//! (Redis) joins as another variant of [`SessionStore`] without touching its callers.
//!
//! Dispatch is an enum rather than `dyn Trait` so the per-request lookup costs no
//! boxed future; each backend implements [`SessionBackend`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use moka::future::Cache;
use moka::Expiry;

use super::{Session, SessionKey};
use crate::config::SessionConfig;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached (only distributed stores fail this way).
    #[error("session store unavailable: {0}")]
    Unavailable(String),
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
    fn remove(&self, key: &SessionKey) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

/// The configured store.
#[derive(Clone)]
pub enum SessionStore {
    Memory(MemoryStore),
}

impl SessionStore {
    pub async fn get(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        match self {
            SessionStore::Memory(store) => store.get(key).await,
        }
    }

    pub async fn insert(&self, key: SessionKey, session: Arc<Session>) -> Result<(), StoreError> {
        match self {
            SessionStore::Memory(store) => store.insert(key, session).await,
        }
    }

    pub async fn remove(&self, key: &SessionKey) -> Result<(), StoreError> {
        match self {
            SessionStore::Memory(store) => store.remove(key).await,
        }
    }

    /// Sessions held, when the store knows without a round trip (for the metrics).
    pub async fn approximate_count(&self) -> Option<u64> {
        match self {
            SessionStore::Memory(store) => {
                // The count is kept by moka's housekeeping, which runs lazily.
                store.cache.run_pending_tasks().await;
                Some(store.cache.entry_count())
            }
        }
    }
}

/// Sessions in this process's memory, bounded by weight (approximate bytes), expired
/// by idleness and by each session's absolute deadline.
#[derive(Clone)]
pub struct MemoryStore {
    pub(super) cache: Cache<SessionKey, Arc<Session>>,
}

/// Expires each entry at its session's absolute deadline; moka's time-to-idle handles idleness.
struct AbsoluteDeadline;

impl AbsoluteDeadline {
    fn remaining(session: &Session) -> Option<Duration> {
        Some(
            session
                .expires_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }
}

impl Expiry<SessionKey, Arc<Session>> for AbsoluteDeadline {
    fn expire_after_create(&self, _key: &SessionKey, session: &Arc<Session>, _now: Instant) -> Option<Duration> {
        Self::remaining(session)
    }

    fn expire_after_update(
        &self,
        _key: &SessionKey,
        session: &Arc<Session>,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Self::remaining(session)
    }
}

impl MemoryStore {
    pub fn new(config: &SessionConfig) -> Self {
        let cache = Cache::builder()
            .max_capacity(config.max_memory_bytes)
            .weigher(|_key, session: &Arc<Session>| u32::try_from(session.approximate_size()).unwrap_or(u32::MAX))
            .time_to_idle(config.idle_timeout)
            .expire_after(AbsoluteDeadline)
            .build();
        MemoryStore { cache }
    }

    /// Number of sessions held (approximate, as moka counts lazily).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionBackend for MemoryStore {
    async fn get(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        Ok(self
            .cache
            .get(key)
            .await
            .filter(|session| !session.is_expired(SystemTime::now())))
    }

    async fn insert(&self, key: SessionKey, session: Arc<Session>) -> Result<(), StoreError> {
        self.cache.insert(key, session).await;
        Ok(())
    }

    async fn remove(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.cache.invalidate(key).await;
        Ok(())
    }
}
