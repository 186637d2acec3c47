//! Upstreams written in Rust, inside the test process, for what the node echo cannot
//! do fast or precisely: gigabyte bodies generated and verified on the fly, WebSocket
//! echo, and raw byte-exact responses (trailers, bodies cut short).
//!
//! Bodies follow [`pattern`]: byte `o` of a stream is `BLOCK[o % BLOCK_LEN]`, with a
//! random block whose length (a prime) lines up with no transport buffer, so lost,
//! repeated or reordered pieces show up as a mismatch at a known offset.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::ws;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;

/// The deterministic byte stream of big bodies.
pub mod pattern {
    use super::*;

    /// A prime: no power-of-two buffer size divides it.
    pub const BLOCK_LEN: usize = 1_048_573;

    /// The block twice over, so any window of up to `BLOCK_LEN` bytes is one slice.
    fn doubled() -> &'static [u8] {
        static DOUBLED: OnceLock<Vec<u8>> = OnceLock::new();
        DOUBLED.get_or_init(|| {
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut block = Vec::with_capacity(2 * BLOCK_LEN);
            for _ in 0..BLOCK_LEN {
                // xorshift64*
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                block.push((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8);
            }
            block.extend_from_within(..);
            block
        })
    }

    /// The bytes at `offset..offset + len` (`len <= BLOCK_LEN`), without copying.
    pub fn slice(offset: u64, len: usize) -> Bytes {
        assert!(len <= BLOCK_LEN);
        let start = (offset % BLOCK_LEN as u64) as usize;
        Bytes::from_static(&doubled()[start..start + len])
    }

    /// Where `data`, found at `offset` of the stream, first differs from the pattern.
    pub fn first_mismatch(offset: u64, data: &[u8]) -> Option<u64> {
        let mut done = 0usize;
        while done < data.len() {
            let len = (data.len() - done).min(BLOCK_LEN);
            let expected = slice(offset + done as u64, len);
            let got = &data[done..done + len];
            if got != &expected[..] {
                let at = got.iter().zip(expected.iter()).position(|(a, b)| a != b).unwrap_or(0);
                return Some(offset + (done + at) as u64);
            }
            done += len;
        }
        None
    }

    /// Running verification of a received stream.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Checker {
        pub bytes: u64,
        pub mismatch: Option<u64>,
    }

    impl Checker {
        pub fn feed(&mut self, data: &[u8]) {
            if self.mismatch.is_none() {
                self.mismatch = first_mismatch(self.bytes, data);
            }
            self.bytes += data.len() as u64;
        }
    }
}

/// A body of `total` pattern bytes, sent in `frame`-sized frames. With
/// `exact_size` false its size is unknown in advance, so HTTP/1.1 sends it chunked.
pub struct PatternBody {
    sent: u64,
    total: u64,
    frame: usize,
    exact_size: bool,
}

impl PatternBody {
    pub fn new(total: u64, exact_size: bool) -> PatternBody {
        PatternBody {
            sent: 0,
            total,
            frame: 256 * 1024,
            exact_size,
        }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.sent >= self.total {
            return Poll::Ready(None);
        }
        let len = (self.total - self.sent).min(self.frame as u64) as usize;
        let data = pattern::slice(self.sent, len);
        self.sent += len as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact_size {
            SizeHint::with_exact(self.total - self.sent)
        } else {
            SizeHint::default()
        }
    }
}

/// A request head as seen: method, path and query, headers.
pub type Head = (String, String, Vec<(String, String)>);

/// What the upstream saw.
#[derive(Default)]
struct Seen {
    /// Requests per path.
    paths: HashMap<String, u64>,
    /// Every request head, in order: method, path+query, headers.
    heads: Vec<Head>,
    /// The HTTP version of every request, in order (`HTTP/1.1`, `HTTP/2.0`).
    versions: Vec<String>,
    /// Over TLS: the SNI of every completed handshake, and why others failed.
    snis: Vec<Option<String>>,
    tls_failures: Vec<String>,
    /// Connections accepted so far.
    connections: u64,
}

/// A hyper server (HTTP/1.1 and h2c, upgrades) on 127.0.0.1. Routes:
/// - `/bytes?n=N[&chunked=1]`: N pattern bytes (Content-Length unless chunked)
/// - `/sink`: reads the body, answers JSON `{"bytes":N,"mismatch":null|offset,"chunked":bool,
///   "trailers":{name:value}}`
/// - `/status/<code>`: that status, empty body (204 and 304 need none); 304 has an ETag
/// - `/slow?ms=N`: answers `slow done` after N ms
/// - `/ws`: a WebSocket echo (see [`ws`]) that greets first with `hello from upstream`
/// - anything else: `200 upstream page <path>`
pub struct RustUpstream {
    pub url: String,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RustUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RustUpstream {
    pub async fn start() -> RustUpstream {
        Self::start_with(None).await
    }

    /// The same upstream over TLS (`https://127.0.0.1:<port>`), offering h2 and
    /// http/1.1 by ALPN; the SNI of every handshake is recorded.
    pub async fn start_tls(config: rustls::ServerConfig) -> RustUpstream {
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> RustUpstream {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                seen2.lock().unwrap().connections += 1;
                let seen = seen2.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = {
                        let seen = seen.clone();
                        service_fn(move |req| {
                            let seen = seen.clone();
                            async move { Ok::<_, Infallible>(route(req, seen).await) }
                        })
                    };
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let stream = match acceptor.accept(stream).await {
                                Ok(s) => s,
                                Err(e) => {
                                    seen.lock().unwrap().tls_failures.push(e.to_string());
                                    return;
                                }
                            };
                            let sni = stream.get_ref().1.server_name().map(str::to_owned);
                            seen.lock().unwrap().snis.push(sni);
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        RustUpstream {
            url: format!("{scheme}://{addr}"),
            seen,
            task,
        }
    }

    /// How many requests for `path` arrived (the head, whatever became of them).
    pub fn hits(&self, path: &str) -> u64 {
        self.seen.lock().unwrap().paths.get(path).copied().unwrap_or(0)
    }

    /// How many connections were made to it so far.
    pub fn connections(&self) -> u64 {
        self.seen.lock().unwrap().connections
    }

    /// Over TLS: the server name each client sent (SNI), per completed handshake.
    pub fn snis(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().snis.clone()
    }

    /// Over TLS: why handshakes failed (e.g. the client refused the certificate).
    pub fn tls_failures(&self) -> Vec<String> {
        self.seen.lock().unwrap().tls_failures.clone()
    }

    /// The HTTP version of every request so far, in order.
    pub fn versions(&self) -> Vec<String> {
        self.seen.lock().unwrap().versions.clone()
    }

    /// Every request head seen: (method, path+query, headers).
    pub fn heads(&self) -> Vec<Head> {
        self.seen.lock().unwrap().heads.clone()
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn full(status: StatusCode, text: impl Into<Bytes>) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(text.into()).map_err(|e: Infallible| match e {}).boxed())
        .expect("response")
}

async fn route(mut req: Request<Incoming>, seen: Arc<Mutex<Seen>>) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    {
        let mut seen = seen.lock().unwrap();
        *seen.paths.entry(path.clone()).or_default() += 1;
        let headers = req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        seen.heads.push((req.method().as_str().to_owned(), pq, headers));
        seen.versions.push(format!("{:?}", req.version()));
    }
    let chunked_flag = query(&req, "chunked").as_deref() == Some("1");
    match path.as_str() {
        "/bytes" => {
            let n: u64 = query(&req, "n").and_then(|n| n.parse().ok()).unwrap_or(0);
            Response::builder()
                .header("content-type", "application/octet-stream")
                .body(PatternBody::new(n, !chunked_flag).boxed())
                .expect("response")
        }
        "/sink" => {
            let chunked = req
                .headers()
                .get("transfer-encoding")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
            let mut checker = pattern::Checker::default();
            let mut trailers = serde_json::Map::new();
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            checker.feed(data);
                        }
                        for (name, value) in frame.trailers_ref().into_iter().flatten() {
                            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                            trailers.insert(name.as_str().to_owned(), value.into());
                        }
                    }
                    Err(e) => return full(StatusCode::BAD_REQUEST, format!("body failed: {e}")),
                }
            }
            let json = serde_json::json!({
                "bytes": checker.bytes,
                "mismatch": checker.mismatch,
                "chunked": chunked,
                "trailers": trailers,
            });
            let mut resp = full(StatusCode::OK, json.to_string());
            resp.headers_mut()
                .insert("content-type", http::HeaderValue::from_static("application/json"));
            resp
        }
        "/slow" => {
            let ms: u64 = query(&req, "ms").and_then(|n| n.parse().ok()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            full(StatusCode::OK, "slow done")
        }
        "/ws" => match ws::server_accept_key(req.headers()) {
            Some(accept) => {
                let upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    if let Ok(upgraded) = upgrade.await {
                        ws::echo_server(TokioIo::new(upgraded)).await;
                    }
                });
                Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .header("sec-websocket-accept", accept)
                    .body(Full::new(Bytes::new()).map_err(|e: Infallible| match e {}).boxed())
                    .expect("response")
            }
            None => full(StatusCode::BAD_REQUEST, "not a WebSocket handshake"),
        },
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = Response::builder().status(status);
            if code == 304 {
                resp = resp.header("etag", "\"v1\"");
            }
            resp.body(Full::new(Bytes::new()).map_err(|e: Infallible| match e {}).boxed())
                .expect("response")
        }
        _ => full(StatusCode::OK, format!("upstream page {path}")),
    }
}

/// An upstream that answers every request (after reading its head) with fixed
/// bytes and then closes the connection: for responses hyper would not write.
pub struct RawUpstream {
    pub url: String,
    pub hits: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    /// Answers every request with `response`.
    pub async fn start(response: Vec<u8>) -> RawUpstream {
        Self::start_routes(vec![("", response)]).await
    }

    /// Answers a request for path `p` with the bytes of the first route whose path
    /// is `p` (`""` matches any path); otherwise with a small 200 page (so a login can land).
    pub async fn start_routes(routes: Vec<(&str, Vec<u8>)>) -> RawUpstream {
        let routes: Vec<(String, Vec<u8>)> = routes.into_iter().map(|(p, r)| (p.to_owned(), r)).collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raw upstream");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let hits2 = hits.clone();
        let routes = Arc::new(routes);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let routes = routes.clone();
                let hits = hits2.clone();
                tokio::spawn(async move {
                    let Some(buf) = read_request_head(&mut stream).await else {
                        return;
                    };
                    hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&buf);
                    let path = head
                        .split(' ')
                        .nth(1)
                        .unwrap_or("")
                        .split('?')
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    let not_found = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 12\r\nconnection: close\r\n\r\nraw upstream".to_vec();
                    let response = routes
                        .iter()
                        .find(|(p, _)| p.is_empty() || *p == path)
                        .map_or(&not_found, |(_, r)| r);
                    let _ = stream.write_all(response).await;
                    let _ = stream.flush().await;
                    // Give the bytes time to leave before the close.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        RawUpstream {
            url: format!("http://{addr}"),
            hits,
            task,
        }
    }
}

/// Reads from `stream` until the end of a request head (`\r\n\r\n`) has arrived and
/// returns what was read (the head, maybe the start of a body); `None` if the
/// connection ended or failed first.
pub async fn read_request_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    Some(head)
}
