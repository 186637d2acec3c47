//! The memory store's per-thread memo: the sessions this thread found in the store
//! within the last moment, those in use here as copies of its own.
//!
//! Why: a moka lookup writes to memory that every core shares (its log of reads, the
//! entry's last-access time, the reference count of the stored session and of its
//! header values), so the cores serving requests of one session pass those cache lines
//! back and forth on every request. A hit here reads this thread's memory and one
//! counter that changes only when a session is stored or removed.
//!
//! What stays exact: every insert and removal bumps the store's generation once it is
//! done, and an entry remembered under an older generation is never used, so no thread
//! serves a removed (logged out) or replaced (refreshed) session once `remove` or
//! `insert` has returned. The generation is read before the store is asked, so an entry
//! can only be remembered under a generation that was current before the store answered.
//! The absolute deadline is checked on every hit by the caller.
//!
//! What becomes approximate: the store hears of a session's use at most once per
//! [`NearCache::confirm_every`] per thread, so idleness is measured from up to that much
//! earlier (a session may idle out that much early: at most a second, and a tenth of a
//! short idle timeout), and a session the store evicted to keep its memory bound can be
//! served here until then. A thread remembers at most [`SLOTS`] sessions, one per slot
//! picked by the key's first byte (keys are hashes, and only sessions found in the store
//! are remembered, so a client cannot aim at a slot); an entry's memory goes when its
//! slot is taken by another session or the thread ends.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::session::{Session, SessionKey};

/// Sessions remembered per thread and store.
pub(super) const SLOTS: usize = 256;

/// How long a remembered session is used without asking the store again, at most.
const CONFIRM_EVERY: Duration = Duration::from_secs(1);

/// Identifies a store among those a thread remembers sessions of (tests run several).
static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static MEMOS: RefCell<Vec<Memo>> = const { RefCell::new(Vec::new()) };
}

/// One store's memo on one thread.
struct Memo {
    store: u64,
    slots: Box<[Option<Remembered>]>,
}

struct Remembered {
    key: SessionKey,
    session: Arc<Session>,
    generation: u64,
    confirmed_at: SystemTime,
}

/// The handle a store keeps: its identity among memos and its generation. Clones share both.
#[derive(Clone)]
pub(super) struct NearCache {
    store: u64,
    generation: Arc<AtomicU64>,
    confirm_every: Duration,
}

impl NearCache {
    /// A memo for a store whose sessions idle out after `idle_timeout`.
    pub(super) fn new(idle_timeout: Duration) -> Self {
        NearCache {
            store: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            generation: Arc::new(AtomicU64::new(0)),
            confirm_every: CONFIRM_EVERY.min(idle_timeout / 10),
        }
    }

    /// The current generation: read it before asking the store, remember under it.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Every remembered session, on every thread, is to be asked for again: call after
    /// the store changed (an insert or a removal has completed).
    pub(super) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The session under `key` as this thread remembers it, if it was found in the store
    /// under the current generation less than `confirm_every` before `now`.
    pub(super) fn lookup(&self, key: &SessionKey, now: SystemTime) -> Option<Arc<Session>> {
        let generation = self.generation();
        MEMOS.with_borrow(|memos| {
            let memo = memos.iter().find(|memo| memo.store == self.store)?;
            let remembered = memo.slots.get(slot_of(key))?.as_ref()?;
            let fresh = now
                .duration_since(remembered.confirmed_at)
                .is_ok_and(|age| age < self.confirm_every);
            (remembered.key == *key && remembered.generation == generation && fresh).then(|| remembered.session.clone())
        })
    }

    /// Remembers `session`, found under `key` at `now` with the store at `generation`,
    /// and returns what this thread is to use. The first time, that is the store's own
    /// `session`; when the slot already held the key (the session is in use on this
    /// thread), a copy of this thread's own, which costs a few allocations once a second.
    pub(super) fn remember(
        &self,
        key: SessionKey,
        session: &Arc<Session>,
        generation: u64,
        now: SystemTime,
    ) -> Arc<Session> {
        MEMOS.with_borrow_mut(|memos| {
            let index = match memos.iter().position(|memo| memo.store == self.store) {
                Some(index) => index,
                None => {
                    memos.push(Memo {
                        store: self.store,
                        slots: (0..SLOTS).map(|_| None).collect(),
                    });
                    memos.len() - 1
                }
            };
            let Some(slot) = memos[index].slots.get_mut(slot_of(&key)) else {
                return session.clone();
            };
            let in_use_here = slot.as_ref().is_some_and(|remembered| remembered.key == key);
            let kept = if in_use_here {
                Arc::new(session.unshared_copy())
            } else {
                session.clone()
            };
            *slot = Some(Remembered {
                key,
                session: kept.clone(),
                generation,
                confirmed_at: now,
            });
            kept
        })
    }
}

fn slot_of(key: &SessionKey) -> usize {
    usize::from(key.0[0]) % SLOTS
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::session::SessionId;

    fn test_session(user: &str) -> Session {
        crate::session::tests::session(json!({ "preferred_username": user }), Duration::from_secs(60))
    }

    fn user(session: &Session) -> &[u8] {
        session.upstream_headers.identity[0].1.as_bytes()
    }

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + NOW
    }

    #[test]
    fn a_remembered_session_is_used_until_it_is_a_second_old() {
        let near = NearCache::new(Duration::from_secs(3600));
        let key = SessionId::generate().key();
        let stored = Arc::new(test_session("john"));
        assert!(near.lookup(&key, now()).is_none());
        let kept = near.remember(key, &stored, near.generation(), now());
        assert!(Arc::ptr_eq(&kept, &stored), "first sighting: the store's own session");
        let hit = near
            .lookup(&key, now() + Duration::from_millis(999))
            .expect("remembered");
        assert!(Arc::ptr_eq(&hit, &stored));
        assert!(
            near.lookup(&key, now() + Duration::from_secs(1)).is_none(),
            "a second old"
        );
        assert!(
            near.lookup(&key, now() - Duration::from_secs(5)).is_none(),
            "clock went back"
        );
    }

    #[test]
    fn a_session_in_use_on_this_thread_becomes_a_copy_of_its_own() {
        let near = NearCache::new(Duration::from_secs(3600));
        let key = SessionId::generate().key();
        let stored = Arc::new(test_session("john"));
        near.remember(key, &stored, near.generation(), now());
        let later = now() + Duration::from_secs(2);
        assert!(near.lookup(&key, later).is_none());
        let copy = near.remember(key, &stored, near.generation(), later);
        assert!(!Arc::ptr_eq(&copy, &stored));
        assert!(Arc::ptr_eq(&near.lookup(&key, later).expect("remembered"), &copy));
        assert_eq!(user(&copy), b"john");
        assert_ne!(
            user(&copy).as_ptr(),
            user(&stored).as_ptr(),
            "the copy's header values are its own"
        );
    }

    #[test]
    fn nothing_remembered_before_a_change_of_the_store_is_used_after_it() {
        let near = NearCache::new(Duration::from_secs(3600));
        let key = SessionId::generate().key();
        let generation = near.generation();
        near.remember(key, &Arc::new(test_session("john")), generation, now());
        near.invalidate();
        assert!(near.lookup(&key, now()).is_none());
        // Found before the change, remembered after it: still the old generation.
        near.remember(key, &Arc::new(test_session("john")), generation, now());
        assert!(near.lookup(&key, now()).is_none());
    }

    #[test]
    fn other_threads_and_other_stores_remember_for_themselves() {
        let near = NearCache::new(Duration::from_secs(3600));
        let other_store = NearCache::new(Duration::from_secs(3600));
        let key = SessionId::generate().key();
        near.remember(key, &Arc::new(test_session("john")), near.generation(), now());
        assert!(other_store.lookup(&key, now()).is_none());
        std::thread::scope(|scope| {
            scope.spawn(|| assert!(near.lookup(&key, now()).is_none()));
        });
        assert!(near.lookup(&key, now()).is_some());
    }

    #[test]
    fn keys_in_different_slots_are_remembered_side_by_side() {
        let near = NearCache::new(Duration::from_secs(3600));
        let keys: Vec<SessionKey> = (0..SLOTS).map(|i| SessionKey([i as u8; 32])).collect();
        for key in &keys {
            near.remember(*key, &Arc::new(test_session("john")), near.generation(), now());
        }
        for key in &keys {
            assert!(near.lookup(key, now()).is_some(), "{key:?} forgotten");
        }
    }

    #[test]
    fn keys_sharing_a_slot_replace_each_other() {
        let near = NearCache::new(Duration::from_secs(3600));
        let first = SessionId::generate().key();
        let second = (0..)
            .map(|_| SessionId::generate().key())
            .find(|key| slot_of(key) == slot_of(&first) && key != &first)
            .expect("a key in the same slot");
        near.remember(first, &Arc::new(test_session("john")), near.generation(), now());
        near.remember(second, &Arc::new(test_session("mary")), near.generation(), now());
        assert!(near.lookup(&first, now()).is_none());
        assert_eq!(user(&near.lookup(&second, now()).expect("remembered")), b"mary");
    }

    #[test]
    fn a_short_idle_timeout_shortens_the_time_a_session_is_used_unasked() {
        assert_eq!(NearCache::new(Duration::from_secs(3600)).confirm_every, CONFIRM_EVERY);
        assert_eq!(
            NearCache::new(Duration::from_secs(2)).confirm_every,
            Duration::from_millis(200)
        );
    }
}
