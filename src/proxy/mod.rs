//! Forwarding to the upstream. STUB API: the proxy helper replaces the bodies.

use std::net::SocketAddr;

use http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::config::{IdentityConfig, UpstreamConfig};
use crate::ResponseBody;

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
    pub access_token: Option<&'a HeaderValue>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream connection failed")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("upstream did not respond in time")]
    Timeout,
    #[error("upstream request failed")]
    Request(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("upstream configuration invalid: {0}")]
    Config(String),
}

pub struct Upstream {}

impl Upstream {
    pub fn new(
        _upstream: &UpstreamConfig,
        _identity: &IdentityConfig,
        _cookie_names: CookieFilter,
    ) -> Result<Self, ProxyError> {
        Ok(Upstream {})
    }

    pub async fn forward(
        &self,
        _request: Request<Incoming>,
        _ctx: ForwardContext<'_>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        Err(ProxyError::Timeout)
    }
}

/// Which cookies belong to portcullis and are removed from the `Cookie` header sent upstream.
#[derive(Debug, Clone)]
pub struct CookieFilter {
    /// Exact name of the session cookie.
    pub session_cookie: String,
    /// Prefix of the pending-login cookies.
    pub login_cookie_prefix: String,
}
