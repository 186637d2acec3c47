//! The response timeout. It runs from the last progress of the request, not from
//! its start: every request-body frame pushes the deadline out, so a large upload
//! (which the upstream usually reads in full before answering) is not cut off, while
//! an upstream that stops reading the body or never answers is.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

/// When the request last made progress, shared between the body (which moves it)
/// and [`Progress::wait`] (which reads it).
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

    /// Awaits `fut` until it resolves, or `None` once `timeout` has passed without any
    /// progress (body frame sent, or the start).
    async fn wait<F: Future>(&self, mut fut: Pin<&mut F>, timeout: Duration) -> Option<F::Output> {
        loop {
            let deadline = self.deadline(timeout);
            match tokio::time::timeout_at(deadline, fut.as_mut()).await {
                Ok(out) => return Some(out),
                // The body moved on while we slept: wait again from the new deadline.
                Err(_) if self.deadline(timeout) > deadline => continue,
                Err(_) => return None,
            }
        }
    }
}

/// Awaits the response `fut` of a request whose progress is `progress` (from
/// [`Progress::of`]), or `None` once `timeout` has passed since that progress.
///
/// `fut` is pinned by the caller and only borrowed here (as in [`Progress::wait`]): a
/// future taken by value would be laid out once more in each future awaiting it, and
/// the whole request future moved at that size.
pub(super) async fn within<F: Future>(
    progress: Option<&Progress>,
    fut: Pin<&mut F>,
    timeout: Duration,
) -> Option<F::Output> {
    match progress {
        Some(progress) => progress.wait(fut, timeout).await,
        None => tokio::time::timeout(timeout, fut).await.ok(),
    }
}

/// The downstream request body, streamed as is, reporting each frame to [`Progress`].
/// (Or no body at all: a bodiless request rebuilt for a retry.)
pub(super) struct ProgressBody {
    inner: Option<Incoming>,
    progress: Option<Arc<Progress>>,
}

impl ProgressBody {
    pub(super) fn new(inner: Incoming, progress: Option<Arc<Progress>>) -> Self {
        ProgressBody {
            inner: Some(inner),
            progress,
        }
    }

    /// An empty body reporting to the same [`Progress`].
    pub(super) fn empty(&self) -> Self {
        ProgressBody {
            inner: None,
            progress: self.progress.clone(),
        }
    }
}

impl Body for ProgressBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(_)) | None), Some(progress)) = (&polled, &self.progress) {
            progress.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or(SizeHint::with_exact(0), Incoming::size_hint)
    }
}
