//! ID-token validation negatives with forged tokens and locally held keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openidconnect::core::CoreJwsSigningAlgorithm;
use serde_json::{json, Value};

use crate::oidc::jwk::KeySet;
use crate::oidc::test_provider::{id_claims, jwks, key, now, sign_hs256, sign_rs256, unsigned, CLIENT_ID, KEY_1_PEM};
use crate::oidc::verify::{
    parse, same_authentication, validate, validate_with_rotation, Expectations, Failure, NonceCheck,
};
use crate::oidc::OidcError;

const ISS: &str = "https://auth.example.com";
const NONCE: &str = "n0nce-from-the-pending-login";
const AT: &str = "authelia_at_example-access-token";

fn keys(n: &[u8]) -> KeySet {
    let ks: Vec<_> = n.iter().map(|n| key(*n)).collect();
    serde_json::from_value(jwks(&ks.iter().collect::<Vec<_>>())).expect("jwks")
}

fn expect() -> Expectations<'static> {
    Expectations {
        client_id: CLIENT_ID,
        issuer: ISS,
        algs: &[
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        ],
        clock_skew: Duration::from_secs(60),
        nonce: NonceCheck::Expect(NONCE),
        access_token: Some(AT),
    }
}

fn claims() -> Value {
    id_claims(ISS, NONCE, AT)
}

fn check(raw: &str) -> Result<crate::oidc::verify::ValidIdToken, Failure> {
    let token = parse(raw).map_err(|e| Failure::Invalid(e.to_string()))?;
    validate(&token, raw, &keys(&[1]), &expect())
}

#[track_caller]
fn assert_invalid(raw: &str, why: &str) {
    match check(raw) {
        Err(Failure::Invalid(detail)) => eprintln!("{why}: rejected: {detail}"),
        other => panic!("{why}: expected rejection, got {other:?}"),
    }
}

#[test]
fn a_well_formed_token_passes_and_keeps_custom_claims() {
    let mut c = claims();
    c["groups"] = json!(["admin", "dev"]);
    let valid = check(&sign_rs256(&c, &key(1), "key-1")).expect("valid");
    assert_eq!(valid.subject, c["sub"].as_str().expect("sub"));
    for k in ["groups", "amr", "auth_time", "azp", "jti", "at_hash"] {
        assert_eq!(valid.claims.get(k), c.get(k), "{k}");
    }
}

#[test]
fn bad_signature_is_rejected() {
    // Signed by key 2 but claiming key 1's kid.
    assert_invalid(&sign_rs256(&claims(), &key(2), "key-1"), "bad signature");
    // Payload swapped after signing.
    let good = sign_rs256(&claims(), &key(1), "key-1");
    let mut forged = claims();
    forged["sub"] = json!("someone-else");
    let other = sign_rs256(&forged, &key(2), "key-1");
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        other.split('.').nth(1).expect("payload"),
        parts[2]
    );
    assert_invalid(&tampered, "tampered payload");
}

#[test]
fn alg_none_is_rejected() {
    let raw = unsigned(&claims());
    // Either the parser or the verifier refuses it; neither may accept it.
    match parse(&raw) {
        Err(e) => eprintln!("alg none: refused by the parser: {e}"),
        Ok(_) => assert_invalid(&raw, "alg none"),
    }
}

#[test]
fn hs256_keyed_with_the_public_key_is_rejected() {
    // Key confusion: the attacker knows the public key (JWKS) and uses its bytes as HMAC key.
    let public_jwk = serde_json::to_vec(&jwks(&[&key(1)])["keys"][0]).expect("jwk");
    assert_invalid(&sign_hs256(&claims(), &public_jwk, "key-1"), "HS256 with JWK bytes");
    assert_invalid(
        &sign_hs256(&claims(), KEY_1_PEM.as_bytes(), "key-1"),
        "HS256 with PEM bytes",
    );
    // Even with the client secret, which is what HS256 ID tokens would use.
    assert_invalid(
        &sign_hs256(&claims(), b"insecure_secret", "key-1"),
        "HS256 with client secret",
    );
}

#[test]
fn wrong_issuer_is_rejected() {
    for iss in ["https://evil.example", "https://auth.example.com/"] {
        let mut c = claims();
        c["iss"] = json!(iss);
        assert_invalid(&sign_rs256(&c, &key(1), "key-1"), iss);
    }
}

#[test]
fn wrong_audience_is_rejected() {
    let mut c = claims();
    c["aud"] = json!(["another-client"]);
    c["azp"] = json!("another-client");
    assert_invalid(&sign_rs256(&c, &key(1), "key-1"), "aud");
}

#[test]
fn several_audiences_are_rejected_with_or_without_azp() {
    let mut c = claims();
    c["aud"] = json!([CLIENT_ID, "another-client"]);
    assert_invalid(&sign_rs256(&c, &key(1), "key-1"), "multi aud with azp = us");
    c.as_object_mut().expect("object").remove("azp");
    assert_invalid(&sign_rs256(&c, &key(1), "key-1"), "multi aud without azp");
}

#[test]
fn azp_is_optional_with_this_client_as_the_only_audience() {
    // OIDC Core requires azp only with several audiences (Authelia sends it anyway).
    for aud in [json!(CLIENT_ID), json!([CLIENT_ID])] {
        let mut c = claims();
        c["aud"] = aud;
        c.as_object_mut().expect("object").remove("azp");
        let valid = check(&sign_rs256(&c, &key(1), "key-1")).expect("a single audience needs no azp");
        assert_eq!(valid.subject, c["sub"].as_str().expect("sub"));
    }
}

#[test]
fn azp_naming_another_client_is_rejected() {
    let mut c = claims();
    c["azp"] = json!("another-client");
    assert_invalid(&sign_rs256(&c, &key(1), "key-1"), "azp");
}

#[test]
fn expired_token_is_rejected_beyond_the_skew_only() {
    let mut c = claims();
    c["exp"] = json!(now() - 120);
    c["iat"] = json!(now() - 3700);
    assert_invalid(&sign_rs256(&c, &key(1), "key-1"), "expired");
    c["exp"] = json!(now() - 30);
    check(&sign_rs256(&c, &key(1), "key-1")).expect("within the 60 s skew");
}

#[test]
fn token_issued_in_the_future_is_rejected_beyond_the_skew_only() {
    let mut c = claims();
    c["iat"] = json!(now() + 600);
    assert_invalid(&sign_rs256(&c, &key(1), "key-1"), "iat in future");
    c["iat"] = json!(now() + 30);
    check(&sign_rs256(&c, &key(1), "key-1")).expect("within the 60 s skew");
}

#[test]
fn wrong_or_missing_nonce_is_rejected() {
    let mut c = claims();
    c["nonce"] = json!("another-login-nonce");
    assert_invalid(&sign_rs256(&c, &key(1), "key-1"), "wrong nonce");
    c.as_object_mut().expect("object").remove("nonce");
    assert_invalid(&sign_rs256(&c, &key(1), "key-1"), "missing nonce");
}

#[test]
fn nonce_is_ignored_on_refresh() {
    let mut c = claims();
    c.as_object_mut().expect("object").remove("nonce");
    let raw = sign_rs256(&c, &key(1), "key-1");
    let token = parse(&raw).expect("parse");
    let e = Expectations {
        nonce: NonceCheck::Ignore,
        ..expect()
    };
    validate(&token, &raw, &keys(&[1]), &e).expect("valid without nonce");
}

#[test]
fn bad_at_hash_is_rejected() {
    let mut c = claims();
    c["at_hash"] = json!(crate::oidc::test_provider::at_hash("some-other-access-token"));
    assert_invalid(&sign_rs256(&c, &key(1), "key-1"), "at_hash");
}

#[test]
fn algorithm_outside_the_allowed_set_is_rejected() {
    let raw = sign_rs256(&claims(), &key(1), "key-1");
    let token = parse(&raw).expect("parse");
    let e = Expectations {
        algs: &[CoreJwsSigningAlgorithm::EcdsaP256Sha256],
        ..expect()
    };
    assert!(matches!(
        validate(&token, &raw, &keys(&[1]), &e),
        Err(Failure::Invalid(_))
    ));
}

#[test]
fn unknown_kid_is_a_missing_key_not_a_bad_token() {
    let raw = sign_rs256(&claims(), &key(2), "key-2");
    assert!(matches!(check(&raw), Err(Failure::NoMatchingKey)));
}

#[tokio::test]
async fn unknown_kid_triggers_one_refetch_and_succeeds_with_the_rotated_key() {
    let raw = sign_rs256(&claims(), &key(2), "key-2");
    let fetches = AtomicUsize::new(0);
    let result = validate_with_rotation(&raw, Arc::new(keys(&[1])), &expect(), |_| {
        fetches.fetch_add(1, Ordering::SeqCst);
        async { Some(Arc::new(keys(&[1, 2]))) }
    })
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn known_kid_never_triggers_a_refetch() {
    let raw = sign_rs256(&claims(), &key(2), "key-1"); // bad signature, but the key exists
    let fetches = AtomicUsize::new(0);
    let result = validate_with_rotation(&raw, Arc::new(keys(&[1])), &expect(), |_| {
        fetches.fetch_add(1, Ordering::SeqCst);
        async { None }
    })
    .await;
    assert!(matches!(result, Err(OidcError::InvalidIdToken(_))));
    assert_eq!(fetches.load(Ordering::SeqCst), 0);
}

#[test]
fn garbage_is_malformed_without_echoing_it() {
    for raw in ["", "a.b", "not-a-jwt-secret-ish-value", "a.b.c.d"] {
        let e = parse(raw).expect_err("rejected");
        if !raw.is_empty() {
            super::assert_no_secret(&e, &[raw]);
        }
    }
}

#[test]
fn a_refreshed_token_must_be_about_the_logins_authentication() {
    let object = |value: Value| value.as_object().cloned().expect("object");
    let login = object(json!({"auth_time": 1_700_000_000, "nonce": "n-login", "iat": 1}));
    let same = [
        json!({"auth_time": 1_700_000_000, "nonce": "n-login", "iat": 2}),
        json!({"auth_time": 1_700_000_000}),
        json!({"auth_time": 1_700_000_000.0}),
        json!({}),
    ];
    for refreshed in same {
        assert!(
            same_authentication(&login, &object(refreshed.clone())).is_ok(),
            "{refreshed}"
        );
    }
    let other = [
        (json!({"auth_time": 1_700_000_600, "nonce": "n-login"}), "auth_time"),
        (json!({"auth_time": "1700000000"}), "auth_time"),
        (json!({"auth_time": 1_700_000_000, "nonce": "n-other"}), "nonce"),
    ];
    for (refreshed, claim) in other {
        match same_authentication(&login, &object(refreshed.clone())) {
            Err(OidcError::InvalidIdToken(detail)) => assert!(detail.contains(claim), "{refreshed}: {detail}"),
            outcome => panic!("{refreshed}: {outcome:?}"),
        }
    }
    // Nothing to hold a refreshed token to when the previous one said nothing.
    assert!(same_authentication(&object(json!({})), &object(json!({"auth_time": 5, "nonce": "x"}))).is_ok());
}
