//! The connector behind the pooled upstream client: TCP with optional TLS
//! (hyper-rustls, verified against the system roots, else the bundled webpki roots),
//! or a unix socket. Both are bounded by the connect timeout.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tower_service::Service;

use super::ProxyError;
use crate::BoxError;

/// Connects to the one configured upstream. Cheap to clone (the pool clones it).
#[derive(Clone)]
pub(super) enum UpstreamConnector {
    /// `http://` and `https://` targets; the scheme of the URI picks TLS or not.
    Http {
        inner: HttpsConnector<HttpConnector>,
        timeout: Duration,
    },
    /// `unix:` targets; the URI is ignored.
    Unix { path: Arc<Path>, timeout: Duration },
}

/// The connect timeout elapsed (TCP + TLS handshake, or the unix connect).
#[derive(Debug, thiserror::Error)]
#[error("connecting to the upstream timed out")]
pub(super) struct ConnectTimeout;

impl UpstreamConnector {
    /// TCP (+TLS when `tls`) connector. The TLS roots are loaded only when `tls`,
    /// so http and unix upstreams never read the system certificate store.
    pub(super) fn http(timeout: Duration, tls: bool) -> Result<Self, ProxyError> {
        let mut http = HttpConnector::new();
        // The https layer passes `https://` URIs down to this connector.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let inner = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(tls)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(UpstreamConnector::Http { inner, timeout })
    }

    pub(super) fn unix(path: &Path, timeout: Duration) -> Self {
        UpstreamConnector::Unix {
            path: path.into(),
            timeout,
        }
    }
}

/// A rustls client configuration with the ring provider chosen explicitly (the
/// process-wide default may be unset, or ambiguous when two providers are linked).
/// Only HTTP/1.1 is offered in ALPN: the upstream request is always HTTP/1.1.
fn tls_config(load_native_roots: bool) -> Result<rustls::ClientConfig, ProxyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Config(format!("TLS setup: {e}")))?;
    let builder = if load_native_roots {
        match builder.clone().with_native_roots() {
            Ok(native) => native,
            Err(e) => {
                tracing::warn!(error = %e, "no usable system CA certificates; verifying the upstream against the bundled webpki roots");
                builder.with_webpki_roots()
            }
        }
    } else {
        builder.with_webpki_roots()
    };
    Ok(builder.with_no_client_auth())
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<UpstreamIo, BoxError>> + Send>>;

impl Service<Uri> for UpstreamConnector {
    type Response = UpstreamIo;
    type Error = BoxError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            UpstreamConnector::Http { inner, .. } => inner.poll_ready(cx),
            UpstreamConnector::Unix { .. } => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self {
            UpstreamConnector::Http { inner, timeout } => {
                // The HttpConnector's own timeout covers TCP only; this one also
                // bounds the TLS handshake.
                let connect = inner.call(uri);
                let timeout = *timeout;
                Box::pin(async move {
                    match tokio::time::timeout(timeout, connect).await {
                        Ok(io) => io.map(UpstreamIo::Http),
                        Err(_) => Err(ConnectTimeout.into()),
                    }
                })
            }
            UpstreamConnector::Unix { path, timeout } => {
                let path = path.clone();
                let timeout = *timeout;
                Box::pin(async move {
                    match tokio::time::timeout(timeout, UnixStream::connect(&*path)).await {
                        Ok(Ok(io)) => Ok(UpstreamIo::Unix(TokioIo::new(io))),
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err(ConnectTimeout.into()),
                    }
                })
            }
        }
    }
}

/// A connection to the upstream. Both variants are `Unpin`, so the I/O methods
/// simply delegate through `Pin::new`.
// One value per pooled connection, so the size of the TLS variant costs nothing
// worth an extra indirection on every read and write.
#[allow(clippy::large_enum_variant)]
pub(super) enum UpstreamIo {
    Http(MaybeHttpsStream<TokioIo<TcpStream>>),
    Unix(TokioIo<UnixStream>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            UpstreamIo::Http(io) => io.connected(),
            UpstreamIo::Unix(_) => Connected::new(),
        }
    }
}

impl Read for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Http(io) => Pin::new(io).poll_read(cx, buf),
            UpstreamIo::Unix(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl Write for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Http(io) => Pin::new(io).poll_write(cx, buf),
            UpstreamIo::Unix(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Http(io) => Pin::new(io).poll_flush(cx),
            UpstreamIo::Unix(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Http(io) => Pin::new(io).poll_shutdown(cx),
            UpstreamIo::Unix(io) => Pin::new(io).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Http(io) => io.is_write_vectored(),
            UpstreamIo::Unix(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Http(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            UpstreamIo::Unix(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }
}
