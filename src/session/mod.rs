//! Server-side sessions: what a login leaves behind, where it is kept, and the cookies
//! that point at it.
//!
//! - [`Session`]: identity, tokens, and what is prepared once from its claims (the
//!   upstream headers and the access policy's verdict).
//! - [`store`]: the store behind a small async interface: moka in memory, or Redis
//!   (sealed, shared by several replicas).
//! - [`cookies`]: the session cookie and the sealed per-attempt pending-login cookies.
//! - [`refresh`]: the in-process single-flight gate that serialises refreshes per session
//!   (the Redis store adds a lock across replicas, [`store::RefreshTurn`]).

pub mod cookies;
pub mod refresh;
pub mod store;

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AccessTokenForwarding, IdentityConfig};
use crate::oidc::{Claims, TokenSet};
use crate::policy::{Access, Rule};

/// The random 256-bit value in the session cookie. Only its hash is ever stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; 32]);

/// SHA-256 of a [`SessionId`]: what the store is keyed by, so a dump of the store
/// yields no usable cookie.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; 32]);

impl SessionId {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SessionId(bytes)
    }

    /// Parses a cookie value; anything but 32 bytes of base64url is not a session id.
    pub fn parse(cookie_value: &str) -> Option<Self> {
        Self::from_cookie_value(cookie_value.as_bytes())
    }

    fn from_cookie_value(cookie_value: &[u8]) -> Option<Self> {
        if cookie_value.len() != COOKIE_VALUE_LEN {
            return None;
        }
        // 43 characters decode to 32 bytes; the base64 crate wants room for its estimate.
        let mut bytes = [0u8; 33];
        let decoded = URL_SAFE_NO_PAD.decode_slice(cookie_value, &mut bytes).ok()?;
        Some(SessionId(bytes[..decoded].try_into().ok()?))
    }

    pub fn cookie_value(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn key(&self) -> SessionKey {
        SessionKey(Sha256::digest(self.0).into())
    }
}

/// Length of a session id in its cookie: 32 bytes in unpadded base64url.
const COOKIE_VALUE_LEN: usize = 43;

/// The store key of the session cookie a connection presented last, so that a
/// keep-alive connection decodes and hashes its cookie once rather than on every
/// request. Without SHA extensions in the CPU (this project's machine has none) the
/// hash alone was a twelfth of the instructions of a proxied request.
///
/// It keeps the cookie value no longer than the connection does anyway: the connection
/// receives the cookie with every request, into its read buffer (HTTP/1.1) or its HPACK
/// table (HTTP/2), and this goes with the connection. The store itself still holds only
/// hashes. The value is compared in constant time: behind a reverse proxy that pools its
/// connections, one connection carries the requests of many users, one after another.
/// HTTP/2 streams that run at once do not wait for each other here: a stream that finds
/// the memo busy works the key out itself.
#[derive(Default)]
pub struct SessionKeyMemo {
    last: Mutex<Option<([u8; COOKIE_VALUE_LEN], SessionKey)>>,
}

impl SessionKeyMemo {
    /// The store key of the session id in `cookie_value`; `None` if it is not a session id.
    pub fn key_of(&self, cookie_value: &[u8]) -> Option<SessionKey> {
        let value: &[u8; COOKIE_VALUE_LEN] = cookie_value.try_into().ok()?;
        let Ok(mut last) = self.last.try_lock() else {
            return SessionId::from_cookie_value(value).map(|id| id.key());
        };
        if let Some((seen, key)) = &*last {
            if bool::from(seen.ct_eq(value)) {
                return Some(*key);
            }
        }
        let key = SessionId::from_cookie_value(value)?.key();
        *last = Some((*value, key));
        Some(key)
    }
}

impl fmt::Debug for SessionKeyMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeyMemo([redacted])")
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

impl SessionKey {
    /// Hex form, for external stores and log correlation (it is not a credential).
    pub fn to_hex(&self) -> String {
        let mut hex = String::with_capacity(64);
        self.push_hex(&mut hex);
        hex
    }

    /// Appends the 64 lowercase hex digits to `out` (a store key is built with one allocation).
    pub fn push_hex(&self, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for byte in self.0 {
            out.push(char::from(DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to correlate log lines.
        write!(f, "SessionKey({}…)", &self.to_hex()[..12])
    }
}

/// One logged-in user. Immutable once stored: a refresh stores a new `Session`.
///
/// Claims are kept as the text they arrived as and parsed only for the dump page: a
/// parsed claim map costs a hundred small allocations per session, and the hot path needs
/// only what is prepared from them at login (headers, access verdict). The ID token's
/// claims are read from the (validated) ID token itself rather than stored twice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub subject: String,
    /// Userinfo fetched at login, as a JSON object.
    userinfo: Option<Box<str>>,
    pub tokens: TokenSet,
    pub created_at: SystemTime,
    /// Absolute end of the session, whatever its use.
    pub expires_at: SystemTime,
    /// Upstream headers derived from the claims, prepared once so the hot path only copies them.
    #[serde(skip)]
    pub upstream_headers: UpstreamHeaders,
    /// The access rule's verdict on the claims, prepared with the headers so the policy
    /// phase only reads it. Not stored: a session read back from an external store must
    /// be prepared again, and until then it is refused (the default).
    #[serde(skip)]
    pub access: Access,
}

/// Identity and access-token headers, ready to be appended to an upstream request.
#[derive(Debug, Clone, Default)]
pub struct UpstreamHeaders {
    pub identity: Vec<(HeaderName, HeaderValue)>,
    pub access_token: Option<HeaderValue>,
}

/// What a login establishes, before it becomes a [`Session`]. The ID token's claims
/// travel inside `tokens.id_token`.
pub struct NewSession<'a> {
    pub subject: String,
    pub userinfo: Option<&'a Claims>,
    pub tokens: TokenSet,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
}

impl Session {
    /// A session prepared for `identity` (its headers) and `rule` (its access verdict).
    pub fn new(new: NewSession<'_>, identity: &IdentityConfig, rule: &Rule) -> Self {
        let mut session = Session {
            subject: new.subject,
            userinfo: new.userinfo.map(claims_text),
            tokens: new.tokens,
            created_at: new.created_at,
            expires_at: new.expires_at,
            upstream_headers: UpstreamHeaders::default(),
            access: Access::default(),
        };
        session.prepare(identity, rule);
        session
    }

    /// This session after a refresh: new tokens (keeping the previous ID token when the
    /// provider sent none) and userinfo (keeping the previous when there is none), headers
    /// and access verdict prepared again (the claims may have changed).
    pub fn refreshed(
        &self,
        mut tokens: TokenSet,
        userinfo: Option<&Claims>,
        identity: &IdentityConfig,
        rule: &Rule,
    ) -> Self {
        let mut session = self.clone();
        if tokens.id_token.is_none() {
            tokens.id_token = session.tokens.id_token.take();
        }
        session.tokens = tokens;
        if let Some(userinfo) = userinfo {
            session.userinfo = Some(claims_text(userinfo));
        }
        session.prepare(identity, rule);
        session
    }

    /// The claims of the session's ID token. It was validated when it was received, so
    /// only its payload is decoded here.
    pub fn id_token_claims(&self) -> Claims {
        let payload = self
            .tokens
            .id_token
            .as_ref()
            .and_then(|token| token.expose().split('.').nth(1));
        payload
            .and_then(|payload| URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok())
            .and_then(|json| serde_json::from_slice(&json).ok())
            .unwrap_or_default()
    }

    pub fn userinfo(&self) -> Option<Claims> {
        self.userinfo
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
    }

    /// ID-token claims overlaid with userinfo claims (Authelia 4.39 puts name, email and
    /// groups only in userinfo; its `sub` was checked equal at login).
    pub fn claims(&self) -> Claims {
        let mut claims = self.id_token_claims();
        if let Some(userinfo) = self.userinfo() {
            claims.extend(userinfo);
        }
        claims
    }

    /// Whether the access token should be refreshed now: expired, or within `lead` of
    /// expiring (at most half its lifetime, [`TokenSet::refresh_lead`]).
    pub fn needs_refresh(&self, now: SystemTime, lead: Duration) -> bool {
        match (self.tokens.expires_at, &self.tokens.refresh_token) {
            (Some(expires_at), Some(_)) => now + self.tokens.refresh_lead(lead) >= expires_at,
            _ => false,
        }
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }

    /// Recomputes [`Session::upstream_headers`] and [`Session::access`] from the claims
    /// and tokens, parsing the claims once for both.
    pub fn prepare(&mut self, identity: &IdentityConfig, rule: &Rule) {
        let claims = self.claims();
        self.upstream_headers = UpstreamHeaders::build(identity, &claims, &self.tokens);
        self.access = rule.evaluate(&claims);
    }

    /// A copy sharing no memory with this one, its header values cut from a buffer of
    /// their own: what one thread keeps for itself (`store::near`), so that its requests
    /// touch no reference count that another thread's requests write too.
    pub(crate) fn unshared_copy(&self) -> Self {
        Session {
            subject: self.subject.clone(),
            userinfo: self.userinfo.clone(),
            tokens: self.tokens.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            upstream_headers: self.upstream_headers.unshared_copy(),
            access: self.access,
        }
    }

    /// Approximate heap size, for the store's memory bound: the bytes held plus a
    /// per-allocation overhead.
    pub fn approximate_size(&self) -> usize {
        const PER_ALLOCATION: usize = 32;
        let text = |s: &str| s.len() + PER_ALLOCATION;
        let tokens = &self.tokens;
        let token_bytes = text(tokens.access_token.expose())
            + tokens.refresh_token.as_ref().map_or(0, |t| text(t.expose()))
            + tokens.id_token.as_ref().map_or(0, |t| text(t.expose()))
            + text(&tokens.token_type)
            + text(&tokens.scopes);
        let header_bytes: usize = self
            .upstream_headers
            .identity
            .iter()
            .map(|(_, v)| v.len() + PER_ALLOCATION + 64)
            .sum();
        std::mem::size_of::<Session>()
            + text(&self.subject)
            + self.userinfo.as_deref().map_or(0, text)
            + token_bytes
            + header_bytes
    }
}

fn claims_text(claims: &Claims) -> Box<str> {
    serde_json::to_string(claims)
        .unwrap_or_else(|_| "{}".to_owned())
        .into_boxed_str()
}

impl UpstreamHeaders {
    /// All the values are cut from one buffer, so that they share one reference count:
    /// every request clones and drops each value it sends, and a value with a count of
    /// its own would be one more cache line passed between the cores serving the
    /// session's requests (and one more allocation held per session).
    pub fn build(identity: &IdentityConfig, claims: &Claims, tokens: &TokenSet) -> Self {
        let mut text = Vec::new();
        let mut span = |value: &[u8]| {
            let start = text.len();
            text.extend_from_slice(value);
            start..text.len()
        };
        let identity_spans: Vec<_> = identity
            .headers
            .iter()
            .filter_map(|spec| {
                let value = spec
                    .claims
                    .iter()
                    .find_map(|claim| claim_header_value(claims.get(claim)?))?;
                Some((&spec.header, span(value.as_bytes())))
            })
            .collect();
        let token_span = match identity.access_token {
            AccessTokenForwarding::None => None,
            AccessTokenForwarding::AuthorizationBearer => {
                Some(span(format!("Bearer {}", tokens.access_token.expose()).as_bytes()))
            }
            AccessTokenForwarding::XForwardedAccessToken => Some(span(tokens.access_token.expose().as_bytes())),
        };
        let text = Bytes::from(text.into_boxed_slice());
        let headers = identity_spans
            .into_iter()
            .filter_map(|(name, span)| match HeaderValue::from_maybe_shared(text.slice(span)) {
                Ok(value) => Some((name.clone(), value)),
                Err(_) => {
                    tracing::warn!(header = %name, "claim value cannot be sent in a header (control characters); header omitted");
                    None
                }
            })
            .collect();
        let access_token = token_span
            .and_then(|span| HeaderValue::from_maybe_shared(text.slice(span)).ok())
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        UpstreamHeaders {
            identity: headers,
            access_token,
        }
    }

    /// The same headers, their values copied into one new buffer.
    fn unshared_copy(&self) -> Self {
        let values = self.identity.iter().map(|(_, value)| value).chain(&self.access_token);
        let text = Bytes::from(values.flat_map(HeaderValue::as_bytes).copied().collect::<Vec<u8>>());
        let mut start = 0;
        let mut cut = |value: &HeaderValue| {
            let end = start + value.len();
            // Bytes of a valid value are a valid value; the fallback only keeps this total.
            let mut copy = HeaderValue::from_maybe_shared(text.slice(start..end)).unwrap_or_else(|_| value.clone());
            copy.set_sensitive(value.is_sensitive());
            start = end;
            copy
        };
        UpstreamHeaders {
            identity: self
                .identity
                .iter()
                .map(|(name, value)| (name.clone(), cut(value)))
                .collect(),
            access_token: self.access_token.as_ref().map(cut),
        }
    }
}

/// The header form of a claim: strings as they are, arrays joined with `,` (Authelia's
/// `Remote-Groups` convention, empty items left out), numbers and booleans in JSON form.
/// Empty values are absent.
fn claim_header_value(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                // An empty item would read as an empty group to an upstream splitting on `,`.
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null | Value::Object(_) => return None,
    };
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests;
