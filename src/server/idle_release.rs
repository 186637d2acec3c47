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
//! One timer per connection, re-armed only when it fires (as the head timer is): while
//! requests keep coming it fires once per [`RELEASE_AFTER`] and finds the connection busy
//! or recently used; a request itself pays nothing. Once the connection has been given
//! back the timer rests, and the connection's next poll that finds it in use again (its
//! next request wakes the connection's task) sets it once more.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

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

/// The connection's release timer: polled with the connection on every wake.
pub(super) struct ReleaseTimer {
    clock: Arc<HeadClock>,
    kept: Arc<dyn Release>,
    sleep: Pin<Box<Sleep>>,
    /// The sleep has been polled (and so registered) since it was last set.
    armed: bool,
    /// The start of the idle period whose connection was released: the timer rests
    /// until the connection is used again.
    released: Option<Instant>,
}

impl ReleaseTimer {
    /// Gives up what `kept` holds once `clock` has been idle for [`RELEASE_AFTER`].
    pub(super) fn new(clock: Arc<HeadClock>, kept: Arc<dyn Release>) -> Self {
        ReleaseTimer {
            clock,
            kept,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now() + RELEASE_AFTER)),
            armed: false,
            released: None,
        }
    }

    /// Releases the kept connection when it is time. Cheap while the sleep has not
    /// fired (one check of it), or while resting (the clock's loads).
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) {
        if let Some(since) = self.released {
            if self.clock.idle_since() == Some(since) {
                return;
            }
            // Used since it was released: watch for the next quiet period.
            self.released = None;
            self.sleep.as_mut().reset(Instant::now() + RELEASE_AFTER);
            self.armed = false;
        }
        loop {
            if self.armed {
                if !self.sleep.is_elapsed() {
                    return;
                }
                let now = Instant::now();
                let next = match self.clock.idle_since() {
                    Some(since) if since + RELEASE_AFTER <= now => {
                        self.kept.release();
                        self.released = Some(since);
                        return;
                    }
                    Some(since) => since + RELEASE_AFTER,
                    None => now + RELEASE_AFTER,
                };
                self.sleep.as_mut().reset(next);
            }
            self.armed = true;
            if self.sleep.as_mut().poll(cx).is_pending() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Poll;

    use super::*;

    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl Release for Counted {
        fn release(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Watched {
        clock: Arc<HeadClock>,
        released: Arc<Counted>,
        timer: ReleaseTimer,
    }

    impl Watched {
        fn new() -> Self {
            let clock = HeadClock::new(Arc::default());
            let released = Arc::new(Counted::default());
            let timer = ReleaseTimer::new(clock.clone(), released.clone());
            Watched { clock, released, timer }
        }

        fn releases(&self) -> usize {
            self.released.0.load(Ordering::SeqCst)
        }

        /// Polls the timer as the connection's task does, after `wait` (tokio's clock
        /// is paused: it advances at once, firing every timer due on the way).
        async fn poll_after(&mut self, wait: Duration) {
            tokio::time::sleep(wait).await;
            std::future::poll_fn(|cx| {
                self.timer.poll(cx);
                Poll::Ready(())
            })
            .await;
        }

        /// One request served: busy for `serving`, then idle.
        async fn request(&mut self, serving: Duration) {
            self.clock.request_started();
            self.poll_after(serving).await;
            self.clock.response_sent();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_for_a_second_gives_its_upstream_connection_back_once() {
        let mut watched = Watched::new();
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
        let mut watched = Watched::new();
        for _ in 0..30 {
            watched.request(Duration::from_millis(5)).await;
            watched.poll_after(Duration::from_millis(700)).await;
        }
        assert_eq!(watched.releases(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_longer_than_a_second_is_not_quiet() {
        let mut watched = Watched::new();
        watched.request(Duration::from_secs(5)).await;
        assert_eq!(watched.releases(), 0, "busy all along");
        watched.poll_after(Duration::from_millis(1100)).await;
        assert_eq!(watched.releases(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn each_quiet_period_after_use_gives_the_connection_back_again() {
        let mut watched = Watched::new();
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
    async fn a_resting_timer_does_not_wake_the_connection() {
        let mut watched = Watched::new();
        watched.request(Duration::from_millis(10)).await;
        watched.poll_after(Duration::from_secs(2)).await;
        assert_eq!(watched.releases(), 1);
        let woken = Arc::new(AtomicUsize::new(0));
        let waker = waker_counting(woken.clone());
        watched.timer.poll(&mut Context::from_waker(&waker));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(woken.load(Ordering::SeqCst), 0);
    }

    fn waker_counting(count: Arc<AtomicUsize>) -> std::task::Waker {
        struct Counting(Arc<AtomicUsize>);
        impl std::task::Wake for Counting {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        std::task::Waker::from(Arc::new(Counting(count)))
    }
}
