//! Settings of the connections themselves: the listener (TLS, HTTP/2, limits, trusted
//! proxies) and the upstream transport (TLS trust, SNI, Host, HTTP/2).
//!
//! Defaults follow nginx where it has one: headers bounded, forwarded headers from
//! clients not trusted unless the peer is a configured proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::source::Source;
use super::{ServerConfig, TlsFiles};

/// `server.body_idle_timeout`: Envoy's stream idle timeout, as `upstream.body_idle_timeout`
/// is, and for the same reason in the other direction. nginx's `client_body_timeout` is
/// 60 s, but it would then race `upstream.response_timeout` (60 s from the last frame)
/// before the answer, and turn today's `504` into a `408` for the same stall; a client
/// streaming a body (gRPC, a paused mobile upload) may also go quiet for a while. Five
/// minutes of nothing is a client that has gone or is holding the connection on purpose.
const DEFAULT_CLIENT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

pub fn server(src: &mut Source<'_>, base_url: Option<&Url>) -> ServerConfig {
    let tls = tls_files(src);
    let http_redirect_addr = socket_addr(src, "server.http_redirect_addr", "0.0.0.0:80");
    let metrics_addr = socket_addr(src, "server.metrics_addr", "127.0.0.1:9090");
    if http_redirect_addr.is_some() && base_url.is_some_and(|url| url.scheme() != "https") {
        let key = src.key_of("server.http_redirect_addr");
        src.problem(key, "redirects to https, so base_url must be an https URL");
    }
    ServerConfig {
        shutdown_grace: src.duration("server.shutdown_grace", Duration::from_secs(30)),
        header_read_timeout: src.positive_duration("server.header_read_timeout", Duration::from_secs(30)),
        // 0 turns it off, as it does `upstream.body_idle_timeout`.
        body_idle_timeout: Some(src.duration("server.body_idle_timeout", DEFAULT_CLIENT_BODY_IDLE_TIMEOUT))
            .filter(|timeout| !timeout.is_zero()),
        tls,
        http_redirect_addr,
        metrics_addr,
        h2c: src.bool("server.h2c", false),
        workers: src
            .raw("server.workers")
            .is_some()
            .then(|| to_usize(src.integer("server.workers", 1, (1, 1024)))),
        max_connections: to_usize(src.integer("server.max_connections", 10_000, (1, 1_000_000))),
        max_header_bytes: to_usize(src.size("server.max_header_bytes", 64 * 1024)).max(8192),
        max_headers: to_usize(src.integer("server.max_headers", 100, (16, 1000))),
        trusted_proxies: trusted_proxies(src),
    }
}

/// An optional `address:port` setting.
fn socket_addr(src: &mut Source<'_>, path: &str, example: &str) -> Option<SocketAddr> {
    src.string(path).and_then(|(key, value)| {
        let parsed = value.parse::<SocketAddr>().ok();
        if parsed.is_none() {
            src.problem(key, format!("must be an address and port, e.g. {example}"));
        }
        parsed
    })
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn tls_files(src: &mut Source<'_>) -> Option<TlsFiles> {
    let cert = src.string("server.tls_cert_file");
    let key = src.string("server.tls_key_file");
    match (cert, key) {
        (Some((_, cert)), Some((_, key))) => Some(TlsFiles {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        }),
        (None, None) => None,
        (Some(_), None) => {
            let key = src.key_of("server.tls_key_file");
            src.problem(key, "is required with server.tls_cert_file");
            None
        }
        (None, Some(_)) => {
            let key = src.key_of("server.tls_cert_file");
            src.problem(key, "is required with server.tls_key_file");
            None
        }
    }
}

impl ServerConfig {
    /// Settings that are valid but probably not what was meant. Logged at start-up and
    /// shown by `portcullis check`.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if self.trusted_proxies.iter().any(|net| net.prefix_len() == 0) {
            warnings.push(
                "server.trusted_proxies trusts every address (a /0 range): any client can then choose the X-Forwarded-For, -Proto and -Host that the upstream and the access log see, and the address its login rate limit counts",
            );
        }
        warnings
    }
}

fn trusted_proxies(src: &mut Source<'_>) -> Vec<ipnet::IpNet> {
    let Some((key, entries)) = src.list("server.trusted_proxies") else {
        return Vec::new();
    };
    let mut nets = Vec::new();
    for entry in entries {
        let parsed = entry
            .parse::<ipnet::IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => nets.push(net),
            Err(_) => src.problem(key.clone(), "must list IP addresses or CIDR ranges, e.g. 10.0.0.0/8"),
        }
    }
    nets
}

/// The upstream transport settings, read beside `upstream_url`.
pub struct UpstreamTransport {
    pub preserve_host: bool,
    /// The key that set `upstream.ca_file`, and its path: read once the URL shows https.
    pub ca_file: Option<(String, String)>,
    pub tls_server_name: Option<String>,
    pub http2: bool,
}

pub fn upstream_transport(src: &mut Source<'_>) -> UpstreamTransport {
    let tls_server_name = src.string("upstream.tls_server_name").and_then(|(key, name)| {
        let valid = rustls::pki_types::ServerName::try_from(name.as_str()).is_ok();
        if !valid {
            src.problem(key, "must be a DNS name or an IP address");
        }
        valid.then_some(name)
    });
    UpstreamTransport {
        preserve_host: src.bool("upstream.preserve_host", true),
        ca_file: src.string("upstream.ca_file"),
        tls_server_name,
        http2: src.bool("upstream.http2", false),
    }
}
