//! The connector behind the pooled upstream client: TCP with optional TLS
//! (hyper-rustls, verified as [`crate::tls_roots`] says: the system roots, else the
//! bundled webpki roots, plus an optional CA file; SNI and the checked name fixed at
//! startup), or a unix socket. Both are bounded by the connect timeout.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use tokio::net::{TcpStream, UnixStream};
use tower_service::Service;

use super::ProxyError;
use crate::config::CaFile;
use crate::tls_roots::{client_config, verifying_client_config, TlsPeer};
use crate::BoxError;

/// Connects to the one configured upstream. Cheap to clone (the pool clones it).
#[derive(Clone)]
pub(super) enum UpstreamConnector {
    /// `http://` and `https://` targets. The request URI is ignored: every connection
    /// goes to `dial` (the configured scheme and authority), so that the URI's
    /// authority may carry the client's host (HTTP/2 `:authority`) without steering
    /// the connection, the certificate check or SNI.
    Http {
        inner: HttpsConnector<HttpConnector>,
        dial: Uri,
        timeout: Duration,
    },
    /// `unix:` targets; the URI is ignored.
    Unix { path: Arc<Path>, timeout: Duration },
}

/// The connect timeout elapsed (TCP + TLS handshake, or the unix connect).
#[derive(Debug, thiserror::Error)]
#[error("connecting to the upstream timed out")]
pub(super) struct ConnectTimeout;

/// How an `https` upstream is verified and spoken to.
pub(super) struct TlsSettings<'a> {
    /// Extra CA certificates trusted beside the system roots.
    pub ca_file: Option<&'a CaFile>,
    /// The name sent as SNI and checked in the certificate.
    pub server_name: ServerName<'static>,
    /// Offer only `h2` in ALPN (else no ALPN: HTTP/1.1).
    pub http2: bool,
}

impl UpstreamConnector {
    /// TCP (+TLS when `tls` is given) connector to `dial`. The TLS roots are loaded
    /// only for TLS, so http and unix upstreams never read the system certificate store.
    pub(super) fn http(dial: Uri, timeout: Duration, tls: Option<TlsSettings<'_>>) -> Result<Self, ProxyError> {
        let mut http = HttpConnector::new();
        // The https layer passes `https://` URIs down to this connector.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let inner = match tls {
            None => HttpsConnector::from((http, client_config(RootCertStore::empty()).map_err(tls_setup)?)),
            Some(tls) => {
                let config = verifying_client_config(TlsPeer::Upstream, tls.ca_file).map_err(tls_setup)?;
                let builder = HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_or_http()
                    .with_server_name_resolver(FixedServerNameResolver::new(tls.server_name));
                if tls.http2 {
                    builder.enable_http2().wrap_connector(http)
                } else {
                    builder.enable_http1().wrap_connector(http)
                }
            }
        };
        Ok(UpstreamConnector::Http { inner, dial, timeout })
    }

    pub(super) fn unix(path: &Path, timeout: Duration) -> Self {
        UpstreamConnector::Unix {
            path: path.into(),
            timeout,
        }
    }
}

/// The upstream's TLS could not be set up: a configuration problem.
fn tls_setup(error: crate::tls_roots::TlsSetupError) -> ProxyError {
    ProxyError::Config(error.to_string())
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

    /// The URI only keys the pool; see [`UpstreamConnector::Http`].
    fn call(&mut self, _uri: Uri) -> Self::Future {
        match self {
            UpstreamConnector::Http { inner, dial, timeout } => {
                // The HttpConnector's own timeout covers TCP only; this one also
                // bounds the TLS handshake.
                let connect = inner.call(dial.clone());
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
