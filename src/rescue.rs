//! Rescued tokens: a refresh's result that the session store could not take, stored as
//! soon as the store takes writes again, by this replica on its own.
//!
//! Authelia rotates refresh tokens strictly: once a refresh went through, the refresh
//! token in the store is spent, and any replica that refreshes with it makes Authelia
//! revoke the whole grant, the new tokens included. When the store fails just after the
//! provider has rotated the token, the replica that refreshed is the only holder of the
//! live tokens ([`RefreshState::keep_unstored`]). Waiting for the session's next request
//! *on this replica* to store them loses the session whenever a load balancer sends that
//! request elsewhere first; so a background task owned by [`App`] retries the write:
//!
//! - **Promptly, with bounded backoff.** A round tries every pending rescue, starting
//!   at once, then after [`RETRY_MIN`] doubling up to [`RETRY_MAX`]: once the store is
//!   back, the tokens reach it within about a second. A round stops at the first store
//!   failure, since the others would fail alike (a paused Redis costs one timeout per
//!   round, not one per session).
//! - **Never over newer tokens.** A rescue writes only while the store still holds the
//!   session the tokens follow (same access token) and the session exists (`SET … XX`);
//!   a session that ended meanwhile gets its rescued tokens revoked, and one that moved
//!   on (another replica stored newer tokens) keeps them. While it is pending, this
//!   replica keeps the session's refresh lock in Redis ([`RefreshLock`]), so another
//!   replica that wants to refresh the session waits for the rescued tokens instead of
//!   spending the refresh token again (as long as Redis kept the lock: a Redis that
//!   comes back empty or from an older snapshot has lost it, and then only the
//!   promptness of the retry protects the session).
//! - **Until the session's end.** A rescue still pending when its session reaches its
//!   absolute end is given up, its tokens revoked.
//! - **Serialised with the requests.** Each attempt holds the session's turn in the
//!   [`RefreshGate`](crate::session::refresh::RefreshGate), as a request of the session
//!   on this replica does when it stores the tokens itself ([`App::store_kept`]).
//!
//! The task runs until shutdown, which gets one last round (bounded by the grace
//! period). Nothing here logs a token: log lines name the session by its key's prefix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};

use crate::app::App;
use crate::metrics::RescueOutcome;
use crate::session::refresh::{RefreshState, Unstored};
use crate::session::store::{RefreshLock, StoreError};
use crate::session::{Session, SessionKey};

/// The first pause between rounds that left rescues pending.
pub const RETRY_MIN: Duration = Duration::from_millis(100);

/// The longest pause between rounds: how late, at most, rescued tokens reach a store
/// that is back (plus one command).
pub const RETRY_MAX: Duration = Duration::from_secs(1);

/// The sessions whose rescued tokens wait for the store, each with the Redis refresh
/// lock its refresh took, if any, held until the tokens are stored (or given up).
#[derive(Default)]
pub struct Rescues {
    pending: StdMutex<HashMap<SessionKey, Option<RefreshLock>>>,
    /// Wakes the task when a rescue is added.
    added: Notify,
}

impl Rescues {
    /// Marks `key`'s kept tokens as waiting for the store, with the refresh lock to hold
    /// meanwhile (`None` keeps the one it already holds, if any). Called while holding
    /// the session's turn.
    pub fn add(&self, key: SessionKey, lock: Option<RefreshLock>) {
        let replaced = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let held = pending.entry(key).or_default();
            match lock {
                Some(lock) => held.replace(lock),
                None => None,
            }
        };
        // An older lock of this session (cannot be ours any more: a refresh took a new
        // one after it) expires by itself; dropping it sends nothing.
        drop(replaced);
        self.added.notify_one();
    }

    /// Ends `key`'s rescue, returning the refresh lock it held. Called while holding the
    /// session's turn, so no request can add it again in between.
    fn finish(&self, key: &SessionKey) -> Option<RefreshLock> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
            .flatten()
    }

    fn keys(&self) -> Vec<SessionKey> {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.keys().copied().collect()
    }

    fn is_empty(&self) -> bool {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }
}

/// What became of the tokens a session's turn kept for the store, once offered to it.
pub(crate) enum Kept {
    /// Stored: the session goes on with them.
    Stored(Arc<Session>),
    /// The store holds newer tokens (another replica refreshed): those stay, ours go.
    Superseded,
    /// The session ended meanwhile (a logout, or its end): the tokens were revoked.
    Ended,
    /// The store failed again: still kept (and still pending for the rescue task); the
    /// session goes on with them meanwhile.
    Pending(Arc<Session>, StoreError),
}

impl App {
    /// Offers the tokens `permit` keeps to the store, which holds `stored` now; `None`
    /// when nothing is kept. Every outcome but [`Kept::Pending`] ends the rescue and
    /// releases the refresh lock it held. Runs while holding the session's turn, from a
    /// request of the session on this replica or from the rescue task.
    pub(crate) async fn store_kept(
        &self,
        key: SessionKey,
        permit: &mut RefreshState,
        stored: Option<&Arc<Session>>,
    ) -> Option<Kept> {
        let (kept, outcome) = match permit.take_unstored(stored.map(|s| &**s))? {
            Unstored::Follows(refreshed) => match self.store_refreshed(key, refreshed.clone()).await {
                Ok(Some(session)) => {
                    tracing::info!(session = ?key, "rescued tokens stored");
                    (Kept::Stored(session), RescueOutcome::Stored)
                }
                Ok(None) => (Kept::Ended, RescueOutcome::Ended),
                Err(error) => {
                    tracing::debug!(session = ?key, %error, "rescued tokens still not stored");
                    if let Some(previous) = stored {
                        permit.keep_unstored(refreshed.clone(), previous);
                    }
                    self.rescues.add(key, None);
                    return Some(Kept::Pending(refreshed, error));
                }
            },
            Unstored::Orphaned(tokens) => {
                tracing::info!(session = ?key, "session ended before its rescued tokens were stored; revoking them");
                self.revoke(&tokens).await;
                (Kept::Ended, RescueOutcome::Ended)
            }
            Unstored::Superseded => {
                tracing::info!(session = ?key, "the store holds newer tokens than the rescued ones; dropping these");
                (Kept::Superseded, RescueOutcome::Superseded)
            }
        };
        self.metrics.rescue(outcome);
        self.finish_rescue(&key).await;
        Some(kept)
    }

    /// Ends `key`'s rescue and gives its refresh lock back.
    async fn finish_rescue(&self, key: &SessionKey) {
        if let Some(lock) = self.rescues.finish(key) {
            lock.release().await;
        }
    }

    /// The rescue task: stores rescued tokens until `stop` turns true, then makes one
    /// last round. See the module comment.
    pub async fn store_rescued_tokens(&self, mut stop: watch::Receiver<bool>) {
        let mut pause = RETRY_MIN;
        loop {
            tokio::select! {
                () = self.rescues.added.notified() => {}
                () = crate::server::stop_requested(&mut stop) => break,
            }
            while !self.rescue_round().await {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = crate::server::stop_requested(&mut stop) => {
                        self.rescue_round().await;
                        return;
                    }
                }
                pause = (pause * 2).min(RETRY_MAX);
            }
            pause = RETRY_MIN;
        }
        self.rescue_round().await;
    }

    /// One attempt at every pending rescue; true when none is left. Stops at the first
    /// the store fails: the others would fail alike.
    async fn rescue_round(&self) -> bool {
        for key in self.rescues.keys() {
            if let Err(error) = self.rescue(key).await {
                tracing::debug!(%error, "session store still failing; rescued tokens wait");
                return false;
            }
        }
        self.rescues.is_empty()
    }

    /// One attempt at storing `key`'s rescued tokens; `Err` when the store failed.
    async fn rescue(&self, key: SessionKey) -> Result<(), StoreError> {
        let mut permit = self.refresh_gate.acquire(&key).await;
        if let Some(tokens) = permit.take_unstored_if_ended(SystemTime::now()) {
            tracing::warn!(session = ?key, "session reached its end before the store took its rescued tokens; revoking them");
            self.metrics.rescue(RescueOutcome::Expired);
            self.revoke(&tokens).await;
        }
        if !permit.holds_unstored() {
            // Stored by a request of the session here, or given up just above.
            self.finish_rescue(&key).await;
            return Ok(());
        }
        let stored = self.sessions.get(&key).await?;
        match self.store_kept(key, &mut permit, stored.as_ref()).await {
            Some(Kept::Pending(_, error)) => Err(error),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionId;

    #[test]
    fn a_rescue_keeps_the_lock_it_was_added_with_until_it_is_finished() {
        let rescues = Rescues::default();
        let key = SessionId::generate().key();
        assert!(rescues.is_empty());
        rescues.add(key, Some(RefreshLock::InProcess));
        // Added again by a request whose own attempt failed: the lock stays.
        rescues.add(key, None);
        assert_eq!(rescues.keys(), [key]);
        assert!(matches!(rescues.finish(&key), Some(RefreshLock::InProcess)));
        assert!(rescues.is_empty());
        assert!(rescues.finish(&key).is_none(), "finished once");
    }

    #[tokio::test]
    async fn adding_a_rescue_wakes_the_task_even_if_it_was_not_waiting_yet() {
        let rescues = Rescues::default();
        rescues.add(SessionId::generate().key(), None);
        let woken = tokio::time::timeout(Duration::from_secs(1), rescues.added.notified()).await;
        assert!(woken.is_ok(), "the rescue added before the task waited was missed");
    }
}
