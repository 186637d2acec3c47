//! OpenID Connect relying party: discovery (with the metadata `openidconnect` does not
//! model), JWKS, PAR, the authorization request, callback checks (state, RFC 9207 `iss`),
//! code exchange, ID-token validation, userinfo, refresh and revocation.
//!
//! STUB API: the oidc helper replaces the bodies; the signatures and types are the contract.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::{OidcConfig, Secret};

/// Claims as a JSON object.
pub type Claims = serde_json::Map<String, serde_json::Value>;

/// The secrets of one login attempt, kept by the caller (in a sealed cookie) between
/// [`OidcClient::begin_login`] and [`OidcClient::complete_login`].
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
    pub refresh_token: Option<Secret>,
    /// The raw ID token (JWS compact form).
    pub id_token: Option<Secret>,
    pub scopes: Vec<String>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenTypeHint {
    AccessToken,
    RefreshToken,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("provider metadata not loaded yet")]
    NotReady,
    #[error("identity provider unreachable: {0}")]
    ProviderUnreachable(String),
    #[error("configuration requires PAR but the provider advertises no PAR endpoint")]
    ParUnsupported,
    #[error("{endpoint} endpoint refused the request: {error}")]
    ProviderRejected {
        endpoint: &'static str,
        error: String,
        description: Option<String>,
    },
    #[error("provider returned an authorization error: {error}")]
    AuthorizationDenied { error: String, description: Option<String> },
    #[error("state in the callback does not match the pending login")]
    StateMismatch,
    #[error("authorization response has no iss although the provider advertises RFC 9207")]
    MissingIssuer,
    #[error("authorization response iss does not match the issuer")]
    IssuerMismatch,
    #[error("authorization response has no code")]
    MissingCode,
    #[error("ID token invalid: {0}")]
    InvalidIdToken(String),
    #[error("userinfo sub does not match the ID token sub")]
    SubjectMismatch,
    #[error("invalid response from the {endpoint} endpoint: {detail}")]
    InvalidResponse { endpoint: &'static str, detail: String },
    #[error("refresh token refused: {0}")]
    RefreshRejected(String),
}

#[derive(Clone)]
pub struct OidcClient {
    #[allow(dead_code)]
    config: Arc<OidcConfig>,
}

impl OidcClient {
    pub fn new(config: Arc<OidcConfig>) -> Result<Self, OidcError> {
        Ok(OidcClient { config })
    }
    pub async fn run_discovery(&self) {}
    pub fn is_ready(&self) -> bool {
        false
    }
    pub fn supports_revocation(&self) -> bool {
        false
    }
    pub async fn begin_login(&self) -> Result<LoginRedirect, OidcError> {
        Err(OidcError::NotReady)
    }
    pub async fn complete_login(
        &self,
        _pending: &PendingAuth,
        _callback: &CallbackParams,
    ) -> Result<LoginOutcome, OidcError> {
        Err(OidcError::NotReady)
    }
    pub async fn refresh(&self, _refresh_token: &Secret, _expected_subject: &str) -> Result<RefreshOutcome, OidcError> {
        Err(OidcError::NotReady)
    }
    pub async fn userinfo(&self, _access_token: &Secret, _expected_subject: &str) -> Result<Claims, OidcError> {
        Err(OidcError::NotReady)
    }
    pub async fn revoke(&self, _token: &Secret, _hint: TokenTypeHint) -> Result<(), OidcError> {
        Err(OidcError::NotReady)
    }
}
