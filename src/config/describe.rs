//! `Config::describe`: the effective settings as TOML, for `portcullis check`.
//!
//! The output reads like `proxy.toml.example`, with derived values as comments. Secrets
//! appear only as `[redacted]`; the function never calls [`super::Secret::expose`].

use std::fmt::Write;

use super::duration::{format_duration, format_size};
use super::{AccessTokenForwarding, Config, LogFormat, ParMode, SessionStoreConfig, UpstreamTarget};

/// A TOML string literal, escaped.
fn q(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|i| q(i.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// An idle timeout's value, `0s` with a note on what `off` lets happen (reads back as off).
fn idle_timeout(timeout: Option<std::time::Duration>, off_lets: &str) -> String {
    match timeout {
        Some(timeout) => q(&format_duration(timeout)),
        None => format!("\"0s\"  # off: {off_lets}"),
    }
}

const REDACTED: &str = "\"[redacted]\"";

impl Config {
    /// The effective settings, every secret redacted, for `portcullis check`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = self.write_description(&mut out);
        out
    }

    fn write_description(&self, out: &mut String) -> std::fmt::Result {
        let d = format_duration;
        writeln!(out, "listen_addr = {}", q(&self.listen_addr.to_string()))?;
        // `Url` writes an empty path as `/`; the configured form has none.
        let base_url = self.base_url.as_str().trim_end_matches('/');
        writeln!(out, "base_url = {}", q(base_url))?;
        let upstream = match &self.upstream.target {
            UpstreamTarget::Http(url) => url.to_string(),
            UpstreamTarget::Unix(path) => format!("unix:{}", path.display()),
        };
        writeln!(out, "upstream_url = {}", q(&upstream))?;

        let o = &self.oidc;
        writeln!(out, "\n[oidc]")?;
        writeln!(out, "issuer = {}", q(&o.issuer_exact))?;
        writeln!(out, "client_id = {}", q(&o.client_id))?;
        writeln!(out, "client_secret = {REDACTED}")?;
        writeln!(out, "scopes = {}", list(&o.scopes))?;
        writeln!(
            out,
            "# redirect_url = {} (base_url + routes.callback)",
            q(o.redirect_url.as_str())
        )?;
        let par = match o.par {
            ParMode::Auto => "auto",
            ParMode::Always => "always",
            ParMode::Never => "never",
        };
        writeln!(out, "par = {}", q(par))?;
        writeln!(out, "allow_insecure_issuer = {}", o.allow_insecure_issuer)?;
        match &o.ca_file {
            Some(ca) => writeln!(out, "ca_file = {}", q(&ca.path.display().to_string()))?,
            None => writeln!(out, "# ca_file unset: system roots only")?,
        }
        writeln!(out, "http_timeout = {}", q(&d(o.http_timeout)))?;
        writeln!(out, "discovery_retry_max = {}", q(&d(o.discovery_retry_max)))?;
        writeln!(out, "jwks_refetch_interval = {}", q(&d(o.jwks_refetch_interval)))?;
        writeln!(out, "clock_skew = {}", q(&d(o.clock_skew)))?;
        writeln!(out, "revoke_on_logout = {}", o.revoke_on_logout)?;
        writeln!(out, "login_rate_per_second = {}", o.login_rate_per_second)?;
        writeln!(out, "login_rate_burst = {}", o.login_rate_burst)?;
        let table = crate::limit::client_table_size(o);
        let off = if table.is_none() {
            "  # off: the global limit alone"
        } else {
            ""
        };
        writeln!(
            out,
            "login_rate_per_client_per_minute = {}{off}",
            o.login_rate_per_client_per_minute
        )?;
        writeln!(out, "login_rate_per_client_burst = {}", o.login_rate_per_client_burst)?;
        if let Some((slots, bytes)) = table {
            writeln!(
                out,
                "# per client: an IPv4 address or an IPv6 /64; {slots} clients tracked at most ({} KiB, fixed)",
                bytes.div_ceil(1024)
            )?;
        }
        for warning in o.warnings() {
            writeln!(out, "# warning: {warning}")?;
        }

        let s = &self.session;
        writeln!(out, "\n[session]")?;
        if s.secret_is_ephemeral {
            writeln!(
                out,
                "secret = {REDACTED}  # generated (ephemeral): sessions end when the process stops"
            )?;
        } else {
            writeln!(out, "secret = {REDACTED}")?;
        }
        writeln!(out, "cookie_name = {}", q(&s.cookie_name))?;
        writeln!(out, "login_cookie_prefix = {}", q(&s.login_cookie_prefix))?;
        match &s.cookie_domain {
            Some(domain) => writeln!(out, "cookie_domain = {}", q(domain))?,
            None => writeln!(out, "# cookie_domain unset: host-only cookies")?,
        }
        writeln!(out, "# cookie_secure = {} (base_url is https)", s.cookie_secure)?;
        writeln!(out, "idle_timeout = {}", q(&d(s.idle_timeout)))?;
        writeln!(out, "max_lifetime = {}", q(&d(s.max_lifetime)))?;
        writeln!(out, "max_memory = {}", q(&format_size(s.max_memory_bytes)))?;
        writeln!(out, "refresh_before_expiry = {}", q(&d(s.refresh_before_expiry)))?;
        writeln!(out, "login_timeout = {}", q(&d(s.login_timeout)))?;
        writeln!(out, "max_pending_logins = {}", s.max_pending_logins)?;
        match &s.store {
            SessionStoreConfig::Memory => {
                writeln!(out, "store = \"memory\"")?;
                writeln!(
                    out,
                    "# redis_url, redis_password, redis_key_prefix, redis_timeout, redis_ca_file: only with store = \"redis\""
                )?;
            }
            SessionStoreConfig::Redis(redis) => {
                writeln!(out, "store = \"redis\"")?;
                writeln!(out, "redis_url = {}", q(redis.url.as_str()))?;
                match &redis.password {
                    Some(_) => writeln!(out, "redis_password = {REDACTED}")?,
                    None => writeln!(out, "# redis_password unset: no AUTH password")?,
                }
                writeln!(out, "redis_key_prefix = {}", q(&redis.key_prefix))?;
                writeln!(out, "redis_timeout = {}", q(&d(redis.timeout)))?;
                match &redis.ca {
                    Some(ca) => writeln!(out, "redis_ca_file = {}", q(&ca.path.display().to_string()))?,
                    None => writeln!(out, "# redis_ca_file unset: system roots (rediss://)")?,
                }
            }
        }

        writeln!(out, "\n[routes]")?;
        writeln!(out, "callback = {}", q(&self.routes.callback))?;
        writeln!(out, "prefix = {}", q(&self.routes.prefix))?;

        let p = &self.policy;
        writeln!(out, "\n[policy]")?;
        writeln!(out, "public_paths = {}", list(&p.public_paths))?;
        writeln!(out, "allowed_groups = {}", list(&p.allowed_groups))?;
        writeln!(out, "allowed_email_domains = {}", list(&p.allowed_email_domains))?;
        for warning in p.warnings(&self.oidc.scopes) {
            writeln!(out, "# warning: {warning}")?;
        }

        let u = &self.upstream;
        writeln!(out, "\n[upstream]")?;
        writeln!(out, "connect_timeout = {}", q(&d(u.connect_timeout)))?;
        writeln!(out, "response_timeout = {}", q(&d(u.response_timeout)))?;
        let stalls = "a response body may stall as long as its client waits";
        writeln!(out, "body_idle_timeout = {}", idle_timeout(u.body_idle_timeout, stalls))?;
        writeln!(out, "show_address_on_error = {}", u.show_address_on_error)?;
        writeln!(out, "preserve_host = {}", u.preserve_host)?;
        match &u.ca_file {
            Some(ca) => writeln!(out, "ca_file = {}", q(&ca.path.display().to_string()))?,
            None => writeln!(out, "# ca_file unset: system roots only")?,
        }
        match &u.tls_server_name {
            Some(name) => writeln!(out, "tls_server_name = {}", q(name))?,
            None => writeln!(out, "# tls_server_name unset: the upstream URL's host")?,
        }
        writeln!(out, "http2 = {}", u.http2)?;

        let i = &self.identity;
        writeln!(out, "\n[identity]")?;
        let access_token = match i.access_token {
            AccessTokenForwarding::None => "none",
            AccessTokenForwarding::AuthorizationBearer => "authorization",
            AccessTokenForwarding::XForwardedAccessToken => "x-forwarded-access-token",
        };
        writeln!(out, "access_token = {}", q(access_token))?;
        writeln!(
            out,
            "strip_headers = {}  # identity headers included",
            list(i.strip_headers.iter().map(|h| h.as_str()))
        )?;
        for header in &i.headers {
            writeln!(out, "\n[[identity.headers]]")?;
            writeln!(out, "header = {}", q(header.header.as_str()))?;
            writeln!(out, "claims = {}", list(&header.claims))?;
        }

        writeln!(out, "\n[pages]")?;
        writeln!(out, "show_tokens = {}", self.pages.show_tokens)?;

        writeln!(out, "\n[server]")?;
        writeln!(out, "shutdown_grace = {}", q(&d(self.server.shutdown_grace)))?;
        writeln!(out, "header_read_timeout = {}", q(&d(self.server.header_read_timeout)))?;
        let sv = &self.server;
        let stalls = "a client's request body may stall as long as the client likes";
        writeln!(
            out,
            "body_idle_timeout = {}",
            idle_timeout(sv.body_idle_timeout, stalls)
        )?;
        match &sv.tls {
            Some(tls) => {
                writeln!(out, "tls_cert_file = {}", q(&tls.cert.display().to_string()))?;
                writeln!(out, "tls_key_file = {}", q(&tls.key.display().to_string()))?;
            }
            None => writeln!(out, "# tls_cert_file / tls_key_file unset: plain HTTP")?,
        }
        match &sv.http_redirect_addr {
            Some(addr) => writeln!(out, "http_redirect_addr = {}", q(&addr.to_string()))?,
            None => writeln!(out, "# http_redirect_addr unset: no HTTP-to-HTTPS redirect listener")?,
        }
        match &sv.metrics_addr {
            Some(addr) => writeln!(out, "metrics_addr = {}", q(&addr.to_string()))?,
            None => writeln!(out, "# metrics_addr unset: no metrics listener")?,
        }
        writeln!(out, "h2c = {}", sv.h2c)?;
        match sv.workers {
            Some(workers) => writeln!(out, "workers = {workers}")?,
            None => writeln!(out, "# workers unset: one per core ({} here)", crate::server::cores())?,
        }
        writeln!(out, "max_connections = {}", sv.max_connections)?;
        writeln!(out, "max_header_bytes = {}", sv.max_header_bytes)?;
        writeln!(out, "max_headers = {}", sv.max_headers)?;
        writeln!(
            out,
            "trusted_proxies = {}",
            list(sv.trusted_proxies.iter().map(|n| n.to_string()))
        )?;
        for warning in sv.warnings() {
            writeln!(out, "# warning: {warning}")?;
        }

        writeln!(out, "\n[log]")?;
        let format = match self.log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        writeln!(out, "format = {}", q(format))?;
        writeln!(out, "level = {}", q(&self.log.level))?;
        writeln!(out, "access_log = {}", self.log.access_log)?;
        Ok(())
    }
}
