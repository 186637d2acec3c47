//! Raw values → [`Config`]: every setting read through [`Source`], every rule checked,
//! every problem recorded. Nothing here has a side effect beyond reading `_file` secrets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::{Host, Url};

use super::ca::{read_ca, CaFile};
use super::identity::identity;
use super::policy::policy;
use super::routes::routes;
use super::session::session;
use super::source::{env_name, Raw, Source};
use super::transport::{server, upstream_transport};
use super::{
    Config, LogConfig, LogFormat, OidcConfig, PagesConfig, ParMode, RoutePaths, Secret, UpstreamConfig, UpstreamTarget,
};

const DEFAULT_LISTEN: &str = "127.0.0.1:4180";
const DEFAULT_SCOPES: &[&str] = &["openid", "profile", "email", "groups"];
/// `upstream.body_idle_timeout`: Envoy's stream idle timeout, which Pomerium keeps. Long
/// polls and server-sent events usually send a heartbeat every 15 to 60 s, which nginx's
/// 60 s `proxy_read_timeout` leaves no margin for; an upstream that has sent nothing for
/// five minutes is hung, and holds a client and an upstream connection until it is cut.
const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Builds the configuration, or returns `None` with the problems left in `src`.
pub fn validate(src: &mut Source<'_>) -> Option<Config> {
    let listen_addr = listen_addr(src);
    let base_url = base_url(src);
    let routes = routes(src);
    let oidc = oidc(src, base_url.as_ref(), &routes);
    let upstream = upstream(src);
    let session = session(src, base_url.as_ref());
    let identity = identity(src);
    let policy = policy(src, &routes);
    let pages = PagesConfig {
        show_tokens: src.bool("pages.show_tokens", true),
    };
    let server = server(src, base_url.as_ref());
    let log = log(src);

    if !src.problems.is_empty() {
        return None;
    }
    Some(Config {
        listen_addr,
        base_url: base_url?,
        upstream: upstream?,
        oidc: oidc?,
        session: session?,
        routes,
        policy,
        identity,
        pages,
        server,
        log,
    })
}

fn required(src: &mut Source<'_>, path: &str, what: &str) -> Option<(String, String)> {
    let found = src.string(path);
    if found.is_none() && src.raw(path).is_none() {
        src.problem(
            env_name(path),
            format!("is required: {what} (or `{path}` in the configuration file)"),
        );
    }
    found.map(|(key, value)| (key, value.trim().to_string()))
}

fn listen_addr(src: &mut Source<'_>) -> SocketAddr {
    let default = SocketAddr::from(([127, 0, 0, 1], 4180));
    match src.string("listen_addr") {
        None => default,
        Some((key, value)) => value.trim().parse().unwrap_or_else(|_| {
            src.problem(
                key,
                format!("must be an IP address and a port, such as 0.0.0.0:4180 (default {DEFAULT_LISTEN})"),
            );
            default
        }),
    }
}

/// `value` parsed as an absolute URL, or a problem for `key` (which names nothing else).
pub(super) fn absolute_url(src: &mut Source<'_>, key: &str, value: &str) -> Option<Url> {
    match Url::parse(value) {
        Ok(url) => Some(url),
        Err(error) => {
            src.problem(key, format!("is not an absolute URL ({error})"));
            None
        }
    }
}

/// Checks the parts of an http(s) URL every URL setting shares. Names nothing but `key`.
fn web_url(src: &mut Source<'_>, key: &str, value: &str) -> Option<Url> {
    let url = absolute_url(src, key, value)?;
    let mut ok = true;
    let mut fail = |message: &str| {
        src.problem(key, message);
        ok = false;
    };
    if !matches!(url.scheme(), "http" | "https") {
        fail("must start with https:// (or http://)");
    } else if url.host().is_none() {
        fail("must name a host");
    }
    if url.query().is_some() {
        fail("must not have a query (`?…`)");
    }
    if url.fragment().is_some() {
        fail("must not have a fragment (`#…`)");
    }
    if !url.username().is_empty() || url.password().is_some() {
        fail("must not contain a user name or password");
    }
    ok.then_some(url)
}

fn base_url(src: &mut Source<'_>) -> Option<Url> {
    let (key, value) = required(
        src,
        "base_url",
        "the public root URL of the protected app, e.g. https://express.example.com",
    )?;
    let mut url = web_url(src, &key, &value)?;
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Some(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn oidc(src: &mut Source<'_>, base_url: Option<&Url>, routes: &RoutePaths) -> Option<OidcConfig> {
    let allow_insecure_issuer = src.bool("oidc.allow_insecure_issuer", false);
    let issuer = required(
        src,
        "oidc.issuer",
        "the issuer URL of the provider, e.g. https://auth.example.com",
    )
    .and_then(|(key, value)| {
        let url = web_url(src, &key, &value)?;
        if value.ends_with('/') {
            src.problem(
                key,
                "must not end with `/`: the ID token's `iss` is compared with this string character \
                     by character, and Authelia's issuer has no trailing slash (write https://auth.example.com)",
            );
            return None;
        }
        if url.scheme() == "http" && !is_loopback(&url) && !allow_insecure_issuer {
            src.problem(
                key,
                "must be https: an http issuer is only allowed on loopback (localhost, 127.0.0.0/8, ::1) \
                     or with oidc.allow_insecure_issuer = true",
            );
            return None;
        }
        Some((url, value))
    });
    let ca_file = oidc_ca_file(src, issuer.as_ref().map(|(url, _)| url));
    let client_id = required(src, "oidc.client_id", "the client_id of the Authelia client").and_then(|(key, value)| {
        if value.is_empty() {
            src.problem(key, "must not be empty");
            return None;
        }
        Some(value)
    });
    let client_secret = secret(src, "oidc.client_secret", "oidc.client_secret_file");
    if client_secret.is_none()
        && src.raw("oidc.client_secret").is_none()
        && src.raw("oidc.client_secret_file").is_none()
    {
        src.problem(
            env_name("oidc.client_secret"),
            "is required: the plaintext client secret whose hash is in Authelia's client_secret \
             (or OIDC_CLIENT_SECRET_FILE, or oidc.client_secret / oidc.client_secret_file in the file)",
        );
    }
    let scopes = scopes(src);
    let par = match src.choice("oidc.par", &["auto", "always", "never"]) {
        Some("always") => ParMode::Always,
        Some("never") => ParMode::Never,
        _ => ParMode::Auto,
    };
    let http_timeout = src.positive_duration("oidc.http_timeout", Duration::from_secs(10));
    let discovery_retry_max = src.positive_duration("oidc.discovery_retry_max", Duration::from_secs(60));
    let jwks_refetch_interval = src.positive_duration("oidc.jwks_refetch_interval", Duration::from_secs(30));
    let clock_skew = src.duration("oidc.clock_skew", Duration::from_secs(60));
    let revoke_on_logout = src.bool("oidc.revoke_on_logout", true);
    let max = u64::from(u32::MAX);
    let rate = src.integer("oidc.login_rate_per_second", 20, (1, max));
    let burst = src.integer("oidc.login_rate_burst", 100, (1, max));
    let client_rate = src.integer("oidc.login_rate_per_client_per_minute", 60, (0, max));
    let client_burst = src.integer("oidc.login_rate_per_client_burst", 30, (1, max));

    let redirect_url = base_url.map(|base| {
        let mut url = base.clone();
        let path = format!("{}{}", base.path().trim_end_matches('/'), routes.callback);
        url.set_path(&path);
        url
    });
    let (issuer, issuer_exact) = issuer?;
    Some(OidcConfig {
        issuer,
        issuer_exact,
        client_id: client_id?,
        client_secret: client_secret?.1,
        scopes,
        redirect_url: redirect_url?,
        par,
        allow_insecure_issuer,
        ca_file,
        http_timeout,
        discovery_retry_max,
        jwks_refetch_interval,
        clock_skew,
        revoke_on_logout,
        login_rate_per_second: u32::try_from(rate).unwrap_or(u32::MAX),
        login_rate_burst: u32::try_from(burst).unwrap_or(u32::MAX),
        login_rate_per_client_per_minute: u32::try_from(client_rate).unwrap_or(u32::MAX),
        login_rate_per_client_burst: u32::try_from(client_burst).unwrap_or(u32::MAX),
    })
}

/// `oidc.ca_file`, read and checked now; it only applies to an https issuer, and is not
/// read while the issuer itself is invalid (that problem comes first).
fn oidc_ca_file(src: &mut Source<'_>, issuer: Option<&Url>) -> Option<CaFile> {
    let (key, path) = src.string("oidc.ca_file")?;
    match issuer {
        Some(issuer) if issuer.scheme() == "https" => read_ca(src, &key, PathBuf::from(path.trim())),
        Some(_) => {
            src.problem(key, "only applies to an https oidc.issuer");
            None
        }
        None => None,
    }
}

fn scopes(src: &mut Source<'_>) -> Vec<String> {
    let default = || DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect();
    let Some((key, given)) = src.list("oidc.scopes") else {
        return default();
    };
    let mut scopes: Vec<String> = Vec::new();
    for scope in given {
        // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        let valid = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid {
            src.problem(key.clone(), "contains a scope with characters a scope may not have");
        } else if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if !scopes.iter().any(|s| s == "openid") {
        src.problem(key, "must include `openid` (default: openid profile email groups)");
    }
    scopes
}

/// A secret given directly or through a `_file` twin; both in the same layer is an error,
/// and the environment wins over the file.
pub fn secret(src: &mut Source<'_>, value_path: &str, file_path: &str) -> Option<(String, Secret)> {
    let value = src.raw(value_path);
    let file = src.raw(file_path);
    let (key, raw, from_file) = match (value, file) {
        (None, None) => return None,
        (Some((key, raw)), None) => (key, raw, false),
        (None, Some((key, raw))) => (key, raw, true),
        (Some((vkey, vraw)), Some((fkey, fraw))) => match (&vraw, &fraw) {
            (Raw::Env(_), Raw::File(_)) => (vkey, vraw, false),
            (Raw::File(_), Raw::Env(_)) => (fkey, fraw, true),
            _ => {
                src.problem(vkey, format!("is set together with {fkey}; set only one of them"));
                return None;
            }
        },
    };
    let text = match raw {
        Raw::Env(s) | Raw::File(toml::Value::String(s)) => s.to_string(),
        Raw::File(_) => {
            src.problem(key, "must be a string");
            return None;
        }
    };
    let secret = if from_file {
        let path = PathBuf::from(text.trim());
        match std::fs::read_to_string(&path) {
            Ok(content) => {
                let content = content.strip_suffix('\n').unwrap_or(&content);
                content.strip_suffix('\r').unwrap_or(content).to_string()
            }
            Err(error) => {
                src.problem(key, format!("cannot read {}: {error}", path.display()));
                return None;
            }
        }
    } else {
        text
    };
    if secret.trim().is_empty() {
        src.problem(
            key,
            if from_file {
                "names an empty file"
            } else {
                "must not be empty"
            },
        );
        return None;
    }
    Some((key, Secret::new(secret)))
}

fn upstream(src: &mut Source<'_>) -> Option<UpstreamConfig> {
    let connect_timeout = src.positive_duration("upstream.connect_timeout", Duration::from_secs(10));
    let response_timeout = src.positive_duration("upstream.response_timeout", Duration::from_secs(60));
    // 0 turns it off, as 0 does the per-client login limit.
    let body_idle_timeout = Some(src.duration("upstream.body_idle_timeout", DEFAULT_BODY_IDLE_TIMEOUT))
        .filter(|timeout| !timeout.is_zero());
    let show_address_on_error = src.bool("upstream.show_address_on_error", false);
    let transport = upstream_transport(src);
    let (key, value) = required(
        src,
        "upstream_url",
        "where authenticated requests go: http://host:port, https://…, or unix:/path/to.sock",
    )?;
    let target = if let Some(rest) = value.strip_prefix("unix:") {
        // `unix:/run/app.sock`; `unix:///run/app.sock` is accepted as the same thing.
        let path = rest.strip_prefix("//").filter(|p| p.starts_with('/')).unwrap_or(rest);
        if !path.starts_with('/') || path.len() < 2 {
            src.problem(key, "must name an absolute socket path, e.g. unix:/run/app.sock");
            return None;
        }
        UpstreamTarget::Unix(PathBuf::from(path))
    } else {
        if !(value.starts_with("http://") || value.starts_with("https://")) {
            src.problem(key, "must start with http://, https:// or unix:/");
            return None;
        }
        UpstreamTarget::Http(web_url(src, &key, &value)?)
    };
    let is_https = matches!(&target, UpstreamTarget::Http(url) if url.scheme() == "https");
    for (path, set) in [
        ("upstream.ca_file", transport.ca_file.is_some()),
        ("upstream.tls_server_name", transport.tls_server_name.is_some()),
    ] {
        if set && !is_https {
            let key = src.key_of(path);
            src.problem(key, "only applies to an https upstream_url");
        }
    }
    let ca_file = match transport.ca_file {
        Some((key, path)) if is_https => read_ca(src, &key, PathBuf::from(path.trim())),
        _ => None,
    };
    Some(UpstreamConfig {
        target,
        connect_timeout,
        response_timeout,
        body_idle_timeout,
        show_address_on_error,
        preserve_host: transport.preserve_host,
        ca_file,
        tls_server_name: transport.tls_server_name,
        http2: transport.http2,
    })
}

fn log(src: &mut Source<'_>) -> LogConfig {
    let format = match src.choice("log.format", &["text", "json"]) {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let mut level = "info".to_string();
    if let Some((key, value)) = src.string("log.level") {
        match tracing_subscriber::EnvFilter::try_new(&value) {
            Ok(_) if !value.trim().is_empty() => level = value.trim().to_string(),
            _ => src.problem(
                key,
                "must be a tracing filter such as \"info\" or \"portcullis=debug,info\"",
            ),
        }
    }
    let access_log = src.bool("log.access_log", true);
    LogConfig {
        format,
        level,
        access_log,
    }
}
