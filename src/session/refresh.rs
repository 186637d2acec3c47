//! Single-flight refresh: at most one token refresh per session at a time.
//!
//! Authelia rotates refresh tokens strictly and revokes the whole grant when one token
//! is used twice, so concurrent requests of a session must wait for a single refresh
//! and then use its result. The in-memory gate serves one process; a distributed store
//! brings a distributed lock implementing the same shape.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::SessionKey;

/// Hands out one lock per session key; idle locks are dropped after a while.
#[derive(Clone)]
pub struct RefreshGate {
    locks: Cache<SessionKey, Arc<Mutex<()>>>,
}

impl RefreshGate {
    pub fn new() -> Self {
        RefreshGate {
            locks: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(300))
                .build(),
        }
    }

    /// Waits until no other refresh of this session runs. The caller re-reads the session
    /// after acquiring: another request may have refreshed it meanwhile.
    pub async fn acquire(&self, key: &SessionKey) -> OwnedMutexGuard<()> {
        let lock = self.locks.get_with(*key, || Arc::new(Mutex::new(())));
        lock.lock_owned().await
    }
}

impl Default for RefreshGate {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionId;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_acquirers_of_one_session_run_one_at_a_time() {
        let gate = RefreshGate::new();
        let key = SessionId::generate().key();
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (gate, inside, max_inside) = (gate.clone(), inside.clone(), max_inside.clone());
                tokio::spawn(async move {
                    let _guard = gate.acquire(&key).await;
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max_inside.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn different_sessions_do_not_wait_for_each_other() {
        let gate = RefreshGate::new();
        let _first = gate.acquire(&SessionId::generate().key()).await;
        let second = tokio::time::timeout(Duration::from_millis(100), gate.acquire(&SessionId::generate().key())).await;
        assert!(second.is_ok());
    }
}
