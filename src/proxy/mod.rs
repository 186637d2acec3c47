//! Forwarding to the upstream: the pooled client, the request and response rewrite,
//! streaming bodies, timeouts, and upgrade pass-through.
//!
//! # Layout
//! - `mod.rs`: the public contract ([`Upstream`], [`ForwardContext`], [`ProxyError`],
//!   [`CookieFilter`]) and [`Upstream::forward`], which reads as the ordered phases.
//! - `headers`: pure header rewriting (hop-by-hop, identity stripping, forwarding
//!   headers, portcullis' cookies).
//! - `target`: the upstream scheme/authority/prefix and the URI rewrite.
//! - `connector`: TCP/TLS/unix connector under the pooled client.
//! - `timeout`: the response timeout measured from the request's last progress.
//! - `upgrade`: splicing upgraded (WebSocket) connections.

mod connector;
mod headers;
mod target;
mod timeout;
mod upgrade;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{AUTHORIZATION, HOST};
use http::{Extensions, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{AccessTokenForwarding, IdentityConfig, UpstreamConfig, UpstreamTarget};
use crate::{BoxError, ResponseBody};
use connector::{ConnectTimeout, UpstreamConnector};
use headers::StripSet;
use target::Target;
use timeout::{Progress, ProgressBody};
use upgrade::Tunnels;

/// What the proxy needs to know about the downstream request beyond the request itself.
#[derive(Debug, Clone, Copy)]
pub struct ForwardContext<'a> {
    /// Peer address of the downstream connection (for `X-Forwarded-For`).
    pub client_addr: SocketAddr,
    /// Scheme the client used to reach portcullis (`http` or `https`).
    pub client_scheme: &'static str,
    /// Identity headers of the session, prepared at login, set after all client copies are removed.
    pub identity: &'a [(HeaderName, HeaderValue)],
    /// Value for the access-token header when forwarding is configured (`Bearer …` or bare).
    /// Ignored when [`IdentityConfig::access_token`] is `None`.
    pub access_token: Option<&'a HeaderValue>,
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
    /// The connection broke or the upstream sent something invalid (including a
    /// `101` to a request that asked for no upgrade). Upstream's fault: 502.
    #[error("upstream request failed")]
    Request(#[source] BoxError),
    /// The upstream configuration cannot be used (only from [`Upstream::new`]).
    #[error("upstream configuration invalid: {0}")]
    Config(String),
    /// The downstream request cannot be forwarded at all (a `CONNECT`, `OPTIONS *`).
    /// Downstream's fault: 400, not logged as an error.
    #[error("request cannot be forwarded: {0}")]
    BadRequest(&'static str),
}

/// The upstream answered `101 Switching Protocols` to a request that did not ask to
/// upgrade; hyper cannot hand such a response to the client.
#[derive(Debug, thiserror::Error)]
#[error("upstream switched protocols without an upgrade request")]
struct UnexpectedSwitch;

/// The one upstream, with its pooled client. Build once at startup and share.
pub struct Upstream {
    client: Client<UpstreamConnector, ProgressBody>,
    target: Target,
    /// Every client header name to remove, folded (see [`headers::StripSet`]).
    strip: StripSet,
    /// Where `ForwardContext::access_token` goes, if anywhere.
    access_token_header: Option<HeaderName>,
    cookies: CookieFilter,
    response_timeout: Duration,
    tunnels: Tunnels,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.target)
            .field("strip", &self.strip)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the pooled client and precomputes everything per-request work needs
    /// (the folded strip set, the target URI parts). Loads the system CA certificates
    /// when the upstream is `https`, falling back to the bundled webpki roots with a
    /// warning when there are none. Needs no runtime; `forward` needs tokio.
    pub fn new(
        upstream: &UpstreamConfig,
        identity: &IdentityConfig,
        cookie_names: CookieFilter,
    ) -> Result<Self, ProxyError> {
        let target = Target::new(&upstream.target)?;
        let connector = match &upstream.target {
            UpstreamTarget::Http(_) => UpstreamConnector::http(upstream.connect_timeout, target.is_https())?,
            UpstreamTarget::Unix(path) => UpstreamConnector::unix(path, upstream.connect_timeout),
        };
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let access_token_header = match identity.access_token {
            AccessTokenForwarding::None => None,
            AccessTokenForwarding::AuthorizationBearer => Some(AUTHORIZATION),
            AccessTokenForwarding::XForwardedAccessToken => Some(headers::X_FORWARDED_ACCESS_TOKEN.clone()),
        };
        Ok(Upstream {
            client,
            target,
            strip: StripSet::new(identity),
            access_token_header,
            cookies: cookie_names,
            response_timeout: upstream.response_timeout,
            tunnels: Tunnels::new(),
        })
    }

    /// Forwards an authorised request and returns the upstream's response, its body
    /// streamed. An upgrade (`101`) is spliced in the background.
    pub async fn forward(
        &self,
        mut request: Request<Incoming>,
        ctx: ForwardContext<'_>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        if request.method() == Method::CONNECT {
            return Err(ProxyError::BadRequest("CONNECT is not proxied"));
        }
        let upgrade = headers::is_upgrade_request(request.headers());
        // Must be taken before the request is consumed: it is the handle hyper's
        // server gives us to the downstream connection after our `101`.
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

        let (mut parts, body) = request.into_parts();
        // Read before the URI rewrite, which replaces an HTTP/2 authority.
        let host = headers::client_host(&parts.headers, &parts.uri);
        parts.uri = self.target.uri_for(&parts.uri)?;
        self.request_headers(&mut parts.headers, upgrade, host, &ctx);
        parts.version = Version::HTTP_11;
        // Downstream extensions (hyper's connection internals, HTTP/2 `:protocol`)
        // mean nothing to the upstream connection.
        parts.extensions = Extensions::new();

        let progress = Progress::new();
        let request = Request::from_parts(parts, ProgressBody::new(body, progress.clone()));
        let mut response = progress
            .wait(self.client.request(request), self.response_timeout)
            .await
            .ok_or(ProxyError::Timeout)?
            .map_err(classify)?;

        let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        match (switched, downstream_upgrade) {
            (true, Some(downstream)) => {
                let upstream = hyper::upgrade::on(&mut response);
                self.tunnels.splice(downstream, upstream);
            }
            (true, None) => return Err(ProxyError::Request(UnexpectedSwitch.into())),
            (false, _) => {}
        }
        headers::remove_hop_by_hop(response.headers_mut(), switched);
        Ok(response.map(|body| body.map_err(BoxError::from).boxed()))
    }

    /// The request-header phases, in order. Hop-by-hop goes first because
    /// `Connection` may name any header; the identity strip comes before anything
    /// portcullis sets, so that only our values remain.
    /// `Host` is kept as the client sent it (set from the HTTP/2 authority when there
    /// was no header), like nginx/oauth2-proxy `pass_host_header`.
    fn request_headers(
        &self,
        headers: &mut http::HeaderMap,
        upgrade: bool,
        host: Option<HeaderValue>,
        ctx: &ForwardContext<'_>,
    ) {
        headers::remove_hop_by_hop(headers, upgrade);
        self.strip.strip(headers);
        headers::filter_cookies(headers, &self.cookies);
        if let Some(host) = &host {
            headers.insert(HOST, host.clone());
        }
        headers::set_forwarded(headers, ctx.client_addr.ip(), ctx.client_scheme, host);
        let token = self.access_token_header.as_ref().zip(ctx.access_token);
        headers::set_identity(headers, ctx.identity, token);
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

/// Connect failures (including our [`ConnectTimeout`]) vs. everything else.
fn classify(error: hyper_util::client::legacy::Error) -> ProxyError {
    if !error.is_connect() {
        return ProxyError::Request(error.into());
    }
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        let timed_out = e.is::<ConnectTimeout>()
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if timed_out {
            return ProxyError::Timeout;
        }
        source = e.source();
    }
    ProxyError::Connect(error.into())
}

/// Which cookies belong to portcullis and are removed from the `Cookie` header sent upstream.
#[derive(Debug, Clone)]
pub struct CookieFilter {
    /// Exact name of the session cookie.
    pub session_cookie: String,
    /// Prefix of the pending-login cookies.
    pub login_cookie_prefix: String,
}
