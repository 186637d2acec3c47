//! The provider's signing keys and their rotation: the current key set, and the
//! rate-limited, single-flight re-fetch triggered when an ID token names a key we do not
//! have.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use openidconnect::JsonWebKeySetUrl;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::discovery::fetch_jwks;
use super::jwk::KeySet;

/// The current key set. Readers clone the `Arc`; a re-fetch swaps it.
pub(super) struct JwksCache {
    current: RwLock<Arc<KeySet>>,
    /// Held across a re-fetch so concurrent callers share one request; holds the time of
    /// the last re-fetch attempt (successful or not) for the rate limit.
    refetch: Mutex<Option<Instant>>,
    interval: Duration,
}

impl JwksCache {
    pub(super) fn new(interval: Duration) -> Self {
        JwksCache {
            current: RwLock::new(Arc::new(KeySet::new(Vec::new()))),
            refetch: Mutex::new(None),
            interval,
        }
    }

    pub(super) fn current(&self) -> Arc<KeySet> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the value
        // inside is still a complete key set.
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn set(&self, keys: KeySet) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// Called after `seen` had no key for a token. Returns a newer key set to retry with,
    /// or `None` when there is nothing new: the rate limit forbids another fetch, or the
    /// fetch failed. If another caller already replaced `seen` while we waited, its
    /// result is used without a fetch of our own.
    pub(super) async fn refresh_after_miss(
        &self,
        http: &reqwest::Client,
        uri: &JsonWebKeySetUrl,
        seen: &Arc<KeySet>,
    ) -> Option<Arc<KeySet>> {
        let mut last = self.refetch.lock().await;
        let now = self.current();
        if !Arc::ptr_eq(&now, seen) {
            return Some(now);
        }
        if last.is_some_and(|t| t.elapsed() < self.interval) {
            tracing::debug!("unknown ID token key, JWKS re-fetch skipped (rate limit)");
            return None;
        }
        *last = Some(Instant::now());
        match fetch_jwks(http, uri).await {
            Ok(keys) => {
                tracing::info!(keys = keys.keys().len(), "JWKS re-fetched after an unknown key id");
                self.set(keys);
                Some(self.current())
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS re-fetch failed");
                None
            }
        }
    }
}
