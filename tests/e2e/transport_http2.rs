//! HTTP/2 on the client side (ALPN over TLS, prior-knowledge h2c when enabled, idle
//! connections closed) and on the upstream side (HTTP/1.1 by default, HTTP/2 when
//! configured).

use std::time::{Duration, Instant};

use crate::common::h1::{self, h1_connect, h2_over};
use crate::common::tls::TestPki;
use crate::common::upstream::{RustUpstream, TestBody};
use crate::common::*;
use http::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

fn get(url: &str, cookie: &str) -> Request<TestBody> {
    Request::get(url)
        .header("cookie", cookie)
        .header("accept", "application/json")
        .body(h1::empty())
        .expect("request")
}

fn session(stack: &Stack) -> String {
    format!("portcullis_session={}", stack.session_cookie().expect("session cookie"))
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_alpn_negotiates_h2_and_authenticated_streams_reach_the_upstream() {
    let pki = TestPki::new();
    pki.install(&pki.issue("localhost", 1));
    let mut builder = Stack::builder()
        .https()
        .client(Browserless::with_http(pki.reqwest_client()));
    for (k, v) in pki.env() {
        builder = builder.env(k, v);
    }
    let stack = builder.start().await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;
    let cookie = session(&stack);

    let tls = pki.connect(port, &[b"h2", b"http/1.1"]).await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "portcullis did not choose h2 by ALPN"
    );
    let send = h2_over(tls).await.expect("HTTP/2 handshake over TLS");

    // Ten streams at once on the one connection.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut send = send.clone();
        let url = format!("https://localhost:{port}/via-h2/{i}?q={i}");
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            let resp = send.send_request(get(&url, &cookie)).await.expect("h2 response");
            assert_eq!(resp.version(), Version::HTTP_2);
            let status = resp.status();
            let body = h1::text(resp).await.expect("body");
            assert_eq!(status, 200, "{url}: {body}");
            let seen: EchoSeen = serde_json::from_str(&body).expect("echo JSON");
            (i, seen)
        }));
    }
    for task in tasks {
        let (i, seen) = task.await.expect("stream task");
        assert_eq!(seen.url, format!("/via-h2/{i}?q={i}"));
        assert_eq!(seen.values("remote-user"), ["john"]);
        assert_eq!(
            seen.values("host"),
            [format!("localhost:{port}")],
            "the HTTP/2 :authority must become the upstream Host"
        );
        assert!(seen.cookies().iter().all(|(n, _)| n != "portcullis_session"));
    }

    // Unauthenticated over h2: refused like over HTTP/1.1.
    let mut send = send.clone();
    let resp = send
        .send_request(get(&format!("https://localhost:{port}/via-h2/anon"), ""))
        .await
        .expect("h2 response");
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn prior_knowledge_h2c_is_served_when_enabled() {
    let stack = Stack::builder().env("PORTCULLIS_SERVER_H2C", "true").start().await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;

    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let mut send = h2_over(tcp).await.expect("h2c handshake");
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        send.send_request(get(&format!("http://localhost:{port}/via-h2c"), &session(&stack))),
    )
    .await
    .expect("h2c response in time")
    .expect("h2c response");
    assert_eq!(resp.version(), Version::HTTP_2);
    let body = h1::text(resp).await.expect("body");
    let seen: EchoSeen = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not echo JSON ({e}): {body}"));
    assert_eq!(seen.url, "/via-h2c");
    assert_eq!(seen.values("remote-user"), ["john"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn prior_knowledge_h2c_is_refused_by_default_while_http_1_1_works() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;

    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let outcome = async {
        let mut send = h2_over(tcp).await?;
        send.send_request(get(&format!("http://localhost:{port}/via-h2c"), &session(&stack)))
            .await
    };
    match tokio::time::timeout(Duration::from_secs(10), outcome).await {
        Err(_) => panic!("an h2c attempt neither failed nor succeeded within 10 s"),
        Ok(Ok(resp)) => panic!(
            "h2c was served although not enabled: {} {:?}",
            resp.status(),
            resp.version()
        ),
        Ok(Err(e)) => println!("h2c refused as expected: {e}"),
    }

    let mut send = h1_connect(port).await;
    let resp = send
        .send_request(h1::get(port, "/via-h1", &session(&stack)))
        .await
        .expect("HTTP/1.1 response");
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_is_spoken_to_in_http_1_1_by_default_and_in_http_2_when_configured() {
    for (http2, expected) in [(None, "HTTP/1.1"), (Some("true"), "HTTP/2.0")] {
        let upstream = RustUpstream::start().await;
        let mut builder = Stack::builder().upstream(&upstream.url);
        if let Some(v) = http2 {
            builder = builder.env("PORTCULLIS_UPSTREAM_HTTP2", v);
        }
        let stack = builder.start().await;
        stack.login("john", "/").await;
        let port = stack.portcullis.app.port;
        let mut send = h1_connect(port).await;
        let resp = send
            .send_request(h1::get(port, "/which-version", &session(&stack)))
            .await
            .expect("response");
        let status = resp.status();
        let body = h1::text(resp).await.expect("body");
        assert_eq!(status, 200, "upstream http2={http2:?}: {body}");
        assert_eq!(
            upstream.versions().last().map(String::as_str),
            Some(expected),
            "upstream http2={http2:?}: the upstream was spoken to in another version"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_connection_that_sends_no_request_is_closed_after_the_head_timeout() {
    use tokio::io::AsyncReadExt;
    let pki = TestPki::new();
    pki.install(&pki.issue("localhost", 1));
    let mut builder = Stack::builder()
        .https()
        .client(Browserless::with_http(pki.reqwest_client()))
        .env("PORTCULLIS_SERVER_HEADER_READ_TIMEOUT", "1s");
    for (k, v) in pki.env() {
        builder = builder.env(k, v);
    }
    let stack = builder.start().await;
    let port = stack.portcullis.app.port;

    // TLS done, h2 agreed, then silence: no preface, no request.
    let mut silent = pki.connect(port, &[b"h2"]).await;
    assert_eq!(silent.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let started = std::time::Instant::now();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the silent HTTP/2 connection was still open after 5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        started.elapsed()
    );
    // The log reaches the test through a pipe: poll for the line with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !stack
        .portcullis
        .log_text()
        .contains("sent no request within the head timeout")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line for the closed connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_is_closed_after_the_head_timeout_and_a_busy_one_is_not() {
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_H2C", "true")
        .env("PORTCULLIS_SERVER_HEADER_READ_TIMEOUT", "1s")
        .start()
        .await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;
    let cookie = session(&stack);

    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let (mut send, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2c handshake");
    // Ends when portcullis closes the connection.
    let connection = tokio::spawn(connection);

    // A request that takes longer than the timeout keeps the connection busy, not idle.
    let url = format!("http://localhost:{port}/__slow?ms=2500");
    let slow = send.send_request(get(&url, &cookie)).await.expect("the slow response");
    assert_eq!(slow.status(), 200);
    h1::text(slow).await.expect("the slow response's body");
    assert!(
        !connection.is_finished(),
        "the connection was closed while a request was being served"
    );
    // No GOAWAY came meanwhile: a new stream is still served.
    let after = send
        .send_request(get(&format!("http://localhost:{port}/after-slow"), &cookie))
        .await
        .expect("a request after the slow one");
    assert_eq!(after.status(), 200);
    h1::text(after).await.expect("its body");

    // Then idle: closed (GOAWAY, then the close) about a timeout after the last response.
    let idle_since = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), connection).await;
    let waited = idle_since.elapsed();
    assert!(closed.is_ok(), "the idle HTTP/2 connection was still open after 5 s");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "closed {waited:?} after the last response, for a 1 s timeout"
    );
}

/// An HTTP/2 frame: type, flags, stream and payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("a short frame").to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Reads one frame (type, flags, stream, payload); `None` once the connection is closed.
async fn read_h2_frame(tcp: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await.ok()?;
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; length];
    tcp.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream, payload))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_that_never_answers_the_idle_goaway_is_closed_a_head_timeout_later() {
    use tokio::io::AsyncWriteExt;
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const GOAWAY: u8 = 7;
    const ACK: u8 = 1;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_H2C", "true")
        .env("PORTCULLIS_SERVER_HEADER_READ_TIMEOUT", "1s")
        .start()
        .await;
    let port = stack.portcullis.app.port;

    // A hand-made client, as no client library leaves a PING unanswered: the preface,
    // its settings, and one GET on stream 1 (HPACK: `:method GET` and `:scheme http`
    // from the static table, `:path` and `:authority` as literals not indexed).
    let mut block = vec![0x82, 0x86];
    for (index, value) in [(4u8, "/.auth/healthz".to_owned()), (1, format!("localhost:{port}"))] {
        block.extend([index, u8::try_from(value.len()).expect("a short value")]);
        block.extend_from_slice(value.as_bytes());
    }
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(SETTINGS, 0, 0, &[]));
    hello.extend(h2_frame(1, END_STREAM | END_HEADERS, 1, &block));
    tcp.write_all(&hello).await.expect("send the request");

    // Then it reads everything, acknowledges the server's settings (a client that stopped
    // there would be another case), and answers nothing else: not the GOAWAY's PING.
    let (mut answered, mut goaway, mut pings) = (None, None, 0);
    let read = async {
        while let Some((kind, flags, stream, payload)) = read_h2_frame(&mut tcp).await {
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    tcp.write_all(&h2_frame(SETTINGS, ACK, 0, &[]))
                        .await
                        .expect("settings ack");
                }
                // The response's HEADERS (`:status 200` is static-table entry 8).
                1 if stream == 1 => {
                    assert_eq!(payload.first(), Some(&0x88), "not a 200: {payload:?}");
                    if flags & END_STREAM != 0 {
                        answered = Some(Instant::now());
                    }
                }
                0 if stream == 1 && flags & END_STREAM != 0 => answered = Some(Instant::now()),
                GOAWAY => {
                    assert_eq!(payload[..4], [0x7f, 0xff, 0xff, 0xff], "not a graceful GOAWAY");
                    assert_eq!(payload[4..8], [0, 0, 0, 0], "a GOAWAY with an error");
                    goaway = Some(Instant::now());
                }
                PING if flags & ACK == 0 => pings += 1,
                _ => {}
            }
        }
    };
    // hyper's keep-alive (a PING every 30 s, 20 s for its answer) would end it after 50 s.
    let closed = tokio::time::timeout(Duration::from_secs(15), read).await;
    let answered = answered.expect("no complete response to the request");
    let goaway = goaway.expect("no GOAWAY on the idle connection");
    assert!(
        closed.is_ok(),
        "the connection was still open 15 s after its GOAWAY went unanswered"
    );
    let closed = Instant::now();
    assert!(pings >= 1, "the GOAWAY came without the PING that ends it");
    let idle = goaway - answered;
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_millis(2500),
        "GOAWAY {idle:?} after the response, for a 1 s timeout"
    );
    let grace = closed - goaway;
    assert!(
        grace >= Duration::from_millis(900) && grace < Duration::from_millis(2500),
        "closed {grace:?} after the unanswered GOAWAY, for a 1 s timeout"
    );
    eventually(
        "the log line of the closed connection",
        Duration::from_secs(5),
        || async {
            stack
                .portcullis
                .log_text()
                .contains("still open a head timeout after its GOAWAY")
                .then_some(())
        },
    )
    .await;
}
