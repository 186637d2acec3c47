//! The response timeout. It runs from the last progress of the request, not from
//! its start: every request-body frame pushes the deadline out, so a large upload
//! (which the upstream usually reads in full before answering) is not cut off, while
//! an upstream that stops reading the body or never answers is.
//!
//! A request to an HTTP/2 upstream gets a [`ResponseTimer`] of its own. An upstream
//! HTTP/1.1 connection carries one request at a time, so it keeps one for all of them:
//! registering a timer with tokio for every request and
//! removing it again when the answer comes costs about 1,000 instructions, some 2% of a
//! proxied request under callgrind (README, Performance). The same timer then bounds
//! the response body's waits for its frames (`body_idle`), for the same reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::RequestBodyWatch;

/// When the request last made progress, shared between the body (which moves it)
/// and [`Due`] (which reads it).
#[derive(Debug)]
pub(super) struct Progress {
    start: Instant,
    /// Milliseconds after `start` of the last body frame (0: none yet).
    last_ms: AtomicU64,
}

impl Progress {
    /// The progress of a request with `body`; `None` for a request without one (most
    /// are), whose timeout simply runs from the start.
    pub(super) fn of(body: &Incoming) -> Option<Arc<Self>> {
        (!body.is_end_stream()).then(|| {
            Arc::new(Progress {
                start: Instant::now(),
                last_ms: AtomicU64::new(0),
            })
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn deadline(&self, timeout: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout
    }
}

/// When a request's response is due: `timeout` after its last progress (body frame
/// sent, or its start).
#[derive(Clone, Copy)]
pub(super) struct Due<'a> {
    progress: Option<&'a Progress>,
    start: Instant,
    timeout: Duration,
}

impl<'a> Due<'a> {
    /// For a request starting now, whose progress is `progress` (from [`Progress::of`]).
    pub(super) fn from_now(progress: Option<&'a Progress>, timeout: Duration) -> Self {
        Due {
            progress,
            start: Instant::now(),
            timeout,
        }
    }

    fn at(&self) -> Instant {
        match self.progress {
            Some(progress) => progress.deadline(self.timeout),
            None => self.start + self.timeout,
        }
    }
}

/// The response timer an upstream HTTP/1.1 connection keeps for the requests it
/// carries, one after another.
///
/// The sleep is moved to a request's deadline only when that is earlier than the one
/// it is set to (the connection's first request, or an earlier deadline than all
/// before it). Otherwise it is left where an earlier request set it, and when it fires
/// there the deadline of the request now waiting is worked out, and the sleep moved
/// on to it unless it has passed. Later requests have later deadlines, so a connection
/// in steady use moves its sleep about once per timeout period, and a request costs a
/// comparison and a poll of the sleep.
#[derive(Default)]
pub(super) struct ResponseTimer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl ResponseTimer {
    /// Awaits `fut` until it resolves, or `None` once `due` has passed. `fut` is
    /// pinned by the caller and only borrowed here: a future taken by value would be
    /// laid out once more in each future awaiting it, and the whole request future
    /// moved at that size.
    pub(super) async fn within<F: Future>(&mut self, due: Due<'_>, mut fut: Pin<&mut F>) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            self.poll_passed(|| due.at(), cx).map(|()| None)
        })
        .await
    }

    /// Ready once the deadline `at` returns has passed; until then the task is woken
    /// when it may have. `at` is asked again whenever the sleep fires: the deadline may
    /// have moved on since (a request's body progress). Also the wait of a response body
    /// for its next frame (`body_idle`), on the same timer.
    pub(super) fn poll_passed(&mut self, at: impl Fn() -> Instant, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = at();
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() > deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        loop {
            ready!(sleep.as_mut().poll(cx));
            // It fired: at this wait's deadline, or at an earlier one it was left at (an
            // earlier request's or body's, or this one's before a body frame moved it on).
            let deadline = at();
            if deadline <= Instant::now() {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(deadline);
        }
    }

    /// A timer already set to `deadline`, as a response head's wait leaves a kept
    /// connection's.
    #[cfg(test)]
    pub(super) fn at(deadline: Instant) -> Self {
        ResponseTimer {
            sleep: Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    /// Whether a sleep was ever made (and registered with tokio's timer when polled).
    #[cfg(test)]
    pub(super) fn is_armed(&self) -> bool {
        self.sleep.is_some()
    }
}

/// A forwarded request body not yet ended: its downstream connection is told when this
/// is dropped ([`RequestBodyWatch::ended`]).
pub(super) struct OpenBody(Arc<dyn RequestBodyWatch>);

impl OpenBody {
    pub(super) fn new(watch: &Arc<dyn RequestBodyWatch>) -> Self {
        watch.opened();
        OpenBody(watch.clone())
    }
}

impl Drop for OpenBody {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// The downstream request body, streamed as is but for its trailers, reporting each
/// frame to [`Progress`], and its end to the downstream connection ([`OpenBody`]). (Or
/// no body at all: a bodiless request rebuilt for a retry.)
///
/// Request trailers are dropped, as nginx does (RFC 9110 §6.5.1 lets an intermediary
/// discard them): they would reach the upstream after the body, past the phases that
/// strip identity and `X-Forwarded-*` headers, and an upstream that merges trailers into
/// the headers would take a client's `Remote-User` trailer for ours. The request's
/// `Trailer` declaration goes with them (`headers::remove_hop_by_hop`).
pub(super) struct ProgressBody {
    inner: Option<Incoming>,
    progress: Option<Arc<Progress>>,
    /// Dropped when the body ends, whoever keeps the body after that.
    open: Option<OpenBody>,
}

impl ProgressBody {
    pub(super) fn new(inner: Incoming, progress: Option<Arc<Progress>>, open: Option<OpenBody>) -> Self {
        ProgressBody {
            inner: Some(inner),
            progress,
            open,
        }
    }

    /// An empty body reporting to the same [`Progress`].
    pub(super) fn empty(&self) -> Self {
        ProgressBody {
            inner: None,
            progress: self.progress.clone(),
            open: None,
        }
    }
}

impl Body for ProgressBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let polled = ready!(Pin::new(&mut *inner).poll_frame(cx));
            let (progressed, ended) = match &polled {
                Some(Ok(_)) => (true, inner.is_end_stream()),
                None => (true, true),
                Some(Err(_)) => (false, true),
            };
            if let (true, Some(progress)) = (progressed, &this.progress) {
                progress.touch();
            }
            if ended {
                this.open = None;
            }
            match polled {
                // The last frame: polled on to the end of the body, which comes next.
                Some(Ok(frame)) if frame.is_trailers() => {}
                polled => return Poll::Ready(polled),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or(SizeHint::with_exact(0), Incoming::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;
    use std::pin::pin;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// An answer that comes after a tenth of a second (the timer is set up only once a
    /// request has to wait).
    async fn answer(value: u32) -> u32 {
        tokio::time::sleep(SECOND / 10).await;
        value
    }

    /// How long `timer` let a request that never gets its answer wait, with `timeout`.
    async fn waited_for_nothing(timer: &mut ResponseTimer, timeout: Duration) -> Duration {
        let started = Instant::now();
        let due = Due::from_now(None, timeout);
        assert!(timer.within(due, pin!(pending::<()>())).await.is_none());
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_is_returned() {
        let mut timer = ResponseTimer::default();
        let answer = async {
            tokio::time::sleep(SECOND).await;
            42
        };
        assert_eq!(
            timer.within(Due::from_now(None, 2 * SECOND), pin!(answer)).await,
            Some(42)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_waits_its_own_timeout_after_earlier_ones() {
        let mut timer = ResponseTimer::default();
        let quick = Due::from_now(None, 10 * SECOND);
        assert_eq!(timer.within(quick, pin!(answer(1))).await, Some(1));
        // The timer is left at the first request's deadline, 10 s out: an earlier
        // deadline moves it back.
        assert_eq!(waited_for_nothing(&mut timer, SECOND).await, SECOND);
        assert_eq!(
            timer.within(Due::from_now(None, 10 * SECOND), pin!(answer(2))).await,
            Some(2)
        );
        // A later one leaves it, and it fires first, at the earlier request's deadline.
        tokio::time::sleep(3 * SECOND).await;
        assert_eq!(waited_for_nothing(&mut timer, 10 * SECOND).await, 10 * SECOND);
        assert_eq!(waited_for_nothing(&mut timer, 5 * SECOND).await, 5 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn body_progress_moves_the_deadline_on() {
        let mut timer = ResponseTimer::default();
        let progress = Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        };
        let due = Due::from_now(Some(&progress), 2 * SECOND);
        let uploading = async {
            for _ in 0..3 {
                tokio::time::sleep(SECOND + SECOND / 2).await;
                progress.touch();
            }
            pending::<()>().await;
        };
        let started = Instant::now();
        assert!(timer.within(due, pin!(uploading)).await.is_none());
        // The last frame went at 4.5 s: due 2 s after it.
        assert_eq!(started.elapsed(), Duration::from_millis(6500));
    }
}
