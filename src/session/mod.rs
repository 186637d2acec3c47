//! Server-side sessions: what a login leaves behind, where it is kept, and the cookies
//! that point at it.
//!
//! - [`Session`]: identity, tokens and the upstream headers prepared once at login.
//! - [`store`]: the store behind a small async interface (moka in memory now, Redis later).
//! - [`cookies`]: the session cookie and the sealed per-attempt pending-login cookies.
//! - [`refresh`]: the single-flight gate that serialises refreshes per session.

pub mod cookies;
pub mod refresh;
pub mod store;

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{AccessTokenForwarding, IdentityConfig};
use crate::oidc::{Claims, TokenSet};

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
        if cookie_value.len() != 43 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(cookie_value).ok()?;
        Some(SessionId(bytes.try_into().ok()?))
    }

    pub fn cookie_value(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn key(&self) -> SessionKey {
        SessionKey(Sha256::digest(self.0).into())
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
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to correlate log lines.
        write!(f, "SessionKey({}…)", &self.to_hex()[..12])
    }
}

/// One logged-in user. Immutable once stored: a refresh stores a new `Session`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub subject: String,
    /// ID-token claims overlaid with userinfo claims.
    pub claims: Claims,
    pub id_token_claims: Claims,
    pub userinfo: Option<Claims>,
    pub tokens: TokenSet,
    pub created_at: SystemTime,
    /// Absolute end of the session, whatever its use.
    pub expires_at: SystemTime,
    /// Upstream headers derived from the claims, prepared once so the hot path only copies them.
    #[serde(skip)]
    pub upstream_headers: UpstreamHeaders,
}

/// Identity and access-token headers, ready to be appended to an upstream request.
#[derive(Debug, Clone, Default)]
pub struct UpstreamHeaders {
    pub identity: Vec<(HeaderName, HeaderValue)>,
    pub access_token: Option<HeaderValue>,
}

impl Session {
    /// Whether the access token should be refreshed now (expired or about to).
    pub fn needs_refresh(&self, now: SystemTime, leeway: Duration) -> bool {
        match (self.tokens.expires_at, &self.tokens.refresh_token) {
            (Some(expires_at), Some(_)) => now + leeway >= expires_at,
            _ => false,
        }
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }

    /// Recomputes [`Session::upstream_headers`] from the claims and tokens.
    pub fn prepare_headers(&mut self, identity: &IdentityConfig) {
        self.upstream_headers = UpstreamHeaders::build(identity, &self.claims, &self.tokens);
    }

    /// Approximate heap size, for the store's memory bound.
    pub fn approximate_size(&self) -> usize {
        let claims_size = |claims: &Claims| -> usize { claims.iter().map(|(k, v)| k.len() + json_size(v) + 48).sum() };
        let tokens = &self.tokens;
        let token_bytes = tokens.access_token.expose().len()
            + tokens.refresh_token.as_ref().map_or(0, |t| t.expose().len())
            + tokens.id_token.as_ref().map_or(0, |t| t.expose().len())
            + tokens.scopes.iter().map(|s| s.len() + 24).sum::<usize>();
        let header_bytes: usize = self
            .upstream_headers
            .identity
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 64)
            .sum();
        256 + self.subject.len()
            + claims_size(&self.claims)
            + claims_size(&self.id_token_claims)
            + self.userinfo.as_ref().map_or(0, claims_size)
            + token_bytes
            + header_bytes
    }
}

fn json_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::String(s) => s.len() + 24,
        Value::Array(items) => 24 + items.iter().map(json_size).sum::<usize>(),
        Value::Object(map) => 48 + map.iter().map(|(k, v)| k.len() + json_size(v) + 48).sum::<usize>(),
        _ => 16,
    }
}

impl UpstreamHeaders {
    pub fn build(identity: &IdentityConfig, claims: &Claims, tokens: &TokenSet) -> Self {
        let headers = identity
            .headers
            .iter()
            .filter_map(|spec| {
                let value = spec.claims.iter().find_map(|claim| claim_header_value(claims.get(claim)?))?;
                match HeaderValue::from_bytes(value.as_bytes()) {
                    Ok(value) => Some((spec.header.clone(), value)),
                    Err(_) => {
                        tracing::warn!(header = %spec.header, "claim value cannot be sent in a header (control characters); header omitted");
                        None
                    }
                }
            })
            .collect();
        let access_token = match identity.access_token {
            AccessTokenForwarding::None => None,
            AccessTokenForwarding::AuthorizationBearer => {
                HeaderValue::from_str(&format!("Bearer {}", tokens.access_token.expose())).ok()
            }
            AccessTokenForwarding::XForwardedAccessToken => HeaderValue::from_str(tokens.access_token.expose()).ok(),
        }
        .map(|mut value| {
            value.set_sensitive(true);
            value
        });
        UpstreamHeaders {
            identity: headers,
            access_token,
        }
    }
}

/// The header form of a claim: strings as they are, arrays joined with `,` (Authelia's
/// `Remote-Groups` convention), numbers and booleans in JSON form. Empty values are absent.
fn claim_header_value(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(s) => Some(s.clone()),
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
