//! The access log: one `info` line on the target [`TARGET`] per response, written when
//! the response is over (its body sent to the end, cut off, or dropped because the client
//! went away), as nginx logs at request completion and Envoy at stream end.
//!
//! [`App::handle`](crate::app::App::handle) takes what the line says of the request
//! ([`Requested`]) as it arrives, and hands it with the response head's status to the
//! response body ([`AccessLine`], kept in [`ResponseBody`](crate::ResponseBody)). The
//! body counts the bytes it hands to the connection, notes how it ended, and writes the
//! line when hyper drops it: the last thing that happens to a response, however it ends.
//! The line rides in the body that every response has anyway (no layer of its own),
//! boxed; with the log off the body carries `None` and nothing is counted. A request
//! dropped before its response head (the client gone while the upstream was waited on)
//! has its line written as it is dropped, with the status [`client_closed_request`].

use std::net::IpAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::uri::PathAndQuery;
use http::{Method, Request, StatusCode};
use http_body::Frame;

use crate::proxy::BodyError;
use crate::session::Session;
use crate::BoxError;

/// The access-log target.
pub(crate) const TARGET: &str = "portcullis::access";

/// The status logged and counted for a request whose client went away before its
/// response head was ready: nginx's 499, "client closed request", which no response
/// carries.
pub(crate) fn client_closed_request() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// How a response ended: the line's `outcome`. Only [`Outcome::Complete`] means the
/// client was sent the whole response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The body was sent to its end (or there was none: `HEAD`, `1xx`, `204`, `304`).
    Complete,
    /// Cut off by `upstream.body_idle_timeout`: the upstream sent nothing for that long
    /// mid-body (Envoy's `SI`).
    UpstreamIdle,
    /// Cut off because the upstream failed mid-body: its connection closed or broke short
    /// of the body's end, or it sent a malformed body (Envoy's `UPE`).
    UpstreamError,
    /// Dropped before its end with no fault of the upstream: the client closed its
    /// connection or reset its stream (Envoy's `DC`). Also what a response still being
    /// sent when a shutdown's grace period runs out ends as.
    ClientGone,
}

impl Outcome {
    /// The value logged.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::UpstreamIdle => "upstream_idle",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ClientGone => "client_gone",
        }
    }

    /// Why a body failed, from its error: a [`BodyError`] tells; anything else a body
    /// can fail with comes from an upstream too.
    fn of_error(error: &BoxError) -> Self {
        match error.downcast_ref::<BodyError>() {
            Some(BodyError::Stalled(_)) => Outcome::UpstreamIdle,
            Some(BodyError::Failed(_)) | None => Outcome::UpstreamError,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the line says of the request, taken as it arrives (the request is handed on).
/// The path only is ever written: queries carry codes, states and whatever the app puts
/// there.
#[derive(Debug)]
pub(crate) struct Requested {
    method: Method,
    /// `None` for a target without one (`CONNECT`'s authority form): logged as empty.
    path: Option<PathAndQuery>,
    /// After trusted proxies.
    client: IpAddr,
}

impl Requested {
    /// `client` is the address to log (`Upstream::client_ip`). Clones the method and
    /// the path (reference counted, no copy of the bytes).
    pub(crate) fn of<B>(request: &Request<B>, client: IpAddr) -> Self {
        Requested {
            method: request.method().clone(),
            path: request.uri().path_and_query().cloned(),
            client,
        }
    }

    /// The response head is ready: the line, to be written when the body is over.
    /// `user` is the session the request was forwarded with, if any; `started` when the
    /// request arrived, `head` how long its response head took from then.
    pub(crate) fn answered(
        self,
        status: StatusCode,
        user: Option<Arc<Session>>,
        started: Instant,
        head: Duration,
    ) -> AccessLine {
        AccessLine {
            requested: self,
            status,
            user,
            started,
            head,
            bytes: 0,
            ended: None,
        }
    }
}

/// One response's access-log line while its body is sent: kept in the body, told of
/// each of its polls ([`AccessLine::saw`]), written when the body is dropped
/// ([`AccessLine::write`]).
#[derive(Debug)]
pub(crate) struct AccessLine {
    requested: Requested,
    status: StatusCode,
    user: Option<Arc<Session>>,
    started: Instant,
    head: Duration,
    /// Bytes of body data handed to the connection so far (trailers not counted). For a
    /// response cut off, some may not have reached the client.
    bytes: u64,
    /// How the body ended, once a poll said so; `None` while it goes on (and when it is
    /// dropped without saying: [`AccessLine::write`] decides then).
    ended: Option<Outcome>,
}

impl AccessLine {
    /// Notes a poll of the body: counts a frame's data, and the end or an error.
    #[inline]
    pub(crate) fn saw(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, BoxError>>>) {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.remaining() as u64;
                }
            }
            Poll::Ready(None) => self.ended = Some(Outcome::Complete),
            Poll::Ready(Some(Err(error))) => self.ended = Some(Outcome::of_error(error)),
            Poll::Pending => {}
        }
    }

    /// How the response ended, its body dropped now; `at_end` is whether the body said
    /// it had nothing more (`is_end_stream`: hyper does not poll once more a body that
    /// says so, nor at all one that is empty).
    fn outcome(&self, at_end: bool) -> Outcome {
        match self.ended {
            Some(outcome) => outcome,
            None if at_end || self.bodiless() => Outcome::Complete,
            None => Outcome::ClientGone,
        }
    }

    /// A response that has no body whatever its body holds (RFC 9110 §6.4.1): hyper
    /// sends its head only and drops the body unread.
    fn bodiless(&self) -> bool {
        self.requested.method == Method::HEAD
            || self.status.is_informational()
            || self.status == StatusCode::NO_CONTENT
            || self.status == StatusCode::NOT_MODIFIED
    }

    /// Writes the line: the body has been dropped, `at_end` as for [`Self::outcome`].
    pub(crate) fn write(self, at_end: bool) {
        let outcome = self.outcome(at_end);
        let Requested { method, path, client } = &self.requested;
        tracing::info!(
            target: TARGET,
            %method,
            path = %path.as_ref().map_or("", PathAndQuery::path),
            status = self.status.as_u16(),
            duration_ms = self.started.elapsed().as_secs_f64() * 1e3,
            head_ms = self.head.as_secs_f64() * 1e3,
            body_bytes = self.bytes,
            %outcome,
            %client,
            user = %self.user.as_ref().map_or("-", |session| session.subject.as_str()),
            "request"
        );
    }
}

#[cfg(test)]
mod tests;
