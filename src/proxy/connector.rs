//! The connector behind the pooled upstream client: TCP with optional TLS
//! (hyper-rustls, verified against the system roots, else the bundled webpki roots,
//! plus an optional CA file; SNI and the checked name fixed at startup), or a unix
//! socket. Both are bounded by the connect timeout.

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
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use tokio::net::{TcpStream, UnixStream};
use tower_service::Service;

use super::ProxyError;
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
    /// Extra PEM CA certificates trusted beside the system roots.
    pub ca_file: Option<&'a Path>,
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
            None => HttpsConnector::from((http, tls_config(RootCertStore::empty())?)),
            Some(tls) => {
                let builder = HttpsConnectorBuilder::new()
                    .with_tls_config(tls_config(root_store(tls.ca_file)?)?)
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

/// A rustls client configuration with the ring provider chosen explicitly (the
/// process-wide default may be unset, or ambiguous when two providers are linked).
fn tls_config(roots: RootCertStore) -> Result<rustls::ClientConfig, ProxyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The system CA certificates (else, with a warning, the bundled webpki roots), plus
/// every certificate in `ca_file`.
fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, ProxyError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "could not load some system CA certificates");
    }
    let (added, _unusable) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!("no usable system CA certificates; verifying the upstream against the bundled webpki roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = ca_file {
        let extra = load_ca_file(path)?;
        for cert in extra {
            roots.add(cert).map_err(|e| {
                ProxyError::Config(format!(
                    "upstream CA file {}: unusable certificate: {e}",
                    path.display()
                ))
            })?;
        }
    }
    Ok(roots)
}

/// The certificates of a PEM file. Errors name the file, never its content (the
/// PEM error types may quote lines of it).
fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ProxyError> {
    let problem = |what: &str| ProxyError::Config(format!("upstream CA file {}: {what}", path.display()));
    let read_error = |e: pem::Error| match e {
        pem::Error::Io(io) => problem(&format!("cannot read it: {io}")),
        _ => problem("not valid PEM"),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certs.is_empty() {
        return Err(problem("holds no CERTIFICATE section"));
    }
    Ok(certs)
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
