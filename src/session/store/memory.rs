//! The in-memory store: sessions in this process (moka), bounded by weight
//! (approximate bytes), expired by idleness and by each session's absolute deadline.
//! The default, and the hot path of a single replica: nothing here may get slower.
//! A lookup asks this thread's memo ([`super::near`]) first and moka only when it has
//! no answer: moka's lookup writes to memory that all cores share.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use moka::Expiry;

use super::near::NearCache;
use super::{SessionBackend, StoreError};
use crate::config::SessionConfig;
use crate::session::{Session, SessionKey};

/// Sessions in this process's memory, bounded by weight (approximate bytes), expired
/// by idleness and by each session's absolute deadline.
#[derive(Clone)]
pub struct MemoryStore {
    pub(crate) cache: Cache<SessionKey, Arc<Session>>,
    near: NearCache,
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
        MemoryStore {
            cache,
            near: NearCache::new(config.idle_timeout),
        }
    }

    /// Stores a refreshed session only if its key is still held, in one step with respect
    /// to a removal: a logout that lands while the refresh is at the provider stays a
    /// logout. Returns whether it was stored.
    pub async fn replace(&self, key: SessionKey, session: Arc<Session>) -> Result<bool, StoreError> {
        let outcome = self
            .cache
            .entry(key)
            .and_compute_with(|held| {
                std::future::ready(match held {
                    Some(held) if !held.value().is_expired(SystemTime::now()) => Op::Put(session),
                    _ => Op::Nop,
                })
            })
            .await;
        let stored = matches!(outcome, CompResult::ReplacedWith(_));
        if stored {
            self.near.invalidate();
        }
        Ok(stored)
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
        let now = SystemTime::now();
        if let Some(session) = self.near.lookup(key, now) {
            if !session.is_expired(now) {
                return Ok(Some(session));
            }
        }
        // Read before moka is asked: see `near` on why no removal can be missed.
        let generation = self.near.generation();
        Ok(match self.cache.get(key).await {
            Some(session) if !session.is_expired(now) => Some(self.near.remember(*key, &session, generation, now)),
            _ => None,
        })
    }

    async fn insert(&self, key: SessionKey, session: Arc<Session>) -> Result<(), StoreError> {
        self.cache.insert(key, session).await;
        self.near.invalidate();
        Ok(())
    }

    async fn remove(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        let removed = self.cache.remove(key).await;
        self.near.invalidate();
        Ok(removed)
    }
}
