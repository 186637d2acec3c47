//! Single-flight refresh across replicas: a lock per session in Redis.
//!
//! Authelia rotates refresh tokens strictly and revokes the whole grant when one is used
//! twice, so of all the replicas that see a session's access token expire at the same
//! moment exactly one may refresh it. Within a process the [`RefreshGate`] already lets
//! only one request through; that request then:
//!
//! 1. sends `SET <lock> <random token> NX PX <ttl>` and `GETEX <session>` in one pipeline
//!    (Redis runs them in order, so the session read follows the lock attempt);
//! 2. if the session read back is settled (refreshed by someone else, or gone), uses it
//!    (releasing the lock if it took it);
//! 3. if it took the lock, refreshes, stores, and releases the lock by compare-and-delete
//!    (a Lua script, so a lock that expired and was taken by another replica is not
//!    deleted by mistake);
//! 4. otherwise polls the same pipeline until the session changed, the lock is free (its
//!    holder failed: this request takes it and refreshes), or the lock's lifetime has
//!    passed; then it goes on with the session as it is.
//!
//! [`RefreshGate`]: crate::session::refresh::RefreshGate

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;

use super::redis::{millis, Command, RedisStore};
use super::{RefreshLock, RefreshTurn, StoreError};
use crate::session::{Session, SessionKey};

/// How often a waiting replica looks whether the refresh happened.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Deletes the lock only if it still holds this holder's token.
const RELEASE: &str =
    r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

/// A held refresh lock; [`RedisRefreshLock::release`] gives it back. Dropped without
/// release (a request cancelled mid-refresh), it expires after the store's lock TTL.
pub struct RedisRefreshLock {
    store: RedisStore,
    lock_key: String,
    token: String,
}

impl RedisStore {
    /// `<prefix>refresh-lock:<hex>`: the session key's namespace never has a `:` after
    /// the prefix, so the two cannot meet.
    pub(super) fn lock_key(&self, key: &SessionKey) -> String {
        let mut out = String::with_capacity(self.inner.prefix.len() + 13 + 64);
        out.push_str(&self.inner.prefix);
        out.push_str("refresh-lock:");
        key.push_hex(&mut out);
        out
    }

    /// See [`super::SessionStore::refresh_turn`] and the module comment.
    pub(super) async fn refresh_turn(
        &self,
        key: &SessionKey,
        // Not needed: the first pipeline reads the session again, after the lock attempt.
        _current: Arc<Session>,
        settled: impl Fn(&Session) -> bool,
    ) -> Result<RefreshTurn, StoreError> {
        let store_key = self.session_key(key);
        let lock_key = self.lock_key(key);
        let token = random_token();
        let mut attempt = redis::pipe();
        attempt
            .cmd("SET")
            .arg(&lock_key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(millis(self.inner.lock_ttl))
            .cmd("GETEX")
            .arg(&store_key)
            .arg("PX")
            .arg(millis(self.inner.idle_timeout));
        let give_up_at = tokio::time::Instant::now() + self.inner.lock_ttl;
        let mut latest;
        loop {
            let (taken, value): (Option<String>, Option<Vec<u8>>) = self.run(Command::Pipeline(&attempt)).await?;
            let session = match value {
                Some(value) => self.decode(key, &store_key, &value, std::time::SystemTime::now()).await,
                None => None,
            };
            let lock = taken.is_some().then(|| RedisRefreshLock {
                store: self.clone(),
                lock_key: lock_key.clone(),
                token: token.clone(),
            });
            match (session, lock) {
                (Some(session), Some(lock)) if !settled(&session) => {
                    return Ok(RefreshTurn::Refresh {
                        session,
                        lock: RefreshLock::Redis(lock),
                    });
                }
                (session, Some(lock)) => {
                    lock.release().await;
                    return Ok(RefreshTurn::Settled(session));
                }
                (None, None) => return Ok(RefreshTurn::Settled(None)),
                (Some(session), None) if settled(&session) => return Ok(RefreshTurn::Settled(Some(session))),
                (Some(session), None) => latest = session,
            }
            if tokio::time::Instant::now() >= give_up_at {
                tracing::warn!(session = ?key, "another replica's token refresh did not finish in time; going on with the current tokens");
                return Ok(RefreshTurn::Settled(Some(latest)));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl RedisRefreshLock {
    /// Compare-and-delete. A failure is logged: the lock then expires by itself.
    pub async fn release(self) {
        let script = redis::Script::new(RELEASE);
        let mut invocation = script.key(&self.lock_key);
        invocation.arg(&self.token);
        if let Err(error) = self.store.run::<i64>(Command::Script(&invocation)).await {
            tracing::warn!(%error, "could not release a refresh lock; it expires by itself");
        }
    }
}

/// 128 random bits, hex: who holds a lock.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().fold(String::with_capacity(32), |mut out, byte| {
        use std::fmt::Write;
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    /// A replica may release only the lock it took: every token is its own.
    #[test]
    fn lock_tokens_are_128_random_bits_in_hex() {
        let (one, other) = (super::random_token(), super::random_token());
        assert_eq!(one.len(), 32);
        assert!(
            one.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{one}"
        );
        assert_ne!(one, other);
    }
}
