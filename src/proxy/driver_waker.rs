//! The waker an upstream connection's driver is polled with, so that the request's
//! own task does not wake itself.
//!
//! The request's task polls the connection's driver (see `pool`), and hyper registers
//! the driver's waker with everything that can move the connection on: the socket,
//! and the channels the request and the response body go through. Handing the
//! connection a request or taking its body data wakes that waker, though the
//! request's task is the one doing it and polls the driver right after anyway. With
//! the task's own waker each of these wakes schedules the whole task once more: for a
//! small response, one extra poll of the downstream connection, hyper's dispatcher and
//! every future in between per request. [`DriverWaker`] lets the caller mark such a
//! step ([`DriverWaker::inline`]): a wake during it is only recorded, and the caller
//! polls the driver itself. Every other wake (the socket became readable, hyper
//! yielding to the scheduler) reaches the task as before.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use futures_util::task::AtomicWaker;

/// A step of the task's own is running: wakes are recorded, not passed on.
const INLINE: u8 = 1;
/// A wake arrived (while [`INLINE`], one the caller has to act on).
const WOKEN: u8 = 2;

#[derive(Default)]
pub(super) struct DriverWaker {
    /// The task that polled the driver last.
    task: AtomicWaker,
    state: AtomicU8,
}

impl DriverWaker {
    /// A new one, and the [`Waker`] to poll the driver with.
    pub(super) fn new() -> (Arc<Self>, Waker) {
        let shared = Arc::new(DriverWaker::default());
        let waker = Waker::from(shared.clone());
        (shared, waker)
    }

    /// Wakes outside [`Self::inline`] go to `task` (the one about to poll the driver).
    pub(super) fn register(&self, task: &Waker) {
        self.task.register(task);
    }

    /// Runs `step` and returns its result and whether it woke the driver. The caller
    /// must poll the driver after a step that did: the wake was not passed on. A wake
    /// from elsewhere during the step (the socket) is caught the same way, and the
    /// poll that follows sees it too, since readiness is recorded before the wake.
    pub(super) fn inline<R>(&self, step: impl FnOnce() -> R) -> (R, bool) {
        self.state.store(INLINE, Ordering::Release);
        let result = step();
        let state = self.state.swap(0, Ordering::AcqRel);
        (result, state & WOKEN != 0)
    }
}

impl Wake for DriverWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.fetch_or(WOKEN, Ordering::AcqRel) & INLINE == 0 {
            self.task.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct CountingTask(AtomicUsize);

    impl Wake for CountingTask {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn task() -> (Arc<CountingTask>, Waker) {
        let task = Arc::new(CountingTask(AtomicUsize::new(0)));
        (task.clone(), Waker::from(task))
    }

    #[test]
    fn a_wake_outside_a_step_reaches_the_task() {
        let (counter, task) = task();
        let (shared, waker) = DriverWaker::new();
        shared.register(&task);
        waker.wake_by_ref();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_wake_during_a_step_is_reported_to_the_caller_instead() {
        let (counter, task) = task();
        let (shared, waker) = DriverWaker::new();
        shared.register(&task);
        let (value, woken) = shared.inline(|| {
            waker.wake_by_ref();
            7
        });
        assert_eq!((value, woken), (7, true));
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        // The step is over: the next wake goes through again.
        shared.register(&task);
        waker.wake_by_ref();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_step_without_a_wake_reports_none_even_after_earlier_wakes() {
        let (_counter, task) = task();
        let (shared, waker) = DriverWaker::new();
        shared.register(&task);
        waker.wake_by_ref();
        assert_eq!(shared.inline(|| ()), ((), false));
    }

    #[test]
    fn a_wake_from_another_thread_reaches_exactly_one_of_step_and_task() {
        let (counter, task) = task();
        let (shared, waker) = DriverWaker::new();
        for _ in 0..1000 {
            shared.register(&task);
            let remote = waker.clone();
            let thread = std::thread::spawn(move || remote.wake());
            let ((), woken) = shared.inline(std::thread::yield_now);
            thread.join().expect("the waking thread");
            // Before the step or after it, the task is woken; during it, the caller is told.
            let told = usize::from(woken) + counter.0.swap(0, Ordering::SeqCst);
            assert_eq!(told, 1);
        }
    }
}
