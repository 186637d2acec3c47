//! The token endpoint (authorization-code and refresh grants), userinfo and revocation,
//! all authenticated with `client_secret_basic`; responses parsed into [`TokenSet`]s and
//! claim maps.

use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION};
use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use super::http::{self, OAuthError, Reply};
use super::{Claims, OidcError, TokenSet, TokenTypeHint};
use crate::config::Secret;

const TOKEN: &str = "token";
const USERINFO: &str = "userinfo";
const REVOCATION: &str = "revocation";

/// The client credentials, kept together so every call authenticates the same way.
pub(super) struct ClientAuth<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

/// RFC 6749 §5.1. No `Debug`: it holds tokens.
#[derive(Deserialize)]
pub(super) struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl TokenResponse {
    /// Into a [`TokenSet`]; `fallback_refresh` is kept when no rotated token came back,
    /// `requested` stands for the scopes when the provider did not list them.
    pub(super) fn into_token_set(self, fallback_refresh: Option<&Secret>, requested: &[String]) -> TokenSet {
        let scopes = match &self.scope {
            Some(s) if !s.trim().is_empty() => s.split_whitespace().collect::<Vec<_>>().join(" "),
            _ => requested.join(" "),
        };
        let now = SystemTime::now();
        TokenSet {
            access_token: Secret::new(self.access_token),
            token_type: self.token_type,
            // checked_add: a huge `expires_in` from the provider must not panic.
            expires_at: self.expires_in.and_then(|s| now.checked_add(Duration::from_secs(s))),
            received_at: Some(now),
            refresh_token: self
                .refresh_token
                .map(Secret::new)
                .or_else(|| fallback_refresh.cloned()),
            id_token: self.id_token.map(Secret::new),
            scopes,
        }
    }
}

/// Parses a 200 token response; only bearer tokens are accepted (case-insensitively,
/// Authelia writes `bearer`).
pub(super) fn token_response(reply: &Reply) -> Result<TokenResponse, OidcError> {
    // serde's message could quote a token value; keep only its category.
    let parsed: TokenResponse = serde_json::from_slice(&reply.body).map_err(|e| OidcError::InvalidResponse {
        endpoint: TOKEN,
        detail: format!("not a token response ({:?} error at line {})", e.classify(), e.line()),
    })?;
    if !parsed.token_type.eq_ignore_ascii_case("bearer") {
        return Err(OidcError::InvalidResponse {
            endpoint: TOKEN,
            detail: "token_type is not Bearer".into(),
        });
    }
    if parsed.access_token.is_empty() {
        return Err(OidcError::InvalidResponse {
            endpoint: TOKEN,
            detail: "empty access_token".into(),
        });
    }
    Ok(parsed)
}

async fn post_token(
    http_client: &reqwest::Client,
    endpoint: &Url,
    auth: &ClientAuth<'_>,
    form: &[(&str, &str)],
) -> Result<Reply, OidcError> {
    let request = http_client
        .post(endpoint.clone())
        .header(AUTHORIZATION, http::basic_auth(auth.id, auth.secret))
        .header(ACCEPT, "application/json")
        .form(form);
    http::send(TOKEN, request).await
}

/// Authorization-code grant with the PKCE verifier.
pub(super) async fn exchange_code(
    http_client: &reqwest::Client,
    endpoint: &Url,
    auth: &ClientAuth<'_>,
    code: &str,
    redirect_uri: &Url,
    pkce_verifier: &str,
) -> Result<TokenResponse, OidcError> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", pkce_verifier),
    ];
    let reply = post_token(http_client, endpoint, auth, &form).await?;
    if reply.status != StatusCode::OK {
        return Err(http::failure(TOKEN, &reply, &[auth.secret, code, pkce_verifier]));
    }
    token_response(&reply)
}

/// Refresh grant. An OAuth error body (e.g. `invalid_grant` for a rotated-away or
/// revoked token) is [`OidcError::RefreshRejected`]; a 5xx without one is the provider
/// being down ([`OidcError::ProviderUnreachable`]), so the session is not thrown away for it.
pub(super) async fn refresh(
    http_client: &reqwest::Client,
    endpoint: &Url,
    auth: &ClientAuth<'_>,
    refresh_token: &str,
) -> Result<TokenResponse, OidcError> {
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
    let reply = post_token(http_client, endpoint, auth, &form).await?;
    if reply.status == StatusCode::OK {
        return token_response(&reply);
    }
    Err(refresh_failure(&reply, &[auth.secret, refresh_token]))
}

/// A refused refresh ends the session; an outage keeps it on its last tokens.
pub(super) fn refresh_failure(reply: &Reply, sensitive: &[&str]) -> OidcError {
    let oauth = OAuthError::parse(&reply.body, sensitive);
    if let Some(detail) = http::outage(TOKEN, reply, oauth.as_ref()) {
        return OidcError::ProviderUnreachable(detail);
    }
    match oauth {
        Some(e) => OidcError::RefreshRejected(e.error),
        None => OidcError::RefreshRejected(format!("HTTP {}", reply.status.as_u16())),
    }
}

/// Userinfo with the access token; its `sub` must be `expected_subject`.
pub(super) async fn userinfo(
    http_client: &reqwest::Client,
    endpoint: &Url,
    access_token: &str,
    expected_subject: &str,
) -> Result<Claims, OidcError> {
    let request = http_client
        .get(endpoint.clone())
        .bearer_auth(access_token)
        .header(ACCEPT, "application/json");
    let reply = http::send(USERINFO, request).await?;
    userinfo_response(&reply, expected_subject, access_token)
}

pub(super) fn userinfo_response(
    reply: &Reply,
    expected_subject: &str,
    access_token: &str,
) -> Result<Claims, OidcError> {
    if reply.status != StatusCode::OK {
        return Err(http::failure(USERINFO, reply, &[access_token]));
    }
    match reply.media_type.as_deref() {
        Some("application/json") => {}
        Some("application/jwt") => {
            return Err(OidcError::InvalidResponse {
                endpoint: USERINFO,
                detail: "signed userinfo (application/jwt) is not supported; set the client's \
                         userinfo_signed_response_alg to none"
                    .into(),
            })
        }
        other => {
            return Err(OidcError::InvalidResponse {
                endpoint: USERINFO,
                detail: format!("unexpected content type {}", other.unwrap_or("(none)")),
            })
        }
    }
    let claims: Claims = serde_json::from_slice(&reply.body).map_err(|_| OidcError::InvalidResponse {
        endpoint: USERINFO,
        detail: "body is not a JSON object".into(),
    })?;
    match claims.get("sub").and_then(|s| s.as_str()) {
        Some(sub) if sub == expected_subject => Ok(claims),
        Some(_) => Err(OidcError::SubjectMismatch),
        None => Err(OidcError::InvalidResponse {
            endpoint: USERINFO,
            detail: "no sub claim".into(),
        }),
    }
}

/// RFC 7009 revocation. 200 is success whether or not the token was still valid.
pub(super) async fn revoke(
    http_client: &reqwest::Client,
    endpoint: &Url,
    auth: &ClientAuth<'_>,
    token: &str,
    hint: TokenTypeHint,
) -> Result<(), OidcError> {
    let hint = match hint {
        TokenTypeHint::AccessToken => "access_token",
        TokenTypeHint::RefreshToken => "refresh_token",
    };
    let request = http_client
        .post(endpoint.clone())
        .header(AUTHORIZATION, http::basic_auth(auth.id, auth.secret))
        .form(&[("token", token), ("token_type_hint", hint)]);
    let reply = http::send(REVOCATION, request).await?;
    if reply.status == StatusCode::OK {
        Ok(())
    } else {
        Err(http::failure(REVOCATION, &reply, &[auth.secret, token]))
    }
}

/// ID-token claims overlaid by userinfo claims (userinfo wins; `sub` is equal by check).
pub(super) fn merge_claims(id_token: &Claims, userinfo: Option<&Claims>) -> Claims {
    let mut merged = id_token.clone();
    if let Some(userinfo) = userinfo {
        for (k, v) in userinfo {
            merged.insert(k.clone(), v.clone());
        }
    }
    merged
}
