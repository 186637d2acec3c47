//! Limits and timeouts: each breach gets its status code (431, 408, 503, 504, 502)
//! and a log line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes (or `limit` passes); returns the bytes and whether it closed.
async fn read_until_close(tcp: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(limit, tcp.read_to_end(&mut buf)).await.is_ok();
    (buf, closed)
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_over_the_size_limit_gets_431_and_a_log_line() {
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_MAX_HEADER_BYTES", "8192")
        .start()
        .await;
    let port = stack.portcullis.app.port;

    let under = format!("X-Filler: {}", "a".repeat(4000));
    let resp = raw_request(
        port,
        &[
            "GET /.auth/healthz HTTP/1.1",
            "Host: localhost",
            &under,
            "Connection: close",
        ],
    )
    .await;
    assert_eq!(resp.status, 200, "a 4 kB head is within an 8 KiB limit");

    let over = format!("X-Filler: {}", "a".repeat(12_000));
    let resp = raw_request(
        port,
        &[
            "GET /.auth/healthz HTTP/1.1",
            "Host: localhost",
            &over,
            "Connection: close",
        ],
    )
    .await;
    assert_eq!(resp.status, 431, "a 12 kB head over an 8 KiB limit: {resp:?}");
    eventually("a log line with status=431", Duration::from_secs(2), || async {
        stack.portcullis.logged_status(431).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_header_fields_get_431_and_a_log_line() {
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_MAX_HEADERS", "16")
        .start()
        .await;
    let port = stack.portcullis.app.port;
    let head = |n: usize| {
        let mut lines = vec!["GET /.auth/healthz HTTP/1.1".to_owned(), "Host: localhost".to_owned()];
        lines.extend((0..n).map(|i| format!("X-Field-{i}: {i}")));
        lines.push("Connection: close".to_owned());
        lines
    };

    let few = head(8);
    let resp = raw_request(port, &few.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(resp.status, 200, "10 fields are within a limit of 16");

    let many = head(40);
    let resp = raw_request(port, &many.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(resp.status, 431, "42 fields over a limit of 16: {resp:?}");
    eventually("a log line with status=431", Duration::from_secs(2), || async {
        stack.portcullis.logged_status(431).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_head_gets_408_and_idle_keep_alive_connections_are_closed_silently() {
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_HEADER_READ_TIMEOUT", "1s")
        .start()
        .await;
    let port = stack.portcullis.app.port;

    // Half a head, then nothing.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stalled
        .write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // A head trickled one byte every 200 ms never completes either.
    let mut trickle = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let trickler = tokio::spawn(async move {
        let mut out = Vec::new();
        for b in b"GET /.auth/healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
            .iter()
            .chain(b"a".repeat(100).iter())
        {
            if trickle.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut buf = [0u8; 1024];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), trickle.read(&mut buf)).await {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), trickle.read_to_end(&mut out)).await;
        out
    });
    // A head stalled after its request line.
    let mut short = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    short.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // An idle connection that never sends a byte.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    // A connection that completed a request and then stays idle.
    let mut served = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let (status, _) = exchange(&mut served, "/.auth/healthz", None).await;
    assert_eq!(status, 200);

    let (bytes, closed) = read_until_close(&mut stalled, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    assert!(closed, "the stalled connection was not closed within 5 s");
    assert_eq!(
        status_of(&bytes),
        Some(408),
        "a stalled head must get 408: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "408 before the timeout: {elapsed:?}"
    );

    let trickled = trickler.await.expect("trickler");
    assert_eq!(
        status_of(&trickled),
        Some(408),
        "a head trickled byte by byte (20 s worth) must hit the same deadline: {:?}",
        String::from_utf8_lossy(&trickled)
    );

    let mut failures = Vec::new();
    let (bytes, closed) = read_until_close(&mut short, Duration::from_secs(3)).await;
    if !closed || status_of(&bytes) != Some(408) {
        failures.push(format!(
            "a head stalled after 16 bytes got {:?} (closed: {closed}) instead of a 408",
            String::from_utf8_lossy(&bytes)
        ));
    }
    for (what, conn) in [
        ("an idle keep-alive connection", &mut served),
        ("a never-used connection", &mut idle),
    ] {
        let (bytes, closed) = read_until_close(conn, Duration::from_secs(4)).await;
        if !closed {
            failures.push(format!("{what} was not closed within 4 s of a 1 s timeout"));
        } else if !bytes.is_empty() {
            failures.push(format!(
                "{what} got bytes instead of a silent close: {:?}",
                String::from_utf8_lossy(&bytes)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eventually("a log line with status=408", Duration::from_secs(2), || async {
        stack.portcullis.logged_status(408).then_some(())
    })
    .await;
}

/// Sends `GET path` on `tcp` (with the `Cookie` header `cookie`, if any) and reads the
/// whole response (it has a `Content-Length`).
async fn exchange(tcp: &mut TcpStream, path: &str, cookie: Option<&str>) -> (u16, Vec<u8>) {
    let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
    let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n{cookie}\r\n");
    tcp.write_all(head.as_bytes()).await.expect("write a request");
    let (status, headers) = ws::read_head(tcp).await.expect("a response head");
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("a Content-Length");
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.expect("the body");
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_head_timeout_spares_busy_connections_and_slow_responses() {
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_HEADER_READ_TIMEOUT", "1s")
        .start()
        .await;
    stack.login("john", "/").await;
    let cookie = format!("portcullis_session={}", stack.session_cookie().expect("session"));
    let mut tcp = TcpStream::connect(("127.0.0.1", stack.portcullis.app.port))
        .await
        .expect("connect");

    // A request every 300 ms for three timeouts' worth, on one connection: the timer
    // runs from the end of the last response, not from the connection's start.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let (status, _) = exchange(&mut tcp, "/.auth/healthz", Some(&cookie)).await;
        assert_eq!(status, 200, "after {:?} on one connection", started.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A response that takes 2.5 timeouts is not cut off by the head timeout.
    let (status, body) = exchange(&mut tcp, "/__slow?ms=2500", Some(&cookie)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("/__slow"),
        "the upstream's answer"
    );

    // Then nothing: closed silently a timeout after that response.
    assert_closed_silently_a_timeout_after(&mut tcp, Instant::now(), "the last response").await;
}

/// The connection gets no byte more and is closed about a 1 s head timeout after `since`
/// (when `what` ended).
async fn assert_closed_silently_a_timeout_after(tcp: &mut TcpStream, since: Instant, what: &str) {
    let (bytes, closed) = read_until_close(tcp, Duration::from_secs(4)).await;
    assert!(closed, "the idle connection was not closed within 4 s of a 1 s timeout");
    assert!(
        bytes.is_empty(),
        "the connection got bytes after {what}: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "closed {waited:?} after {what}, for a 1 s timeout"
    );
}

/// An upstream that answers each request (`200`, body `early`) as soon as it has read
/// the head, then reads its `Content-Length` body on and keeps the connection, as
/// Node.js does when a handler ends without consuming the body. Counts the body bytes
/// it read.
async fn answering_before_reading_uploads() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let uploaded = Arc::new(AtomicUsize::new(0));
    let total = uploaded.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let total = total.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head_end = buffer.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                    let length: usize = String::from_utf8_lossy(&buffer[..head_end])
                        .to_ascii_lowercase()
                        .lines()
                        .find_map(|line| {
                            line.strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    while buffer.len() < head_end + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buffer.drain(..head_end + length);
                    total.fetch_add(length, Ordering::SeqCst);
                }
            });
        }
    });
    (url, uploaded, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_going_on_after_its_answer_is_not_cut_off_by_the_head_timeout() {
    // The answer is complete while hyper still reads the request body: the connection
    // is busy until the body has ended, and idle only from then (no 408 either, though
    // the body's bytes came after the last response).
    let (url, uploaded, upstream) = answering_before_reading_uploads().await;
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_HEADER_READ_TIMEOUT", "1s")
        .upstream(&url)
        .start()
        .await;
    stack.login("john", "/").await;
    let cookie = format!("portcullis_session={}", stack.session_cookie().expect("session"));
    let mut tcp = TcpStream::connect(("127.0.0.1", stack.portcullis.app.port))
        .await
        .expect("connect");

    // 13 parts of 100 bytes, one every 200 ms: the upload goes on for 2.4 timeouts
    // after its answer.
    let part = [b'u'; 100];
    let head = format!("POST /upload HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\ncontent-length: 1300\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("write the head");
    tcp.write_all(&part).await.expect("write the first part");
    let (status, _) = ws::read_head(&mut tcp).await.expect("the answer's head");
    assert_eq!(status, 200);
    let mut body = [0u8; 5];
    tcp.read_exact(&mut body).await.expect("the answer's body");
    assert_eq!(&body, b"early");
    let answered = Instant::now();
    for _ in 1..13 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tcp.write_all(&part).await.unwrap_or_else(|error| {
            panic!(
                "the upload was cut off {:?} after its answer: {error}",
                answered.elapsed()
            )
        });
    }
    let ended = Instant::now();
    let uploaded = &uploaded;
    eventually(
        "the whole upload reached the upstream",
        Duration::from_secs(5),
        || async move { (uploaded.load(Ordering::SeqCst) == 1300).then_some(()) },
    )
    .await;

    // Then nothing: closed silently a timeout after the upload's end.
    assert_closed_silently_a_timeout_after(&mut tcp, ended, "the upload's end").await;
    upstream.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_limit_get_a_503_and_are_closed() {
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_MAX_CONNECTIONS", "2")
        .start()
        .await;
    let port = stack.portcullis.app.port;
    // Let the readiness probe's connection go away.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut held = Vec::new();
    for i in 0..2 {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf)).await;
        assert!(
            early.is_err(),
            "connection {i} (within the limit of 2) was answered or closed: {early:?}"
        );
        held.push(tcp);
    }

    let mut third = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let (bytes, closed) = read_until_close(&mut third, Duration::from_secs(5)).await;
    assert!(closed, "the connection over the limit was not closed");
    assert_eq!(
        status_of(&bytes),
        Some(503),
        "the connection over the limit: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    eventually(
        "a log line about the refused connection",
        Duration::from_secs(2),
        || async {
            let log = stack.portcullis.log_text();
            log.lines()
                .any(|l| l.contains("connection limit") || l.contains("status=503"))
                .then_some(())
        },
    )
    .await;

    // A held connection is still served, and once one goes a newcomer is too.
    held[0]
        .write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (bytes, _) = read_until_close(&mut held[0], Duration::from_secs(5)).await;
    assert_eq!(
        status_of(&bytes),
        Some(200),
        "a connection within the limit was not served"
    );
    drop(held);
    eventually(
        "a new connection served after others closed",
        Duration::from_secs(5),
        || async {
            let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            tcp.write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let (bytes, _) = read_until_close(&mut tcp, Duration::from_secs(2)).await;
            (status_of(&bytes) == Some(200)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upstream_gets_504_after_the_response_timeout_and_a_log_line() {
    let stack = Stack::builder()
        .env("PORTCULLIS_UPSTREAM_RESPONSE_TIMEOUT", "1s")
        .start()
        .await;
    stack.login("john", "/").await;

    let fast = stack.client.api_get(&stack.url("/__slow?ms=200")).await;
    assert_status(&fast, 200);

    let started = Instant::now();
    let slow = stack.client.navigate(&stack.url("/__slow?ms=4000")).await;
    let elapsed = started.elapsed();
    assert_status(&slow, 504);
    assert_html_page(&slow);
    assert!(
        elapsed < Duration::from_millis(3000),
        "the 504 came after {elapsed:?}, not after the 1 s timeout"
    );
    eventually("a log line with status=504", Duration::from_secs(2), || async {
        stack.portcullis.logged_status(504).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_does_not_accept_the_connection_gets_504_after_the_connect_timeout() {
    // A listener whose accept queue is full and never drained: further connects hang
    // (Linux drops their SYNs).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())
        .expect("bind");
    socket.listen(0).expect("listen");
    let blackhole = socket.local_addr().expect("addr").as_socket().expect("inet");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(tcp)) = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(blackhole)).await {
            fillers.push(tcp);
        }
    }
    let probe = tokio::time::timeout(Duration::from_millis(700), TcpStream::connect(blackhole)).await;
    if probe.is_ok() {
        println!("SKIPPED: connecting to a full accept queue does not hang here ({probe:?})");
        return;
    }
    // HTTP/1.1 and HTTP/2 upstreams are reached through different clients; both time out.
    for http2 in ["false", "true"] {
        let stack = Stack::builder()
            .upstream(format!("http://{blackhole}"))
            .env("PORTCULLIS_UPSTREAM_CONNECT_TIMEOUT", "1s")
            .env("PORTCULLIS_UPSTREAM_HTTP2", http2)
            .start()
            .await;
        let started = Instant::now();
        let trace = stack.client.login(&stack.url("/app"), "john", PASSWORD).await;
        let landing = trace.landing();
        assert_status(landing, 504);
        assert!(started.elapsed() < Duration::from_secs(8), "http2={http2}");
        eventually("a log line with status=504", Duration::from_secs(2), || async {
            stack.portcullis.logged_status(504).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_is_down_gets_502_and_a_log_line() {
    let dead = free_port();
    let stack = Stack::builder()
        .upstream(format!("http://127.0.0.1:{dead}"))
        .start()
        .await;
    let trace = stack.client.login(&stack.url("/app"), "john", PASSWORD).await;
    assert_status(trace.landing(), 502);
    let api = stack.client.api_get(&stack.url("/app")).await;
    assert_status(&api, 502);
    eventually("a log line with status=502", Duration::from_secs(2), || async {
        stack.portcullis.logged_status(502).then_some(())
    })
    .await;
}
