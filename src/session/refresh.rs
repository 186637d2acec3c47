//! Single-flight refresh: at most one token refresh per session at a time, and none
//! again for a while after one met a provider outage.
//!
//! Authelia rotates refresh tokens strictly and revokes the whole grant when one token
//! is used twice, so concurrent requests of a session must wait for a single refresh
//! and then use its result. The in-memory gate serves one process; a distributed store
//! brings a distributed lock implementing the same shape.
//!
//! After an outage (the provider unreachable, or answering that it is not working), the
//! requests that queued behind the failed refresh, and those that come within
//! [`RETRY_AFTER_OUTAGE`], use the session's last tokens instead of each trying again:
//! one after another, each waiting out the provider's timeout, a page's twenty requests
//! would take minutes, and a struggling provider would get twenty grants per session.
//!
//! A refresh whose result the store could not take (a Redis blip after the provider had
//! rotated the refresh token) leaves that result here ([`RefreshState::keep_unstored`]):
//! the stored session's refresh token is spent, and using it again would make Authelia
//! end the grant, so these tokens are stored instead, by the session's next turn here
//! or, without waiting for one, by the rescue task ([`crate::rescue`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Session, SessionKey};
use crate::config::Secret;

/// How long a session's refresh is not tried again after it met an outage.
pub const RETRY_AFTER_OUTAGE: Duration = Duration::from_secs(10);

/// Unused entries are swept once the map holds this many more than after the last sweep.
const SWEEP_SLACK: usize = 1024;

/// Hands out one turn per session key at a time. Every entry is kept while a request holds
/// or waits for it (so two requests of a session can never get different locks), or while
/// it remembers an outage; unused entries are swept as the map grows.
#[derive(Clone, Default)]
pub struct RefreshGate {
    turns: Arc<StdMutex<Turns>>,
}

#[derive(Default)]
struct Turns {
    by_session: HashMap<SessionKey, Arc<Mutex<RefreshState>>>,
    sweep_at: usize,
}

/// What one session's refresh turn knows; the holder of the turn reads and writes it.
#[derive(Debug, Default)]
pub struct RefreshState {
    outage_at: Option<Instant>,
    unstored: Option<KeptTokens>,
}

/// Refreshed tokens the store did not take, and the access token of the session they
/// follow: they apply only while the store still holds that session.
#[derive(Debug)]
struct KeptTokens {
    session: Arc<Session>,
    follows: Secret,
}

/// The right to refresh one session; others of the session wait until it is dropped.
pub type RefreshPermit = OwnedMutexGuard<RefreshState>;

/// What tokens kept by [`RefreshState::keep_unstored`] are worth, given what the store
/// holds now ([`RefreshState::take_unstored`]).
#[derive(Debug)]
pub enum Unstored {
    /// The store still holds the session they follow: store this in its place.
    Follows(Arc<Session>),
    /// The session ended meanwhile: nobody will use these tokens; revoke them.
    Orphaned(Arc<Session>),
    /// The store holds a newer session (another replica refreshed it): its tokens are as
    /// good, and must not be overwritten; these are dropped.
    Superseded,
}

impl RefreshState {
    /// Whether a refresh of this session met an outage less than [`RETRY_AFTER_OUTAGE`]
    /// before `now`, so the session is to go on with its last tokens.
    pub fn backing_off(&self, now: Instant) -> bool {
        self.outage_at
            .is_some_and(|at| now.saturating_duration_since(at) < RETRY_AFTER_OUTAGE)
    }

    /// Records that a refresh met an outage at `now`.
    pub fn met_outage(&mut self, now: Instant) {
        self.outage_at = Some(now);
    }

    /// Records that a refresh went through (or ended the session).
    pub fn settled(&mut self) {
        self.outage_at = None;
    }

    /// Keeps `refreshed`, which the store could not take in place of `previous`, for
    /// this session's next turn.
    pub fn keep_unstored(&mut self, refreshed: Arc<Session>, previous: &Session) {
        self.unstored = Some(KeptTokens {
            session: refreshed,
            follows: previous.tokens.access_token.clone(),
        });
    }

    /// Takes the tokens kept by [`keep_unstored`](Self::keep_unstored), if any, judged
    /// against `stored`, what the store holds now (see [`Unstored`]).
    pub fn take_unstored(&mut self, stored: Option<&Session>) -> Option<Unstored> {
        let unstored = self.unstored.take()?;
        Some(match stored {
            None => Unstored::Orphaned(unstored.session),
            Some(stored) if stored.tokens.access_token == unstored.follows => Unstored::Follows(unstored.session),
            Some(_) => Unstored::Superseded,
        })
    }

    /// Takes the kept tokens if their session has reached its absolute end by `now`:
    /// no store will hold it any more, and the tokens are to be revoked.
    pub fn take_unstored_if_ended(&mut self, now: SystemTime) -> Option<Arc<Session>> {
        if !self.unstored.as_ref()?.session.is_expired(now) {
            return None;
        }
        self.unstored.take().map(|kept| kept.session)
    }

    /// Whether tokens wait here for the store to take them.
    pub fn holds_unstored(&self) -> bool {
        self.unstored.is_some()
    }

    /// Whether the sweep must keep this turn: it remembers a recent outage, or tokens
    /// the store has yet to take for a session that has not reached its end.
    fn worth_keeping(&self, now: Instant, wall: SystemTime) -> bool {
        self.backing_off(now) || self.unstored.as_ref().is_some_and(|u| !u.session.is_expired(wall))
    }
}

impl RefreshGate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until no other refresh of this session runs. The caller re-reads the session
    /// after acquiring: another request may have refreshed it meanwhile.
    pub async fn acquire(&self, key: &SessionKey) -> RefreshPermit {
        let turn = {
            let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
            turns.sweep_if_grown(Instant::now());
            turns.by_session.entry(*key).or_default().clone()
        };
        turn.lock_owned().await
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_session
            .len()
    }
}

impl Turns {
    /// Drops the entries nobody holds or waits for and that remember neither a recent
    /// outage nor tokens to store.
    /// Runs under the map's lock, where no new holder can appear, and only once the map
    /// has grown by [`SWEEP_SLACK`], so its cost is spread over that many refreshes.
    fn sweep_if_grown(&mut self, now: Instant) {
        if self.by_session.len() < self.sweep_at.saturating_add(SWEEP_SLACK) {
            return;
        }
        let wall = SystemTime::now();
        self.by_session.retain(|_, turn| {
            Arc::strong_count(turn) > 1 || turn.try_lock().map_or(true, |state| state.worth_keeping(now, wall))
        });
        self.sweep_at = self.by_session.len();
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
                    let _turn = gate.acquire(&key).await;
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

    #[tokio::test]
    async fn an_outage_is_remembered_for_the_next_turn_until_it_is_old() {
        let gate = RefreshGate::new();
        let key = SessionId::generate().key();
        let now = Instant::now();
        {
            let mut permit = gate.acquire(&key).await;
            assert!(!permit.backing_off(now));
            permit.met_outage(now);
        }
        let mut permit = gate.acquire(&key).await;
        assert!(permit.backing_off(now));
        assert!(permit.backing_off(now + RETRY_AFTER_OUTAGE - Duration::from_millis(1)));
        assert!(!permit.backing_off(now + RETRY_AFTER_OUTAGE));
        permit.settled();
        assert!(!permit.backing_off(now));
    }

    #[tokio::test]
    async fn a_waiter_gets_the_same_turn_however_many_sessions_come_and_go() {
        // With a bounded cache of turns, a busy gate could forget a held turn and hand a
        // second request of that session a lock of its own: two refreshes at once.
        let gate = RefreshGate::new();
        let key = SessionId::generate().key();
        let held = gate.acquire(&key).await;
        for _ in 0..3 * SWEEP_SLACK {
            drop(gate.acquire(&SessionId::generate().key()).await);
        }
        let waiting = tokio::time::timeout(Duration::from_millis(50), gate.acquire(&key)).await;
        assert!(waiting.is_err(), "a second turn of a held session was handed out");
        drop(held);
        assert!(tokio::time::timeout(Duration::from_secs(1), gate.acquire(&key))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn unused_turns_are_swept_only_once_the_map_has_grown_by_the_slack() {
        let gate = RefreshGate::new();
        for _ in 0..10 {
            drop(gate.acquire(&SessionId::generate().key()).await);
        }
        assert_eq!(gate.len(), 10, "swept on every refresh: the cost is not spread");
        for _ in 10..SWEEP_SLACK {
            drop(gate.acquire(&SessionId::generate().key()).await);
        }
        assert_eq!(gate.len(), SWEEP_SLACK);
        drop(gate.acquire(&SessionId::generate().key()).await);
        assert_eq!(gate.len(), 1, "the sweep left only the turn just taken");
    }

    #[tokio::test]
    async fn a_turn_someone_is_about_to_wait_for_is_not_swept_although_its_lock_is_free() {
        // `acquire` clones the turn under the map's lock and locks it after: a sweep in
        // between finds the lock free, and must still keep the entry, or the next request
        // of the session would get a lock of its own.
        let gate = RefreshGate::new();
        let key = SessionId::generate().key();
        drop(gate.acquire(&key).await);
        let about_to_wait = gate.turns.lock().unwrap().by_session.get(&key).cloned().expect("turn");
        for _ in 0..2 * SWEEP_SLACK {
            drop(gate.acquire(&SessionId::generate().key()).await);
        }
        let held = about_to_wait.lock_owned().await;
        let second = tokio::time::timeout(Duration::from_millis(50), gate.acquire(&key)).await;
        assert!(second.is_err(), "the session got a second turn");
        drop(held);
    }

    fn session_with_access_token(token: &str, lifetime: Duration) -> Arc<Session> {
        let mut session = crate::session::tests::session(serde_json::json!({}), lifetime);
        session.tokens.access_token = Secret::new(token);
        Arc::new(session)
    }

    #[test]
    fn unstored_tokens_apply_only_while_the_store_holds_the_session_they_follow() {
        let previous = session_with_access_token("at-1", Duration::from_secs(60));
        let refreshed = session_with_access_token("at-2", Duration::from_secs(60));
        let mut state = RefreshState::default();
        assert!(state.take_unstored(Some(&previous)).is_none(), "nothing kept");

        state.keep_unstored(refreshed.clone(), &previous);
        assert!(state.holds_unstored());
        let taken = state.take_unstored(Some(&previous));
        assert!(
            matches!(&taken, Some(Unstored::Follows(s)) if Arc::ptr_eq(s, &refreshed)),
            "{taken:?}"
        );
        assert!(!state.holds_unstored());
        assert!(state.take_unstored(Some(&previous)).is_none(), "taken once");

        // The session ended meanwhile: the tokens are nobody's, to be revoked.
        state.keep_unstored(refreshed.clone(), &previous);
        assert!(matches!(state.take_unstored(None), Some(Unstored::Orphaned(s)) if Arc::ptr_eq(&s, &refreshed)));

        // Another replica stored a newer session: ours are dropped, not stored over it.
        state.keep_unstored(refreshed.clone(), &previous);
        let newer = session_with_access_token("at-3", Duration::from_secs(60));
        assert!(matches!(state.take_unstored(Some(&newer)), Some(Unstored::Superseded)));
        assert!(state.take_unstored(Some(&previous)).is_none(), "dropped for good");
    }

    #[test]
    fn unstored_tokens_are_given_up_only_once_their_session_has_ended() {
        let previous = session_with_access_token("at-1", Duration::from_secs(60));
        let refreshed = session_with_access_token("at-2", Duration::from_secs(60));
        let mut state = RefreshState::default();
        assert!(
            state.take_unstored_if_ended(SystemTime::now()).is_none(),
            "nothing kept"
        );
        state.keep_unstored(refreshed.clone(), &previous);
        assert!(state.take_unstored_if_ended(SystemTime::now()).is_none());
        assert!(state.holds_unstored(), "live tokens were given up");
        let ended = state.take_unstored_if_ended(refreshed.expires_at);
        assert!(matches!(&ended, Some(s) if Arc::ptr_eq(s, &refreshed)), "{ended:?}");
        assert!(!state.holds_unstored());
    }

    #[tokio::test]
    async fn a_turn_holding_unstored_tokens_survives_sweeps_until_its_session_ends() {
        let gate = RefreshGate::new();
        let previous = session_with_access_token("at-1", Duration::from_secs(60));
        let live_key = SessionId::generate().key();
        let ended_key = SessionId::generate().key();
        gate.acquire(&live_key)
            .await
            .keep_unstored(session_with_access_token("at-2", Duration::from_secs(60)), &previous);
        gate.acquire(&ended_key)
            .await
            .keep_unstored(session_with_access_token("at-2", Duration::ZERO), &previous);
        for _ in 0..SWEEP_SLACK + 10 {
            drop(gate.acquire(&SessionId::generate().key()).await);
        }
        assert!(gate.len() < SWEEP_SLACK, "swept: {} left", gate.len());
        let kept = gate.acquire(&live_key).await.take_unstored(Some(&previous));
        assert!(
            matches!(kept, Some(Unstored::Follows(_))),
            "the tokens to store were swept: {kept:?}"
        );
        let gone = gate.acquire(&ended_key).await.take_unstored(Some(&previous));
        assert!(gone.is_none(), "an ended session's tokens were kept: {gone:?}");
    }

    #[tokio::test]
    async fn unused_turns_are_swept_but_held_and_backing_off_ones_stay() {
        let gate = RefreshGate::new();
        let held_key = SessionId::generate().key();
        let outage_key = SessionId::generate().key();
        let held = gate.acquire(&held_key).await;
        gate.acquire(&outage_key).await.met_outage(Instant::now());
        for _ in 0..SWEEP_SLACK + 10 {
            drop(gate.acquire(&SessionId::generate().key()).await);
        }
        assert!(gate.len() < SWEEP_SLACK, "swept: {} left", gate.len());
        assert!(
            gate.acquire(&outage_key).await.backing_off(Instant::now()),
            "the outage was forgotten"
        );
        let _ = held;
        let second = tokio::time::timeout(Duration::from_millis(50), gate.acquire(&held_key)).await;
        assert!(second.is_err(), "the held turn was swept");
    }
}
