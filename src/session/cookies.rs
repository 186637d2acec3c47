//! The cookies portcullis sets: the session cookie (a random id, nothing else) and the
//! sealed pending-login cookies (one per login attempt, so parallel tabs work and
//! unauthenticated traffic costs no server memory).
//!
//! Sealing uses the `cookie` crate's private jar (AES-256-GCM, the cookie name bound as
//! associated data), keyed by a key derived from the session secret.
//!
//! Only the session cookie takes `session.cookie_domain`: a pending login is read back
//! only at the redirect URI, on `base_url`'s host, so its cookies stay host-only. That
//! keeps them from every sibling host (another deployment there would take them for
//! unreadable ones of its own and clear them), and lets their prefix be `__Host-`,
//! which browsers refuse on a cookie with a `Domain`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cookie::{Cookie, CookieJar, Key, SameSite};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SessionId;
use crate::config::SessionConfig;
use crate::oidc::PendingAuth;

/// Length of the state prefix that names a pending-login cookie.
const STATE_TAG_LEN: usize = 16;

/// The most a cookie's name and value may hold: browsers keep no more (RFC 6265 §6.1's
/// minimum, and Chrome's and Firefox's limit) and drop a larger cookie without a word.
pub const MAX_COOKIE_BYTES: usize = 4096;

/// What a login attempt must remember until the provider sends the browser back.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    pub auth: PendingAuth,
    /// Local path to return to after login (already validated).
    pub return_to: String,
    /// Seconds since the Unix epoch when the attempt started.
    pub started_at: u64,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("return_to", &self.return_to)
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

/// Builds and reads portcullis' cookies.
pub struct CookieCodec {
    key: Key,
    session_cookie: String,
    login_prefix: String,
    secure: bool,
    domain: Option<String>,
    session_max_age: Duration,
    login_max_age: Duration,
    max_pending: usize,
}

impl CookieCodec {
    pub fn new(config: &SessionConfig) -> Self {
        // Fixed-length input for HKDF; the label keeps this key apart from any other use of the secret.
        let mut hasher = Sha256::new();
        hasher.update(b"portcullis/pending-login-cookie/v1\0");
        hasher.update(config.secret.expose().as_bytes());
        let master: [u8; 32] = hasher.finalize().into();
        CookieCodec {
            key: Key::derive_from(&master),
            session_cookie: config.cookie_name.clone(),
            login_prefix: config.login_cookie_prefix.clone(),
            secure: config.cookie_secure,
            domain: config.cookie_domain.clone(),
            session_max_age: config.max_lifetime,
            login_max_age: config.login_timeout,
            max_pending: config.max_pending_logins,
        }
    }

    /// The session id from the request's cookies, if one is present and well-formed.
    /// (The first session cookie counts, as with the `cookie` crate's parser.)
    pub fn session_id(&self, headers: &HeaderMap) -> Option<SessionId> {
        SessionId::parse(std::str::from_utf8(self.session_cookie_value(headers)?).ok()?)
    }

    /// The raw value of the session cookie, as [`Self::session_id`] finds it.
    pub fn session_cookie_value<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        cookie_pairs(headers)
            .find(|(name, _)| *name == self.session_cookie.as_bytes())
            .map(|(_, value)| value)
    }

    pub fn has_session_cookie(&self, headers: &HeaderMap) -> bool {
        cookie_pairs(headers).any(|(name, _)| name == self.session_cookie.as_bytes())
    }

    pub fn set_session(&self, id: &SessionId) -> HeaderValue {
        self.render(
            Cookie::new(self.session_cookie.clone(), id.cookie_value()),
            self.session_max_age,
            self.domain.as_deref(),
        )
    }

    pub fn clear_session(&self) -> HeaderValue {
        self.render(
            Cookie::new(self.session_cookie.clone(), ""),
            Duration::ZERO,
            self.domain.as_deref(),
        )
    }

    /// The name of the pending-login cookie for a given `state`.
    pub fn login_cookie_name(&self, state: &str) -> String {
        let tag: String = state
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(STATE_TAG_LEN)
            .collect();
        format!("{}{}", self.login_prefix, tag)
    }

    /// Seals a pending login into a `Set-Cookie` value; `None` if it would not fit in a
    /// browser's cookie ([`MAX_COOKIE_BYTES`]: its return path is too long).
    pub fn seal_login(&self, pending: &PendingLogin) -> Option<HeaderValue> {
        let payload = serde_json::to_string(pending).ok()?;
        let name = self.login_cookie_name(&pending.auth.state);
        let mut jar = CookieJar::new();
        jar.private_mut(&self.key).add(Cookie::new(name.clone(), payload));
        let sealed = jar.get(&name)?.value().to_owned();
        if name.len() + sealed.len() > MAX_COOKIE_BYTES {
            return None;
        }
        Some(self.render(Cookie::new(name, sealed), self.login_max_age, None))
    }

    /// Opens the pending-login cookie of `state`, if present, authentic and not expired.
    pub fn open_login(&self, headers: &HeaderMap, state: &str, now: SystemTime) -> Option<PendingLogin> {
        let name = self.login_cookie_name(state);
        let cookie = request_cookies(headers).find(|c| c.name() == name)?;
        let pending = self.unseal(cookie)?;
        (!self.login_expired(&pending, now)).then_some(pending)
    }

    pub fn clear_login(&self, state: &str) -> HeaderValue {
        self.render(Cookie::new(self.login_cookie_name(state), ""), Duration::ZERO, None)
    }

    /// `Set-Cookie` values that drop pending-login cookies so that, with the one about to
    /// be added, at most `max_pending` remain: unreadable and expired ones first, then the oldest.
    pub fn prune_logins(&self, headers: &HeaderMap, now: SystemTime) -> Vec<HeaderValue> {
        let mut live: Vec<(u64, String)> = Vec::new();
        let mut clear: Vec<String> = Vec::new();
        for cookie in request_cookies(headers).filter(|c| c.name().starts_with(&self.login_prefix)) {
            let name = cookie.name().to_owned();
            match self.unseal(cookie) {
                Some(pending) if !self.login_expired(&pending, now) => live.push((pending.started_at, name)),
                _ => clear.push(name),
            }
        }
        live.sort();
        let excess = (live.len() + 1).saturating_sub(self.max_pending);
        clear.extend(live.into_iter().take(excess).map(|(_, name)| name));
        clear
            .into_iter()
            .map(|name| self.render(Cookie::new(name, ""), Duration::ZERO, None))
            .collect()
    }

    fn unseal(&self, cookie: Cookie<'_>) -> Option<PendingLogin> {
        let mut jar = CookieJar::new();
        let name = cookie.name().to_owned();
        jar.add_original(cookie.into_owned());
        let opened = jar.private(&self.key).get(&name)?;
        serde_json::from_str(opened.value()).ok()
    }

    fn login_expired(&self, pending: &PendingLogin, now: SystemTime) -> bool {
        let age = unix_seconds(now).saturating_sub(pending.started_at);
        age > self.login_max_age.as_secs()
    }

    /// A `Set-Cookie` value with portcullis' attributes; `domain` is the session cookie's
    /// configured one, `None` (host-only) for pending logins.
    fn render(&self, mut cookie: Cookie<'static>, max_age: Duration, domain: Option<&str>) -> HeaderValue {
        cookie.set_path("/");
        cookie.set_http_only(true);
        cookie.set_same_site(SameSite::Lax);
        cookie.set_secure(self.secure);
        if let Some(domain) = domain {
            cookie.set_domain(domain.to_owned());
        }
        cookie.set_max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        ));
        // Names are validated at config time and values are base64url or empty, so the
        // rendered cookie is always a valid header value.
        HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
    }
}

pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `name=value` pairs of every `Cookie` header, trimmed, the value without the
/// optional double quotes (RFC 6265 §4.2.1), pairs without a name or `=` skipped: what
/// the `cookie` crate's parser yields for name and value, without building a `Cookie`
/// per pair (this runs on every request).
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers.get_all(COOKIE).iter().flat_map(|value| CookiePairs {
        rest: Some(value.as_bytes()),
    })
}

/// The pairs of one `Cookie` header value. The separators are found with `memchr`
/// (a few words at a time) rather than a test per byte: a browser's `Cookie` header
/// often carries a site's other cookies too, and it is scanned on every request.
struct CookiePairs<'a> {
    /// What is left after the last `;`; `None` once the last pair is taken.
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for CookiePairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.rest?;
            let pair = match memchr::memchr(b';', rest) {
                Some(end) => {
                    self.rest = Some(&rest[end + 1..]);
                    &rest[..end]
                }
                None => {
                    self.rest = None;
                    rest
                }
            };
            let Some(at) = memchr::memchr(b'=', pair) else { continue };
            let name = pair[..at].trim_ascii();
            let value = match pair[at + 1..].trim_ascii() {
                [b'"', inner @ .., b'"'] => inner,
                value => value,
            };
            if !name.is_empty() {
                return Some((name, value));
            }
        }
    }
}

/// Every cookie of the request, across all `Cookie` headers (HTTP/2 clients send several).
/// Malformed pairs are skipped, never fatal.
fn request_cookies(headers: &HeaderMap) -> impl Iterator<Item = Cookie<'_>> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
}

#[cfg(test)]
#[path = "cookies_tests.rs"]
mod tests;
