//! Back-channel HTTP plumbing shared by every call to the provider: the client (redirects
//! disabled, every call bounded by the configured timeout, TLS verified as
//! [`crate::tls_roots`] says, with `oidc.ca_file`), `client_secret_basic`
//! credentials, bounded response bodies and OAuth error bodies turned into [`OidcError`]s
//! that never carry a secret.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;

use super::OidcError;
use crate::config::CaFile;
use crate::tls_roots::{verifying_client_config, TlsPeer};

/// Largest response body read from the provider; a rogue or broken provider cannot make
/// us buffer more than this.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest provider-supplied `error`/`error_description` kept in an error value.
const MAX_ERROR_TEXT: usize = 300;

/// The TLS configuration of every back-channel client: the system roots (else the
/// bundled ones) plus `ca_file`'s certificates. Reads the system certificate store, so it
/// is built once, at start-up, and each thread's client gets a copy.
pub(super) fn tls_config(ca_file: Option<&CaFile>) -> Result<rustls::ClientConfig, OidcError> {
    let mut config =
        verifying_client_config(TlsPeer::Provider, ca_file).map_err(|e| OidcError::HttpClient(e.to_string()))?;
    // reqwest adds no ALPN to a configuration it is handed. Its http2 feature is off,
    // so HTTP/1.1 is all it speaks, as its own configuration would say.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Builds the client used for every provider call, over `tls` (from [`tls_config`]).
/// Redirects are disabled so that a provider (or whoever controls a URL it advertises)
/// cannot bounce our back-channel requests, with credentials, to another host (SSRF).
pub(super) fn build_client(timeout: Duration, tls: rustls::ClientConfig) -> Result<reqwest::Client, OidcError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .use_preconfigured_tls(tls)
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| OidcError::HttpClient(e.without_url().to_string()))
}

/// `Authorization: Basic …` for `client_secret_basic`: id and secret are each
/// `application/x-www-form-urlencoded` before Base64 (RFC 6749 §2.3.1), which Authelia
/// requires for secrets containing reserved characters. The value is marked sensitive so
/// hyper/reqwest never log it.
pub(super) fn basic_auth(client_id: &str, client_secret: &str) -> HeaderValue {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials = format!("{}:{}", encode(client_id), encode(client_secret));
    let value = format!("Basic {}", STANDARD.encode(credentials));
    // Base64 and "Basic " are always valid header bytes; the fallback is unreachable but
    // keeps this path free of panics.
    let mut header = HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    header.set_sensitive(true);
    header
}

/// A provider response read in full (up to [`MAX_BODY_BYTES`]).
pub(super) struct Reply {
    pub status: StatusCode,
    /// Media type without parameters, lower-cased (`application/json`).
    pub media_type: Option<String>,
    pub body: Vec<u8>,
}

/// Sends a request and reads its body. Transport failures, timeouts and oversized
/// bodies become [`OidcError::ProviderUnreachable`] / [`OidcError::InvalidResponse`];
/// the message never contains the URL (which may carry a query) or any header.
pub(super) async fn send(endpoint: &'static str, request: reqwest::RequestBuilder) -> Result<Reply, OidcError> {
    let unreachable = |e: reqwest::Error| {
        // reqwest's own message is "error sending request"; the cause says why.
        let why = if e.is_timeout() {
            "timed out".to_owned()
        } else {
            let e = e.without_url();
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        };
        OidcError::ProviderUnreachable(format!("{endpoint} endpoint: {why}"))
    };
    let mut response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let media_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(OidcError::InvalidResponse {
                endpoint,
                detail: format!("response body larger than {MAX_BODY_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        media_type,
        body,
    })
}

/// The HTTP client `openidconnect` gets for discovery and the JWKS: its calls go through
/// [`send`], so their bodies are bounded too (the crate's own reqwest glue reads a body
/// whole, however large). The response carries the status, the media type and the body,
/// all the crate reads.
pub(super) struct BoundedFetch<'a> {
    pub http: &'a reqwest::Client,
    pub endpoint: &'static str,
}

impl<'c> openidconnect::AsyncHttpClient<'c> for BoundedFetch<'_> {
    type Error = OidcError;
    type Future = Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, OidcError>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        let (head, body) = request.into_parts();
        let request = self
            .http
            .request(head.method, head.uri.to_string())
            .headers(head.headers)
            .body(body);
        let endpoint = self.endpoint;
        Box::pin(async move {
            let reply = send(endpoint, request).await?;
            let mut response = openidconnect::HttpResponse::new(reply.body);
            *response.status_mut() = reply.status;
            if let Some(media_type) = reply.media_type.and_then(|m| HeaderValue::from_str(&m).ok()) {
                response.headers_mut().insert(CONTENT_TYPE, media_type);
            }
            Ok(response)
        })
    }
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    error_description: Option<String>,
}

/// An OAuth error response (RFC 6749 §5.2) reduced to safe text: every value we sent
/// that must stay secret (`sensitive`) is redacted should the provider echo it, and the
/// text is shortened and stripped of control characters.
pub(super) struct OAuthError {
    pub error: String,
    pub description: Option<String>,
}

impl OAuthError {
    /// Parses an OAuth error body; `None` when the body is not one.
    pub(super) fn parse(body: &[u8], sensitive: &[&str]) -> Option<Self> {
        let parsed: OAuthErrorBody = serde_json::from_slice(body).ok()?;
        Some(OAuthError {
            error: sanitize(&parsed.error, sensitive),
            description: parsed.error_description.map(|d| sanitize(&d, sensitive)),
        })
    }
}

/// Turns a failed reply into an error: an outage (see [`outage`]) is
/// [`OidcError::ProviderUnreachable`]; any other OAuth error body is the provider's answer
/// to our request ([`OidcError::ProviderRejected`]), and so is any other status, named.
pub(super) fn failure(endpoint: &'static str, reply: &Reply, sensitive: &[&str]) -> OidcError {
    let oauth = OAuthError::parse(&reply.body, sensitive);
    if let Some(detail) = outage(endpoint, reply, oauth.as_ref()) {
        return OidcError::ProviderUnreachable(detail);
    }
    match oauth {
        Some(e) => OidcError::ProviderRejected {
            endpoint,
            error: e.error,
            description: e.description,
        },
        None => OidcError::ProviderRejected {
            endpoint,
            error: format!("HTTP {}", reply.status.as_u16()),
            description: None,
        },
    }
}

/// Whether a failed reply says the provider is not working rather than that it refuses
/// this request, and if so, what to log: a 5xx or a 429 whatever the body, or the OAuth
/// codes for that (`server_error`, `temporarily_unavailable`; Authelia answers a failure of
/// its own storage with them). Such an answer is transient: a refresh that meets it keeps
/// the session instead of ending it.
pub(super) fn outage(endpoint: &str, reply: &Reply, oauth: Option<&OAuthError>) -> Option<String> {
    let transient_code = oauth.is_some_and(|e| matches!(e.error.as_str(), "server_error" | "temporarily_unavailable"));
    let transient_status = reply.status.is_server_error() || reply.status == StatusCode::TOO_MANY_REQUESTS;
    if !(transient_code || transient_status) {
        return None;
    }
    let status = reply.status.as_u16();
    Some(match oauth {
        Some(e) => format!("{endpoint} endpoint answered HTTP {status} ({})", e.error),
        None => format!("{endpoint} endpoint answered HTTP {status}"),
    })
}

/// Removes secrets, control characters and excess length from provider-supplied text.
pub(super) fn sanitize(text: &str, sensitive: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in sensitive.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "[redacted]");
    }
    let mut out: String = out.chars().filter(|c| !c.is_control()).collect();
    if out.len() > MAX_ERROR_TEXT {
        let mut cut = MAX_ERROR_TEXT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}
