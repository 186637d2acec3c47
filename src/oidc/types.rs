//! The data that crosses the module boundary: what the caller keeps between
//! `begin_login` and `complete_login`, the callback query, tokens and outcomes.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::Secret;

/// Claims as a JSON object.
pub type Claims = serde_json::Map<String, serde_json::Value>;

/// The secrets of one login attempt, kept by the caller (in a sealed cookie) between
/// [`OidcClient::begin_login`](super::OidcClient::begin_login) and [`OidcClient::complete_login`](super::OidcClient::complete_login).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingAuth {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl std::fmt::Debug for PendingAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingAuth([redacted])")
    }
}

/// Where to send the browser, and what to remember until it comes back.
#[derive(Debug)]
pub struct LoginRedirect {
    pub url: Url,
    pub pending: PendingAuth,
}

/// The query of a request to the redirect URI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl CallbackParams {
    pub fn from_query(query: &str) -> Self {
        let mut params = CallbackParams::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "code" => &mut params.code,
                "state" => &mut params.state,
                "iss" => &mut params.iss,
                "error" => &mut params.error,
                "error_description" => &mut params.error_description,
                _ => continue,
            };
            // A repeated parameter is ambiguous; keep the first, as most servers do.
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        params
    }
}

/// Tokens held by a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: Secret,
    pub token_type: String,
    pub expires_at: Option<SystemTime>,
    /// When the tokens arrived: with `expires_at`, their lifetime, which bounds how early
    /// they are refreshed. Absent in sessions stored by versions before 0.17.
    #[serde(default)]
    pub received_at: Option<SystemTime>,
    pub refresh_token: Option<Secret>,
    /// The raw ID token (JWS compact form).
    pub id_token: Option<Secret>,
    /// Granted scopes, space-separated as in OAuth's `scope` (one allocation per session,
    /// not one per scope).
    pub scopes: String,
}

impl TokenSet {
    /// How long before `expires_at` to refresh: `lead`, but at most half the access
    /// token's lifetime. A provider issuing tokens shorter than the lead would otherwise
    /// have every request refresh, as each fresh token is already due.
    pub fn refresh_lead(&self, lead: Duration) -> Duration {
        match (self.received_at, self.expires_at) {
            (Some(received), Some(expires)) => {
                let lifetime = expires.duration_since(received).unwrap_or(Duration::ZERO);
                lead.min(lifetime / 2)
            }
            _ => lead,
        }
    }
}

#[derive(Debug)]
pub struct LoginOutcome {
    pub tokens: TokenSet,
    pub subject: String,
    pub id_token_claims: Claims,
    pub userinfo: Option<Claims>,
    /// ID-token claims overlaid with userinfo claims (userinfo wins, `sub` equal by check).
    pub claims: Claims,
}

#[derive(Debug)]
pub struct RefreshOutcome {
    /// New tokens; `refresh_token` is the rotated one, or the previous one when none came back.
    pub tokens: TokenSet,
    /// Claims of the new ID token, when one came back (validated, same `sub`).
    pub id_token_claims: Option<Claims>,
    /// Userinfo fetched with the new access token (same `sub`); `None` when the provider
    /// has no userinfo endpoint or it failed: keep the previous.
    pub userinfo: Option<Claims>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenTypeHint {
    AccessToken,
    RefreshToken,
}
