//! The listeners: accept connections (plain or TLS), serve HTTP/1.1 and HTTP/2
//! (hyper-util auto), enforce the connection limits, and shut down gracefully: on the
//! signal stop accepting, let in-flight requests and WebSockets finish within the grace
//! period, then return.

mod io;
mod redirect;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use url::Url;

use self::io::{ClientStream, StreamHandle};
use crate::app::App;
use crate::config::ServerConfig;

/// How often the certificate files are checked for changes.
const CERT_POLL_INTERVAL: Duration = Duration::from_secs(5);

const RESPONSE_503_TOO_MANY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 41\r\n\r\nToo many connections; try again shortly.\n";
const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 38\r\n\r\nThe request head did not arrive in time\n";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Everything a connection task needs, shared.
struct Shared {
    app: Arc<App>,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
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
            let cert = tls::ReloadingCert::load(files)?;
            let acceptor = TlsAcceptor::from(tls::server_config(cert.clone(), true)?);
            tokio::spawn(cert.watch(CERT_POLL_INTERVAL, stopped.clone()));
            Some(acceptor)
        }
        None => None,
    };
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

    let shared = Arc::new(Shared {
        app: app.clone(),
        builder: connection_builder(settings),
        tls,
        handshake_timeout: settings.header_read_timeout,
    });
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match limit.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(serve_connection(shared.clone(), graceful.watcher(), stream, peer, permit));
                    }
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
    // The send fails only when no task listens any more, which is fine.
    let _ = stop.send(true);
    let grace = settings.shutdown_grace;
    tracing::info!(grace_seconds = grace.as_secs(), "shutting down: draining connections");
    // Upgraded connections (WebSockets) left hyper's hands at the 101, so they are
    // drained separately, within the same grace period.
    let drain = async {
        graceful.shutdown().await;
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

fn connection_builder(settings: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without TLS, HTTP/2 is only prior-knowledge h2c, off unless enabled; with TLS it is
    // negotiated by ALPN.
    if settings.tls.is_none() && !settings.h2c {
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .max_headers(settings.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(250);
    builder
}

/// Over the connection limit: a plain client gets a short 503, a TLS client a closed
/// connection (a handshake is the very work the limit protects against).
fn refuse_connection(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    tracing::warn!(%peer, "connection limit reached; refusing a connection with 503");
    if shared.tls.is_none() {
        let (_stream, handle) = ClientStream::new(stream);
        handle.write_final_response(RESPONSE_503_TOO_MANY);
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    watcher: Watcher,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    let (stream, handle) = ClientStream::new(stream);
    let app = shared.app.clone();
    let service = service_fn(move |request| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(app.handle(request, peer).await) }
    });
    let result = match &shared.tls {
        None => {
            let connection = shared
                .builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service);
            watcher.watch(connection.into_owned()).await
        }
        Some(acceptor) => match tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let connection = shared
                    .builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), service);
                watcher.watch(connection.into_owned()).await
            }
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    if let Err(error) = result {
        report_connection_error(&*error, &handle, peer, shared.tls.is_none());
    }
}

/// Logs why a connection ended badly and, for a request head that did not arrive in
/// time on a plain connection, answers 408 before closing (hyper closes silently).
fn report_connection_error(
    error: &(dyn std::error::Error + 'static),
    handle: &StreamHandle,
    peer: SocketAddr,
    plain: bool,
) {
    let Some(hyper_error) = error.downcast_ref::<hyper::Error>() else {
        tracing::debug!(%peer, %error, "connection ended with an error");
        return;
    };
    if hyper_error.is_timeout() {
        if handle.has_unanswered_bytes() {
            tracing::info!(%peer, status = 408, "request head not received in time; closing");
            if plain {
                handle.write_final_response(RESPONSE_408);
            }
        } else {
            tracing::debug!(%peer, "idle keep-alive connection closed");
        }
    } else if hyper_error.is_parse_too_large() {
        tracing::info!(%peer, status = 431, "request head too large; refused");
    } else if hyper_error.is_parse() {
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
