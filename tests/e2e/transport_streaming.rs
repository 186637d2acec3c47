//! Bodies stream through portcullis: gigabytes in flat memory, chunked bodies,
//! trailers (the upstream's passed on, a client's dropped), `Expect: 100-continue`,
//! bodiless responses, upstreams that give up or stall mid-body, and upstreams that turn
//! an upload away before reading it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::h1::{self, h1_connect, h2_over};
use crate::common::upstream::{pattern, read_request_head, PatternBody, RawUpstream, RustUpstream, TestBody};
use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// A logged-in stack in front of `upstream`; returns it with the `Cookie` value.
async fn stack_before(upstream: &str) -> (Stack, String) {
    stack_with(upstream, &[]).await
}

/// [`stack_before`] with portcullis' environment `env` added.
async fn stack_with(upstream: &str, env: &[(&str, &str)]) -> (Stack, String) {
    let stack = env
        .iter()
        .fold(Stack::builder().upstream(upstream), |builder, (key, value)| {
            builder.env(key, *value)
        })
        .start()
        .await;
    stack.login("john", "/").await;
    let cookie = format!("portcullis_session={}", stack.session_cookie().expect("session cookie"));
    (stack, cookie)
}

/// Samples portcullis' VmRSS every 20 ms until dropped; keeps the peak.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        RssSampler { peak, stop, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// Downloads `path` and verifies it against the pattern; returns (bytes, mismatch).
async fn download(port: u16, path: &str, cookie: &str) -> pattern::Checker {
    let mut send = h1_connect(port).await;
    let resp = send
        .send_request(h1::get(port, path, cookie))
        .await
        .expect("download response");
    assert_eq!(resp.status(), 200, "download of {path} answered {}", resp.status());
    let mut body = resp.into_body();
    let mut checker = pattern::Checker::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap_or_else(|e| panic!("download of {path} broke after {} bytes: {e}", checker.bytes));
        if let Some(data) = frame.data_ref() {
            checker.feed(data);
        }
    }
    checker
}

/// Uploads `n` pattern bytes to the upstream's `/sink`; returns its JSON report.
async fn upload(port: u16, n: u64, exact_size: bool, cookie: &str) -> serde_json::Value {
    let mut send = h1_connect(port).await;
    let body: TestBody = PatternBody::new(n, exact_size).boxed();
    let req = Request::post("/sink")
        .header("host", format!("localhost:{port}"))
        .header("cookie", cookie)
        .header("content-type", "application/octet-stream")
        .body(body)
        .expect("request");
    let resp = send.send_request(req).await.expect("upload response");
    let status = resp.status();
    let text = h1::text(resp).await.expect("upload response body");
    assert_eq!(status, 200, "upload answered {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("sink report is not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_gib_download_and_a_2_gib_upload_stream_through_in_flat_memory() {
    let upstream = RustUpstream::start().await;
    let (stack, cookie) = stack_before(&upstream.url).await;
    let port = stack.portcullis.app.port;

    // Warm up every path the transfer takes (pools, buffers, allocator arenas).
    assert_eq!(
        download(port, &format!("/bytes?n={}", 8 * MIB), &cookie).await.mismatch,
        None
    );
    assert_eq!(
        upload(port, 8 * MIB, true, &cookie).await["mismatch"],
        serde_json::Value::Null
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = stack.portcullis.rss_kib();

    let sampler = RssSampler::start(stack.portcullis.pid());
    let started = Instant::now();
    let got = download(port, &format!("/bytes?n={}", 2 * GIB), &cookie).await;
    let down_time = started.elapsed();
    let started = Instant::now();
    let report = upload(port, 2 * GIB, true, &cookie).await;
    let up_time = started.elapsed();
    let peak = sampler.finish().await;

    let rate = |t: Duration| (2 * GIB) as f64 / MIB as f64 / t.as_secs_f64();
    println!(
        "portcullis VmRSS idle {idle} KiB, peak during transfers {peak} KiB (+{} KiB); \
         download 2 GiB in {down_time:.1?} ({:.0} MiB/s), upload 2 GiB in {up_time:.1?} ({:.0} MiB/s)",
        peak.saturating_sub(idle),
        rate(down_time),
        rate(up_time)
    );
    assert_eq!(got.bytes, 2 * GIB, "the download was not complete");
    assert_eq!(got.mismatch, None, "the download was corrupted at this offset");
    assert_eq!(
        report["bytes"],
        2 * GIB,
        "the upstream did not receive the whole upload: {report}"
    );
    assert_eq!(
        report["mismatch"],
        serde_json::Value::Null,
        "the upload was corrupted: {report}"
    );
    assert!(
        peak <= idle + 16 * 1024,
        "portcullis' memory grew with the body: idle {idle} KiB, peak {peak} KiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_request_and_response_bodies_stream_through_intact() {
    let upstream = RustUpstream::start().await;
    let (stack, cookie) = stack_before(&upstream.url).await;
    let port = stack.portcullis.app.port;

    let report = upload(port, 5 * MIB + 17, false, &cookie).await;
    assert_eq!(report["bytes"], 5 * MIB + 17, "chunked upload incomplete: {report}");
    assert_eq!(
        report["mismatch"],
        serde_json::Value::Null,
        "chunked upload corrupted: {report}"
    );
    assert_eq!(
        report["chunked"], true,
        "a body of unknown length must reach the upstream chunked (streamed, not buffered): {report}"
    );

    // The chunked response, read off the wire.
    let mut send = h1_connect(port).await;
    let resp = send
        .send_request(h1::get(port, &format!("/bytes?n={}&chunked=1", 3 * MIB + 5), &cookie))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("content-length").is_none(),
        "portcullis invented a Content-Length for a chunked response (it buffered it?)"
    );
    let mut checker = pattern::Checker::default();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.expect("chunked body").data_ref() {
            checker.feed(data);
        }
    }
    assert_eq!((checker.bytes, checker.mismatch), (3 * MIB + 5, None));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_get_with_a_chunked_body_reaches_the_upstream_with_its_body() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    let cookie = format!("portcullis_session={}", stack.session_cookie().expect("session cookie"));
    let port = stack.portcullis.app.port;

    // hyper's client sends a GET of unknown length as bodiless unless told otherwise.
    let request = format!(
        "GET /with-a-body HTTP/1.1\r\nHost: localhost:{port}\r\nCookie: {cookie}\r\nAccept: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
    let response = raw_exchange(port, request.as_bytes()).await;
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen: EchoSeen = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not echo JSON ({e}): {}", response.body_text()));
    assert_eq!((seen.method.as_str(), seen.url.as_str()), ("GET", "/with-a-body"));
    assert_eq!(
        seen.body_bytes, 3,
        "the GET's body did not reach the upstream: {seen:?}"
    );
    assert_eq!(seen.values("transfer-encoding"), ["chunked"], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn response_trailers_from_the_upstream_reach_a_client_that_accepts_them() {
    let upstream = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc123\r\n\r\n"
            .to_vec(),
    )
    .await;
    let (stack, cookie) = stack_before(&upstream.url).await;
    let hits_before = upstream.hits.load(Ordering::SeqCst);

    let port = stack.portcullis.app.port;
    let mut send = h1_connect(port).await;
    let req = Request::get("/with-trailers")
        .header("host", format!("localhost:{port}"))
        .header("cookie", &cookie)
        .header("te", "trailers")
        .body(h1::empty())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    assert_eq!(&collected.to_bytes()[..], b"hello world");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), hits_before + 1);
    assert_eq!(
        trailers
            .as_ref()
            .and_then(|t| t.get("x-checksum"))
            .map(|v| v.as_bytes().to_vec()),
        Some(b"abc123".to_vec()),
        "the upstream's trailer did not reach the client (trailers: {trailers:?})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clients_request_trailers_are_dropped_so_none_passes_for_an_identity_header() {
    for http2 in [false, true] {
        let upstream = RustUpstream::start().await;
        let mut builder = Stack::builder().upstream(&upstream.url);
        if http2 {
            builder = builder.env("PORTCULLIS_UPSTREAM_HTTP2", "true");
        }
        let stack = builder.start().await;
        stack.login("john", "/").await;
        let cookie = format!("portcullis_session={}", stack.session_cookie().expect("session cookie"));
        let port = stack.portcullis.app.port;

        // The reviewer's request: identity and forwarding headers as trailers, after the
        // body, where no header phase looks.
        let request = format!(
            "POST /sink HTTP/1.1\r\nHost: localhost:{port}\r\nCookie: {cookie}\r\n\
             Transfer-Encoding: chunked\r\nTrailer: Remote-User, X-Forwarded-For\r\nConnection: close\r\n\r\n\
             3\r\nabc\r\n0\r\nRemote-User: admin\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
        );
        let response = raw_exchange(port, request.as_bytes()).await;
        assert_eq!(response.status, 200, "upstream http2={http2}: {}", response.body_text());
        let report: serde_json::Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("sink report is not JSON ({e}): {}", response.body_text()));
        assert_eq!(
            report["bytes"], 3,
            "upstream http2={http2}: the body did not arrive: {report}"
        );
        assert_eq!(
            report["trailers"],
            serde_json::json!({}),
            "upstream http2={http2}: the client's trailers reached the upstream: {report}"
        );
        let heads = upstream.heads();
        let (_, _, headers) = heads.iter().rfind(|(_, p, _)| p == "/sink").expect("the /sink head");
        let values = |name: &str| -> Vec<&str> {
            headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(
            values("trailer"),
            Vec::<&str>::new(),
            "upstream http2={http2}: {headers:?}"
        );
        assert_eq!(values("remote-user"), ["john"], "upstream http2={http2}: {headers:?}");
        assert_eq!(
            values("x-forwarded-for"),
            ["127.0.0.1"],
            "upstream http2={http2}: {headers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_gets_the_interim_response_before_the_body_is_sent() {
    let upstream = RustUpstream::start().await;
    let (stack, cookie) = stack_before(&upstream.url).await;
    let port = stack.portcullis.app.port;
    let n: usize = 1_000_003;

    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!(
        "POST /sink HTTP/1.1\r\nHost: localhost:{port}\r\nCookie: {cookie}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {n}\r\nExpect: 100-continue\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("write head");
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), ws::read_head(&mut tcp))
        .await
        .expect("no interim response within 5 s of a head with Expect: 100-continue")
        .expect("read interim response");
    assert_eq!(status, 100, "expected `100 Continue` before sending the body");

    let mut sent = 0usize;
    while sent < n {
        let len = (n - sent).min(64 * 1024);
        tcp.write_all(&pattern::slice(sent as u64, len))
            .await
            .expect("write body");
        sent += len;
    }
    let (status, headers) = tokio::time::timeout(Duration::from_secs(10), ws::read_head(&mut tcp))
        .await
        .expect("final response in time")
        .expect("read final response");
    assert_eq!(status, 200);
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("sink report has a Content-Length");
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.expect("report body");
    let report: serde_json::Value = serde_json::from_slice(&body).expect("JSON report");
    assert_eq!(report["bytes"], n as u64, "{report}");
    assert_eq!(report["mismatch"], serde_json::Value::Null, "{report}");
}

/// Reads a response head and returns it; `None` on EOF.
async fn next_head(tcp: &mut TcpStream) -> (u16, Vec<(String, String)>) {
    tokio::time::timeout(Duration::from_secs(10), ws::read_head(tcp))
        .await
        .expect("a response head in time")
        .expect("a response head")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn head_204_and_304_responses_carry_no_body_and_keep_the_connection_usable() {
    let upstream = RustUpstream::start().await;
    let (stack, cookie) = stack_before(&upstream.url).await;
    let port = stack.portcullis.app.port;

    // One keep-alive connection: any stray body byte would corrupt the next response.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let req = |method: &str, path: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nCookie: {cookie}\r\nAccept: */*\r\n\r\n")
    };

    tcp.write_all(req("HEAD", "/bytes?n=12345").as_bytes()).await.unwrap();
    let (status, headers) = next_head(&mut tcp).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-length"),
        Some("12345"),
        "HEAD must announce the length a GET would have: {headers:?}"
    );

    tcp.write_all(req("GET", "/status/204").as_bytes()).await.unwrap();
    let (status, headers) = next_head(&mut tcp).await;
    assert_eq!(status, 204);
    assert!(
        header(&headers, "transfer-encoding").is_none() && header(&headers, "content-length").unwrap_or("0") == "0",
        "204 with body framing: {headers:?}"
    );

    tcp.write_all(req("GET", "/status/304").as_bytes()).await.unwrap();
    let (status, headers) = next_head(&mut tcp).await;
    assert_eq!(status, 304);
    assert_eq!(
        header(&headers, "etag"),
        Some("\"v1\""),
        "304 lost its ETag: {headers:?}"
    );
    assert!(
        header(&headers, "transfer-encoding").is_none(),
        "304 with chunked framing: {headers:?}"
    );

    tcp.write_all(req("GET", "/after").as_bytes()).await.unwrap();
    let (status, headers) = next_head(&mut tcp).await;
    assert_eq!(status, 200, "the connection was desynchronised by a bodiless response");
    let len: usize = header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .expect("length");
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.unwrap();
    assert_eq!(body, b"upstream page /after");
    assert_eq!(upstream.hits("/bytes"), 1, "HEAD reached the upstream once");
}

/// Reads `resp`'s body to its end; returns (bytes read, the error that ended it, if any).
async fn drain(resp: http::Response<hyper::body::Incoming>) -> (u64, Option<String>) {
    let mut body = resp.into_body();
    let mut n = 0u64;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
            Err(_) => return (n, Some("no end of body within 10 s (hangs)".to_owned())),
            Ok(None) => return (n, None),
            Ok(Some(Err(e))) => return (n, Some(e.to_string())),
            Ok(Some(Ok(frame))) => n += frame.data_ref().map_or(0, |d: &Bytes| d.len() as u64),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_closes_mid_body_gives_the_client_an_aborted_body_not_a_complete_one() {
    // Announces 1 000 000 bytes (or chunks), sends 300 000, closes.
    let mut with_length =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    with_length.extend_from_slice(&pattern::slice(0, 300_000));
    let mut chunked =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for i in 0..3u64 {
        chunked.extend_from_slice(b"186a0\r\n"); // 100 000
        chunked.extend_from_slice(&pattern::slice(i * 100_000, 100_000));
        chunked.extend_from_slice(b"\r\n");
    }
    let upstream = RawUpstream::start_routes(vec![("/cut-length", with_length), ("/cut-chunked", chunked)]).await;
    let (stack, cookie) = stack_before(&upstream.url).await;
    let port = stack.portcullis.app.port;

    for (path, framing) in [("/cut-length", "Content-Length"), ("/cut-chunked", "chunked")] {
        let mut send = h1_connect(port).await;
        let resp = send
            .send_request(h1::get(port, path, &cookie))
            .await
            .expect("response head");
        assert_eq!(
            resp.status(),
            200,
            "{path}: the upstream sent a 200 head before giving up"
        );
        if framing == "Content-Length" {
            assert_eq!(
                resp.headers().get("content-length").map(|v| v.as_bytes()),
                Some(&b"1000000"[..]),
                "{path}: the upstream's Content-Length must be passed on"
            );
        }
        let (got, error) = drain(resp).await;
        println!("{path}: {got} bytes, then {error:?}");
        assert!(got <= 300_000, "{path}: more bytes than the upstream sent: {got}");
        let error = error.unwrap_or_else(|| {
            panic!("{path} ({framing}): the client saw a complete body of {got} bytes although the upstream gave up")
        });
        assert!(!error.contains("hangs"), "{path} ({framing}): {error}");
    }
}

/// An upstream that turns uploads away: to a `POST` it answers `413` as soon as it has
/// read the head, and closes the connection at once, the body unread (so its kernel
/// resets the connection as the rest arrives). Anything else gets `200 ok`.
async fn turning_uploads_away() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_request_head(&mut stream).await else {
                    return;
                };
                let answer: &[u8] = if head.starts_with(b"POST ") {
                    b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: text/plain\r\ncontent-length: 19\r\nconnection: close\r\n\r\nupload is too large"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                };
                let _ = stream.write_all(answer).await;
            });
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_the_upstream_turns_away_before_reading_it_gets_the_upstreams_answer() {
    // Without `Expect: 100-continue` the body follows the head at once; the upstream
    // answers and resets. Whether portcullis' next write meets the reset before it reads
    // the answer is a race, hence the rounds.
    let (url, upstream) = turning_uploads_away().await;
    let (stack, cookie) = stack_before(&url).await;
    let port = stack.portcullis.app.port;
    let upload = 8 * MIB as usize;
    for round in 0..10 {
        let mut client = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let (mut reading, mut writing) = client.split();
        let send = async {
            let head = format!(
                "POST /upload HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncookie: {cookie}\r\ncontent-length: {upload}\r\n\r\n"
            );
            if writing.write_all(head.as_bytes()).await.is_ok() {
                // Cut off once portcullis has answered and closed: that is the point.
                let _ = writing.write_all(&vec![b'u'; upload]).await;
            }
        };
        // Until the answer is whole, or the connection ends. Either outcome is right
        // afterwards: portcullis closes the connection with the upload unread, or, when
        // it has read the whole upload in the meantime (the write side lost to the reset
        // discards the rest at once), keeps it for the next request; a client waiting for
        // the close would then wait for the idle timeout.
        let receive = async {
            let mut response = Vec::new();
            let mut chunk = [0u8; 4096];
            while !response.ends_with(b"\r\n\r\nupload is too large") {
                match reading.read(&mut chunk).await {
                    Ok(n @ 1..) => response.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            String::from_utf8_lossy(&response).into_owned()
        };
        let ((), response) = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(send, receive) })
            .await
            .unwrap_or_else(|_| panic!("round {round}: the upload or its answer stalled"));
        assert!(
            response.starts_with("HTTP/1.1 413 ") && response.ends_with("\r\n\r\nupload is too large"),
            "round {round}: the client must get the upstream's answer, got: {response}"
        );
    }
    // portcullis is fine afterwards: the next request is answered.
    let mut send = h1_connect(port).await;
    let resp = send.send_request(h1::get(port, "/", &cookie)).await.expect("response");
    assert_eq!(resp.status(), 200);
    upstream.abort();
}

/// An upstream that sends a response head and the first 1 000 bytes of its body, then
/// nothing, holding the connection until portcullis closes it: to `/stall-length` of an
/// announced 1 000 000, to `/stall-chunked` as one chunk. Anything else gets `200 ok`
/// and the connection closed. Counts the stalled connections that portcullis closed.
async fn stalling_after_the_head() -> (String, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    holding_upstream(|head| {
        let mut answer = if head.starts_with(b"GET /stall-length") {
            b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000000\r\n\r\n".to_vec()
        } else if head.starts_with(b"GET /stall-chunked") {
            b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n3e8\r\n"
                .to_vec()
        } else {
            return None;
        };
        answer.extend_from_slice(&pattern::slice(0, 1000));
        if head.starts_with(b"GET /stall-chunked") {
            answer.extend_from_slice(b"\r\n");
        }
        Some(answer)
    })
    .await
}

/// A raw upstream that answers each request by its head: `answer` gives what to send and
/// then hold the connection, reading whatever comes until portcullis closes it (counted);
/// `None` gets `200 ok` and the connection closed.
async fn holding_upstream(
    answer: fn(&[u8]) -> Option<Vec<u8>>,
) -> (String, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let closed = Arc::new(AtomicU64::new(0));
    let counter = closed.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Some(head) = read_request_head(&mut stream).await else {
                    return;
                };
                let Some(answer) = answer(&head) else {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                        .await;
                    return;
                };
                if stream.write_all(&answer).await.is_err() {
                    return;
                }
                // Nothing more: wait for portcullis to give up on the connection.
                let mut rest = [0u8; 1024];
                while let Ok(1..) = stream.read(&mut rest).await {}
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (url, closed, task)
}

/// A GET of `target` with the session `cookie`: over `h2` if given, else over a new
/// HTTP/1.1 connection, returned to be kept until the body has been read (dropping it
/// could end the connection).
async fn get_over(
    h2: Option<&http2::SendRequest<TestBody>>,
    port: u16,
    target: &str,
    cookie: &str,
) -> (
    http::Response<hyper::body::Incoming>,
    Option<http1::SendRequest<TestBody>>,
) {
    if let Some(h2) = h2 {
        let request = Request::get(format!("http://localhost:{port}{target}"))
            .header("cookie", cookie)
            .body(h1::empty())
            .expect("request");
        return (h2.clone().send_request(request).await.expect("response head"), None);
    }
    let mut sender = h1_connect(port).await;
    let resp = sender
        .send_request(h1::get(port, target, cookie))
        .await
        .expect("response head");
    (resp, Some(sender))
}

/// A logged-in stack in front of `upstream` with h2c, metrics, and the timeout `var`
/// at 1 s; returns it with the `Cookie` value and the metrics port.
async fn h2c_stack_before(upstream: &str, var: &str) -> (Stack, String, u16) {
    let metrics_port = free_port();
    let stack = Stack::builder()
        .upstream(upstream)
        .env(var, "1s")
        .env("PORTCULLIS_SERVER_H2C", "true")
        .env("PORTCULLIS_SERVER_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .start()
        .await;
    stack.login("john", "/").await;
    let cookie = format!("portcullis_session={}", stack.session_cookie().expect("session cookie"));
    (stack, cookie, metrics_port)
}

/// Checks that three exchanges were cut off and reported: the upstream saw `closed` reach
/// 3, portcullis logged three warnings saying `warning` (and never the query
/// `secret-query`), and its counter `metric` says 3.
async fn three_cut_offs_reported(stack: &Stack, closed: &AtomicU64, metrics_port: u16, warning: &str, metric: &str) {
    eventually(
        "the upstream to see its connections closed",
        Duration::from_secs(5),
        || async { (closed.load(Ordering::SeqCst) == 3).then_some(()) },
    )
    .await;
    let log = stack.portcullis.log_text();
    let warnings = log
        .lines()
        .filter(|line| line.contains("WARN") && line.contains(warning))
        .count();
    assert_eq!(warnings, 3, "{log}");
    assert!(!log.contains("secret-query"), "the query reached the log:\n{log}");
    let metrics = crate::common::metrics::scrape(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    assert!(metrics.contains(&format!("\n{metric} 3\n")), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_stalls_mid_body_is_cut_off_after_the_body_idle_timeout_and_portcullis_goes_on() {
    let (url, closed, upstream) = stalling_after_the_head().await;
    let (stack, cookie, metrics_port) = h2c_stack_before(&url, "PORTCULLIS_UPSTREAM_BODY_IDLE_TIMEOUT").await;
    let port = stack.portcullis.app.port;

    // Over HTTP/1.1 the connection closes short of the body's end; over HTTP/2 the
    // stream is reset, and the connection carries the next request.
    let h2 = h2_over(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"))
        .await
        .expect("h2c handshake");
    for (path, http2) in [
        ("/stall-length", false),
        ("/stall-chunked", false),
        ("/stall-chunked", true),
    ] {
        // The query must not reach the log.
        let target = format!("{path}?token=secret-query");
        let (resp, _sender) = get_over(http2.then_some(&h2), port, &target, &cookie).await;
        assert_eq!(resp.status(), 200, "{path} http2={http2}");
        let started = Instant::now();
        let (got, error) = drain(resp).await;
        let waited = started.elapsed();
        assert_eq!(got, 1000, "{path} http2={http2}: the bytes the upstream sent");
        let error = error.unwrap_or_else(|| panic!("{path} http2={http2}: the client saw a complete body"));
        assert!(!error.contains("hangs"), "{path} http2={http2}: {error}");
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{path} http2={http2}: cut off after {waited:?}, not after the 1 s timeout"
        );
    }
    let mut h2 = h2;
    let after = Request::get(format!("http://localhost:{port}/after"))
        .header("cookie", &cookie)
        .body(h1::empty())
        .expect("request");
    let resp = h2.send_request(after).await.expect("the HTTP/2 connection goes on");
    assert_eq!(h1::text(resp).await.expect("body"), "ok");

    // Each stalled upstream connection was closed, not kept for another request.
    three_cut_offs_reported(
        &stack,
        &closed,
        metrics_port,
        "upstream response body stalled",
        "portcullis_upstream_body_idle_timeouts_total",
    )
    .await;

    // portcullis is fine afterwards: a new connection is answered.
    let mut send = h1_connect(port).await;
    let resp = send.send_request(h1::get(port, "/", &cookie)).await.expect("response");
    assert_eq!(resp.status(), 200);
    upstream.abort();
}

/// An upstream that answers a `POST /upload` at once (`200`, `early`) and reads the
/// upload on to its end, and that reads a `POST /read-first` without ever answering;
/// either way it holds the connection until portcullis closes it. Counts the
/// connections portcullis closed. Anything else gets `200 ok` and the connection closed.
async fn answering_uploads_early() -> (String, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    holding_upstream(|head| {
        if head.starts_with(b"POST /upload") {
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly".to_vec())
        } else if head.starts_with(b"POST ") {
            Some(Vec::new())
        } else {
            None
        }
    })
    .await
}

/// Reads from `tcp` until portcullis closes it: what came, and how long after the
/// first bytes the close came. Panics if it is still open after 10 s.
async fn read_until_closed(tcp: &mut TcpStream) -> (String, Duration) {
    let mut read = Vec::new();
    let mut first = None;
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => panic!("still open after 10 s, having read: {}", String::from_utf8_lossy(&read)),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => {
                read.extend_from_slice(&chunk[..n]);
                first.get_or_insert_with(Instant::now);
            }
        }
    }
    let waited = first.map_or(Duration::ZERO, |first| first.elapsed());
    (String::from_utf8_lossy(&read).into_owned(), waited)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_stalls_after_an_early_answer_is_cut_off_after_the_client_body_idle_timeout() {
    let (url, closed, upstream) = answering_uploads_early().await;
    let (stack, cookie, metrics_port) = h2c_stack_before(&url, "PORTCULLIS_SERVER_BODY_IDLE_TIMEOUT").await;
    let port = stack.portcullis.app.port;
    let in_time = |waited: Duration| waited >= Duration::from_millis(900) && waited < Duration::from_secs(5);

    // HTTP/1.1: a gigabyte announced, three bytes sent, then nothing. The query must
    // not reach the log.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!(
        "POST /upload?token=secret-query HTTP/1.1\r\nhost: localhost:{port}\r\ncookie: {cookie}\r\ncontent-length: 1000000000\r\n\r\nabc"
    );
    tcp.write_all(head.as_bytes()).await.expect("send");
    let (response, waited) = read_until_closed(&mut tcp).await;
    assert!(
        response.starts_with("HTTP/1.1 200 OK\r\n") && response.ends_with("\r\n\r\nearly"),
        "{response}"
    );
    assert!(
        in_time(waited),
        "HTTP/1.1: closed {waited:?} after the answer, not after the 1 s timeout"
    );

    // HTTP/2: the same upload on a stream; the stream is reset (hyper's client then drops
    // the body it was sending), and the connection carries the next request.
    let mut h2 = h2_over(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"))
        .await
        .expect("h2c handshake");
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((
            Ok::<_, crate::common::upstream::BoxError>(http_body::Frame::data(data)),
            rx,
        ))
    });
    let upload = Request::post(format!("http://localhost:{port}/upload?token=secret-query"))
        .header("cookie", &cookie)
        .header("content-length", "1000000000")
        .body(http_body_util::StreamBody::new(frames).boxed())
        .expect("request");
    tx.send(Bytes::from_static(b"abc")).await.expect("first bytes");
    let resp = h2.send_request(upload).await.expect("the early answer");
    assert_eq!(h1::text(resp).await.expect("body"), "early");
    let answered = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), tx.closed())
        .await
        .expect("the upload's stream still open after 10 s");
    assert!(
        in_time(answered.elapsed()),
        "HTTP/2: reset {:?} after the answer",
        answered.elapsed()
    );
    let health = Request::get(format!("http://localhost:{port}/.auth/healthz"))
        .body(h1::empty())
        .expect("request");
    let resp = h2.send_request(health).await.expect("the connection goes on");
    assert_eq!(resp.status(), 200);

    // Before any answer (the upstream reads and says nothing): 408, not the 504 of the
    // response timeout a minute on.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!(
        "POST /read-first HTTP/1.1\r\nhost: localhost:{port}\r\ncookie: {cookie}\r\naccept: application/json\r\ncontent-length: 1000\r\n\r\nabc"
    );
    let sent = Instant::now();
    tcp.write_all(head.as_bytes()).await.expect("send");
    let (response, _) = read_until_closed(&mut tcp).await;
    assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
    assert!(in_time(sent.elapsed()), "408 after {:?}", sent.elapsed());

    // Each upstream connection was closed, not kept for another request.
    three_cut_offs_reported(
        &stack,
        &closed,
        metrics_port,
        "client request body stalled",
        "portcullis_client_body_idle_timeouts_total",
    )
    .await;
    upstream.abort();
}

/// The numeric field `name` of access-log line `line` (text format).
#[track_caller]
fn logged_number(line: &str, name: &str) -> f64 {
    access_field(line, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {name} in: {line}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_complete_download_is_logged_when_it_ends_with_its_bytes_and_complete_in_json_too() {
    let upstream = RustUpstream::start().await;
    let (stack, cookie) = stack_with(&upstream.url, &[("PORTCULLIS_LOG_FORMAT", "json")]).await;
    let port = stack.portcullis.app.port;

    // One with its length, one chunked; the query is not logged.
    for target in ["/bytes?n=3000000", "/bytes?n=2000001&chunked=1"] {
        let checker = download(port, target, &cookie).await;
        assert_eq!(checker.mismatch, None, "{target}");
    }
    let lines = stack.portcullis.access_lines("/bytes", 2).await;
    let mut sizes = Vec::new();
    for line in &lines {
        let json: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let fields = &json["fields"];
        assert_eq!(fields["status"], 200, "{line}");
        assert_eq!(fields["outcome"], "complete", "{line}");
        assert_ne!(fields["user"], "-", "the session's subject: {line}");
        let (duration, head) = (fields["duration_ms"].as_f64(), fields["head_ms"].as_f64());
        assert!(
            matches!((duration, head), (Some(d), Some(h)) if d >= h && h > 0.0),
            "duration_ms (to the last byte) and head_ms (to the head): {line}"
        );
        assert!(
            !line.contains("n=") && !line.contains("chunked="),
            "the query was logged: {line}"
        );
        sizes.push(
            fields["body_bytes"]
                .as_u64()
                .unwrap_or_else(|| panic!("no body_bytes: {line}")),
        );
    }
    sizes.sort_unstable();
    assert_eq!(sizes, [2_000_001, 3_000_000]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_cut_by_the_idle_timeout_is_logged_as_cut_with_the_bytes_sent() {
    let (url, _closed, upstream) = stalling_after_the_head().await;
    let (stack, cookie) = stack_with(
        &url,
        &[
            ("PORTCULLIS_UPSTREAM_BODY_IDLE_TIMEOUT", "1s"),
            ("PORTCULLIS_SERVER_H2C", "true"),
        ],
    )
    .await;
    let port = stack.portcullis.app.port;

    let h2 = h2_over(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"))
        .await
        .expect("h2c handshake");
    for (path, http2) in [("/stall-length", false), ("/stall-chunked", true)] {
        let (resp, _sender) = get_over(http2.then_some(&h2), port, path, &cookie).await;
        let (got, error) = drain(resp).await;
        assert_eq!(got, 1000, "{path}");
        assert!(error.is_some(), "{path}: the client saw a complete body");

        let lines = stack.portcullis.access_lines(path, 1).await;
        let line = &lines[0];
        assert_eq!(access_field(line, "status"), Some("200"), "{line}");
        assert_eq!(access_field(line, "outcome"), Some("upstream_idle"), "{line}");
        assert_eq!(access_field(line, "body_bytes"), Some("1000"), "{line}");
        // Written at the cut, a second after the head, not when the head went out.
        let (duration, head) = (logged_number(line, "duration_ms"), logged_number(line, "head_ms"));
        assert!(duration >= 900.0 && head < duration - 500.0, "{line}");
    }
    upstream.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_the_upstream_breaks_off_is_logged_as_an_upstream_error() {
    // Announces 1 000 000 bytes, sends 300 000, closes.
    let mut with_length =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    with_length.extend_from_slice(&pattern::slice(0, 300_000));
    let upstream = RawUpstream::start_routes(vec![("/cut-length", with_length)]).await;
    let (stack, cookie) = stack_before(&upstream.url).await;
    let port = stack.portcullis.app.port;

    let mut send = h1_connect(port).await;
    let resp = send
        .send_request(h1::get(port, "/cut-length", &cookie))
        .await
        .expect("response head");
    let (got, error) = drain(resp).await;
    assert!(error.is_some(), "the client saw a complete body of {got} bytes");

    let lines = stack.portcullis.access_lines("/cut-length", 1).await;
    let line = &lines[0];
    assert_eq!(access_field(line, "status"), Some("200"), "{line}");
    assert_eq!(access_field(line, "outcome"), Some("upstream_error"), "{line}");
    let sent = logged_number(line, "body_bytes");
    assert!(sent >= got as f64 && sent <= 300_000.0, "{got} bytes received: {line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_stream_reset_before_its_answer_is_logged_499_and_the_connection_carries_on() {
    let upstream = RustUpstream::start().await;
    let (stack, cookie) = stack_with(&upstream.url, &[("PORTCULLIS_SERVER_H2C", "true")]).await;
    let port = stack.portcullis.app.port;
    let h2 = h2_over(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"))
        .await
        .expect("h2c handshake");

    // The client gives up on a slow answer: dropping the pending response resets the stream.
    let request = Request::get(format!("http://localhost:{port}/slow?ms=5000"))
        .header("cookie", &cookie)
        .body(h1::empty())
        .expect("request");
    let pending = h2.clone().send_request(request);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), pending).await.is_err(),
        "the slow answer came early"
    );

    let lines = stack.portcullis.access_lines("/slow", 1).await;
    let line = &lines[0];
    assert_eq!(access_field(line, "status"), Some("499"), "{line}");
    assert_eq!(access_field(line, "outcome"), Some("client_gone"), "{line}");
    assert!(logged_number(line, "duration_ms") < 4000.0, "{line}");
    // The connection carries on.
    let (resp, _) = get_over(Some(&h2), port, "/after", &cookie).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_mid_download_is_logged_as_gone() {
    let upstream = RustUpstream::start().await;
    let (stack, cookie) = stack_with(&upstream.url, &[("PORTCULLIS_SERVER_H2C", "true")]).await;
    let port = stack.portcullis.app.port;
    let huge = format!("/bytes?n={}", 4 * GIB);

    // HTTP/1.1: the client reads 1 MiB and closes its connection.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!("GET {huge} HTTP/1.1\r\nHost: localhost:{port}\r\nCookie: {cookie}\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("send");
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0;
    while read < MIB as usize {
        match tcp.read(&mut buf).await.expect("read") {
            0 => panic!("portcullis closed after {read} bytes"),
            n => read += n,
        }
    }
    drop(tcp);
    let lines = stack.portcullis.access_lines("/bytes", 1).await;
    let line = &lines[0];
    assert_eq!(access_field(line, "status"), Some("200"), "{line}");
    assert_eq!(access_field(line, "outcome"), Some("client_gone"), "{line}");
    let sent = logged_number(line, "body_bytes");
    assert!(sent >= (MIB / 2) as f64 && sent < (4 * GIB) as f64, "{line}");

    // HTTP/2: the client drops the response after its first frame (the stream is reset).
    let h2 = h2_over(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"))
        .await
        .expect("h2c handshake");
    let (resp, _) = get_over(Some(&h2), port, &huge, &cookie).await;
    let mut body = resp.into_body();
    body.frame().await.expect("a first frame").expect("data");
    drop(body);
    let lines = stack.portcullis.access_lines("/bytes", 2).await;
    let line = &lines[1];
    assert_eq!(access_field(line, "outcome"), Some("client_gone"), "{line}");
    // The connection carries on.
    let (resp, _) = get_over(Some(&h2), port, "/after", &cookie).await;
    assert_eq!(resp.status(), 200);
}
