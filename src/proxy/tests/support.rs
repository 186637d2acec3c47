//! Test harness: an echo upstream (TCP or unix socket), a front server that runs
//! `Upstream::forward` for every request, and a client. Every listener is bound
//! before its task is spawned, so no test waits for readiness.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, UPGRADE};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, UnixListener};
use url::Url;

use crate::config::{AccessTokenForwarding, IdentityConfig, IdentityHeader, UpstreamConfig, UpstreamTarget};
use crate::proxy::{CookieFilter, ForwardContext, ProxyError, Upstream};
use crate::ResponseBody;

pub type ClientBody = BoxBody<Bytes, Infallible>;

pub fn empty() -> ClientBody {
    Empty::new().boxed()
}

pub fn full(data: &'static str) -> ClientBody {
    Full::new(Bytes::from_static(data.as_bytes())).boxed()
}

/// A request body fed through a channel: chunks go out as they are sent, the body
/// ends when the sender is dropped. (`http_body_util::channel` needs a feature the
/// crate does not enable.)
pub fn channel_body(buffer: usize) -> (tokio::sync::mpsc::Sender<Bytes>, ClientBody) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(buffer);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((Ok(http_body::Frame::data(data)), rx))
    });
    (tx, http_body_util::StreamBody::new(frames).boxed())
}

/// A client with the pool off, so that each request opens its own connection.
pub fn client() -> Client<HttpConnector, ClientBody> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

pub fn h2_client() -> Client<HttpConnector, ClientBody> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// The upstream's view of a request, as the echo server reports it.
#[derive(Debug, serde::Deserialize)]
pub struct Seen {
    pub uri: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// Every value of headers whose name, folded like CGI servers fold it, is `name`.
    #[track_caller]
    pub fn all(&self, name: &str) -> Vec<&str> {
        let fold = |s: &str| s.to_ascii_lowercase().replace('_', "-");
        self.headers
            .iter()
            .filter(|(n, _)| fold(n) == fold(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub async fn from(response: Response<Incoming>) -> Seen {
        assert_eq!(response.status(), StatusCode::OK, "{:?}", response.headers());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }
}

/// The echo upstream. By path suffix:
/// - `/slow`: answers after 2 s;
/// - `/echo-body`: streams the request body back as the response body;
/// - `/count-body`: reads the whole body, then answers with its length;
/// - `/ws`: answers `101` and echoes bytes on the upgraded connection;
/// - anything else: the method, URI, version and headers it received, as JSON.
async fn echo(mut req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Response::new(body(Bytes::new()))
    } else if path.ends_with("/echo-body") {
        Response::new(ResponseBody::boxed(req.into_body()))
    } else if path.ends_with("/count-body") {
        let len = req.into_body().collect().await.unwrap().to_bytes().len();
        Response::new(body(len.to_string().into()))
    } else if path.ends_with("/ws") {
        let protocol = req.headers().get(UPGRADE).cloned();
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let io = TokioIo::new(upgrade.await.unwrap());
            let (mut read, mut write) = tokio::io::split(io);
            // Ends when the proxy closes the connection.
            let _echoed = tokio::io::copy(&mut read, &mut write).await;
        });
        let mut response = Response::new(body(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        if let Some(protocol) = protocol {
            h.insert("x-saw-upgrade", protocol);
        }
        response
    } else {
        let seen = serde_json::json!({
            "uri": req.uri().to_string(),
            "version": format!("{:?}", req.version()),
            "headers": req.headers().iter()
                .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v.as_bytes())))
                .collect::<Vec<_>>(),
        });
        let mut response = Response::new(body(seen.to_string().into()));
        // Hop-by-hop headers the proxy must not pass down.
        let h = response.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("x-upstream-secret"));
        h.insert("x-upstream-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authenticate", HeaderValue::from_static("Basic"));
        response
    };
    Ok(response)
}

fn body(data: Bytes) -> ResponseBody {
    ResponseBody::full(data)
}

/// Serves the echo upstream on `127.0.0.1:0`; returns its address.
pub async fn tcp_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            tokio::spawn(serve_http1(TokioIo::new(io)));
        }
    });
    addr
}

/// Serves the echo upstream on a unix socket at `path`.
pub fn unix_upstream(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            tokio::spawn(serve_http1(TokioIo::new(io)));
        }
    });
}

async fn serve_http1<I>(io: TokioIo<I>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // A connection error (the proxy hanging up) only ends this connection.
    let _served = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service_fn(echo))
        .with_upgrades()
        .await;
}

/// How the front server answers a `ProxyError`: 502 with the variant in
/// `x-proxy-error` and the error's `Display` as the body.
pub const ERROR_HEADER: &str = "x-proxy-error";

fn variant(error: &ProxyError) -> &'static str {
    match error {
        ProxyError::Connect(_) => "connect",
        ProxyError::Timeout => "timeout",
        ProxyError::Request(_) => "request",
        ProxyError::Config(_) => "config",
        ProxyError::BadRequest(_) => "bad-request",
        ProxyError::ClientBodyStalled => "client-body-stalled",
        ProxyError::InvalidForwardedHost => "invalid-forwarded-host",
    }
}

/// The session's identity headers every test expects upstream.
pub fn session_identity() -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (
            HeaderName::from_static("remote-user"),
            HeaderValue::from_static("alice"),
        ),
        (
            HeaderName::from_static("remote-groups"),
            HeaderValue::from_static("admins,dev"),
        ),
    ]
}

pub fn identity_config() -> IdentityConfig {
    let header = |name: &'static str, claim: &str| IdentityHeader {
        header: HeaderName::from_static(name),
        claims: vec![claim.into()],
    };
    IdentityConfig {
        headers: vec![
            header("remote-user", "preferred_username"),
            header("remote-email", "email"),
            header("remote-name", "name"),
            header("remote-groups", "groups"),
        ],
        strip_headers: vec![HeaderName::from_static("x-forwarded-user")],
        access_token: AccessTokenForwarding::AuthorizationBearer,
    }
}

pub fn http_target(addr: SocketAddr, prefix: &str) -> UpstreamTarget {
    UpstreamTarget::Http(Url::parse(&format!("http://{addr}{prefix}")).unwrap())
}

pub fn upstream(target: UpstreamTarget, response_timeout: Duration) -> Arc<Upstream> {
    Arc::new(build_upstream(&upstream_config(target, response_timeout), &[]).unwrap())
}

/// The defaults every test starts from: HTTP/1.1, `Host` preserved, no TLS options.
pub fn upstream_config(target: UpstreamTarget, response_timeout: Duration) -> UpstreamConfig {
    UpstreamConfig {
        target,
        connect_timeout: Duration::from_secs(2),
        response_timeout,
        // The default, so that every test runs with the body's timer in play.
        body_idle_timeout: Some(Duration::from_secs(300)),
        show_address_on_error: false,
        preserve_host: true,
        ca_file: None,
        tls_server_name: None,
        http2: false,
    }
}

pub fn build_upstream(config: &UpstreamConfig, trusted_proxies: &[ipnet::IpNet]) -> Result<Upstream, ProxyError> {
    // The default, so that every test runs with the request body's wait in play.
    build_upstream_waiting(config, trusted_proxies, Some(Duration::from_secs(300)))
}

/// [`build_upstream`] with `server.body_idle_timeout` set to `client_body_idle_timeout`.
pub fn build_upstream_waiting(
    config: &UpstreamConfig,
    trusted_proxies: &[ipnet::IpNet],
    client_body_idle_timeout: Option<Duration>,
) -> Result<Upstream, ProxyError> {
    let cookies = CookieFilter {
        session_cookie: "portcullis".into(),
        login_cookie_prefix: "portcullis_login_".into(),
    };
    Upstream::new(
        config,
        &identity_config(),
        cookies,
        trusted_proxies,
        client_body_idle_timeout,
        crate::metrics::Metrics::new(),
    )
}

/// Serves the echo upstream as HTTP/2 only (prior knowledge, h2c) on `127.0.0.1:0`.
pub async fn h2c_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(io), service_fn(echo))
                    .await;
            });
        }
    });
    addr
}

/// Serves the echo upstream over TLS on `127.0.0.1:0` with `config` (which picks
/// the certificate and ALPN), HTTP/1.1 or HTTP/2 as the client speaks.
pub async fn tls_upstream(config: rustls::ServerConfig) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A failed handshake (the proxy refusing our certificate) ends only this connection.
                let Ok(tls) = acceptor.accept(io).await else { return };
                let _served = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service_fn(echo))
                    .await;
            });
        }
    });
    addr
}

/// Serves HTTP/1.1 (with upgrades) and HTTP/2 on `127.0.0.1:0`, forwarding every
/// request through `upstream` with the session identity and access token.
pub async fn front(upstream: Arc<Upstream>) -> SocketAddr {
    front_probed(upstream, None).await
}

/// A front server for `upstream` on a thread (and runtime) of its own, as a
/// connection worker is.
pub fn front_on_another_thread(upstream: Arc<Upstream>) -> SocketAddr {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            addr_tx.send(front(upstream).await).unwrap();
            std::future::pending::<()>().await;
        });
    });
    addr_rx.recv_timeout(Duration::from_secs(30)).unwrap()
}

/// Counts the wakes a connection task gives itself while it is being polled: each
/// makes the scheduler poll the whole connection once more for nothing. Meaningful on
/// a current-thread runtime, where no other thread wakes a task during its poll.
#[derive(Default)]
pub struct SelfWakes {
    polling: std::sync::atomic::AtomicBool,
    count: std::sync::atomic::AtomicUsize,
    task: std::sync::Mutex<Option<std::task::Waker>>,
}

impl SelfWakes {
    pub fn take(&self) -> usize {
        self.count.swap(0, std::sync::atomic::Ordering::SeqCst)
    }

    /// `connection`, polled with a waker that counts the wakes during the poll.
    fn watch<F: std::future::Future + Unpin>(self: Arc<Self>, connection: F) -> Watched<F> {
        Watched {
            waker: std::task::Waker::from(self.clone()),
            probe: self,
            connection,
        }
    }
}

pub struct Watched<F> {
    probe: Arc<SelfWakes>,
    waker: std::task::Waker,
    connection: F,
}

impl<F: std::future::Future + Unpin> std::future::Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        use std::sync::atomic::Ordering::SeqCst;
        let this = &mut *self;
        *this.probe.task.lock().unwrap() = Some(cx.waker().clone());
        this.probe.polling.store(true, SeqCst);
        let polled = std::pin::Pin::new(&mut this.connection).poll(&mut std::task::Context::from_waker(&this.waker));
        this.probe.polling.store(false, SeqCst);
        polled
    }
}

impl std::task::Wake for SelfWakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.polling.load(SeqCst) {
            self.count.fetch_add(1, SeqCst);
        }
        if let Some(task) = self.task.lock().unwrap().as_ref() {
            task.wake_by_ref();
        }
    }
}

/// [`front`], its connection tasks watched by `probe` when given.
pub async fn front_probed(upstream: Arc<Upstream>, probe: Option<Arc<SelfWakes>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let identity: Arc<[(HeaderName, HeaderValue)]> = session_identity().into();
    tokio::spawn(async move {
        while let Ok((io, peer)) = listener.accept().await {
            let upstream = upstream.clone();
            let identity = identity.clone();
            let upstream_slot = upstream.slot(peer, Arc::new(()), None);
            let service = service_fn(move |req: Request<Incoming>| {
                let upstream = upstream.clone();
                let identity = identity.clone();
                let upstream_slot = upstream_slot.clone();
                async move {
                    let token = HeaderValue::from_static("Bearer real-token");
                    // The app refuses a request that names no valid host before the proxy
                    // sees it; here one is forwarded as naming none (the pool's tests send
                    // HTTP/1.1 without `Host`).
                    let host = crate::host::request_host(&req).unwrap_or(None);
                    let ctx = ForwardContext {
                        host: host.as_ref(),
                        client_addr: peer,
                        client_scheme: "http",
                        identity: &identity,
                        access_token: Some(&token),
                        upstream_slot: &upstream_slot,
                    };
                    let response = match upstream.forward(req, ctx).await {
                        Ok(response) => response,
                        Err(e) => {
                            let mut r = Response::new(body(e.to_string().into()));
                            *r.status_mut() = StatusCode::BAD_GATEWAY;
                            r.headers_mut()
                                .insert(ERROR_HEADER, HeaderValue::from_static(variant(&e)));
                            r
                        }
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let probe = probe.clone();
            tokio::spawn(async move {
                // A connection error only ends this connection.
                let builder = auto::Builder::new(TokioExecutor::new());
                let connection = Box::pin(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
                let _served = match probe {
                    Some(probe) => probe.watch(connection).await,
                    None => connection.await,
                };
            });
        }
    });
    addr
}

/// The `ProxyError` variant the front server reported, after checking it is a 502.
#[track_caller]
pub fn proxy_error(response: &Response<Incoming>) -> &str {
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    response
        .headers()
        .get(ERROR_HEADER)
        .expect("a ProxyError")
        .to_str()
        .unwrap()
}

/// The request-building boilerplate.
pub fn get(addr: SocketAddr, path: &str) -> http::request::Builder {
    Request::get(format!("http://{addr}{path}"))
}

/// Waits until `count` reaches `expected`, at most five seconds.
pub async fn reaches(what: &str, count: &std::sync::atomic::AtomicUsize, expected: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while count.load(std::sync::atomic::Ordering::SeqCst) != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} not {expected}",
            count.load(std::sync::atomic::Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
