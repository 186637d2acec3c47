//! Provider discovery: the OpenID configuration document (with the RFC 9126 / 9207 /
//! 7009 / 7662 metadata `openidconnect` does not model), the exact issuer comparison,
//! the algorithms we accept for ID tokens, and the retry loop that runs until the
//! provider answers.

use std::time::Duration;

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{AdditionalProviderMetadata, IssuerUrl, JsonWebKeySetUrl, ProviderMetadata};
use serde::{Deserialize, Serialize};
use url::Url;

use super::http::BoundedFetch;
use super::jwk::{Jwk, KeySet};
use super::OidcError;

/// Metadata beyond what `openidconnect` models.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ExtraMetadata {
    /// RFC 9126 PAR endpoint.
    #[serde(default)]
    pub pushed_authorization_request_endpoint: Option<Url>,
    /// RFC 9126: the provider refuses authorization requests not made through PAR.
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
    /// RFC 9207: the provider puts `iss` in every authorization response.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// RFC 7009 token revocation.
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    /// RFC 7662 token introspection (read now for the later bearer-token work).
    #[serde(default)]
    pub introspection_endpoint: Option<Url>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

/// The discovery document as `openidconnect` parses it, with [`ExtraMetadata`].
pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    Jwk,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Signature algorithms we ever accept for ID tokens: asymmetric only, so that neither
/// `none` nor an HMAC keyed with something public (key confusion) can pass.
pub(super) const ACCEPTABLE_ALGS: [CoreJwsSigningAlgorithm; 8] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
];

/// What the rest of the module needs from discovery, checked once.
#[derive(Debug, Clone)]
pub struct Provider {
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub userinfo_endpoint: Option<Url>,
    pub jwks_uri: JsonWebKeySetUrl,
    pub extra: ExtraMetadata,
    /// `id_token_signing_alg_values_supported` ∩ [`ACCEPTABLE_ALGS`], RS256 when empty.
    pub id_token_algs: Vec<CoreJwsSigningAlgorithm>,
}

impl Provider {
    /// Checks parsed metadata: endpoints we need exist and, for an https issuer, are
    /// https too (no downgrade of the back channel through a forged document).
    pub(super) fn from_metadata(metadata: &Metadata, issuer: &str) -> Result<Self, OidcError> {
        let invalid = |detail: String| OidcError::InvalidResponse {
            endpoint: "discovery",
            detail,
        };
        let token_endpoint = metadata
            .token_endpoint()
            .map(|u| u.url().clone())
            .ok_or_else(|| invalid("no token_endpoint".into()))?;
        let provider = Provider {
            authorization_endpoint: metadata.authorization_endpoint().url().clone(),
            token_endpoint,
            userinfo_endpoint: metadata.userinfo_endpoint().map(|u| u.url().clone()),
            jwks_uri: metadata.jwks_uri().clone(),
            extra: metadata.additional_metadata().clone(),
            id_token_algs: id_token_algs(metadata.id_token_signing_alg_values_supported()),
        };
        if issuer.starts_with("https:") {
            let mut endpoints = vec![
                ("authorization_endpoint", &provider.authorization_endpoint),
                ("token_endpoint", &provider.token_endpoint),
                ("jwks_uri", provider.jwks_uri.url()),
            ];
            let optional = [
                ("userinfo_endpoint", provider.userinfo_endpoint.as_ref()),
                (
                    "pushed_authorization_request_endpoint",
                    provider.extra.pushed_authorization_request_endpoint.as_ref(),
                ),
                ("revocation_endpoint", provider.extra.revocation_endpoint.as_ref()),
                ("introspection_endpoint", provider.extra.introspection_endpoint.as_ref()),
            ];
            endpoints.extend(optional.into_iter().filter_map(|(n, u)| u.map(|u| (n, u))));
            if let Some((name, _)) = endpoints.iter().find(|(_, u)| u.scheme() != "https") {
                return Err(invalid(format!("{name} is not https although the issuer is")));
            }
        }
        Ok(provider)
    }
}

fn id_token_algs(advertised: &[CoreJwsSigningAlgorithm]) -> Vec<CoreJwsSigningAlgorithm> {
    let algs: Vec<_> = ACCEPTABLE_ALGS
        .iter()
        .filter(|a| advertised.contains(a))
        .cloned()
        .collect();
    if algs.is_empty() {
        vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256]
    } else {
        algs
    }
}

/// Fetches and checks the discovery document and the JWKS once. `openidconnect`
/// compares the document's `issuer` with ours as exact strings.
pub(super) async fn discover(http: &reqwest::Client, issuer: &str) -> Result<(Provider, KeySet), OidcError> {
    let issuer_url = IssuerUrl::new(issuer.to_owned()).map_err(|e| OidcError::InvalidResponse {
        endpoint: "discovery",
        detail: e.to_string(),
    })?;
    let fetch = BoundedFetch {
        http,
        endpoint: "discovery",
    };
    let metadata = Metadata::discover_async(issuer_url, &fetch)
        .await
        .map_err(discovery_error)?;
    let provider = Provider::from_metadata(&metadata, issuer)?;
    Ok((provider, metadata.jwks().clone()))
}

/// Fetches the JWKS (initial load is done by [`discover`]; this is the rotation path).
pub(super) async fn fetch_jwks(http: &reqwest::Client, uri: &JsonWebKeySetUrl) -> Result<KeySet, OidcError> {
    let fetch = BoundedFetch { http, endpoint: "JWKS" };
    KeySet::fetch_async(uri, &fetch).await.map_err(discovery_error)
}

fn discovery_error(e: openidconnect::DiscoveryError<OidcError>) -> OidcError {
    use openidconnect::DiscoveryError as D;
    match e {
        // Already classified by `http::send`: unreachable, or an oversized body.
        D::Request(inner) => inner,
        D::Response(status, _, msg) if status.is_server_error() => {
            OidcError::ProviderUnreachable(format!("discovery: HTTP {}: {msg}", status.as_u16()))
        }
        other => OidcError::InvalidResponse {
            endpoint: "discovery",
            detail: error_chain(&other),
        },
    }
}

/// An error and its sources on one line.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Backoff between discovery attempts: 1 s doubling up to `max`.
pub(super) fn next_delay(current: Duration, max: Duration) -> Duration {
    current.saturating_mul(2).min(max.max(Duration::from_secs(1)))
}
