//! The body idle timeout through real connections: a response body that stalls after
//! its head is cut off, and its upstream connection dropped; one that trickles within
//! the timeout is delivered whole however long it takes; a WebSocket is not touched.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::support::*;
use crate::proxy::Upstream;

/// The body idle timeout of these tests: short, but far above a loopback round trip.
const IDLE: Duration = Duration::from_millis(500);

/// The gap between two frames of a trickling body: well within [`IDLE`].
const TICK: Duration = Duration::from_millis(100);

/// Frames of a trickling body: in all three times [`IDLE`].
const TICKS: usize = 15;

/// An upstream (HTTP/1.1 or prior-knowledge HTTP/2) whose answers, by path:
/// - `/stall`: a head announcing 100 bytes, 10 of them, then nothing;
/// - `/stall-chunked`: the same without a length (chunked on HTTP/1.1);
/// - `/trickle`: [`TICKS`] frames of 4 bytes, [`TICK`] apart, then the end;
/// - anything else: `ok`.
///
/// Counts the connections it accepted, and those that ended.
struct StallingUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

impl StallingUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, e) = (accepted.clone(), ended.clone());
        tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let ended = e.clone();
                tokio::spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    // An error (the proxy hanging up) ends the connection all the same.
                    let _served = builder
                        .serve_connection(TokioIo::new(io), service_fn(Self::answer))
                        .await;
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        StallingUpstream { addr, accepted, ended }
    }

    async fn answer(request: Request<Incoming>) -> Result<Response<ClientBody>, Infallible> {
        let path = request.uri().path().to_owned();
        if !matches!(path.as_str(), "/stall" | "/stall-chunked" | "/trickle") {
            return Ok(Response::new(full("ok")));
        }
        let (frames, body) = channel_body(16);
        let mut response = Response::new(body);
        if path == "/stall" {
            response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(100));
        }
        tokio::spawn(async move {
            if path == "/trickle" {
                for _ in 0..TICKS {
                    tokio::time::sleep(TICK).await;
                    let _ = frames.send(Bytes::from_static(b"drip")).await;
                }
            } else {
                let _ = frames.send(Bytes::from_static(b"0123456789")).await;
                // Holds the body open, sending nothing, until the connection goes.
                frames.closed().await;
            }
        });
        Ok(response)
    }

    /// A front server forwarding to it with `body_idle_timeout`, over `http2` or HTTP/1.1.
    async fn front(&self, body_idle_timeout: Option<Duration>, http2: bool) -> SocketAddr {
        let mut config = upstream_config(http_target(self.addr, ""), Duration::from_secs(30));
        config.body_idle_timeout = body_idle_timeout;
        config.http2 = http2;
        front(Arc::new(build_upstream(&config, &[]).unwrap())).await
    }
}

/// Reads `response`'s body to its end or its error: the bytes read, and the error.
async fn read_body(response: Response<Incoming>) -> (usize, Option<hyper::Error>) {
    let mut body = response.into_body();
    let mut bytes = 0;
    // Bounded, so that a body that is never cut fails the test rather than hanging it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => panic!("the body neither ended nor failed within 10 s ({bytes} bytes)"),
            Ok(None) => return (bytes, None),
            Ok(Some(Err(error))) => return (bytes, Some(error)),
            Ok(Some(Ok(frame))) => bytes += frame.data_ref().map_or(0, Bytes::len),
        }
    }
}

/// Checks that `response`, to a request for `path`, is cut off after its first 10
/// bytes, [`IDLE`] after them.
async fn assert_cut_off(response: Response<Incoming>, path: &str) {
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let started = Instant::now();
    let (bytes, error) = read_body(response).await;
    let waited = started.elapsed();
    assert_eq!(bytes, 10, "{path}");
    assert!(error.is_some(), "{path}: the client saw a complete body of 10 bytes");
    assert!(
        waited >= IDLE - TICK && waited < IDLE + Duration::from_millis(1500),
        "{path}: cut off after {waited:?}"
    );
}

#[tokio::test]
async fn a_body_that_stalls_after_its_head_is_cut_off_and_its_upstream_connection_dropped() {
    let upstream = StallingUpstream::start().await;
    let front = upstream.front(Some(IDLE), false).await;
    for (round, path) in ["/stall", "/stall-chunked"].into_iter().enumerate() {
        let response = client().request(get(front, path).body(empty()).unwrap()).await.unwrap();
        assert_cut_off(response, path).await;
        // Not kept for another request: the upstream sees it closed.
        reaches("upstream connections ended", &upstream.ended, round + 1).await;
    }
    // The proxy goes on serving, on a new upstream connection.
    let response = client().request(get(front, "/").body(empty()).unwrap()).await.unwrap();
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_stalled_body_resets_an_http2_clients_stream_and_the_connection_goes_on() {
    let upstream = StallingUpstream::start().await;
    let front = upstream.front(Some(IDLE), false).await;
    let client = h2_client();
    let response = client
        .request(get(front, "/stall-chunked").body(empty()).unwrap())
        .await
        .unwrap();
    assert_cut_off(response, "/stall-chunked").await;
    // The same HTTP/2 connection (the client keeps one per host) carries the next request.
    let response = client.request(get(front, "/").body(empty()).unwrap()).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
}

#[tokio::test]
async fn a_stalled_body_from_an_http2_upstream_is_cut_off_and_its_stream_reset() {
    let upstream = StallingUpstream::start().await;
    let front = upstream.front(Some(IDLE), true).await;
    let response = client()
        .request(get(front, "/stall-chunked").body(empty()).unwrap())
        .await
        .unwrap();
    assert_cut_off(response, "/stall-chunked").await;
    // Only the stream went: the upstream connection carries the next request.
    let response = client().request(get(front, "/").body(empty()).unwrap()).await.unwrap();
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.ended.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_body_that_trickles_within_the_timeout_is_delivered_whole_however_long_it_takes() {
    let upstream = StallingUpstream::start().await;
    for http2 in [false, true] {
        let front = upstream.front(Some(IDLE), http2).await;
        let started = Instant::now();
        let response = client()
            .request(get(front, "/trickle").body(empty()).unwrap())
            .await
            .unwrap();
        let (bytes, error) = read_body(response).await;
        assert!(error.is_none(), "http2={http2}: {error:?}");
        assert_eq!(bytes, 4 * TICKS, "http2={http2}");
        assert!(
            started.elapsed() > 2 * IDLE,
            "http2={http2}: the body outlasted the timeout"
        );
    }
}

#[tokio::test]
async fn with_the_timeout_off_a_stalled_body_waits_for_the_client() {
    let upstream = StallingUpstream::start().await;
    let front = upstream.front(None, false).await;
    let response = client()
        .request(get(front, "/stall").body(empty()).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.data_ref().map(Bytes::len), Some(10));
    let waited = tokio::time::timeout(3 * IDLE, body.frame()).await;
    assert!(waited.is_err(), "the body ended: {waited:?}");
}

#[tokio::test]
async fn an_upgraded_connection_idle_beyond_the_body_idle_timeout_stays_open() {
    let upstream_addr = tcp_upstream().await;
    let mut config = upstream_config(http_target(upstream_addr, ""), Duration::from_secs(30));
    config.body_idle_timeout = Some(IDLE);
    let upstream: Arc<Upstream> = Arc::new(build_upstream(&config, &[]).unwrap());
    let front = front(upstream.clone()).await;
    let (mut stream, head) = super::websocket_handshake(front).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    tokio::time::sleep(3 * IDLE).await;
    super::echo_round_trip(&mut stream, b"still here").await;
    assert_eq!(upstream.upgraded_connections(), 1);
}
