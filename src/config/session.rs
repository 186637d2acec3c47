//! The `[session]` section: the secret, cookie names and attributes, lifetimes.
//!
//! Why the defaults are what they are:
//! - `idle_timeout` 1 h and `max_lifetime` 12 h: a forgotten tab stops being a way in
//!   within the hour, while a working day needs one login. Authelia's own session
//!   defaults (`inactivity` 5 min, `expiration` 1 h) are stricter because it is the
//!   login point of every app; here a session ends, the browser is sent to Authelia,
//!   and Authelia decides whether that costs the user a password.
//! - `SameSite=Lax` (fixed, not configurable): the session cookie must come along on the
//!   top-level navigation back from the provider and on links from other sites, and
//!   `Strict` would break both; `Lax` still withholds it from cross-site POSTs and frames.
//! - `max_pending_logins` 5: enough for a handful of tabs opened at once, small enough
//!   that the pending-login cookies can never push a request head past a server's limit.
//! - PKCE S256 is always on and not a setting: Authelia's client requires it, and it costs
//!   nothing when the provider does not.

use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use url::{Host, Url};

use super::source::Source;
use super::validate::secret;
use super::SessionConfig;

/// Minimum length of a configured session secret, in characters.
pub const MIN_SECRET_LEN: usize = 32;

/// A fresh session secret: 32 random bytes, base64url without padding (43 characters).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 6265 cookie-name: an RFC 7230 token (visible ASCII without separators).
pub fn is_cookie_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

pub fn session(src: &mut Source<'_>, base_url: Option<&Url>) -> Option<SessionConfig> {
    let secure = base_url.is_some_and(|url| url.scheme() == "https");
    let configured = secret(src, "session.secret", "session.secret_file");
    let secret_given = src.raw("session.secret").is_some() || src.raw("session.secret_file").is_some();
    if let Some((key, value)) = &configured {
        if value.expose().chars().count() < MIN_SECRET_LEN {
            src.problem(
                key.clone(),
                format!(
                    "is too short: use at least {MIN_SECRET_LEN} characters; \
                     `portcullis generate-secret` prints a suitable one"
                ),
            );
        }
    }
    let secret_is_ephemeral = !secret_given;
    let secret = match configured {
        Some((_, secret)) => Some(secret),
        None if secret_is_ephemeral => Some(super::Secret::new(generate_secret())),
        None => None,
    };

    let cookie_name = named_cookie(src, "session.cookie_name", "portcullis_session", secure);
    let login_cookie_prefix = named_cookie(src, "session.login_cookie_prefix", "portcullis_login_", secure);
    if cookie_name.starts_with(&login_cookie_prefix) {
        let key = src.key_of("session.cookie_name");
        src.problem(
            key,
            "must not start with session.login_cookie_prefix, or the session cookie would be \
             taken for a pending login",
        );
    }
    let cookie_domain = cookie_domain(src, base_url, &cookie_name);

    let idle_timeout = src.positive_duration("session.idle_timeout", Duration::from_secs(3600));
    let max_lifetime = src.positive_duration("session.max_lifetime", Duration::from_secs(12 * 3600));
    if max_lifetime < idle_timeout {
        let key = src.key_of("session.max_lifetime");
        src.problem(key, "must not be shorter than session.idle_timeout");
    }
    let max_memory_bytes = src.size("session.max_memory", 256 << 20);
    let refresh_before_expiry = src.duration("session.refresh_before_expiry", Duration::from_secs(30));
    let login_timeout = src.positive_duration("session.login_timeout", Duration::from_secs(600));
    let max_pending_logins = src.integer("session.max_pending_logins", 5, (1, 20));
    let store = super::store::store(src, secret_is_ephemeral);

    Some(SessionConfig {
        secret: secret?,
        secret_is_ephemeral,
        cookie_name,
        login_cookie_prefix,
        cookie_secure: secure,
        cookie_domain,
        idle_timeout,
        max_lifetime,
        max_memory_bytes,
        refresh_before_expiry,
        login_timeout,
        max_pending_logins: usize::try_from(max_pending_logins).unwrap_or(5),
        store,
    })
}

fn named_cookie(src: &mut Source<'_>, path: &str, default: &str, secure: bool) -> String {
    let Some((key, value)) = src.string(path) else {
        return default.to_string();
    };
    if !is_cookie_token(&value) {
        src.problem(key, "must be a cookie name: letters, digits and !#$%&'*+-.^_`|~ only");
        return default.to_string();
    }
    let lower = value.to_ascii_lowercase();
    if (lower.starts_with("__host-") || lower.starts_with("__secure-")) && !secure {
        src.problem(
            key,
            "uses a __Host-/__Secure- prefix, which browsers accept only on https (base_url is http)",
        );
    }
    value
}

fn cookie_domain(src: &mut Source<'_>, base_url: Option<&Url>, cookie_name: &str) -> Option<String> {
    let (key, value) = src.string("session.cookie_domain")?;
    let domain = value.trim().trim_start_matches('.').to_ascii_lowercase();
    let valid = !domain.is_empty()
        && domain
            .split('.')
            .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        src.problem(key, "must be a domain name such as example.com");
        return None;
    }
    if cookie_name.to_ascii_lowercase().starts_with("__host-") {
        src.problem(key, "must be unset when session.cookie_name starts with __Host-");
        return None;
    }
    if let Some(host) = base_url.and_then(Url::host) {
        let matches = match host {
            Host::Domain(name) => {
                let name = name.to_ascii_lowercase();
                name == domain || name.ends_with(&format!(".{domain}"))
            }
            Host::Ipv4(_) | Host::Ipv6(_) => false,
        };
        if !matches {
            src.problem(
                key,
                "must be the host of base_url or a parent domain of it, or browsers drop the cookie",
            );
            return None;
        }
    }
    Some(domain)
}
