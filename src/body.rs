//! [`ResponseBody`], the body of every response portcullis produces: a page of its
//! own, an HTTP/1.1 upstream's body, or any other body boxed; and, with the access log
//! on, the response's line, written when the body is dropped (`access`).
//!
//! An enum of bodies rather than one boxed type so that the common cases (a proxied
//! HTTP/1.1 response, a generated page) cost no allocation per response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::Full;

use crate::access::AccessLine;
use crate::proxy::PooledBody;
use crate::BoxError;

/// Not `Sync`: an upstream body carries its connection's I/O future (`proxy::pool`).
pub struct ResponseBody {
    kind: Kind,
    /// The response's access-log line, written when the body is dropped; `None` with
    /// the log off, and until [`ResponseBody::log_when_over`]. Boxed: inline, its 150-odd
    /// bytes were copied with every move of every body, the log on or off (about 1% of a
    /// proxied request's instructions under callgrind); boxed, a logged response costs
    /// one allocation (the session's subject used to ride in the response's extensions,
    /// which cost three) and an unlogged one nothing.
    access: Option<Box<AccessLine>>,
}

/// What a [`ResponseBody`] streams.
enum Kind {
    /// Generated here, whole.
    Full(Full<Bytes>),
    /// Streamed from an HTTP/1.1 upstream connection.
    Upstream(PooledBody),
    /// Any other body (an HTTP/2 upstream's, a test's).
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl ResponseBody {
    fn of(kind: Kind) -> Self {
        ResponseBody { kind, access: None }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::of(Kind::Full(Full::new(bytes.into())))
    }

    /// An HTTP/1.1 upstream's body.
    pub fn upstream(body: PooledBody) -> Self {
        Self::of(Kind::Upstream(body))
    }

    pub fn boxed<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Self::of(Kind::Boxed(body.map_err(Into::into).boxed_unsync()))
    }

    /// Has the body count what it sends and write `line` when it is dropped: after its
    /// last frame, or when the response is abandoned.
    pub(crate) fn log_when_over(&mut self, line: AccessLine) {
        self.access = Some(Box::new(line));
    }
}

/// hyper drops a response body once it has sent the last frame, or when it abandons the
/// response (the client went away, the body failed): the drop is the response's end,
/// however it ends, so that is where its line is written.
impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(line) = self.access.take() {
            line.write(self.kind.is_end_stream());
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = this.kind.poll_frame(cx);
        if let Some(line) = this.access.as_mut() {
            line.saw(&polled);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.kind.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(full) => full.size_hint(),
            Kind::Upstream(upstream) => upstream.size_hint(),
            Kind::Boxed(boxed) => boxed.size_hint(),
        }
    }
}

impl Kind {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every variant is Unpin.
        match self {
            Kind::Full(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
            Kind::Upstream(upstream) => Pin::new(upstream).poll_frame(cx).map_err(BoxError::from),
            Kind::Boxed(boxed) => Pin::new(boxed).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Kind::Full(full) => full.is_end_stream(),
            Kind::Upstream(upstream) => upstream.is_end_stream(),
            Kind::Boxed(boxed) => boxed.is_end_stream(),
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Full(_) => "Full",
            Kind::Upstream(_) => "Upstream",
            Kind::Boxed(_) => "Boxed",
        };
        f.debug_tuple("ResponseBody").field(&kind).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_full_body_is_its_bytes_with_an_exact_size() {
        let body = ResponseBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn a_boxed_body_keeps_its_frames_and_errors() {
        let ok = ResponseBody::boxed(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(ok.collect().await.unwrap().to_bytes(), "abc");
        let failing = http_body_util::StreamBody::new(futures_util::stream::iter([Err::<Frame<Bytes>, _>(
            std::io::Error::other("upstream reset"),
        )]));
        let error = ResponseBody::boxed(failing).collect().await.expect_err("the error");
        assert_eq!(error.to_string(), "upstream reset");
    }
}
