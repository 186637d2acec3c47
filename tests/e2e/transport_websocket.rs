//! WebSockets through portcullis: an authenticated upgrade carries messages both
//! ways; an unauthenticated one is refused before anything reaches the upstream; an
//! open tunnel counts under the connection limit.

use std::time::Duration;

use crate::common::upstream::RustUpstream;
use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

/// Sends a WebSocket handshake for `/ws` with `extra` header lines; returns the
/// stream (positioned after the response head), the status and the headers.
async fn handshake(port: u16, key: &str, extra: &[String]) -> (TcpStream, u16, Vec<(String, String)>) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let req = ws::handshake_request("/ws", &format!("localhost:{port}"), key, extra);
    tcp.write_all(req.as_bytes()).await.expect("write handshake");
    let (status, headers) = tokio::time::timeout(T, ws::read_head(&mut tcp))
        .await
        .expect("handshake response in time")
        .expect("handshake response");
    (tcp, status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn recv(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    tokio::time::timeout(T, ws::read_frame(tcp))
        .await
        .expect("a WebSocket frame in time")
        .expect("a WebSocket frame")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_authenticated_websocket_upgrade_carries_messages_both_ways() {
    let upstream = RustUpstream::start().await;
    let stack = Stack::builder().upstream(&upstream.url).start().await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;
    let cookie = format!(
        "Cookie: portcullis_session={}",
        stack.session_cookie().expect("session")
    );
    let origin = format!("Origin: http://localhost:{port}");

    let key = ws::random_key();
    let (mut tcp, status, headers) = handshake(port, &key, &[cookie, origin]).await;
    assert_eq!(status, 101, "the upgrade was not switched: {headers:?}");
    assert_eq!(
        header(&headers, "sec-websocket-accept"),
        Some(ws::accept_for(&key).as_str()),
        "the upstream's accept key must come through unchanged"
    );
    assert!(header(&headers, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")));

    // Upstream → client, unprompted.
    assert_eq!(recv(&mut tcp).await, (ws::TEXT, b"hello from upstream".to_vec()));
    // The upgrade's access line went out with the 101, while the tunnel is open.
    let lines = stack.portcullis.access_lines("/ws", 1).await;
    let line = &lines[0];
    assert_eq!(access_field(line, "status"), Some("101"), "{line}");
    assert_eq!(access_field(line, "outcome"), Some("complete"), "{line}");
    assert_eq!(access_field(line, "body_bytes"), Some("0"), "{line}");
    // Client → upstream → client, several times, text and binary, small and large.
    for i in 0..5 {
        let msg = format!("message {i}");
        ws::write_frame(&mut tcp, ws::TEXT, msg.as_bytes(), true)
            .await
            .expect("send");
        assert_eq!(recv(&mut tcp).await, (ws::TEXT, format!("echo: {msg}").into_bytes()));
    }
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    ws::write_frame(&mut tcp, ws::BINARY, &big, true)
        .await
        .expect("send binary");
    let (op, payload) = recv(&mut tcp).await;
    assert_eq!(op, ws::BINARY);
    assert_eq!(&payload[..6], b"echo: ");
    assert!(payload[6..] == big[..], "the 200 kB binary message came back altered");
    ws::write_frame(&mut tcp, ws::PING, b"p", true).await.expect("ping");
    assert_eq!(recv(&mut tcp).await, (ws::PONG, b"p".to_vec()));

    ws::write_frame(&mut tcp, ws::CLOSE, &1000u16.to_be_bytes(), true)
        .await
        .expect("close");
    assert_eq!(
        recv(&mut tcp).await.0,
        ws::CLOSE,
        "the close handshake did not come back"
    );
    assert_eq!(upstream.hits("/ws"), 1);

    // The upstream saw who the user is, and no portcullis cookie.
    let heads = upstream.heads();
    let (_, _, ws_headers) = heads.iter().find(|(_, p, _)| p == "/ws").expect("the /ws head");
    let get = |n: &str| ws_headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(get("remote-user"), Some("john"), "{ws_headers:?}");
    assert!(
        !get("cookie").unwrap_or_default().contains("portcullis_session"),
        "the session cookie leaked upstream: {ws_headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unauthenticated_websocket_upgrade_gets_401_and_never_reaches_the_upstream() {
    let upstream = RustUpstream::start().await;
    let stack = Stack::builder().upstream(&upstream.url).start().await;
    let port = stack.portcullis.app.port;
    let origin = format!("Origin: http://localhost:{port}");

    for (what, extra) in [
        ("no cookie", vec![origin.clone()]),
        (
            "a forged session cookie",
            vec![origin.clone(), format!("Cookie: portcullis_session={}", "A".repeat(43))],
        ),
    ] {
        let (mut tcp, status, headers) = handshake(port, &ws::random_key(), &extra).await;
        assert_eq!(status, 401, "WebSocket upgrade with {what}: {headers:?}");
        assert!(
            header(&headers, "sec-websocket-accept").is_none() && header(&headers, "upgrade").is_none(),
            "{what}: a refused upgrade must not look switched: {headers:?}"
        );
        // Nothing that looks like a WebSocket frame from the upstream follows.
        let _ = tcp.shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        upstream.hits("/ws"),
        0,
        "an unauthenticated upgrade reached the upstream"
    );
}

/// `portcullis_connections_open`, scraped from the metrics listener on `metrics_port`.
async fn connections_open(metrics_port: u16) -> f64 {
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let text = crate::common::peers::plain_client()
        .get(&url)
        .send()
        .await
        .expect("metrics listener answers")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("portcullis_connections_open "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no portcullis_connections_open in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn open_websockets_count_under_the_connection_limit_until_they_close() {
    let upstream = RustUpstream::start().await;
    let metrics_port = free_port();
    let stack = Stack::builder()
        .upstream(&upstream.url)
        .env("PORTCULLIS_POLICY_PUBLIC_PATHS", "/ws")
        .env("PORTCULLIS_SERVER_MAX_CONNECTIONS", "2")
        .env("PORTCULLIS_SERVER_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .start()
        .await;
    let port = stack.portcullis.app.port;
    eventually("the readiness probe's connection closed", T, || async {
        (connections_open(metrics_port).await == 0.0).then_some(())
    })
    .await;

    let origin = format!("Origin: http://localhost:{port}");
    let mut tunnels = Vec::new();
    for _ in 0..2 {
        let (mut tcp, status, headers) = handshake(port, &ws::random_key(), std::slice::from_ref(&origin)).await;
        assert_eq!(status, 101, "the upgrade was not switched: {headers:?}");
        assert_eq!(recv(&mut tcp).await, (ws::TEXT, b"hello from upstream".to_vec()));
        tunnels.push(tcp);
    }
    // hyper let go of both connections at the 101: only their tunnels hold them now.
    assert_eq!(
        connections_open(metrics_port).await,
        2.0,
        "the gauge does not count the tunnels"
    );

    let mut third = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let mut refused = Vec::new();
    tokio::time::timeout(T, third.read_to_end(&mut refused))
        .await
        .expect("the third connection was neither answered nor closed")
        .expect("read the third connection");
    assert!(
        refused.starts_with(b"HTTP/1.1 503 "),
        "a third connection beside two open tunnels, with a limit of 2: {:?}",
        String::from_utf8_lossy(&refused)
    );
    for tcp in &mut tunnels {
        ws::write_frame(tcp, ws::PING, b"still there", true)
            .await
            .expect("ping");
        assert_eq!(recv(tcp).await, (ws::PONG, b"still there".to_vec()));
    }

    // One tunnel closes: its place is free again.
    let mut first = tunnels.remove(0);
    ws::write_frame(&mut first, ws::CLOSE, &1000u16.to_be_bytes(), true)
        .await
        .expect("close");
    assert_eq!(recv(&mut first).await.0, ws::CLOSE);
    drop(first);
    eventually("a new connection served after a tunnel closed", T, || async {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        tcp.write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        tokio::time::timeout(T, tcp.read_to_end(&mut answer)).await.ok()?.ok()?;
        answer.starts_with(b"HTTP/1.1 200 ").then_some(())
    })
    .await;
    eventually("the gauge counting the one tunnel left", T, || async {
        (connections_open(metrics_port).await == 1.0).then_some(())
    })
    .await;
}
