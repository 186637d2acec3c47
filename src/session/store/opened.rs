//! Sessions the Redis store has opened, kept by the exact bytes they were opened from.
//!
//! Every request reads its session from Redis (one `GETEX`, so a logout or a refresh on
//! another replica is seen at once), but the value rarely changes between requests:
//! opening it again (AES-256-GCM, JSON, rebuilding the identity headers and the access
//! verdict) would give the same session. When Redis returns the very bytes a session
//! was opened from, that session is used; other bytes (another replica refreshed it)
//! are opened anew. This is a memo of a pure function of the stored value, not a
//! second copy of the store: it never answers without Redis having been asked.
//!
//! Bounded by weight (the sealed bytes plus the session's approximate size) and kept
//! only for sessions in use (an entry goes after [`IDLE`] without a request).

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::session::{Session, SessionKey};

/// At most this many bytes of opened sessions (about 2,700 sessions of 6 KiB).
const MAX_BYTES: u64 = 16 << 20;

/// An entry not used for this long goes.
const IDLE: Duration = Duration::from_secs(120);

/// See the module comment.
#[derive(Clone)]
pub(super) struct OpenedSessions {
    cache: Cache<SessionKey, Arc<Opened>>,
}

struct Opened {
    sealed: Box<[u8]>,
    session: Arc<Session>,
}

impl OpenedSessions {
    pub(super) fn new() -> Self {
        Self::with_capacity(MAX_BYTES)
    }

    fn with_capacity(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key, opened: &Arc<Opened>| {
                u32::try_from(opened.sealed.len() + opened.session.approximate_size()).unwrap_or(u32::MAX)
            })
            .time_to_idle(IDLE)
            .build();
        OpenedSessions { cache }
    }

    /// The session opened from exactly `sealed` under `key`, if it is kept.
    pub(super) fn get(&self, key: &SessionKey, sealed: &[u8]) -> Option<Arc<Session>> {
        let opened = self.cache.get(key)?;
        (*opened.sealed == *sealed).then(|| opened.session.clone())
    }

    /// Keeps `session` as what `sealed` opens to under `key`.
    pub(super) fn put(&self, key: SessionKey, sealed: &[u8], session: Arc<Session>) {
        let opened = Opened {
            sealed: sealed.into(),
            session,
        };
        self.cache.insert(key, Arc::new(opened));
    }

    /// Forgets `key` (its session ended).
    pub(super) fn forget(&self, key: &SessionKey) {
        self.cache.invalidate(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::session;
    use crate::session::SessionId;

    fn sample_session() -> Session {
        session(
            serde_json::json!({"preferred_username": "john"}),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn only_the_exact_bytes_a_session_was_opened_from_find_it() {
        let opened = OpenedSessions::new();
        let key = SessionId::generate().key();
        let session = Arc::new(sample_session());
        opened.put(key, b"sealed-1", session.clone());
        assert!(Arc::ptr_eq(&opened.get(&key, b"sealed-1").unwrap(), &session));
        assert!(opened.get(&key, b"sealed-2").is_none(), "other bytes: open them anew");
        assert!(opened.get(&key, b"sealed-").is_none());
        assert!(
            opened.get(&SessionId::generate().key(), b"sealed-1").is_none(),
            "other key"
        );
        opened.forget(&key);
        assert!(opened.get(&key, b"sealed-1").is_none());
    }

    #[test]
    fn new_bytes_for_a_key_replace_the_old_ones() {
        let opened = OpenedSessions::new();
        let key = SessionId::generate().key();
        opened.put(key, b"before refresh", Arc::new(sample_session()));
        let refreshed = Arc::new(sample_session());
        opened.put(key, b"after refresh", refreshed.clone());
        assert!(opened.get(&key, b"before refresh").is_none());
        assert!(Arc::ptr_eq(&opened.get(&key, b"after refresh").unwrap(), &refreshed));
    }

    #[test]
    fn the_kept_sessions_are_bounded_by_weight() {
        let session = Arc::new(sample_session());
        let weight = session.approximate_size() as u64 + 8;
        let opened = OpenedSessions::with_capacity(10 * weight);
        for _ in 0..1000 {
            opened.put(SessionId::generate().key(), b"sealed-1", session.clone());
        }
        opened.cache.run_pending_tasks();
        assert!(
            opened.cache.weighted_size() <= 10 * weight,
            "{}",
            opened.cache.weighted_size()
        );
        // Weighed by their bytes, not more: about ten of them fit.
        assert!(
            (8..=10).contains(&opened.cache.entry_count()),
            "{}",
            opened.cache.entry_count()
        );
    }
}
