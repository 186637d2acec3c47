//! The listeners: accept connections (plain or TLS), hand each to a connection worker
//! ([`workers`]), serve HTTP/1.1 and HTTP/2 there, enforce the connection limits, and
//! shut down gracefully: on the signal stop accepting, let in-flight requests and
//! WebSockets finish within the grace period, then return.

mod head_timeout;
mod idle_release;
mod io;
mod redirect;
pub mod tls;
mod workers;

pub use self::workers::cores;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use url::Url;

use self::head_timeout::{HeadClock, HeadTimer, Sent};
use self::idle_release::IdleRelease;
use self::io::{write_final_response, ClientStream, ConnState};
use self::workers::Workers;
use crate::app::App;
use crate::config::{ServerConfig, TlsFiles};
use crate::metrics::Metrics;
use crate::proxy::ConnectionHold;
use crate::session::SessionKeyMemo;

/// How often the certificate files are checked for changes.
const CERT_POLL_INTERVAL: Duration = Duration::from_secs(5);

const RESPONSE_503_TOO_MANY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 41\r\n\r\nToo many connections; try again shortly.\n";
const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 38\r\n\r\nThe request head did not arrive in time\n";
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// The protocol a connection speaks, decided before hyper sees it: by ALPN on TLS, by
/// the h2 preface with h2c enabled, HTTP/1.1 otherwise. (hyper-util's auto builder would
/// sniff every plain connection for the preface without a timeout, and so serve h2c even
/// when it is off and keep silent connections open forever.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Everything a connection task needs, shared.
struct Shared {
    app: Arc<App>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    h2c: bool,
    /// Bounds the TLS handshake and h2c detection as hyper bounds the request head.
    head_timeout: Duration,
}

/// Loads the listener's certificate and key (a key that does not match is refused) and
/// builds the TLS configuration that serves them, reloaded when the files change.
pub fn load_certificate(files: &TlsFiles) -> Result<(Arc<tls::ReloadingCert>, Arc<rustls::ServerConfig>), ServeError> {
    let cert = tls::ReloadingCert::load(files)?;
    let config = tls::server_config(cert.clone(), true)?;
    Ok((cert, config))
}

/// Serves `listener` until `shutdown` completes, then drains for at most the grace period.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    settings: &ServerConfig,
    base_url: &Url,
) -> Result<(), ServeError> {
    let (stop, stopped) = watch::channel(false);
    let tls = match &settings.tls {
        Some(files) => {
            let (cert, config) = load_certificate(files)?;
            let acceptor = TlsAcceptor::from(config);
            tokio::spawn(cert.watch(CERT_POLL_INTERVAL, stopped.clone()));
            Some(acceptor)
        }
        None => {
            tls::catch_hangup_without_certificate(stopped.clone());
            None
        }
    };
    if let Some(addr) = settings.metrics_addr {
        let metrics_listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let gauges_app = app.clone();
        tokio::spawn(crate::metrics::serve(
            metrics_listener,
            app.metrics.clone(),
            Arc::new(move || {
                let app = gauges_app.clone();
                Box::pin(async move { app.scrape_gauges().await }) as crate::metrics::GaugesFuture
            }),
            stopped.clone(),
        ));
        tracing::info!(%addr, "metrics at /metrics");
    }
    if let Some(addr) = settings.http_redirect_addr {
        let redirect_listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        tokio::spawn(redirect::serve(
            redirect_listener,
            base_url.clone(),
            settings.header_read_timeout,
            stopped.clone(),
        ));
    }

    let (http1, http2) = protocol_builders(settings);
    let shared = Arc::new(Shared {
        app: app.clone(),
        http1,
        http2,
        tls,
        h2c: settings.h2c,
        head_timeout: settings.header_read_timeout,
    });
    // One permit per connection: the limit, and (all permits back) the sign that every
    // connection has finished.
    let permits = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    let limit = Arc::new(Semaphore::new(permits as usize));
    let workers = Workers::start(settings.workers.unwrap_or_else(cores));
    tracing::debug!(workers = workers.count(), "connection workers started");
    let mut shutdown = pin!(shutdown);
    // For systemd's Type=notify: every listener is bound. A no-op without NOTIFY_SOCKET.
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(%error, "could not notify systemd of readiness");
    }

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match limit.clone().try_acquire_owned() {
                    Ok(permit) => hand_over(&workers, &shared, &stopped, stream, peer, permit),
                    Err(_) => refuse_connection(&shared, stream, peer),
                },
                Err(error) => {
                    // Usually EMFILE or a connection reset before accept; survive it, and
                    // back off so a descriptor shortage does not spin the loop.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }

    drop(listener);
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Stopping]) {
        tracing::debug!(%error, "could not notify systemd of the shutdown");
    }
    // The send fails only when no task listens any more, which is fine.
    let _ = stop.send(true);
    let grace = settings.shutdown_grace;
    tracing::info!(grace_seconds = grace.as_secs(), "shutting down: draining connections");
    // Upgraded connections (WebSockets) left hyper's hands at the 101, so they are
    // drained separately, within the same grace period.
    let drain = async {
        // Fails only if the semaphore were closed, which this code never does.
        let _ = limit.acquire_many(permits).await;
        while app.upstream.upgraded_connections() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!("grace period over; closing remaining connections");
    }
    app.upstream.close_upgraded_connections();
    Ok(())
}

fn protocol_builders(settings: &ServerConfig) -> (http1::Builder, http2::Builder<TokioExecutor>) {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // One buffer per write instead of writev: the head and a small body go out in
        // one copy; 12% less CPU per request over loopback in an A/B run (README,
        // Performance). Large bodies are copied once more: streaming is ~15% slower.
        .writev(false)
        // Bounded per connection instead (`head_timeout`), at a fraction of the cost.
        .header_read_timeout(None)
        .max_buf_size(settings.max_header_bytes)
        .max_headers(settings.max_headers);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(250)
        // Pings find dead peers; an HTTP/2 connection has no head timeout of its own.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    (http1, http2)
}

/// Serves an accepted connection on a worker (its socket moves to the worker's
/// runtime), or on this runtime without a live worker.
fn hand_over(
    workers: &Workers,
    shared: &Arc<Shared>,
    stopped: &watch::Receiver<bool>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let (shared, stopped) = (shared.clone(), stopped.clone());
    // Deregistered from this runtime here, registered with the worker's there.
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => return tracing::warn!(%peer, %error, "cannot hand a connection to a worker"),
    };
    let connection = move || async move {
        match TcpStream::from_std(stream) {
            Ok(stream) => serve_connection(shared, stopped, stream, peer, permit).await,
            Err(error) => tracing::warn!(%peer, %error, "cannot register a connection's socket"),
        }
    };
    if let Err(connection) = workers.spawn(connection) {
        tracing::error!("no connection worker is running; serving on the main thread");
        tokio::spawn(connection());
    }
}

/// Over the connection limit: a plain client gets a short 503, a TLS client a closed
/// connection (a handshake is the very work the limit protects against).
fn refuse_connection(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    shared.app.metrics.connection_refused();
    tracing::warn!(%peer, "connection limit reached; refusing a connection with 503");
    if shared.tls.is_none() {
        write_final_response(&stream, RESPONSE_503_TOO_MANY);
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let lease = ConnectionLease::start(permit, &shared.app.metrics);
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    let protocol = match (&shared.tls, shared.h2c) {
        (None, false) => Protocol::Http1,
        (None, true) => match tokio::time::timeout(shared.head_timeout, sniff_h2c(&stream)).await {
            Ok(Ok(Some(protocol))) => protocol,
            Ok(Ok(None)) | Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!(%peer, "no request within the head timeout; closing");
                return;
            }
        },
        (Some(_), _) => Protocol::Http1, // decided by ALPN below
    };
    let (stream, state) = ClientStream::new(stream);
    // Runs while the connection (and so the stream) still exists: a 408 requested here
    // is written as the stream is dropped.
    let plain = shared.tls.is_none();
    let report = |ended: Ended<'_>| match ended {
        Ended::Closed(Ok(())) => {}
        Ended::Closed(Err(error)) => report_connection_error(error, peer),
        Ended::HeadTimedOut => report_head_timeout(&state, peer, plain),
        // No 408 here: the connection speaks HTTP/2.
        Ended::GoAwayIgnored => {
            tracing::info!(%peer, "HTTP/2 connection still open a head timeout after its GOAWAY; closing")
        }
    };
    let downstream = Downstream {
        peer,
        state: &state,
        lease,
    };
    match &shared.tls {
        None => serve_protocol(&shared, TokioIo::new(stream), protocol, downstream, stopped, report).await,
        Some(acceptor) => {
            // Boxed, as the protocols are (see `serve_protocol`): a handshake's state and
            // the TLS stream's are large. The handshake's result is gone before the
            // connection is served, so the task holds neither inline.
            let handshake = Box::pin(acceptor.accept(stream));
            let tls = match tokio::time::timeout(shared.head_timeout, handshake).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let protocol = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                Protocol::Http2
            } else {
                Protocol::Http1
            };
            serve_protocol(&shared, TokioIo::new(tls), protocol, downstream, stopped, report).await
        }
    }
}

/// A connection's place under `server.max_connections` and its count in the
/// open-connections gauge, both given back when the last holder drops it: the
/// connection's task, or a tunnel (WebSocket) made of the connection, which goes on
/// using its socket after hyper's connection future has ended (the proxy gets it with the
/// connection's upstream slot, as a [`ConnectionHold`]).
struct ConnectionLease {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl ConnectionLease {
    /// One allocation and one count of the metrics per connection; requests do not
    /// touch it, a tunnel clones it once.
    fn start(permit: OwnedSemaphorePermit, metrics: &Arc<Metrics>) -> ConnectionHold {
        metrics.connection_opened();
        Arc::new(ConnectionLease {
            _permit: permit,
            metrics: metrics.clone(),
        })
    }
}

impl Drop for ConnectionLease {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// Reads (without consuming) until the bytes either are the h2 preface or cannot be.
/// `None` when the client closed first.
async fn sniff_h2c(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let read = stream.peek(&mut buf).await?;
        if read == 0 {
            return Ok(None);
        }
        if buf[..read] != H2_PREFACE[..read] {
            return Ok(Some(Protocol::Http1));
        }
        if read == H2_PREFACE.len() {
            return Ok(Some(Protocol::Http2));
        }
        // A partial preface: peek would return the same bytes at once, so wait a little.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a connection's protocol is served with, besides its bytes.
struct Downstream<'a> {
    peer: SocketAddr,
    /// The stream's own state, which the HTTP/1.1 head clock tells about late bodies.
    state: &'a Arc<ConnState>,
    /// Goes to the connection's upstream slot, whence a tunnel made of it takes a clone.
    lease: ConnectionHold,
}

/// Serves one connection in its protocol until it ends, shutting it down gracefully
/// (finish in-flight requests, take no new ones) once `stopped` turns true.
///
/// Each protocol's future is boxed, once per connection: a connection's task is as large
/// as the largest thing it may await, and an HTTP/2 connection's state (and a TLS
/// handshake's, in [`serve_connection`]) is several times an HTTP/1.1 one's. Inline, every
/// connection held room for all of them, idle or not.
async fn serve_protocol<I>(
    shared: &Shared,
    io: TokioIo<I>,
    protocol: Protocol,
    downstream: Downstream<'_>,
    stopped: watch::Receiver<bool>,
    report: impl FnOnce(Ended<'_>),
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http1 => Box::pin(serve_http1(shared, io, downstream, stopped, report)).await,
        Protocol::Http2 => Box::pin(serve_http2(shared, io, downstream, stopped, report)).await,
    }
}

/// HTTP/1.1: one request after another, each polled inside the connection's future, and
/// the connection closed when a request head is late.
async fn serve_http1<I>(
    shared: &Shared,
    io: TokioIo<I>,
    downstream: Downstream<'_>,
    stopped: watch::Receiver<bool>,
    report: impl FnOnce(Ended<'_>),
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Downstream { peer, state, lease } = downstream;
    // Each service builds its request's future inside the one it returns: that future
    // is large, and one built outside would be moved into it once more per request.
    let clock = HeadClock::new(state.clone());
    // A request body may be read on after its response: the clock is told when
    // it ends (the connection is busy until then).
    let upstream_slot = shared.app.upstream.slot(peer, lease, Some(clock.clone()));
    let head_timer =
        HeadTimer::new(clock.clone(), shared.head_timeout).releasing(IdleRelease::new(upstream_slot.clone()));
    let session_keys = SessionKeyMemo::default();
    // hyper polls an HTTP/1.1 request's future inside this connection's, so the
    // future may borrow what the connection holds: no reference count of the
    // app (shared by every connection on every core) is touched per request.
    let (app, upstream_slot, session_keys) = (&*shared.app, &upstream_slot, &session_keys);
    let service = service_fn(move |request| {
        clock.request_started();
        let clock = clock.clone();
        async move {
            let response = app.handle(request, peer, upstream_slot, session_keys).await;
            Ok::<_, Infallible>(response.map(|body| Sent::new(body, clock)))
        }
    });
    // Pinned where it is made: `until_done` borrows it, so the connection (hyper's state,
    // some 700 bytes) is held once in this future, not again in the one it awaits.
    let connection = pin!(shared.http1.serve_connection(io, service).with_upgrades());
    let idle = Idle::Close(head_timer);
    until_done(connection, stopped, |c| c.graceful_shutdown(), idle, report).await
}

/// HTTP/2: concurrent streams, each a task of its own, and a GOAWAY once none has been
/// open for the head timeout.
async fn serve_http2<I>(
    shared: &Shared,
    io: TokioIo<I>,
    downstream: Downstream<'_>,
    stopped: watch::Receiver<bool>,
    report: impl FnOnce(Ended<'_>),
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Downstream { peer, lease, .. } = downstream;
    // The clock counts the open streams (which are what is watched here, not
    // their bodies): once none has been open for the head timeout (the HTTP/1.1
    // keep-alive bound), the connection is closed with a GOAWAY.
    let upstream_slot = shared.app.upstream.slot(peer, lease, None);
    let session_keys = Arc::new(SessionKeyMemo::default());
    let clock = HeadClock::http2();
    let head_timer =
        HeadTimer::new(clock.clone(), shared.head_timeout).releasing(IdleRelease::new(upstream_slot.clone()));
    let idle = Idle::GoAway(head_timer);
    let streams = clock.clone();
    let app = shared.app.clone();
    let service = service_fn(move |request| {
        let stream = streams.stream_opened();
        let (app, upstream_slot, session_keys) = (app.clone(), upstream_slot.clone(), session_keys.clone());
        async move {
            let response = app.handle(request, peer, &upstream_slot, &session_keys).await;
            Ok::<_, Infallible>(response.map(|body| stream.sent(body)))
        }
    });
    // hyper bounds an HTTP/1 head but not the wait for an HTTP/2 client's preface
    // and first request: a connection that has sent no request within the head
    // timeout is closed, so silent clients cannot hold connection slots.
    let connection = pin!(shared.http2.serve_connection(io, service));
    let first_request = async {
        tokio::time::sleep(shared.head_timeout).await;
        if clock.had_a_stream() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = until_done(connection, stopped, |c| c.graceful_shutdown(), idle, report) => {}
        () = first_request => {
            tracing::info!(%peer, "HTTP/2 connection sent no request within the head timeout; closing");
        }
    }
}

/// A connection's [`HeadTimer`], and what [`until_done`] does when it expires.
enum Idle {
    /// HTTP/1.1: a request head is late; the connection is dropped at once
    /// ([`Ended::HeadTimedOut`]).
    Close(HeadTimer),
    /// HTTP/2: no stream has been open for the timeout; the connection is asked to finish
    /// gracefully (a GOAWAY), as on shutdown. It ends by itself once the client has
    /// answered the GOAWAY's PING; if it is still there, with no stream open, a timeout
    /// after the GOAWAY, it is dropped ([`Ended::GoAwayIgnored`]).
    GoAway(HeadTimer),
}

/// How a connection ended, for [`until_done`]'s caller to report.
enum Ended<'a> {
    /// The connection finished (or failed) by itself.
    Closed(&'a Result<(), hyper::Error>),
    /// No request head arrived within the head timeout.
    HeadTimedOut,
    /// An HTTP/2 connection told to go away was still open, idle, a head timeout later.
    GoAwayIgnored,
}

/// Drives `connection` to its end (or until an [`Idle::Close`] timer expires), asking it
/// to finish gracefully once `stopped` turns true or an [`Idle::GoAway`] timer expires,
/// and hands the outcome to `report` before the connection is dropped.
///
/// A graceful finish is bounded as shutdown's drain is: by a timer, then the connection
/// is dropped. For shutdown that is the grace period over every connection (in
/// [`serve`]); for a connection told to go away it is its own head timer, started over
/// at the GOAWAY: hyper (h2) closes only once the client has answered the GOAWAY's PING,
/// and a client that never does (gone without a FIN, or ignoring it) would otherwise
/// keep the connection until the keep-alive pings give up, some 50 s on. Streams the
/// client opens meanwhile are served: the timer runs only while none is open.
async fn until_done<C>(
    mut connection: Pin<&mut C>,
    mut stopped: watch::Receiver<bool>,
    graceful: impl FnOnce(Pin<&mut C>),
    idle: Idle,
    report: impl FnOnce(Ended<'_>),
) where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let (mut head_timer, go_away) = match idle {
        Idle::Close(timer) => (timer, false),
        Idle::GoAway(timer) => (timer, true),
    };
    // The stop future is polled once to register, and again only when the flag has
    // changed since: it is the one thing besides the connection and its head timer that
    // this task waits for, and the connection is polled once or twice per request.
    let watcher = stopped.clone();
    let mut stop = pin!(stop_requested(&mut stopped));
    let mut registered = false;
    let mut graceful = Some(graceful);
    let result = std::future::poll_fn(|cx| {
        while head_timer.poll_expired(cx).is_ready() {
            match graceful.take() {
                Some(graceful) if go_away => {
                    tracing::debug!("HTTP/2 connection idle for the head timeout; closing it with a GOAWAY");
                    graceful(connection.as_mut());
                    // Polled again by the loop, so that it is set for the new deadline.
                    head_timer.start_over();
                }
                // A request head is late, or a connection told to go away (idle, or on
                // shutdown) has not gone in a timeout of idleness since.
                _ => return Poll::Ready(None),
            }
        }
        if graceful.is_some() && (!registered || watcher.has_changed().unwrap_or(true)) {
            registered = true;
            if stop.as_mut().poll(cx).is_ready() {
                if let Some(graceful) = graceful.take() {
                    graceful(connection.as_mut());
                }
            }
        }
        connection.as_mut().poll(cx).map(Some)
    })
    .await;
    match &result {
        Some(result) => report(Ended::Closed(result)),
        None if go_away => report(Ended::GoAwayIgnored),
        None => report(Ended::HeadTimedOut),
    }
}

/// No request head arrived in time: a client that sent part of one is answered 408
/// on a plain connection (hyper would close silently), an idle one is closed silently.
fn report_head_timeout(state: &ConnState, peer: SocketAddr, plain: bool) {
    if state.has_unanswered_bytes() {
        tracing::info!(%peer, status = 408, "request head not received in time; closing");
        if plain {
            state.answer_on_drop(RESPONSE_408);
        }
    } else {
        tracing::debug!(%peer, "idle keep-alive connection closed");
    }
}

/// Logs why a connection ended badly.
fn report_connection_error(error: &hyper::Error, peer: SocketAddr) {
    if error.is_parse_too_large() {
        tracing::info!(%peer, status = 431, "request head too large; refused");
    } else if error.is_parse() {
        tracing::info!(%peer, status = 400, %error, "malformed request; refused");
    } else {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Completes once the stop flag turns true (or its sender is gone).
pub(crate) async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped at once: it must not live across an await.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
