//! The authorization request: fresh `state`, `nonce` and PKCE S256 verifier, and either a
//! Pushed Authorization Request (RFC 9126, which `openidconnect` lacks) followed by a
//! short front-channel URL, or the plain authorize URL carrying every parameter.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openidconnect::PkceCodeChallenge;
use rand::RngCore;
use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use super::http::{self, Reply};
use super::{OidcError, PendingAuth};
use crate::config::ParMode;

pub(super) const PAR_ENDPOINT: &str = "pushed authorization";

/// 32 bytes from the OS-seeded CSPRNG, base64url: 43 characters, well above Authelia's
/// 8-character minimum for `state` and `nonce`.
pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new login attempt's secrets and the authorize parameters that carry them.
pub(super) struct AuthorizeRequest {
    pub pending: PendingAuth,
    pub params: Vec<(&'static str, String)>,
}

pub(super) fn new_request(client_id: &str, redirect_uri: &Url, scopes: &[String]) -> AuthorizeRequest {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let pending = PendingAuth {
        state: random_token(),
        nonce: random_token(),
        pkce_verifier: verifier.secret().clone(),
    };
    let params = vec![
        ("response_type", "code".to_owned()),
        ("client_id", client_id.to_owned()),
        ("redirect_uri", redirect_uri.as_str().to_owned()),
        ("scope", scopes.join(" ")),
        ("state", pending.state.clone()),
        ("nonce", pending.nonce.clone()),
        ("code_challenge", challenge.as_str().to_owned()),
        ("code_challenge_method", "S256".to_owned()),
    ];
    AuthorizeRequest { pending, params }
}

/// Whether to push the request, from the configured mode and the advertised endpoint.
pub(super) fn par_endpoint(mode: ParMode, advertised: Option<&Url>) -> Result<Option<&Url>, OidcError> {
    match (mode, advertised) {
        (ParMode::Never, _) => Ok(None),
        (ParMode::Auto, endpoint) => Ok(endpoint),
        (ParMode::Always, Some(endpoint)) => Ok(Some(endpoint)),
        (ParMode::Always, None) => Err(OidcError::ParUnsupported),
    }
}

/// Whether the provider will refuse every login this client starts: it requires PAR
/// (`require_pushed_authorization_requests`) and `par = never` forbids it.
pub(super) fn provider_refuses_unpushed_logins(mode: ParMode, provider_requires_par: bool) -> bool {
    provider_requires_par && mode == ParMode::Never
}

/// `authorization_endpoint` with `pairs` appended to whatever query it already has.
pub(super) fn authorize_url<'a>(endpoint: &Url, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Url {
    let mut url = endpoint.clone();
    url.query_pairs_mut().extend_pairs(pairs);
    url
}

#[derive(Deserialize)]
pub(super) struct ParResponse {
    pub request_uri: String,
    #[allow(dead_code)] // informative: Authelia's is always 300 s, checked by the provider
    pub expires_in: Option<u64>,
}

/// RFC 9126 §2.2: success is `201 Created` with `{request_uri, expires_in}`; anything
/// else is an error (an OAuth error body when the provider sent one).
pub(super) fn par_response(reply: &Reply, sensitive: &[&str]) -> Result<ParResponse, OidcError> {
    if reply.status != StatusCode::CREATED {
        return Err(http::failure(PAR_ENDPOINT, reply, sensitive));
    }
    let parsed: ParResponse = serde_json::from_slice(&reply.body).map_err(|e| OidcError::InvalidResponse {
        endpoint: PAR_ENDPOINT,
        detail: format!("not a PAR response: {e}"),
    })?;
    if parsed.request_uri.is_empty() {
        return Err(OidcError::InvalidResponse {
            endpoint: PAR_ENDPOINT,
            detail: "empty request_uri".into(),
        });
    }
    Ok(parsed)
}

/// Posts the authorize parameters to the PAR endpoint with `client_secret_basic`.
pub(super) async fn push(
    http_client: &reqwest::Client,
    endpoint: &Url,
    client_id: &str,
    client_secret: &str,
    params: &[(&'static str, String)],
) -> Result<ParResponse, OidcError> {
    let request = http_client
        .post(endpoint.clone())
        .header(
            reqwest::header::AUTHORIZATION,
            http::basic_auth(client_id, client_secret),
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .form(params);
    let reply = http::send(PAR_ENDPOINT, request).await?;
    par_response(&reply, &[client_secret])
}
