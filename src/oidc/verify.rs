//! ID-token validation on top of `openidconnect`'s `IdTokenVerifier`: signature against
//! the JWKS with asymmetric algorithms only, `iss`, `aud`, `azp`, `exp` with leeway,
//! `iat` not in the future, `nonce`, `at_hash`; the key-rotation retry; and the raw
//! claim map of the validated token.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use chrono::Utc;
use openidconnect::core::{CoreIdToken, CoreJwsSigningAlgorithm};
use openidconnect::{
    AccessToken, AccessTokenHash, ClaimsVerificationError, ClientId, IdTokenVerifier, IssuerUrl, Nonce,
    SignatureVerificationError,
};
use subtle::ConstantTimeEq;

use super::discovery::error_chain;
use super::jwk::{Jwk, KeySet};
use super::{Claims, OidcError};

/// How the `nonce` claim is checked.
#[derive(Clone, Copy)]
pub(super) enum NonceCheck<'a> {
    /// Login: the claim must be present and equal.
    Expect(&'a str),
    /// Refresh: ID tokens from a refresh carry no nonce, or the login's, which
    /// [`same_authentication`] compares.
    Ignore,
}

/// Everything an ID-token check needs besides the keys.
pub(super) struct Expectations<'a> {
    pub client_id: &'a str,
    pub issuer: &'a str,
    pub algs: &'a [CoreJwsSigningAlgorithm],
    pub clock_skew: Duration,
    pub nonce: NonceCheck<'a>,
    /// The access token issued with the ID token, for `at_hash`.
    pub access_token: Option<&'a str>,
}

/// A validated ID token.
#[derive(Debug)]
pub(super) struct ValidIdToken {
    pub subject: String,
    /// Every claim of the payload, custom ones included.
    pub claims: Claims,
}

/// Why a check failed, keeping "no key for this token" apart so the caller can re-fetch.
#[derive(Debug)]
pub(super) enum Failure {
    NoMatchingKey,
    Invalid(String),
}

impl From<Failure> for OidcError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::NoMatchingKey => {
                OidcError::InvalidIdToken("no key in the provider's JWKS matches the token".into())
            }
            Failure::Invalid(detail) => OidcError::InvalidIdToken(detail),
        }
    }
}

/// Parses a compact JWS ID token; the error names no part of the token.
pub(super) fn parse(raw: &str) -> Result<CoreIdToken, OidcError> {
    CoreIdToken::from_str(raw)
        .map_err(|_| OidcError::InvalidIdToken("malformed (not a signed JWT with a JSON payload)".into()))
}

/// Validates `token` against `keys`. Pure: no I/O, so tests call it directly.
pub(super) fn validate(
    token: &CoreIdToken,
    raw: &str,
    keys: &KeySet,
    expect: &Expectations<'_>,
) -> Result<ValidIdToken, Failure> {
    let issuer = IssuerUrl::new(expect.issuer.to_owned()).map_err(|e| Failure::Invalid(format!("issuer: {e}")))?;
    let skew = chrono::Duration::from_std(expect.clock_skew).unwrap_or_else(|_| chrono::Duration::seconds(60));
    // `openidconnect` has no leeway on `exp`: shift its clock back by the skew, which is
    // the only place it reads that clock. `iat` gets its own check against the real clock.
    let verifier =
        IdTokenVerifier::<Jwk>::new_public_client(ClientId::new(expect.client_id.to_owned()), issuer, keys.clone())
            .set_allowed_algs(expect.algs.iter().cloned())
            // Every audience besides this client is untrusted (OIDC Core §3.1.3.7 step 3).
            // The crate's default already says so; stated here so a change of that default
            // cannot let a token meant for several parties through.
            .set_other_audience_verifier_fn(|_| false)
            .set_time_fn(move || Utc::now() - skew)
            .set_issue_time_verifier_fn(move |iat| {
                if iat > Utc::now() + skew {
                    Err(format!("issued in the future ({iat})"))
                } else {
                    Ok(())
                }
            });
    let nonce_check = |found: Option<&Nonce>| -> Result<(), String> {
        match (expect.nonce, found) {
            (NonceCheck::Ignore, _) => Ok(()),
            (NonceCheck::Expect(want), Some(got)) if bool::from(got.secret().as_bytes().ct_eq(want.as_bytes())) => {
                Ok(())
            }
            (NonceCheck::Expect(_), Some(_)) => Err("nonce does not match the login".into()),
            (NonceCheck::Expect(_), None) => Err("nonce missing".into()),
        }
    };
    let claims = token.claims(&verifier, nonce_check).map_err(classify)?;

    // azp (OIDC Core §3.1.3.7 step 5); `openidconnect` leaves it to us. Step 4 (several
    // audiences need an azp) cannot arise: the verifier above refuses any audience but ours.
    if claims
        .authorized_party()
        .is_some_and(|azp| azp.as_str() != expect.client_id)
    {
        return Err(Failure::Invalid("azp is another client".into()));
    }

    if let (Some(expected_hash), Some(access_token)) = (claims.access_token_hash(), expect.access_token) {
        let alg = token
            .signing_alg()
            .map_err(|e| Failure::Invalid(format!("at_hash: {e}")))?;
        let key = token
            .signing_key(&verifier)
            .map_err(|e| Failure::Invalid(format!("at_hash: {e}")))?;
        let actual = AccessTokenHash::from_token(&AccessToken::new(access_token.to_owned()), alg, key)
            .map_err(|e| Failure::Invalid(format!("at_hash: {e}")))?;
        if !bool::from(actual.as_bytes().ct_eq(expected_hash.as_bytes())) {
            return Err(Failure::Invalid("at_hash does not match the access token".into()));
        }
    }

    let subject = claims.subject().as_str().to_owned();
    let claims = raw_payload(raw).ok_or_else(|| Failure::Invalid("payload is not a JSON object".into()))?;
    Ok(ValidIdToken { subject, claims })
}

/// OIDC Core §12.2: the ID token of a refresh is about the authentication the session's
/// previous one was about: the same `auth_time`, and the same `nonce` where both carry
/// one (a provider may leave it out). `iss`, `aud` and `sub` are already held to the
/// login's by [`validate`] and the caller.
pub(super) fn same_authentication(previous: &Claims, refreshed: &Claims) -> Result<(), OidcError> {
    for claim in ["auth_time", "nonce"] {
        let (Some(before), Some(after)) = (previous.get(claim), refreshed.get(claim)) else {
            continue;
        };
        // Numbers by value: `1700000000` and `1700000000.0` are one time.
        let same = match (before.as_f64(), after.as_f64()) {
            (Some(before), Some(after)) => before.total_cmp(&after).is_eq(),
            _ => before == after,
        };
        if !same {
            return Err(OidcError::InvalidIdToken(format!(
                "the refreshed ID token's {claim} is not the login's"
            )));
        }
    }
    Ok(())
}

fn classify(e: ClaimsVerificationError) -> Failure {
    match e {
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey) => {
            Failure::NoMatchingKey
        }
        other => Failure::Invalid(error_chain(&other)),
    }
}

/// The payload of an already validated compact JWS as a JSON object.
fn raw_payload(raw: &str) -> Option<Claims> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let payload = raw.split('.').nth(1)?;
    let bytes = ENGINE.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Keys to validate with and a way to get newer ones once.
pub(super) async fn validate_with_rotation<F, Fut>(
    raw: &str,
    keys: Arc<KeySet>,
    expect: &Expectations<'_>,
    refetch: F,
) -> Result<ValidIdToken, OidcError>
where
    F: FnOnce(Arc<KeySet>) -> Fut,
    Fut: std::future::Future<Output = Option<Arc<KeySet>>>,
{
    let token = parse(raw)?;
    match validate(&token, raw, &keys, expect) {
        Err(Failure::NoMatchingKey) => match refetch(keys).await {
            Some(newer) => Ok(validate(&token, raw, &newer, expect)?),
            None => Err(Failure::NoMatchingKey.into()),
        },
        other => Ok(other?),
    }
}
