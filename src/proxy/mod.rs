//! Forwarding to the upstream: the pooled client, the request and response rewrite,
//! streaming bodies, timeouts, and upgrade pass-through.
//!
//! # Layout
//! - `mod.rs`: the public contract ([`Upstream`], [`ForwardContext`], [`ProxyError`],
//!   [`CookieFilter`], [`RequestBodyWatch`]) and [`Upstream::forward`], which reads as
//!   the ordered phases.
//! - `headers`: pure header rewriting (hop-by-hop, identity stripping, portcullis'
//!   cookies).
//! - `forwarded`: `X-Forwarded-*` with trusted proxies, and [`client_ip`].
//! - `target`: the upstream scheme/authority/prefix and the URI rewrite.
//! - `connector`: TCP/TLS/unix connector under both pools.
//! - `pool`: HTTP/1.1 connections kept per downstream connection ([`UpstreamSlot`]).
//! - `driver_waker`: the waker a connection is driven with, so that the request's task
//!   does not wake itself through it.
//! - `early_answer`: an upstream's answer to an upload it stopped reading, kept readable.
//! - `timeout`: the response timeout measured from the request's last progress.
//! - `body_idle`: the response body's idle timeout, the longest wait for its next frame.
//! - `upload_idle`: the request body's idle timeout, the longest wait for the client's
//!   next frame.
//! - `upgrade`: splicing upgraded (WebSocket) connections, each holding its downstream
//!   connection's [`ConnectionHold`].
//!
//! # Upstream protocol
//! HTTP/1.1 by default, on connections from [`pool`]. With `upstream.http2` every
//! request goes as HTTP/2 through hyper-util's pooled client (one multiplexed
//! connection per authority): h2 by
//! ALPN on https, prior-knowledge h2c on http and unix. Its `:authority` is the
//! client's host (or the upstream's, without `preserve_host`) and `Host` is set to
//! the same value; connections always go to the configured address whatever the
//! `:authority` (the pool keeps one connection per distinct authority). Upgrades
//! (WebSocket) cannot pass over an HTTP/2 upstream: they are refused with
//! [`ProxyError::BadRequest`].

mod body_idle;
mod connector;
mod driver_waker;
mod early_answer;
mod forwarded;
mod headers;
mod pool;
mod target;
mod timeout;
mod upgrade;
mod upload_idle;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, HOST, TRANSFER_ENCODING};
use http::uri::Authority;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use rustls::pki_types::ServerName;

use crate::config::{AccessTokenForwarding, IdentityConfig, UpstreamConfig, UpstreamTarget};
use crate::metrics::Metrics;
use crate::per_thread::PerThread;
use crate::{BoxError, ResponseBody};
pub use body_idle::BodyError;
use body_idle::{BodyIdleLimit, Http2Body};
use connector::{ConnectTimeout, TlsSettings, UpstreamConnector};
pub use forwarded::client_ip;
use forwarded::Relayed;
use headers::{Message, StripSet};
use pool::Http1Pool;
pub use pool::{PooledBody, UpstreamSlot};
use target::Target;
use timeout::{Due, Progress, ProgressBody, ResponseTimer};
pub use upgrade::ConnectionHold;
use upgrade::Tunnels;

/// What the proxy needs to know about the downstream request beyond the request itself.
#[derive(Debug, Clone, Copy)]
pub struct ForwardContext<'a> {
    /// The host the request names, as [`crate::host::request_host`] found it (checked:
    /// one host, valid, agreeing with the target): sent as `X-Forwarded-Host`, and as
    /// `Host` with `preserve_host`. `None` when it names none.
    pub host: Option<&'a HeaderValue>,
    /// Peer address of the downstream connection (for `X-Forwarded-For`; when it is a
    /// trusted proxy, the client's forwarding headers are kept and appended to).
    pub client_addr: SocketAddr,
    /// Scheme the client used to reach portcullis (`http` or `https`).
    pub client_scheme: &'static str,
    /// Identity headers of the session, prepared at login, set after all client copies are removed.
    pub identity: &'a [(HeaderName, HeaderValue)],
    /// Value for the access-token header when forwarding is configured (`Bearer …` or bare).
    /// Ignored when [`IdentityConfig::access_token`] is `None`.
    pub access_token: Option<&'a HeaderValue>,
    /// The downstream connection's upstream connection ([`Upstream::slot`]).
    pub upstream_slot: &'a Arc<UpstreamSlot>,
}

/// Told when the body of a forwarded request ends, by the downstream connection that
/// received it: a body can be read on after its response has gone out (an upload the
/// upstream answered before reading it), and the connection is busy until the body
/// ends (see `server::head_timeout`). Given to [`Upstream::slot`].
pub trait RequestBodyWatch: Send + Sync {
    /// A request with a body is being forwarded (called before its first frame is read).
    fn opened(&self);
    /// That body ended, failed or was dropped: once for each [`Self::opened`], from
    /// whichever task reads the body (perhaps not the connection's).
    fn ended(&self);
}

/// Why a request could not be forwarded. No variant's message names the upstream
/// address; the `source` may (it is for logs, not for pages).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The connection could not be established: refused, DNS failure, TLS handshake
    /// or certificate failure, missing unix socket. Upstream's fault: 502.
    #[error("upstream connection failed")]
    Connect(#[source] BoxError),
    /// The connect timeout passed, or no response head came within the response
    /// timeout after the request's last progress. Upstream's fault: 504.
    #[error("upstream did not respond in time")]
    Timeout,
    /// The client's request body sent nothing for `server.body_idle_timeout` before the
    /// response head came: the client announced more than it sent and went quiet (the
    /// upstream was waiting for it). Downstream's fault: 408, not logged as an error
    /// (`upload_idle` logs the stall).
    #[error("client request body stalled")]
    ClientBodyStalled,
    /// The connection broke or the upstream sent something invalid (including a
    /// `101` to a request that asked for no upgrade). Upstream's fault: 502.
    #[error("upstream request failed")]
    Request(#[source] BoxError),
    /// The upstream configuration cannot be used (only from [`Upstream::new`]).
    #[error("upstream configuration invalid: {0}")]
    Config(String),
    /// The downstream request cannot be forwarded at all (a `CONNECT`, `OPTIONS *`, a
    /// WebSocket upgrade when the upstream speaks HTTP/2). Downstream's fault: 400, not
    /// logged as an error.
    #[error("request cannot be forwarded: {0}")]
    BadRequest(&'static str),
    /// A trusted proxy (`server.trusted_proxies`) relayed an `X-Forwarded-Host` with an
    /// element that is not a host ([`crate::host::is_host`]): refused as an invalid
    /// `Host` is, since the upstream believes the two alike (see `forwarded`). The proxy's
    /// fault, or the client's whose value it passed on: 400. Carries no value.
    #[error("X-Forwarded-Host relayed by a trusted proxy is not a valid host")]
    InvalidForwardedHost,
}

/// The upstream answered `101 Switching Protocols` to a request that did not ask to
/// upgrade; hyper cannot hand such a response to the client.
#[derive(Debug, thiserror::Error)]
#[error("upstream switched protocols without an upgrade request")]
struct UnexpectedSwitch;

/// The one upstream, with its connections. Build once at startup and share.
pub struct Upstream {
    transport: Transport,
    /// Dials HTTP/1.1 connections (unused with an HTTP/2 upstream, but slots need one).
    http1: Arc<Http1Pool>,
    target: Target,
    /// Every client header name to remove, folded (see [`headers::StripSet`]).
    strip: StripSet,
    /// Where `ForwardContext::access_token` goes, if anywhere.
    access_token_header: Option<HeaderName>,
    cookies: CookieFilter,
    response_timeout: Duration,
    /// `upstream.body_idle_timeout` and `server.body_idle_timeout`, copied into every slot.
    body_idle: BodyIdleLimit,
    tunnels: Tunnels,
    /// Send the client's `Host` (else the target authority).
    preserve_host: bool,
    /// Speak HTTP/2 to the upstream.
    http2: bool,
    /// Peers whose `X-Forwarded-*` are kept and appended to.
    trusted_proxies: Box<[IpNet]>,
}

/// How requests reach the upstream.
enum Transport {
    Http1,
    Http2(Box<Http2Clients>),
}

type Http2Client = Client<UpstreamConnector, ProgressBody>;

/// The HTTP/2 client, one per thread (see [`crate::per_thread`]): hyper-util drives
/// each connection in a task on the runtime that dialed it, so each connection worker
/// gets HTTP/2 connections of its own.
struct Http2Clients {
    connector: UpstreamConnector,
    by_thread: PerThread<Arc<Http2Client>>,
}

impl Http2Clients {
    fn here(&self) -> Arc<Http2Client> {
        self.by_thread.get_or_make(|| {
            Arc::new(
                Client::builder(TokioExecutor::new())
                    .http2_only(true)
                    .build(self.connector.clone()),
            )
        })
    }
}

/// Most upstream connections idle in the shared list at once (beyond those kept by
/// open downstream connections); nginx's `keepalive` directive bounds the same.
const MAX_IDLE_UPSTREAM_CONNECTIONS: usize = 512;

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.target)
            .field("strip", &self.strip)
            .field("response_timeout", &self.response_timeout)
            .field("body_idle_timeout", &self.body_idle.timeout())
            .field("preserve_host", &self.preserve_host)
            .field("http2", &self.http2)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the pooled client and precomputes everything per-request work needs
    /// (the folded strip set, the target URI parts). When the upstream is `https`,
    /// loads the system CA certificates (falling back to the bundled webpki roots with
    /// a warning when there are none), adds `ca_file`'s, and fixes the TLS server name
    /// (`tls_server_name`, else the URL's host). `ca_file` or `tls_server_name` on a
    /// non-https upstream is a [`ProxyError::Config`]. `trusted_proxies` are the peers
    /// whose `X-Forwarded-*` are believed; `client_body_idle_timeout`
    /// (`server.body_idle_timeout`) bounds each wait for a client's next request-body
    /// frame; `metrics` counts the bodies cut off by either idle timeout. Needs no
    /// runtime; `forward` needs tokio.
    pub fn new(
        upstream: &UpstreamConfig,
        identity: &IdentityConfig,
        cookie_names: CookieFilter,
        trusted_proxies: &[IpNet],
        client_body_idle_timeout: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ProxyError> {
        let target = Target::new(&upstream.target)?;
        if !target.is_https() {
            if upstream.ca_file.is_some() {
                return Err(ProxyError::Config("upstream.ca_file needs an https upstream".into()));
            }
            if upstream.tls_server_name.is_some() {
                return Err(ProxyError::Config(
                    "upstream.tls_server_name needs an https upstream".into(),
                ));
            }
        }
        let connector = match &upstream.target {
            UpstreamTarget::Http(url) => {
                let tls = if target.is_https() {
                    Some(TlsSettings {
                        ca_file: upstream.ca_file.as_ref(),
                        server_name: server_name(url, upstream.tls_server_name.as_deref())?,
                        http2: upstream.http2,
                    })
                } else {
                    None
                };
                UpstreamConnector::http(target.dial_uri()?, upstream.connect_timeout, tls)?
            }
            UpstreamTarget::Unix(path) => UpstreamConnector::unix(path, upstream.connect_timeout),
        };
        let transport = if upstream.http2 {
            Transport::Http2(Box::new(Http2Clients {
                connector: connector.clone(),
                by_thread: PerThread::new(),
            }))
        } else {
            Transport::Http1
        };
        let http1 = Http1Pool::new(connector, target.dial_uri()?, MAX_IDLE_UPSTREAM_CONNECTIONS);
        let access_token_header = match identity.access_token {
            AccessTokenForwarding::None => None,
            AccessTokenForwarding::AuthorizationBearer => Some(AUTHORIZATION),
            AccessTokenForwarding::XForwardedAccessToken => Some(headers::X_FORWARDED_ACCESS_TOKEN.clone()),
        };
        Ok(Upstream {
            transport,
            http1,
            target,
            strip: StripSet::new(identity),
            access_token_header,
            cookies: cookie_names,
            response_timeout: upstream.response_timeout,
            body_idle: BodyIdleLimit::new(upstream.body_idle_timeout, client_body_idle_timeout, metrics),
            tunnels: Tunnels::new(),
            preserve_host: upstream.preserve_host,
            http2: upstream.http2,
            trusted_proxies: trusted_proxies.into(),
        })
    }

    /// A new downstream connection's [`UpstreamSlot`], for [`ForwardContext::upstream_slot`];
    /// `peer` is the connection's peer (its `X-Forwarded-For` entry is rendered once),
    /// `connection` keeps it counted (a tunnel made of it holds a clone), and `bodies`, if
    /// any, is told when each forwarded request body ends.
    pub fn slot(
        &self,
        peer: SocketAddr,
        connection: ConnectionHold,
        bodies: Option<Arc<dyn RequestBodyWatch>>,
    ) -> Arc<UpstreamSlot> {
        Arc::new(self.http1.slot(peer.ip(), connection, bodies, self.body_idle.clone()))
    }

    /// [`client_ip`] with the configured trusted proxies: the address to log and to
    /// base policy on.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer, headers, &self.trusted_proxies)
    }

    /// Forwards an authorised request and returns the upstream's response, its body
    /// streamed. An upgrade (`101`) is spliced in the background.
    // Not an `async fn`: one would keep a second copy of the request and its context in
    // its future (the arguments, moved into locals at the first poll), and move them there
    // once more.
    #[allow(clippy::manual_async_fn)]
    pub fn forward<'a>(
        &'a self,
        mut request: Request<Incoming>,
        ctx: ForwardContext<'a>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, ProxyError>> + 'a {
        async move {
            if request.method() == Method::CONNECT {
                return Err(ProxyError::BadRequest("CONNECT is not proxied"));
            }
            let upgrade = headers::is_upgrade_request(request.headers());
            if upgrade && self.http2 {
                return Err(ProxyError::BadRequest("WebSocket upgrades need an HTTP/1.1 upstream"));
            }
            // Must be taken before the request is consumed: it is the handle hyper's
            // server gives us to the downstream connection after our `101`.
            let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

            let (mut parts, body) = request.into_parts();
            let (authority, host) = self.upstream_host(ctx.host)?;
            self.request_headers(&mut parts.headers, upgrade, host, ctx.host.cloned(), &ctx)?;
            // Downstream extensions (hyper's connection internals, HTTP/2 `:protocol`)
            // mean nothing to the upstream connection.
            parts.extensions = Extensions::new();
            // The response timer covers the body's waits for the client until the answer
            // when the body is polled in the request's task: an HTTP/1.1 upstream's (see
            // `upload_idle`).
            let covered = matches!(self.transport, Transport::Http1);
            let progress = Progress::of(&body, self.body_idle.upload_timeout(), covered);
            // Only a request with a body (`progress`) can keep its connection busy after the response.
            let open = progress.as_ref().and_then(|_| ctx.upstream_slot.open_body());

            let mut response = match &self.transport {
                Transport::Http1 => {
                    parts.uri = self.target.origin_form(&parts.uri)?;
                    parts.version = Version::HTTP_11;
                    // A body of unknown length (chunked from the client, or an HTTP/2 one
                    // without `Content-Length`) goes chunked. hyper's client decides so itself,
                    // but not for a GET, HEAD or CONNECT, which it frames as bodiless unless
                    // told otherwise: the body would be lost. (A bodiless request, most of
                    // them, is not looked at twice: it has no progress.)
                    if progress.is_some() && body.size_hint().exact().is_none() {
                        parts
                            .headers
                            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
                    }
                    let body = ProgressBody::new(body, progress.clone(), open, ctx.upstream_slot);
                    let request = Request::from_parts(parts, body);
                    let due = Due::from_now(progress.as_deref(), self.response_timeout);
                    let mut response = self.http1.send(ctx.upstream_slot, request, due).await?;
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        response.body_mut().forget_connection();
                    }
                    response.map(ResponseBody::upstream)
                }
                Transport::Http2(clients) => {
                    let authority = authority.as_ref().unwrap_or(self.target.authority());
                    parts.uri = self.target.uri_for(&parts.uri, authority)?;
                    parts.version = Version::HTTP_2;
                    let body = ProgressBody::new(body, progress.clone(), open, ctx.upstream_slot);
                    let request = Request::from_parts(parts, body);
                    let client = clients.here();
                    let sent = pin!(client.request(request));
                    let due = Due::from_now(progress.as_deref(), self.response_timeout);
                    // Streams share the connection: each request has a timer of its own,
                    // which its body's waits use next.
                    let mut timer = ResponseTimer::default();
                    let response = timer
                        .within(due, sent)
                        .await
                        .ok_or(ProxyError::Timeout)?
                        .map_err(|error| match progress.as_deref() {
                            // Its body stalled (logged and counted there): hyper reset the stream.
                            Some(progress) if progress.has_stalled() => ProxyError::ClientBodyStalled,
                            _ => classify(error),
                        })?;
                    let slot = ctx.upstream_slot.clone();
                    response.map(|body| ResponseBody::boxed(Http2Body::new(body, timer, slot)))
                }
            };

            let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
            match (switched, downstream_upgrade) {
                (true, Some(downstream)) => {
                    let upstream = hyper::upgrade::on(&mut response);
                    // The tunnel goes on using the downstream connection after hyper let go
                    // of it: it counts under the connection limit until it ends.
                    self.tunnels
                        .splice(downstream, upstream, ctx.upstream_slot.connection());
                }
                (true, None) => return Err(ProxyError::Request(UnexpectedSwitch.into())),
                (false, _) => {}
            }
            headers::remove_hop_by_hop(response.headers_mut(), Message::Response, switched);
            // The downstream connection has its own version; an HTTP/2 upstream's must not leak.
            *response.version_mut() = Version::HTTP_11;
            Ok(response)
        }
    }

    /// The `Host` to send, and for an HTTP/2 upstream the URI authority.
    ///
    /// With `preserve_host` (the default, like nginx/oauth2-proxy `pass_host_header`)
    /// `Host` is the client's (from the HTTP/2 authority when there was no header);
    /// without, the target's authority. An HTTP/1.1 request goes out in origin form, so
    /// it needs no authority (and none is cloned: the target's is shared by every
    /// request on every core). Over HTTP/2 the URI authority becomes `:authority`,
    /// which must equal `Host` (RFC 9113 §8.3.1), so it is the host sent.
    fn upstream_host(&self, client_host: Option<&HeaderValue>) -> Result<(Option<Authority>, HeaderValue), ProxyError> {
        let target = self.target.authority();
        let Some(client_host) = client_host.filter(|_| self.preserve_host) else {
            return Ok((self.http2.then(|| target.clone()), self.target.host().clone()));
        };
        if !self.http2 {
            return Ok((None, client_host.clone()));
        }
        // The host was checked (`crate::host`): every one that passes is an authority.
        let authority = Authority::try_from(client_host.as_bytes())
            .map_err(|_| ProxyError::BadRequest("Host is not a valid authority"))?;
        Ok((Some(authority), client_host.clone()))
    }

    /// The request-header phases, in order. Hop-by-hop goes first because
    /// `Connection` may name any header; a trusted proxy's forwarding headers are
    /// taken next, then the identity strip (which also removes every client spelling of
    /// `X-Forwarded-*`) comes before anything portcullis sets, so that only our values
    /// remain. `client_host` feeds `X-Forwarded-Host`, `host` is the `Host` to send.
    /// Fails only when a trusted proxy relayed an `X-Forwarded-Host` that names no host.
    fn request_headers(
        &self,
        headers: &mut HeaderMap,
        upgrade: bool,
        host: HeaderValue,
        client_host: Option<HeaderValue>,
        ctx: &ForwardContext<'_>,
    ) -> Result<(), ProxyError> {
        let peer = ctx.client_addr.ip().to_canonical();
        headers::remove_hop_by_hop(headers, Message::Request, upgrade);
        let relayed = if forwarded::is_trusted(peer, &self.trusted_proxies) {
            Some(Relayed::take(headers)?)
        } else {
            None
        };
        self.strip.strip(headers);
        headers::filter_cookies(headers, &self.cookies);
        headers.insert(HOST, host);
        let peer_value = ctx.upstream_slot.peer_value(peer);
        forwarded::set_forwarded(headers, peer_value, ctx.client_scheme, client_host, relayed);
        let token = self.access_token_header.as_ref().zip(ctx.access_token);
        headers::set_identity(headers, ctx.identity, token);
        Ok(())
    }

    /// Number of upgraded connections currently spliced.
    pub fn upgraded_connections(&self) -> usize {
        self.tunnels.active()
    }

    /// Closes every upgraded connection (graceful shutdown: these never end by
    /// themselves within a grace period). Later upgrades are closed at once too.
    pub fn close_upgraded_connections(&self) {
        self.tunnels.close_all();
    }
}

/// The TLS server name: `tls_server_name` if configured, else the URL's host.
fn server_name(url: &url::Url, configured: Option<&str>) -> Result<ServerName<'static>, ProxyError> {
    let invalid = |e| ProxyError::Config(format!("upstream TLS server name: {e}"));
    match (configured, url.host()) {
        (Some(name), _) => ServerName::try_from(name.to_owned()).map_err(invalid),
        (None, Some(url::Host::Domain(name))) => ServerName::try_from(name.to_owned()).map_err(invalid),
        (None, Some(url::Host::Ipv4(ip))) => Ok(ServerName::from(IpAddr::V4(ip))),
        (None, Some(url::Host::Ipv6(ip))) => Ok(ServerName::from(IpAddr::V6(ip))),
        (None, None) => Err(ProxyError::Config("the upstream URL has no host".into())),
    }
}

/// Connect failures (including our [`ConnectTimeout`]) vs. everything else.
fn classify(error: hyper_util::client::legacy::Error) -> ProxyError {
    if !error.is_connect() {
        return ProxyError::Request(error.into());
    }
    connect_error(error.into())
}

/// A failed connect: [`ProxyError::Timeout`] when our timeout or the TCP connector's
/// fired (anywhere in the source chain), else [`ProxyError::Connect`].
fn connect_error(error: BoxError) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    while let Some(e) = source {
        let timed_out = e.is::<ConnectTimeout>()
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if timed_out {
            return ProxyError::Timeout;
        }
        source = e.source();
    }
    ProxyError::Connect(error)
}

/// Which cookies belong to portcullis and are removed from the `Cookie` header sent upstream.
#[derive(Debug, Clone)]
pub struct CookieFilter {
    /// Exact name of the session cookie.
    pub session_cookie: String,
    /// Prefix of the pending-login cookies.
    pub login_cookie_prefix: String,
}
