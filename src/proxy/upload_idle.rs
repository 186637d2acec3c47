//! The client body idle timeout (`server.body_idle_timeout`): each frame of a request
//! body must follow the one before (or the head) within the timeout, or the request is
//! cut off. nginx bounds the same with `client_body_timeout` (the time between two
//! successive reads), Envoy with its stream idle timeout. Without it, a client that
//! announces a large upload, sends a few bytes and then nothing holds its connection,
//! and an HTTP/1.1 upstream connection, for as long as it likes once the upstream has
//! answered early (`early_answer`, `pool::finish_exchange`): the response timeout only
//! runs until the answer, and the head timeout only between requests.
//!
//! Only the wait between frames is bounded, never the whole upload: a slow upload that
//! keeps sending runs for as long as it does. And only the client's side: a wait starts
//! when a poll of the body finds nothing from the client, and the body is polled only
//! when the upstream connection can take more, so an upstream that reads slowly (or
//! stops reading) is never taken for a stalled client.
//!
//! It costs nothing while the body is ready whenever it is polled, nor for a request
//! without a body (most; they have no [`Progress`]): the clock is read only when a poll
//! finds nothing ([`Poll::Pending`]), once per wait. Which timer bounds a wait:
//! - Before the response head of an HTTP/1.1 upstream, the response timer the request
//!   waits under: the body is polled by the connection's driver in that same task, and
//!   the wait's deadline is one of [`Progress`]'s (see `timeout::Due`). A stalled upload
//!   gets `408` ([`super::ProxyError::ClientBodyStalled`]) if its wait passes first,
//!   else the `504` of the response timeout, as before this timeout existed.
//! - Otherwise a [`ResponseTimer`] of the body's own, made on the first wait that needs
//!   it and moved only to an earlier deadline: an HTTP/2 upstream's request body is
//!   polled in a task of hyper's, where no timer of ours runs, and after an answer the
//!   request's timer has gone with its response. Only an upload still going on after
//!   its answer (or to an HTTP/2 upstream) ever makes one.
//!
//! A stalled body ends in [`UploadError::Stalled`], logged and counted once. What
//! follows is hyper's: an HTTP/1.1 upstream connection fails (it is mid-request) and is
//! dropped, not pooled; an HTTP/2 upstream's stream is reset. The client's body is
//! dropped unread, so its HTTP/1.1 connection closes (after the `408` when there was no
//! answer yet) and its HTTP/2 stream is reset.

use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::body_idle::BodyIdleLimit;
use super::timeout::{Progress, ResponseTimer};
use crate::config::format_duration;

/// Why a forwarded request body ended before its end, as the upstream connection
/// (hyper's client) sees it.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// No frame of the body came from the client for `server.body_idle_timeout` (the
    /// duration): it announced more than it sent and went quiet (gone without a FIN, or
    /// holding the connection on purpose). Downstream's fault.
    #[error("client request body sent nothing for {}", format_duration(*.0))]
    Stalled(Duration),
    /// The client's connection broke mid-body, or the body was malformed. Downstream's
    /// fault.
    #[error(transparent)]
    Failed(hyper::Error),
}

/// One request body's wait for the client's next frame.
#[derive(Default)]
pub(super) struct UploadIdle {
    /// When a poll first found nothing since the last frame (and [`Progress`] was told);
    /// `None` while every poll finds one, and again after each frame.
    since: Option<Instant>,
    /// The body's own timer, for the waits no response timer covers: made (and
    /// registered with tokio) on the first of them only.
    timer: ResponseTimer,
}

impl UploadIdle {
    /// Passes on `polled`, the body's latest poll: a frame, the end or an error clears
    /// the wait (a client error becomes [`UploadError::Failed`]). A poll that found
    /// nothing starts the wait, or goes on with it: under the request's response timer
    /// while `progress` says it covers the body, else on this body's own timer; once the
    /// wait has lasted the timeout, the body ends with [`UploadError::Stalled`], logged
    /// and counted through `limit`.
    pub(super) fn check<T>(
        &mut self,
        polled: Poll<Option<Result<T, hyper::Error>>>,
        progress: &Progress,
        limit: &BodyIdleLimit,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<T, UploadError>>> {
        if let Poll::Ready(polled) = polled {
            if self.since.take().is_some() {
                progress.wait_ended();
            }
            return Poll::Ready(polled.map(|frame| frame.map_err(UploadError::Failed)));
        }
        let Some(timeout) = limit.upload_timeout() else {
            return Poll::Pending;
        };
        let since = match self.since {
            Some(since) => since,
            None => *self.since.insert(progress.wait_started()),
        };
        if progress.is_covered() {
            return Poll::Pending;
        }
        // The deadline stays put while the body waits: only a frame moves it, and a
        // frame ends this wait.
        if self.timer.poll_passed(|| since + timeout, cx).is_pending() {
            return Poll::Pending;
        }
        progress.stalled();
        report_stall(limit, timeout);
        Poll::Ready(Some(Err(UploadError::Stalled(timeout))))
    }

    /// Whether the body's own timer was ever made.
    #[cfg(test)]
    pub(super) fn is_armed(&self) -> bool {
        self.timer.is_armed()
    }
}

/// Logs and counts a request cut off by `server.body_idle_timeout` (`timeout`), once
/// per request, whichever timer saw it.
#[cold]
pub(super) fn report_stall(limit: &BodyIdleLimit, timeout: Duration) {
    // No path or query: they may carry what the app puts there (tokens, codes).
    tracing::warn!(
        timeout = %format_duration(timeout),
        "client request body stalled: nothing for server.body_idle_timeout; request cut off"
    );
    limit.metrics().client_body_idle_timeout();
}

#[cfg(test)]
mod tests {
    use std::pin::{pin, Pin};
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body::{Body, Frame};

    use super::*;
    use crate::metrics::Metrics;
    use crate::proxy::timeout::Due;
    use crate::proxy::ProxyError;

    const SECOND: Duration = Duration::from_secs(1);

    /// A client's request body fed by a channel, as the upstream connection polls it.
    struct Upload {
        frames: tokio::sync::mpsc::Receiver<Bytes>,
        idle: UploadIdle,
        progress: Arc<Progress>,
        limit: BodyIdleLimit,
    }

    impl Body for Upload {
        type Data = Bytes;
        type Error = UploadError;

        fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UploadError>>> {
            let this = self.get_mut();
            let polled = this
                .frames
                .poll_recv(cx)
                .map(|data| data.map(|data| Ok(Frame::data(data))));
            this.idle.check(polled, &this.progress, &this.limit, cx)
        }
    }

    /// An upload bounded by `timeout`, under the response timer while `covered`.
    fn upload(timeout: Option<Duration>, covered: bool) -> (tokio::sync::mpsc::Sender<Bytes>, Upload, Arc<Metrics>) {
        let (tx, frames) = tokio::sync::mpsc::channel(16);
        let metrics = Metrics::new();
        let body = Upload {
            frames,
            idle: UploadIdle::default(),
            progress: Arc::new(Progress::new(timeout, covered)),
            limit: BodyIdleLimit::new(None, timeout, metrics.clone()),
        };
        (tx, body, metrics)
    }

    /// Reads `body` to its end or its error, as the upstream connection would.
    async fn read(body: &mut Upload) -> (usize, Option<UploadError>) {
        crate::proxy::body_idle::tests::read(body).await
    }

    fn cut_off(metrics: &Metrics) -> String {
        crate::proxy::body_idle::tests::counter(metrics, "portcullis_client_body_idle_timeouts_total")
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_stalls_after_its_answer_ends_in_an_error_after_the_timeout() {
        let (tx, mut body, metrics) = upload(Some(10 * SECOND), false);
        tx.send(Bytes::from_static(b"a few bytes")).await.unwrap();
        let started = Instant::now();
        let (bytes, error) = read(&mut body).await;
        assert_eq!(bytes, 11);
        assert!(
            matches!(error, Some(UploadError::Stalled(t)) if t == 10 * SECOND),
            "{error:?}"
        );
        assert_eq!(started.elapsed(), 10 * SECOND);
        assert!(body.progress.has_stalled());
        assert_eq!(cut_off(&metrics), "portcullis_client_body_idle_timeouts_total 1");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_trickles_within_the_timeout_is_never_cut() {
        let (tx, mut body, metrics) = upload(Some(10 * SECOND), false);
        tokio::spawn(async move {
            // Ten frames 9 s apart: 90 s in all, nine times the timeout.
            for _ in 0..10 {
                tokio::time::sleep(9 * SECOND).await;
                tx.send(Bytes::from_static(b"tick")).await.unwrap();
            }
        });
        let started = Instant::now();
        assert_eq!(read(&mut body).await.0, 40);
        assert_eq!(started.elapsed(), 90 * SECOND);
        assert_eq!(cut_off(&metrics), "portcullis_client_body_idle_timeouts_total 0");
    }

    #[tokio::test(start_paused = true)]
    async fn off_an_upload_waits_as_long_as_the_client_takes() {
        let (tx, mut body, _) = upload(None, false);
        tokio::spawn(async move {
            tokio::time::sleep(3600 * SECOND).await;
            tx.send(Bytes::from_static(b"finally")).await.unwrap();
        });
        assert_eq!(read(&mut body).await.0, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_ready_whenever_polled_arms_no_timer_and_starts_no_wait() {
        let (tx, body, _) = upload(Some(SECOND), false);
        for _ in 0..3 {
            tx.send(Bytes::from_static(b"ready")).await.unwrap();
        }
        drop(tx);
        let mut body = pin!(body);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut frames = 0;
        while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
            frame.unwrap();
            frames += 1;
        }
        assert_eq!(frames, 3);
        assert!(!body.idle.is_armed());
        assert!(body.idle.since.is_none());
    }

    /// Polls `body` (which finds nothing) inside `timer.within(due, …)`, as an HTTP/1.1
    /// upstream connection's driver is polled before the answer: how long it took, and
    /// the error the wait ended in.
    async fn wait_under_the_response_timer(body: &mut Upload, response_timeout: Duration) -> (Duration, ProxyError) {
        let mut timer = ResponseTimer::default();
        let progress = body.progress.clone();
        let due = Due::from_now(Some(&progress), response_timeout);
        let started = Instant::now();
        let polled = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx).map(|_| ()));
        assert!(timer.within(due, pin!(polled)).await.is_none(), "the body gave a frame");
        (started.elapsed(), due.expired(&body.limit))
    }

    #[tokio::test(start_paused = true)]
    async fn before_the_answer_the_response_timer_bounds_the_wait_and_no_other_is_armed() {
        let (_tx, mut body, metrics) = upload(Some(10 * SECOND), true);
        let (waited, error) = wait_under_the_response_timer(&mut body, 60 * SECOND).await;
        assert_eq!(waited, 10 * SECOND);
        assert!(matches!(error, ProxyError::ClientBodyStalled), "{error:?}");
        assert!(!body.idle.is_armed());
        assert_eq!(cut_off(&metrics), "portcullis_client_body_idle_timeouts_total 1");
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_defaults_a_stall_before_the_answer_still_gets_the_response_timeout() {
        let (_tx, mut body, metrics) = upload(Some(300 * SECOND), true);
        let (waited, error) = wait_under_the_response_timer(&mut body, 60 * SECOND).await;
        assert_eq!(waited, 60 * SECOND);
        assert!(matches!(error, ProxyError::Timeout), "{error:?}");
        assert_eq!(cut_off(&metrics), "portcullis_client_body_idle_timeouts_total 0");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_begun_before_the_answer_is_bounded_from_its_start_after_it() {
        let (tx, mut body, _) = upload(Some(10 * SECOND), true);
        let progress = body.progress.clone();
        let due = Due::from_now(Some(&progress), 60 * SECOND);
        let started = Instant::now();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        tokio::time::sleep(4 * SECOND).await;
        // The answer: the body's own timer takes the wait over where it stands.
        due.answered();
        let (bytes, error) = read(&mut body).await;
        assert_eq!(bytes, 0);
        assert!(matches!(error, Some(UploadError::Stalled(_))), "{error:?}");
        assert_eq!(started.elapsed(), 10 * SECOND);
        drop(tx);
    }
}
