//! Socket tests of `Upstream::forward`: a client talks to a front server that
//! forwards to an echo upstream, all in-process on loopback or a unix socket.

mod body_idle;
mod pool;
mod support;
mod transport;
mod upload_idle;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, COOKIE, HOST};
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::UpstreamTarget;
use support::*;

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn upstream_sees_session_identity_and_no_spoofed_headers() {
    let upstream_addr = tcp_upstream().await;
    let front = front(upstream(http_target(upstream_addr, "/base/"), LONG)).await;

    let request = get(front, "/a%2Fb/../c;p?x=1&y=%20")
        .header(HOST, "app.example.test")
        .header("Remote-User", "mallory")
        .header("remote-user", "mallory-again")
        .header("REMOTE_USER", "mallory-cgi")
        .header("Remote_Groups", "admins")
        .header("X-Forwarded-User", "mallory")
        .header("Authorization", "Bearer spoofed")
        .header("X-Forwarded-Access-Token", "spoofed")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "https")
        .header("Forwarded", "for=6.6.6.6")
        .header(CONNECTION, "x-drop-me")
        .header("x-drop-me", "1")
        .header(
            COOKIE,
            "theme=dark; portcullis=SESSION; portcullis_login_abc=1; lang=en",
        )
        .body(empty())
        .unwrap();
    let response = client().request(request).await.unwrap();

    // Hop-by-hop headers of the upstream's response do not reach the client.
    for name in ["x-upstream-secret", "keep-alive", "proxy-authenticate"] {
        assert!(!response.headers().contains_key(name), "{name} leaked");
    }
    let seen = Seen::from(response).await;
    assert_eq!(seen.uri, "/base/a%2Fb/../c;p?x=1&y=%20");
    assert_eq!(seen.version, "HTTP/1.1");
    assert_eq!(seen.all("remote-user"), ["alice"]);
    assert_eq!(seen.all("remote-groups"), ["admins,dev"]);
    assert!(seen.all("remote-email").is_empty());
    assert!(seen.all("x-forwarded-user").is_empty());
    assert_eq!(seen.all("authorization"), ["Bearer real-token"]);
    assert!(seen.all("x-forwarded-access-token").is_empty());
    assert_eq!(seen.all("cookie"), ["theme=dark; lang=en"]);
    assert_eq!(seen.all("host"), ["app.example.test"]);
    assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-host"), ["app.example.test"]);
    assert_eq!(seen.all("x-forwarded-proto"), ["http"]);
    assert!(seen.all("forwarded").is_empty());
    assert!(seen.all("x-drop-me").is_empty());
}

#[tokio::test]
async fn http2_client_gets_host_from_authority_and_cookies_joined() {
    let upstream_addr = tcp_upstream().await;
    let front = front(upstream(http_target(upstream_addr, ""), LONG)).await;
    let request = get(front, "/h2?q")
        .header(COOKIE, "a=1")
        .header(COOKIE, "portcullis=SESSION")
        .header(COOKIE, "b=2")
        .body(empty())
        .unwrap();
    let response = h2_client().request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let seen = Seen::from(response).await;
    assert_eq!(seen.version, "HTTP/1.1");
    assert_eq!(seen.uri, "/h2?q");
    assert_eq!(seen.all("cookie"), ["a=1; b=2"]);
    assert_eq!(seen.all("host"), [front.to_string()]);
    assert_eq!(seen.all("x-forwarded-host"), [front.to_string()]);
}

#[tokio::test]
async fn unix_socket_upstream_gets_the_rewritten_request() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("upstream.sock");
    unix_upstream(&socket);
    let front = front(upstream(UpstreamTarget::Unix(socket), LONG)).await;
    let request = get(front, "/over/unix?x")
        .header("remote_user", "mallory")
        .body(empty())
        .unwrap();
    let seen = Seen::from(client().request(request).await.unwrap()).await;
    assert_eq!(seen.uri, "/over/unix?x");
    assert_eq!(seen.all("remote-user"), ["alice"]);
    assert_eq!(seen.all("host"), [front.to_string()]);
}

/// 50 MiB, generated and checked on the fly. The first chunk makes a full round
/// trip before the second is sent, which proves neither direction is buffered.
#[tokio::test]
async fn large_bodies_stream_both_ways_without_buffering() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 800;
    fn chunk(index: usize) -> Bytes {
        (0..CHUNK).map(|j| ((index * CHUNK + j) % 251) as u8).collect()
    }

    let upstream_addr = tcp_upstream().await;
    let front = front(upstream(http_target(upstream_addr, ""), LONG)).await;
    let (tx, body) = channel_body(4);
    let request = http::Request::post(format!("http://{front}/echo-body"))
        .body(body)
        .unwrap();
    let client = client();
    let response = tokio::spawn(client.request(request));
    tx.send(chunk(0)).await.unwrap();
    let mut body = response.await.unwrap().unwrap().into_body();

    let mut received = 0usize;
    let mut tx = Some(tx);
    let mut sender = None;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        for (j, byte) in data.iter().enumerate() {
            let offset = received + j;
            assert_eq!(*byte, (offset % 251) as u8, "byte {offset}");
        }
        received += data.len();
        // The first chunk came back while the request body is still open.
        if received >= CHUNK {
            if let Some(tx) = tx.take() {
                sender = Some(tokio::spawn(async move {
                    for index in 1..CHUNKS {
                        tx.send(chunk(index)).await.unwrap();
                    }
                }));
            }
        }
    }
    assert_eq!(received, CHUNK * CHUNKS);
    sender.unwrap().await.unwrap();
}

#[tokio::test]
async fn slow_upload_is_not_cut_off_by_the_response_timeout() {
    let upstream_addr = tcp_upstream().await;
    let timeout = Duration::from_millis(400);
    let front = front(upstream(http_target(upstream_addr, ""), timeout)).await;
    let (tx, body) = channel_body(1);
    let request = http::Request::post(format!("http://{front}/count-body"))
        .body(body)
        .unwrap();
    let client = client();
    let response = tokio::spawn(client.request(request));
    let started = Instant::now();
    for _ in 0..8 {
        tx.send(Bytes::from_static(b"0123456789")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tx);
    let response = response.await.unwrap().unwrap();
    assert!(started.elapsed() > timeout, "the upload outlasted the timeout");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"80");
}

#[tokio::test]
async fn upstream_down_is_a_connect_error_without_the_address() {
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = unused.local_addr().unwrap();
    drop(unused);
    let front = front(upstream(http_target(dead, ""), LONG)).await;
    let response = client().request(get(front, "/").body(empty()).unwrap()).await.unwrap();
    assert_eq!(proxy_error(&response), "connect");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let message = String::from_utf8_lossy(&body);
    assert_eq!(message, "upstream connection failed");
    assert!(!message.contains(&dead.port().to_string()));
}

#[tokio::test]
async fn missing_unix_socket_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let target = UpstreamTarget::Unix(dir.path().join("nobody-listens.sock"));
    let front = front(upstream(target, LONG)).await;
    let response = client().request(get(front, "/").body(empty()).unwrap()).await.unwrap();
    assert_eq!(proxy_error(&response), "connect");
}

#[tokio::test]
async fn slow_upstream_is_a_timeout() {
    let upstream_addr = tcp_upstream().await;
    let timeout = Duration::from_millis(200);
    let front = front(upstream(http_target(upstream_addr, ""), timeout)).await;
    let started = Instant::now();
    let response = client()
        .request(get(front, "/slow").body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(proxy_error(&response), "timeout");
    assert!(started.elapsed() < Duration::from_millis(1500));
}

/// An error that wraps another, as hyper and the connector wrap theirs.
#[derive(Debug, thiserror::Error)]
#[error("wrapped")]
struct Wrapped(#[source] super::BoxError);

#[test]
fn a_timed_out_connect_is_a_timeout_wherever_it_sits_in_the_chain() {
    use super::connector::ConnectTimeout;
    use super::{connect_error, ProxyError};
    let timeouts: [super::BoxError; 4] = [
        Box::new(ConnectTimeout),
        Box::new(Wrapped(Box::new(ConnectTimeout))),
        Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        Box::new(Wrapped(Box::new(Wrapped(Box::new(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        )))))),
    ];
    for error in timeouts {
        let shown = format!("{error:?}");
        assert!(matches!(connect_error(error), ProxyError::Timeout), "{shown}");
    }
    let failures: [super::BoxError; 2] = [
        Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        Box::new(Wrapped(Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)))),
    ];
    for error in failures {
        let shown = format!("{error:?}");
        assert!(matches!(connect_error(error), ProxyError::Connect(_)), "{shown}");
    }
}

#[test]
fn the_upstreams_debug_form_names_its_target_and_settings() {
    let shown = format!(
        "{:?}",
        upstream(http_target(([127, 0, 0, 1], 8080).into(), "/base/"), LONG)
    );
    for part in [
        "Upstream",
        "target",
        "127.0.0.1:8080",
        "response_timeout: 30s",
        "preserve_host",
    ] {
        assert!(shown.contains(part), "{part} missing from {shown}");
    }
}

/// Sends a raw WebSocket handshake to the front server and returns the connection
/// positioned after the response head, with the head.
async fn websocket_handshake(front: std::net::SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(front).await.unwrap();
    let handshake = "GET /chat/ws HTTP/1.1\r\n\
        Host: app.example.test\r\n\
        Connection: keep-alive, Upgrade\r\n\
        Upgrade: websocket\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed in the head");
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).unwrap().to_ascii_lowercase())
}

async fn echo_round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(back, message);
}

/// Polls `condition` until it holds or five seconds pass.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn websocket_upgrade_passes_bytes_both_ways_and_ends_with_the_client() {
    let upstream_addr = tcp_upstream().await;
    let upstream = upstream(http_target(upstream_addr, ""), LONG);
    let front = front(upstream.clone()).await;

    let (mut stream, head) = websocket_handshake(front).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nx-saw-upgrade: websocket\r\n"), "{head}");
    echo_round_trip(&mut stream, b"hello").await;
    echo_round_trip(&mut stream, &[0x81, 0x02, b'h', b'i']).await;
    assert_eq!(upstream.upgraded_connections(), 1);

    drop(stream);
    eventually("the tunnel to end", || upstream.upgraded_connections() == 0).await;
}

#[tokio::test]
async fn closing_upgraded_connections_ends_open_tunnels() {
    let upstream_addr = tcp_upstream().await;
    let upstream = upstream(http_target(upstream_addr, ""), LONG);
    let front = front(upstream.clone()).await;

    let (mut stream, head) = websocket_handshake(front).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo_round_trip(&mut stream, b"ping").await;

    upstream.close_upgraded_connections();
    eventually("the tunnel to end", || upstream.upgraded_connections() == 0).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
}

#[tokio::test]
async fn unsolicited_switching_protocols_is_a_request_error() {
    let upstream_addr = tcp_upstream().await;
    let front = front(upstream(http_target(upstream_addr, ""), LONG)).await;
    // The echo upstream answers `/ws` with 101 even without an upgrade request.
    let response = client()
        .request(get(front, "/ws").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(proxy_error(&response), "request");
}
