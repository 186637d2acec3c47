//! The body idle timeout (`upstream.body_idle_timeout`): once an upstream has sent its
//! response head, each frame of the body must follow the one before (or the head)
//! within the timeout, or the response is cut off. nginx bounds the same with
//! `proxy_read_timeout`, Envoy with its stream idle timeout. Without it, an upstream
//! that hangs after its head holds the client's connection and its own for as long as
//! the client waits.
//!
//! Only the wait between frames is bounded, never the whole body: a download, a long
//! poll or an event stream that keeps sending runs for as long as it does. And only
//! the upstream's side: the body is polled when the client can take more, so a slow
//! client is never taken for a stalled upstream. Upgraded connections (`101`) have no
//! body here and are spliced elsewhere (`upgrade`).
//!
//! It costs nothing while the body is ready whenever it is polled (a small page, read
//! with its head): the clock is read and the timer looked at only when a poll finds
//! nothing ([`Poll::Pending`]). The timer is a [`ResponseTimer`], the upstream
//! connection's own for HTTP/1.1 (the one its response heads wait under) and the
//! request's for HTTP/2, moved only when the body's deadline is earlier than the one it
//! is set to: no timer is registered or allocated per frame or, on a kept connection,
//! per response (see `timeout` for why that matters).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::pool::UpstreamSlot;
use super::timeout::ResponseTimer;
use crate::config::format_duration;
use crate::metrics::Metrics;

/// Why an upstream response body ended before its end. Its head has gone out by then,
/// so the client learns of it only from the response being cut off: on HTTP/1.1 the
/// connection closes before the body's end, on HTTP/2 the stream is reset.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// No frame of the body came for `upstream.body_idle_timeout` (the duration): the
    /// upstream hung after its head (a stuck handler, a half-dead backend, a long poll
    /// or event stream without a heartbeat). Upstream's fault.
    #[error("upstream response body sent nothing for {}", format_duration(*.0))]
    Stalled(Duration),
    /// The upstream connection broke mid-body, or the body was malformed. Upstream's fault.
    #[error(transparent)]
    Failed(hyper::Error),
}

/// What every body shares: the timeouts of upstream response bodies and of client
/// request bodies (`upload_idle`), and where a body they cut off is counted. Each
/// downstream connection's `UpstreamSlot` keeps a copy.
#[derive(Clone)]
pub(super) struct BodyIdleLimit {
    /// `upstream.body_idle_timeout`; `None`: off (configured as `0`).
    timeout: Option<Duration>,
    /// `server.body_idle_timeout`; `None`: off.
    upload: Option<Duration>,
    metrics: Arc<Metrics>,
}

impl BodyIdleLimit {
    pub(super) fn new(timeout: Option<Duration>, upload: Option<Duration>, metrics: Arc<Metrics>) -> Self {
        BodyIdleLimit {
            timeout,
            upload,
            metrics,
        }
    }

    pub(super) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The longest wait for a client's next request-body frame.
    pub(super) fn upload_timeout(&self) -> Option<Duration> {
        self.upload
    }

    pub(super) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// One response body's wait for its next frame.
#[derive(Debug, Default)]
pub(super) struct BodyIdle {
    /// When a poll first found no frame since the last one (or since the head); `None`
    /// while every poll finds one, and again after each frame.
    since: Option<Instant>,
}

impl BodyIdle {
    /// Passes on `polled`, the body's latest poll: a frame, the end or an error clears
    /// the wait (an upstream error becomes [`BodyError::Failed`]). A poll that found
    /// nothing starts the wait, or goes on with it, on `timer`; once the wait has lasted
    /// `limit`'s timeout the body ends with [`BodyError::Stalled`], logged and counted.
    /// The caller must then drop the upstream connection: it is mid-response, and its
    /// upstream is not answering.
    pub(super) fn check<T>(
        &mut self,
        polled: Poll<Option<Result<T, hyper::Error>>>,
        timer: &mut ResponseTimer,
        limit: &BodyIdleLimit,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<T, BodyError>>> {
        if let Poll::Ready(polled) = polled {
            self.since = None;
            return Poll::Ready(polled.map(|frame| frame.map_err(BodyError::Failed)));
        }
        let Some(timeout) = limit.timeout else {
            return Poll::Pending;
        };
        let since = *self.since.get_or_insert_with(Instant::now);
        // The deadline stays put while the body waits: only a frame moves it, and a
        // frame ends this wait.
        if timer.poll_passed(|| since + timeout, cx).is_pending() {
            return Poll::Pending;
        }
        // No path or query: they may carry what the app puts there (tokens, codes).
        tracing::warn!(
            timeout = %format_duration(timeout),
            "upstream response body stalled: nothing for upstream.body_idle_timeout; response cut off"
        );
        limit.metrics.upstream_body_idle_timeout();
        Poll::Ready(Some(Err(BodyError::Stalled(timeout))))
    }
}

/// An HTTP/2 upstream's response body, its waits bounded as a pooled HTTP/1.1 body's
/// are (`pool::PooledBody`), on the timer its response head waited under.
///
/// A stalled body resets its stream (the body is dropped), not its connection: that
/// carries other requests' streams, which may be fine, and hyper-util's pool, not
/// this body, owns it.
pub(super) struct Http2Body {
    /// `None` once the body stalled: dropped at once, so that the upstream learns.
    inner: Option<Incoming>,
    timer: ResponseTimer,
    idle: BodyIdle,
    /// The downstream connection's, for its [`BodyIdleLimit`].
    slot: Arc<UpstreamSlot>,
}

impl Http2Body {
    pub(super) fn new(inner: Incoming, timer: ResponseTimer, slot: Arc<UpstreamSlot>) -> Self {
        Http2Body {
            inner: Some(inner),
            timer,
            idle: BodyIdle::default(),
            slot,
        }
    }
}

impl Body for Http2Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        let checked = this.idle.check(polled, &mut this.timer, this.slot.body_idle(), cx);
        if let Poll::Ready(Some(Err(BodyError::Stalled(_)))) = &checked {
            this.inner = None;
        }
        checked
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(SizeHint::default, Incoming::size_hint)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// A body fed by a channel: a frame for each message, its end when the sender is dropped.
    struct Fed {
        frames: tokio::sync::mpsc::Receiver<Bytes>,
        timer: ResponseTimer,
        idle: BodyIdle,
        limit: BodyIdleLimit,
    }

    impl Body for Fed {
        type Data = Bytes;
        type Error = BodyError;

        fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            let this = self.get_mut();
            let polled = this
                .frames
                .poll_recv(cx)
                .map(|data| data.map(|data| Ok(Frame::data(data))));
            this.idle.check(polled, &mut this.timer, &this.limit, cx)
        }
    }

    fn fed(timeout: Option<Duration>, metrics: &Arc<Metrics>) -> (tokio::sync::mpsc::Sender<Bytes>, Fed) {
        let (tx, frames) = tokio::sync::mpsc::channel(16);
        let body = Fed {
            frames,
            timer: ResponseTimer::default(),
            idle: BodyIdle::default(),
            limit: BodyIdleLimit::new(timeout, None, metrics.clone()),
        };
        (tx, body)
    }

    /// Reads `body` to its end or its error: the bytes, and the error. Gives up after
    /// two (paused) hours, so that a body never cut fails the test rather than hanging it.
    /// (Also `upload_idle`'s.)
    pub(in crate::proxy) async fn read<B: Body<Data = Bytes> + Unpin>(mut body: B) -> (usize, Option<B::Error>) {
        use http_body_util::BodyExt;
        let mut bytes = 0;
        let deadline = Instant::now() + 7200 * SECOND;
        while let Some(frame) = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("the body neither ended nor failed ({bytes} bytes)"))
        {
            match frame {
                Ok(frame) => bytes += frame.data_ref().map_or(0, Bytes::len),
                Err(error) => return (bytes, Some(error)),
            }
        }
        (bytes, None)
    }

    /// The line of the counter `name` in `metrics`' exposition. (Also `upload_idle`'s.)
    pub(in crate::proxy) fn counter(metrics: &Metrics, name: &str) -> String {
        let text = metrics.render(&crate::metrics::ScrapeGauges {
            sessions: None,
            ready: true,
            uptime: Duration::ZERO,
        });
        let prefix = format!("{name} ");
        text.lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_default()
            .to_owned()
    }

    fn stalled_count(metrics: &Metrics) -> String {
        counter(metrics, "portcullis_upstream_body_idle_timeouts_total")
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_ends_in_an_error_after_the_timeout() {
        let metrics = Metrics::new();
        let (tx, body) = fed(Some(10 * SECOND), &metrics);
        tx.send(Bytes::from_static(b"part")).await.unwrap();
        let started = Instant::now();
        let (bytes, error) = read(body).await;
        assert_eq!(bytes, 4);
        assert!(
            matches!(error, Some(BodyError::Stalled(t)) if t == 10 * SECOND),
            "{error:?}"
        );
        assert_eq!(started.elapsed(), 10 * SECOND);
        assert_eq!(
            stalled_count(&metrics),
            "portcullis_upstream_body_idle_timeouts_total 1"
        );
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_trickles_within_the_timeout_is_never_cut() {
        let metrics = Metrics::new();
        let (tx, body) = fed(Some(10 * SECOND), &metrics);
        tokio::spawn(async move {
            // Ten frames 9 s apart: 90 s in all, nine times the timeout.
            for _ in 0..10 {
                tokio::time::sleep(9 * SECOND).await;
                tx.send(Bytes::from_static(b"tick")).await.unwrap();
            }
        });
        let started = Instant::now();
        assert_eq!(read(body).await.0, 40);
        assert_eq!(started.elapsed(), 90 * SECOND);
        assert_eq!(
            stalled_count(&metrics),
            "portcullis_upstream_body_idle_timeouts_total 0"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_left_at_an_earlier_deadline_is_moved_on_not_taken_for_the_bodys() {
        let metrics = Metrics::new();
        let (tx, mut body) = fed(Some(10 * SECOND), &metrics);
        // As a kept connection's timer is, by a response head's wait.
        body.timer = ResponseTimer::at(Instant::now() + SECOND);
        let started = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(5 * SECOND).await;
            tx.send(Bytes::from_static(b"late")).await.unwrap();
            std::future::pending::<()>().await;
        });
        let (bytes, error) = read(body).await;
        assert_eq!(bytes, 4);
        assert!(matches!(error, Some(BodyError::Stalled(_))), "{error:?}");
        // 10 s after the frame at 5 s, not 1 s (the timer) nor 10 s (the start).
        assert_eq!(started.elapsed(), 15 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn off_a_body_waits_as_long_as_it_takes() {
        let metrics = Metrics::new();
        let (tx, body) = fed(None, &metrics);
        tokio::spawn(async move {
            tokio::time::sleep(3600 * SECOND).await;
            tx.send(Bytes::from_static(b"finally")).await.unwrap();
        });
        assert_eq!(read(body).await.0, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_ready_whenever_polled_arms_no_timer() {
        let metrics = Metrics::new();
        let (tx, body) = fed(Some(SECOND), &metrics);
        for _ in 0..3 {
            tx.send(Bytes::from_static(b"ready")).await.unwrap();
        }
        drop(tx);
        let mut body = std::pin::pin!(body);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut frames = 0;
        while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
            frame.unwrap();
            frames += 1;
        }
        assert_eq!(frames, 3);
        assert!(!body.timer.is_armed());
    }
}
