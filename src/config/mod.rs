//! Configuration: the validated, immutable settings the rest of portcullis runs on.
//!
//! `load` turns a TOML file plus the environment into a [`Config`]; after that no
//! code sees a raw string where a typed value belongs. Secrets live in [`Secret`],
//! whose `Debug` and `Display` never show the value.

mod ca;
mod describe;
mod duration;
mod identity;
mod load;
mod policy;
mod raw;
mod routes;
mod secret;
mod session;
mod source;
mod store;
mod transport;
mod validate;

#[cfg(test)]
mod tests;

pub use ca::CaFile;
pub use duration::{format_duration, parse_duration, parse_size};
pub use identity::default_header_names;
pub use load::{load, load_str, ConfigError, ConfigProblem, Sources};
pub use secret::Secret;
pub use session::{generate_secret, MIN_SECRET_LEN};
pub use store::{RedisConfig, SessionStoreConfig};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use url::Url;

/// Everything portcullis needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the main listener (`LISTEN_ADDR`, default `127.0.0.1:4180`).
    pub listen_addr: SocketAddr,
    /// Public root URL of the protected app (`APP_BASE_URL`). Never derived from `Host`.
    pub base_url: Url,
    pub upstream: UpstreamConfig,
    pub oidc: OidcConfig,
    pub session: SessionConfig,
    pub routes: RoutePaths,
    pub policy: PolicyConfig,
    pub identity: IdentityConfig,
    pub pages: PagesConfig,
    pub server: ServerConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    /// `http://host:port[/prefix]` or `https://…`.
    Http(Url),
    /// `unix:/path/to.sock`.
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub target: UpstreamTarget,
    /// Time allowed to establish the upstream connection (default 10 s).
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response head after the request was sent (default 60 s).
    pub response_timeout: Duration,
    /// Longest wait for the next frame of a response body once its head has come
    /// (default 5 min); `None` (configured as `0`) waits as long as the client does.
    pub body_idle_timeout: Option<Duration>,
    /// Show the configured upstream address on 502/504 pages (default false).
    pub show_address_on_error: bool,
    /// Send the client's `Host` upstream (default true); false sends the upstream's authority.
    pub preserve_host: bool,
    /// Extra CA certificates trusted for an https upstream, beside the system roots.
    pub ca_file: Option<CaFile>,
    /// Name sent as SNI and checked in the upstream's certificate (default the URL's host).
    pub tls_server_name: Option<String>,
    /// Speak HTTP/2 to the upstream (gRPC); default HTTP/1.1.
    pub http2: bool,
}

/// When to use Pushed Authorization Requests (RFC 9126).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParMode {
    /// Use PAR whenever the provider advertises an endpoint for it.
    Auto,
    /// Refuse to log in through a provider that has no PAR endpoint.
    Always,
    /// Never use PAR (the front-channel authorize URL carries every parameter).
    Never,
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer as a URL, for building discovery and other request URLs.
    ///
    /// Careful: `Url` serialises an empty path as `/`, so `issuer.as_str()` of
    /// `https://auth.example.com` is `https://auth.example.com/`. Compare `iss` (ID token,
    /// RFC 9207 callback parameter, discovery document) with [`OidcConfig::issuer_exact`].
    pub issuer: Url,
    /// Issuer exactly as configured (`OIDC_ISSUER`), no trailing slash: the string `iss`
    /// must equal character by character.
    pub issuer_exact: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Requested scopes (`OIDC_SCOPES`), always containing `openid`.
    pub scopes: Vec<String>,
    /// `base_url` + `routes.callback`.
    pub redirect_url: Url,
    pub par: ParMode,
    /// Permit an `http:` issuer that is not on loopback.
    pub allow_insecure_issuer: bool,
    /// Extra CA certificates trusted for an https provider's back channel (discovery, JWKS,
    /// PAR, token, userinfo, revocation), beside the system roots: a provider behind a
    /// private CA.
    pub ca_file: Option<CaFile>,
    /// Timeout of every back-channel call to the provider (default 10 s).
    pub http_timeout: Duration,
    /// Upper bound of the discovery retry backoff (default 60 s).
    pub discovery_retry_max: Duration,
    /// Minimum time between two JWKS re-fetches triggered by an unknown `kid` (default 30 s).
    pub jwks_refetch_interval: Duration,
    /// Tolerated clock difference with the provider for `exp`/`iat` (default 60 s).
    pub clock_skew: Duration,
    /// Revoke the refresh (or access) token at the revocation endpoint on logout (default true).
    pub revoke_on_logout: bool,
    /// Ceiling of new logins started per second, so a flood cannot be amplified onto the provider (default 20/s, burst 100).
    pub login_rate_per_second: u32,
    pub login_rate_burst: u32,
    /// Ceiling of new logins one client (an IPv4 address, or an IPv6 /64) starts per
    /// minute, asked before the global one so that one client cannot use it all up
    /// (default 60/min, burst 30); 0 turns the per-client limit off.
    pub login_rate_per_client_per_minute: u32,
    pub login_rate_per_client_burst: u32,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Key material for cookies and stored sessions (`SESSION_ENCRYPTION_SECRET`).
    pub secret: Secret,
    /// True when no secret was configured and one was generated for this process.
    pub secret_is_ephemeral: bool,
    /// Name of the session cookie (default `portcullis_session`).
    pub cookie_name: String,
    /// Prefix of the per-attempt pending-login cookies (default `portcullis_login_`).
    pub login_cookie_prefix: String,
    /// `Secure` on every cookie; true whenever `base_url` is https.
    pub cookie_secure: bool,
    /// Optional `Domain` attribute (default none: host-only cookies).
    pub cookie_domain: Option<String>,
    /// A session unused this long ends (default 1 h).
    pub idle_timeout: Duration,
    /// A session ends this long after login, whatever its use (default 12 h).
    pub max_lifetime: Duration,
    /// Upper bound of the memory the in-memory store may use, in bytes (default 256 MiB).
    pub max_memory_bytes: u64,
    /// Refresh the access token this long before it expires (default 30 s), but at most
    /// half its lifetime before ([`crate::oidc::TokenSet::refresh_lead`]).
    pub refresh_before_expiry: Duration,
    /// How long a pending login (sealed cookie) is valid (default 10 min).
    pub login_timeout: Duration,
    /// Pending-login cookies kept at once; the oldest beyond this is dropped (default 5).
    pub max_pending_logins: usize,
    /// Where sessions live: this process's memory (default) or Redis, for several replicas.
    pub store: SessionStoreConfig,
}

/// Paths of the routes portcullis answers itself.
#[derive(Debug, Clone)]
pub struct RoutePaths {
    /// Redirect URI path (default `/callback`).
    pub callback: String,
    /// Prefix of the other reserved routes (default `/.auth`): `login`, `logout`, `me`, `healthz`, `readyz`.
    pub prefix: String,
}

/// The access policy (`[policy]`): what is public, and who may use the rest.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// Paths served without a session and without identity headers (default none). An
    /// entry ending in `/` is a prefix, any other matches exactly. Each is an
    /// unambiguous path (`policy::path::check`) outside portcullis' own routes; no
    /// duplicates.
    pub public_paths: Vec<String>,
    /// A signed-in user must be in at least one of these groups (`groups` claim),
    /// compared exactly (default none: no group needed). No empty names, no duplicates.
    pub allowed_groups: Vec<String>,
    /// A signed-in user's `email` must be in one of these domains, and verified when
    /// the provider says (default none: any email). Lower-case host names, no duplicates.
    pub allowed_email_domains: Vec<String>,
}

/// Where a forwarded header takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader {
    pub header: HeaderName,
    /// Claims tried in order; the first present one wins. Arrays are joined with `,`.
    pub claims: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessTokenForwarding {
    None,
    /// `Authorization: Bearer <access token>`.
    AuthorizationBearer,
    /// `X-Forwarded-Access-Token: <access token>`.
    XForwardedAccessToken,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Headers set on every upstream request (default the four `Remote-*` headers).
    pub headers: Vec<IdentityHeader>,
    /// Every header name removed from client requests: the identity headers of `headers`,
    /// the four default ones (whatever `headers` maps), the configured extras, and the
    /// access-token header when one is forwarded.
    pub strip_headers: Vec<HeaderName>,
    pub access_token: AccessTokenForwarding,
}

#[derive(Debug, Clone)]
pub struct PagesConfig {
    /// Show raw access/refresh/ID tokens on `/.auth/me` (default true, as the seed did).
    pub show_tokens: bool,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Time in-flight requests get to finish after SIGTERM (default 30 s).
    pub shutdown_grace: Duration,
    /// Maximum time to wait for a request head, on a new connection and between requests
    /// on a kept-alive one (hyper uses one timer for both; default 30 s). A client that has
    /// started sending a head and not finished gets 408; an idle connection is closed.
    pub header_read_timeout: Duration,
    /// Longest wait for the next frame of a client's request body, before its response
    /// and after it (default 5 min); `None` (configured as `0`) waits as long as the
    /// client takes. Bounds a gap, never a whole upload.
    pub body_idle_timeout: Option<Duration>,
    /// Terminate TLS on the main listener with these PEM files (default: plain HTTP).
    pub tls: Option<TlsFiles>,
    /// A second, plain-HTTP listener that redirects every request to `base_url` (default none).
    pub http_redirect_addr: Option<SocketAddr>,
    /// A separate plain-HTTP listener serving Prometheus metrics at `/metrics` (default none).
    pub metrics_addr: Option<SocketAddr>,
    /// Accept prior-knowledge HTTP/2 (h2c) on a plain listener (default false; TLS always offers h2 by ALPN).
    pub h2c: bool,
    /// Threads serving connections, each with a runtime of its own (default: one per
    /// core this process may use).
    pub workers: Option<usize>,
    /// Connections served at once; more are refused with 503 (default 10 000).
    pub max_connections: usize,
    /// Largest request head accepted, in bytes; larger gets 431 (default 64 KiB).
    pub max_header_bytes: usize,
    /// Most request header fields accepted; more gets 431 (default 100).
    pub max_headers: usize,
    /// Peers whose `X-Forwarded-*` headers are trusted and appended to (default none: replaced).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Certificate chain and private key of the listener, PEM, re-read on change or SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` filter directive (default `info`; `RUST_LOG` overrides).
    pub level: String,
    /// One line per request at `info` on the `portcullis::access` target, written when its
    /// response is over (`access`; default true).
    pub access_log: bool,
}

impl RoutePaths {
    pub fn login(&self) -> String {
        format!("{}/login", self.prefix)
    }
    pub fn logout(&self) -> String {
        format!("{}/logout", self.prefix)
    }
    pub fn me(&self) -> String {
        format!("{}/me", self.prefix)
    }
    pub fn healthz(&self) -> String {
        format!("{}/healthz", self.prefix)
    }
    pub fn readyz(&self) -> String {
        format!("{}/readyz", self.prefix)
    }
}

impl OidcConfig {
    /// Settings that are valid but probably not what was meant. Logged at start-up and
    /// shown by `portcullis check`.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        let per_client = self.login_rate_per_client_per_minute;
        let global_per_minute = u64::from(self.login_rate_per_second) * 60;
        if per_client > 0
            && (u64::from(per_client) >= global_per_minute || self.login_rate_per_client_burst >= self.login_rate_burst)
        {
            warnings.push(
                "oidc.login_rate_per_client_per_minute or _burst is not below the global login rate (oidc.login_rate_per_second × 60, oidc.login_rate_burst): one client can use the whole login budget and keep everyone else from signing in",
            );
        }
        warnings
    }
}
