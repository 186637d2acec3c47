//! Hands a quiet downstream connection's upstream connection to the shared pool.
//!
//! A downstream connection keeps the upstream connection its last request used
//! (`proxy::UpstreamSlot`), so that its next request finds it without touching any
//! shared state. But a browser keeps its connection open between clicks, up to the head
//! timeout (`server.header_read_timeout`, 30 s by default): kept all that time, its
//! upstream connection would be one more that the upstream holds open for nobody (a
//! threaded server spends a thread on each) and whose buffers stay allocated here. Once
//! the downstream connection has been idle for [`RELEASE_AFTER`], its upstream connection
//! goes to the shared idle list, which is bounded (as by nginx's `keepalive`) and which
//! every connection's next request draws from: a page's burst of requests keeps its
//! connection, a reader's pause gives it back.
//!
//! The connection's head timer ([`super::head_timeout::HeadTimer`]) fires for this too,
//! so that a poll of the connection still checks one sleep: while requests keep coming
//! it fires once per [`RELEASE_AFTER`] and finds the connection busy or recently used; a
//! request itself pays one check of a field. Once the connection has been given back the
//! release rests, and the connection's next poll that finds it in use again (its next
//! request wakes the connection's task) has the timer look once more.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::head_timeout::HeadClock;
use crate::proxy::UpstreamSlot;

/// How long a downstream connection stays idle before its upstream connection goes to
/// the shared pool: longer than the gaps within a page load, shorter than a reader's
/// pause.
pub(super) const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// What a quiet connection gives up.
pub(super) trait Release: Send + Sync {
    fn release(&self);
}

impl Release for UpstreamSlot {
    fn release(&self) {
        self.release_kept();
    }
}

/// When a connection's kept upstream connection goes: decided each time the
/// connection's timer fires.
pub(super) struct IdleRelease {
    kept: Arc<dyn Release>,
    /// The start of the idle period whose connection was released: nothing to watch
    /// until the connection is used again.
    released: Option<Instant>,
}

impl IdleRelease {
    pub(super) fn new(kept: Arc<dyn Release>) -> Self {
        IdleRelease { kept, released: None }
    }

    /// Checked on every poll of the connection: whether it has been used since its
    /// release (then the timer must look again, and this starts watching anew). One
    /// test of a field unless released.
    pub(super) fn in_use_again(&mut self, clock: &HeadClock) -> bool {
        match self.released {
            Some(since) if clock.idle_since() != Some(since) => {
                self.released = None;
                true
            }
            _ => false,
        }
    }

    /// The timer fired at `now` with the connection idle since `idle_since` (`None`:
    /// busy): releases the kept connection if it has been quiet for [`RELEASE_AFTER`].
    /// When the timer should fire next for this, always after `now`; `None` once
    /// released (until [`Self::in_use_again`]).
    pub(super) fn on_fired(&mut self, idle_since: Option<Instant>, now: Instant) -> Option<Instant> {
        match idle_since {
            None => Some(now + RELEASE_AFTER),
            Some(since) if self.released == Some(since) => None,
            Some(since) if since + RELEASE_AFTER <= now => {
                self.kept.release();
                self.released = Some(since);
                None
            }
            Some(since) => Some(since + RELEASE_AFTER),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use super::*;
    use crate::server::head_timeout::HeadTimer;

    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl Release for Counted {
        fn release(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A connection's clock and its head timer, releasing into a counter.
    struct Watched {
        clock: Arc<HeadClock>,
        released: Arc<Counted>,
        timer: HeadTimer,
    }

    impl Watched {
        fn new(head_timeout: Duration) -> Self {
            let clock = HeadClock::new(Arc::default());
            let released = Arc::new(Counted::default());
            let timer = HeadTimer::new(clock.clone(), head_timeout).releasing(IdleRelease::new(released.clone()));
            Watched { clock, released, timer }
        }

        fn releases(&self) -> usize {
            self.released.0.load(Ordering::SeqCst)
        }

        /// Polls the timer as the connection's task does, after `wait` (tokio's clock
        /// is paused: it advances at once, firing every timer due on the way); whether
        /// the head timeout has expired.
        async fn poll_after(&mut self, wait: Duration) -> bool {
            tokio::time::sleep(wait).await;
            std::future::poll_fn(|cx| Poll::Ready(self.timer.poll_expired(cx).is_ready())).await
        }

        /// One request served: busy for `serving`, then idle.
        async fn request(&mut self, serving: Duration) {
            self.clock.request_started();
            self.poll_after(serving).await;
            self.clock.response_sent();
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_for_a_second_gives_its_upstream_connection_back_once() {
        let mut watched = Watched::new(HOUR);
        watched.request(Duration::from_millis(10)).await;
        watched.poll_after(Duration::from_millis(900)).await;
        assert_eq!(watched.releases(), 0, "idle for 0.9 s");
        watched.poll_after(Duration::from_millis(200)).await;
        assert_eq!(watched.releases(), 1, "idle for 1.1 s");
        watched.poll_after(Duration::from_secs(20)).await;
        assert_eq!(watched.releases(), 1, "once per quiet period");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_closer_together_than_a_second_keep_the_connection() {
        let mut watched = Watched::new(HOUR);
        for _ in 0..30 {
            watched.request(Duration::from_millis(5)).await;
            watched.poll_after(Duration::from_millis(700)).await;
        }
        assert_eq!(watched.releases(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_longer_than_a_second_is_not_quiet() {
        let mut watched = Watched::new(HOUR);
        watched.request(Duration::from_secs(5)).await;
        assert_eq!(watched.releases(), 0, "busy all along");
        watched.poll_after(Duration::from_millis(1100)).await;
        assert_eq!(watched.releases(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn each_quiet_period_after_use_gives_the_connection_back_again() {
        let mut watched = Watched::new(HOUR);
        watched.request(Duration::from_millis(10)).await;
        watched.poll_after(Duration::from_secs(3)).await;
        assert_eq!(watched.releases(), 1);
        // The next click, 3 s on: its request wakes the connection's task.
        for expected in 2..5 {
            watched.request(Duration::from_millis(10)).await;
            watched.poll_after(Duration::from_millis(500)).await;
            assert_eq!(watched.releases(), expected - 1, "not yet quiet");
            watched.poll_after(Duration::from_millis(600)).await;
            assert_eq!(watched.releases(), expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_connection_does_not_wake_its_task_until_the_head_timeout() {
        let timeout = Duration::from_secs(30);
        let mut watched = Watched::new(timeout);
        watched.request(Duration::from_millis(10)).await;
        // The poll that releases (and sets the timer) comes from a task that counts its wakes.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let woken = Arc::new(AtomicUsize::new(0));
        let waker = std::task::Waker::from(Arc::new(Counting(woken.clone())));
        assert!(watched
            .timer
            .poll_expired(&mut Context::from_waker(&waker))
            .is_pending());
        assert_eq!(watched.releases(), 1);
        tokio::time::sleep(Duration::from_secs(27)).await;
        assert_eq!(woken.load(Ordering::SeqCst), 0, "no wake before the head timeout");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(woken.load(Ordering::SeqCst), 1, "woken for the head timeout");
        assert!(watched.timer.poll_expired(&mut Context::from_waker(&waker)).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn the_head_timeout_still_closes_a_busy_or_quiet_connection_on_time() {
        let timeout = Duration::from_secs(10);
        // Requests every 0.7 s for 20 s, then nothing: closed 10 s after the last one.
        let mut watched = Watched::new(timeout);
        for _ in 0..28 {
            watched.request(Duration::from_millis(10)).await;
            assert!(!watched.poll_after(Duration::from_millis(690)).await);
        }
        watched.request(Duration::from_millis(10)).await;
        assert!(!watched.poll_after(Duration::from_millis(9_990)).await);
        assert!(watched.poll_after(Duration::from_millis(20)).await);
        assert_eq!(watched.releases(), 1);
        // A head timeout shorter than the release: closed before anything is released.
        let mut watched = Watched::new(Duration::from_millis(500));
        watched.request(Duration::from_millis(10)).await;
        assert!(watched.poll_after(Duration::from_millis(600)).await);
        assert_eq!(watched.releases(), 0);
    }

    struct Counting(Arc<AtomicUsize>);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}
