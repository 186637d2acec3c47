//! The response timeout. It runs from the last progress of the request, not from
//! its start: every request-body frame pushes the deadline out, so a large upload
//! (which the upstream usually reads in full before answering) is not cut off, while
//! an upstream that stops reading the body or never answers is. Until the answer it
//! also bounds, for an HTTP/1.1 upstream, each wait of the body for the client's next
//! frame (`upload_idle`).
//!
//! A request to an HTTP/2 upstream gets a [`ResponseTimer`] of its own. An upstream
//! HTTP/1.1 connection carries one request at a time, so it keeps one for all of them:
//! registering a timer with tokio for every request and
//! removing it again when the answer comes costs about 1,000 instructions, some 2% of a
//! proxied request under callgrind (README, Performance). The same timer then bounds
//! the response body's waits for its frames (`body_idle`), for the same reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::body_idle::BodyIdleLimit;
use super::pool::UpstreamSlot;
use super::upload_idle::{report_stall, UploadError, UploadIdle};
use super::{ProxyError, RequestBodyWatch};

/// `Progress::waiting_ms` while the body is not waiting for the client.
const NOT_WAITING: u64 = u64::MAX;

/// When the request last made progress, and whether its body waits for the client
/// (`upload_idle`), shared between the body (which moves them) and [`Due`] (which reads
/// them).
#[derive(Debug)]
pub(super) struct Progress {
    start: Instant,
    /// Milliseconds after `start` of the last body frame (0: none yet).
    last_ms: AtomicU64,
    /// Milliseconds after `start` when the body's current wait for the client began, or
    /// [`NOT_WAITING`].
    waiting_ms: AtomicU64,
    /// `server.body_idle_timeout`, for [`Due`]: the longest such wait (`None`: off).
    upload_timeout: Option<Duration>,
    /// The response timer of the task that polls the body bounds its waits, through
    /// [`Due`]: an HTTP/1.1 upstream's request until its response head. Cleared at the
    /// answer ([`Due::answered`]); never set for an HTTP/2 upstream.
    covered: AtomicBool,
    /// The body stalled on its own timer (`upload_idle`), and so the request failed.
    stalled: AtomicBool,
}

impl Progress {
    /// The progress of a request with `body`; `None` for a request without one (most
    /// are), whose timeout simply runs from the start. `upload_timeout` bounds each wait
    /// of the body for the client; `covered` says the response timer bounds them until
    /// the answer.
    pub(super) fn of(body: &Incoming, upload_timeout: Option<Duration>, covered: bool) -> Option<Arc<Self>> {
        (!body.is_end_stream()).then(|| Arc::new(Progress::new(upload_timeout, covered)))
    }

    /// A request body's progress from now (see [`Self::of`]).
    pub(super) fn new(upload_timeout: Option<Duration>, covered: bool) -> Self {
        Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            waiting_ms: AtomicU64::new(NOT_WAITING),
            upload_timeout,
            covered: AtomicBool::new(covered),
            stalled: AtomicBool::new(false),
        }
    }

    fn ms_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_millis())
            .unwrap_or(u64::MAX)
            .min(NOT_WAITING - 1)
    }

    fn touch(&self) {
        let ms = self.ms_since_start(Instant::now());
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn deadline(&self, timeout: Duration) -> Instant {
        let answer = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout;
        match self.client_deadline() {
            Some(upload) => answer.min(upload),
            None => answer,
        }
    }

    /// When the body's current wait for the client passes `server.body_idle_timeout`,
    /// if it is waiting, the timeout is on and the response timer covers the wait.
    fn client_deadline(&self) -> Option<Instant> {
        let timeout = self.upload_timeout?;
        if !self.is_covered() {
            return None;
        }
        match self.waiting_ms.load(Ordering::Relaxed) {
            NOT_WAITING => None,
            ms => Some(self.start + Duration::from_millis(ms) + timeout),
        }
    }

    /// A poll of the body found nothing from the client: its wait starts now, which is
    /// returned.
    pub(super) fn wait_started(&self) -> Instant {
        let now = Instant::now();
        self.waiting_ms.store(self.ms_since_start(now), Ordering::Relaxed);
        now
    }

    /// The body's wait has ended (a frame, its end or an error).
    pub(super) fn wait_ended(&self) {
        self.waiting_ms.store(NOT_WAITING, Ordering::Relaxed);
    }

    /// Whether the response timer bounds the body's waits (see `covered`).
    pub(super) fn is_covered(&self) -> bool {
        self.covered.load(Ordering::Relaxed)
    }

    /// The body stalled on its own timer.
    pub(super) fn stalled(&self) {
        self.stalled.store(true, Ordering::Relaxed);
    }

    pub(super) fn has_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }
}

/// When a request's response is due: `timeout` after its last progress (body frame
/// sent, or its start), or earlier, when its body has waited for the client longer
/// than `server.body_idle_timeout` under this timer (see [`Progress::covered`]).
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

    /// The response head has come: the response timer stops covering the body's waits,
    /// which its own timer bounds from now on (the body is polled again with the
    /// connection, and finds that out).
    pub(super) fn answered(&self) {
        if let Some(progress) = self.progress {
            progress.covered.store(false, Ordering::Relaxed);
        }
    }

    /// Why a wait under this deadline ended without an answer: the client's body
    /// stalled past `server.body_idle_timeout` ([`ProxyError::ClientBodyStalled`], logged
    /// and counted through `limit`), or else the upstream did not answer in time
    /// ([`ProxyError::Timeout`]).
    pub(super) fn expired(&self, limit: &BodyIdleLimit) -> ProxyError {
        let stalled = self.progress.and_then(Progress::client_deadline);
        match (stalled, self.progress.and_then(|progress| progress.upload_timeout)) {
            (Some(deadline), Some(timeout)) if deadline <= Instant::now() => {
                report_stall(limit, timeout);
                ProxyError::ClientBodyStalled
            }
            _ => ProxyError::Timeout,
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
/// frame to [`Progress`], and its end to the downstream connection ([`OpenBody`]); each
/// wait for the client's next frame is bounded (`upload_idle`). (Or no body at all: a
/// bodiless request rebuilt for a retry.)
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
    /// The wait for the client's next frame.
    idle: UploadIdle,
    /// The downstream connection's, for its [`BodyIdleLimit`]; only with `progress` (a
    /// bodiless request has no frame to wait for).
    slot: Option<Arc<UpstreamSlot>>,
}

impl ProgressBody {
    /// `slot` is kept only when there is `progress`, that is a body.
    pub(super) fn new(
        inner: Incoming,
        progress: Option<Arc<Progress>>,
        open: Option<OpenBody>,
        slot: &Arc<UpstreamSlot>,
    ) -> Self {
        ProgressBody {
            inner: Some(inner),
            slot: progress.as_ref().map(|_| slot.clone()),
            progress,
            open,
            idle: UploadIdle::default(),
        }
    }

    /// An empty body reporting to the same [`Progress`].
    pub(super) fn empty(&self) -> Self {
        ProgressBody {
            inner: None,
            progress: self.progress.clone(),
            open: None,
            idle: UploadIdle::default(),
            slot: None,
        }
    }
}

impl Body for ProgressBody {
    type Data = Bytes;
    type Error = UploadError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let polled = Pin::new(&mut *inner).poll_frame(cx);
            let polled = ready!(match (&this.progress, &this.slot) {
                (Some(progress), Some(slot)) => this.idle.check(polled, progress, slot.body_idle(), cx),
                _ => polled.map(|frame| frame.map(|frame| frame.map_err(UploadError::Failed))),
            });
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
        let progress = Progress::new(None, false);
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
