//! The client body idle timeout through real connections, with an upstream that answers
//! an upload at once and reads it on (an early answer): an upload that stalls after the
//! answer closes the HTTP/1.1 client's connection or resets the HTTP/2 client's stream,
//! and its upstream HTTP/1.1 connection is dropped; one that trickles within the timeout
//! goes through whole; one that stalls before the answer is refused as the client's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::support::*;

/// The client body idle timeout of these tests: short, but far above a loopback round trip.
const IDLE: Duration = Duration::from_millis(500);

/// The gap between two frames of a trickling upload: well within [`IDLE`].
const TICK: Duration = Duration::from_millis(100);

/// An upstream (HTTP/1.1 or prior-knowledge HTTP/2) that answers `early` to every
/// request at once and reads its body on in the background, to `/read-first` only
/// once it has read the whole body. Counts the body bytes it read, the bodies that
/// ended short (the proxy gave up on them), and the connections that ended.
struct EarlyAnswering {
    addr: SocketAddr,
    bytes: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

impl EarlyAnswering {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>) = Default::default();
        let (bytes, cut, ended) = counts.clone();
        tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                let (bytes, cut, ended) = (bytes.clone(), cut.clone(), ended.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| Self::answer(request, bytes.clone(), cut.clone()));
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    // An error (the proxy hanging up) ends the connection all the same.
                    let _served = builder.serve_connection(TokioIo::new(io), service).await;
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        let (bytes, cut, ended) = counts;
        EarlyAnswering {
            addr,
            bytes,
            cut,
            ended,
        }
    }

    async fn answer(
        request: Request<Incoming>,
        bytes: Arc<AtomicUsize>,
        cut: Arc<AtomicUsize>,
    ) -> Result<Response<ClientBody>, Infallible> {
        let read_first = request.uri().path() == "/read-first";
        let reading = async move {
            let mut body = request.into_body();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    // An HTTP/2 body goes on failing when polled again: stop at the first.
                    cut.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                bytes.fetch_add(frame.data_ref().map_or(0, Bytes::len), Ordering::SeqCst);
            }
        };
        if read_first {
            reading.await;
        } else {
            tokio::spawn(reading);
        }
        Ok(Response::new(full("early")))
    }

    /// A front server forwarding to it over `http2` or HTTP/1.1, each wait for a
    /// client's next frame bounded by [`IDLE`].
    async fn front(&self, http2: bool) -> SocketAddr {
        let mut config = upstream_config(http_target(self.addr, ""), Duration::from_secs(30));
        config.http2 = http2;
        front(Arc::new(build_upstream_waiting(&config, &[], Some(IDLE)).unwrap())).await
    }
}

/// Sends `POST /upload` announcing a gigabyte and the first 3 bytes of it, then
/// nothing; returns the time the answer came and what the client read until its
/// connection closed (a panic if it stays open 10 s).
async fn stall_an_http1_upload(front: SocketAddr) -> (Instant, String) {
    let mut client = TcpStream::connect(front).await.unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nhost: {front}\r\ncontent-length: 1000000000\r\n\r\nabc");
    client.write_all(head.as_bytes()).await.unwrap();
    let mut read = Vec::new();
    let mut answered = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Err(_) => panic!(
                "the client's connection still open after 10 s: {}",
                String::from_utf8_lossy(&read)
            ),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => {
                read.extend_from_slice(&chunk[..n]);
                answered.get_or_insert_with(Instant::now);
            }
        }
    }
    let answered = answered.expect("an answer before the close");
    (answered, String::from_utf8_lossy(&read).into_owned())
}

#[tokio::test]
async fn an_upload_that_stalls_after_an_early_answer_closes_the_http1_client_and_drops_the_upstream_connection() {
    let upstream = EarlyAnswering::start().await;
    let front = upstream.front(false).await;
    let (answered, response) = stall_an_http1_upload(front).await;
    let waited = answered.elapsed();
    assert!(
        response.starts_with("HTTP/1.1 200 OK\r\n") && response.ends_with("\r\n\r\nearly"),
        "{response}"
    );
    assert!(
        waited >= IDLE - TICK && waited < IDLE + Duration::from_millis(1500),
        "closed {waited:?} after the answer"
    );
    // The upstream got what was sent, saw the body cut short, and its connection closed.
    reaches("upstream connections ended", &upstream.ended, 1).await;
    reaches("upstream bodies cut short", &upstream.cut, 1).await;
    assert_eq!(upstream.bytes.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_upload_that_stalls_after_an_early_answer_from_an_http2_upstream_closes_the_client_and_resets_only_the_stream(
) {
    let upstream = EarlyAnswering::start().await;
    let front = upstream.front(true).await;
    let (_, response) = stall_an_http1_upload(front).await;
    assert!(response.ends_with("\r\n\r\nearly"), "{response}");
    reaches("upstream bodies cut short", &upstream.cut, 1).await;
    // The upstream connection carries the next request.
    let response = client().request(get(front, "/").body(empty()).unwrap()).await.unwrap();
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "early");
    assert_eq!(upstream.ended.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_upload_that_stalls_after_an_early_answer_resets_the_http2_clients_stream_and_the_connection_goes_on() {
    let upstream = EarlyAnswering::start().await;
    let front = upstream.front(false).await;
    let client = h2_client();
    let (tx, body) = channel_body(4);
    let request = Request::post(format!("http://{front}/upload")).body(body).unwrap();
    tx.send(Bytes::from_static(b"abc")).await.unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "early");
    let answered = Instant::now();
    // The stream reset, hyper's client drops the body it was sending: its sender sees it.
    tokio::time::timeout(Duration::from_secs(10), tx.closed())
        .await
        .expect("the upload's stream still open after 10 s");
    let waited = answered.elapsed();
    assert!(
        waited >= IDLE - TICK && waited < IDLE + Duration::from_millis(1500),
        "reset {waited:?} after the answer"
    );
    reaches("upstream connections ended", &upstream.ended, 1).await;
    // The same HTTP/2 connection (the client keeps one per host) carries the next request.
    let response = client.request(get(front, "/").body(empty()).unwrap()).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "early");
}

#[tokio::test]
async fn an_upload_that_trickles_within_the_timeout_after_an_early_answer_goes_through_whole() {
    let upstream = EarlyAnswering::start().await;
    for (round, http2) in [false, true].into_iter().enumerate() {
        let front = upstream.front(http2).await;
        let (tx, body) = channel_body(4);
        let request = Request::post(format!("http://{front}/upload")).body(body).unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "early");
        // Fifteen frames a tick apart: three times the timeout in all.
        for _ in 0..15 {
            tokio::time::sleep(TICK).await;
            tx.send(Bytes::from_static(b"drip")).await.unwrap();
        }
        drop(tx);
        reaches("upstream body bytes", &upstream.bytes, 60 * (round + 1)).await;
        assert_eq!(upstream.cut.load(Ordering::SeqCst), 0, "http2={http2}");
    }
}

#[tokio::test]
async fn an_upload_that_stalls_before_the_answer_is_refused_as_the_clients_timeout() {
    let upstream = EarlyAnswering::start().await;
    for http2 in [false, true] {
        let front = upstream.front(http2).await;
        let (tx, body) = channel_body(4);
        let request = Request::post(format!("http://{front}/read-first")).body(body).unwrap();
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        let started = Instant::now();
        let response = client().request(request).await.unwrap();
        let waited = started.elapsed();
        // Not the response timeout's (30 s), nor blamed on the upstream.
        assert_eq!(proxy_error(&response), "client-body-stalled", "http2={http2}");
        assert!(
            waited >= IDLE - TICK && waited < IDLE + Duration::from_millis(1500),
            "http2={http2}: refused after {waited:?}"
        );
        drop(tx);
    }
}
