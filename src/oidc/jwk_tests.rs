//! [`Jwk`] against `openidconnect`'s own `CoreJsonWebKey` on the same keys and
//! signatures: the same verdict everywhere `ring` takes over, except for RSA keys
//! shorter than 2048 bits, which only `ring` refuses.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openidconnect::core::{CoreJsonWebKey, CoreJwsSigningAlgorithm as A, CoreRsaPrivateSigningKey};
use openidconnect::{JsonWebKey, JsonWebKeyId, PrivateSigningKey, SignatureVerificationError};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

use super::{Jwk, KeySet, PublicKey};
use crate::oidc::test_provider::{KEY_1_PEM, KEY_2_PEM};

const MESSAGE: &[u8] = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJqb2huIn0";
const RSA_1024_PEM: &str = include_str!("testdata/rsa-1024.pem");

fn rsa_key(pem: &str) -> CoreRsaPrivateSigningKey {
    CoreRsaPrivateSigningKey::from_pem(pem, Some(JsonWebKeyId::new("rsa".into()))).expect("test key")
}

fn jwk_json(key: &CoreRsaPrivateSigningKey) -> Value {
    serde_json::to_value(key.as_verification_key()).expect("jwk")
}

/// The key read both ways: ours, and the crate's.
fn both(jwk: &Value) -> (Jwk, CoreJsonWebKey) {
    (
        serde_json::from_value(jwk.clone()).expect("our jwk"),
        serde_json::from_value(jwk.clone()).expect("the crate's jwk"),
    )
}

fn flipped(bytes: &[u8], index: usize) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    let at = index % bytes.len();
    bytes[at] ^= 0x01;
    bytes
}

/// A good signature passes both ways; a changed message or signature, or another key,
/// fails both ways.
fn agree(jwk: &Value, other_key: &Value, alg: &A, signature: &[u8]) {
    let (ours, theirs) = both(jwk);
    assert!(ours.public.is_some(), "{alg:?}: the key goes to ring");
    assert!(
        theirs.verify_signature(alg, MESSAGE, signature).is_ok(),
        "{alg:?}: the crate accepts it"
    );
    assert!(
        ours.verify_signature(alg, MESSAGE, signature).is_ok(),
        "{alg:?}: good signature"
    );
    for index in [0, 7, MESSAGE.len() - 1] {
        let message = flipped(MESSAGE, index);
        assert!(
            ours.verify_signature(alg, &message, signature).is_err(),
            "{alg:?}: changed message"
        );
        assert!(theirs.verify_signature(alg, &message, signature).is_err());
    }
    for index in [0, signature.len() / 2, signature.len() - 1] {
        let signature = flipped(signature, index);
        assert!(
            ours.verify_signature(alg, MESSAGE, &signature).is_err(),
            "{alg:?}: changed signature"
        );
        assert!(theirs.verify_signature(alg, MESSAGE, &signature).is_err());
    }
    assert!(
        ours.verify_signature(alg, MESSAGE, &signature[1..]).is_err(),
        "{alg:?}: short signature"
    );
    assert!(
        ours.verify_signature(alg, MESSAGE, &[]).is_err(),
        "{alg:?}: empty signature"
    );
    let (other, other_theirs) = both(other_key);
    assert!(
        other.verify_signature(alg, MESSAGE, signature).is_err(),
        "{alg:?}: another key"
    );
    assert!(other_theirs.verify_signature(alg, MESSAGE, signature).is_err());
}

#[test]
fn rsa_signatures_get_the_crates_verdict() {
    let (key, other) = (rsa_key(KEY_1_PEM), rsa_key(KEY_2_PEM));
    for alg in [
        A::RsaSsaPkcs1V15Sha256,
        A::RsaSsaPkcs1V15Sha384,
        A::RsaSsaPkcs1V15Sha512,
        A::RsaSsaPssSha256,
        A::RsaSsaPssSha384,
        A::RsaSsaPssSha512,
    ] {
        let signature = key.sign(&alg, MESSAGE).expect("sign");
        agree(&jwk_json(&key), &jwk_json(&other), &alg, &signature);
    }
}

fn ec_jwk(curve: &str, point: &[u8]) -> Value {
    let half = (point.len() - 1) / 2;
    json!({
        "kty": "EC", "crv": curve, "use": "sig", "kid": "ec",
        "x": URL_SAFE_NO_PAD.encode(&point[1..=half]),
        "y": URL_SAFE_NO_PAD.encode(&point[half + 1..]),
    })
}

fn ec_pair(signing: &'static signature::EcdsaSigningAlgorithm) -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("generate");
    EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("key pair")
}

#[test]
fn ecdsa_signatures_get_the_crates_verdict() {
    let rng = SystemRandom::new();
    for (alg, signing, curve) in [
        (A::EcdsaP256Sha256, &signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256"),
        (A::EcdsaP384Sha384, &signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384"),
    ] {
        let (pair, other) = (ec_pair(signing), ec_pair(signing));
        let signature = pair.sign(&rng, MESSAGE).expect("sign");
        agree(
            &ec_jwk(curve, pair.public_key().as_ref()),
            &ec_jwk(curve, other.public_key().as_ref()),
            &alg,
            signature.as_ref(),
        );
    }
}

fn ed25519_pair() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate");
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key pair")
}

fn okp_jwk(pair: &Ed25519KeyPair) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())})
}

#[test]
fn ed25519_signatures_get_the_crates_verdict() {
    let (pair, other) = (ed25519_pair(), ed25519_pair());
    let signature = pair.sign(MESSAGE);
    agree(&okp_jwk(&pair), &okp_jwk(&other), &A::EdDsa, signature.as_ref());
}

#[test]
fn a_modulus_sent_with_a_leading_zero_still_verifies() {
    let key = rsa_key(KEY_1_PEM);
    let mut jwk = jwk_json(&key);
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().expect("n")).expect("base64");
    jwk["n"] = Value::from(URL_SAFE_NO_PAD.encode([&[0u8][..], &n].concat()));
    let (ours, _) = both(&jwk);
    assert_eq!(ours.public, Some(PublicKey::Rsa { n, e: vec![1, 0, 1] }));
    let signature = key.sign(&A::RsaSsaPkcs1V15Sha256, MESSAGE).expect("sign");
    assert!(ours
        .verify_signature(&A::RsaSsaPkcs1V15Sha256, MESSAGE, &signature)
        .is_ok());
}

#[test]
fn an_rsa_key_shorter_than_2048_bits_is_refused_where_the_crate_took_it() {
    let key = rsa_key(RSA_1024_PEM);
    let signature = key.sign(&A::RsaSsaPkcs1V15Sha256, MESSAGE).expect("sign");
    let (ours, theirs) = both(&jwk_json(&key));
    assert!(theirs
        .verify_signature(&A::RsaSsaPkcs1V15Sha256, MESSAGE, &signature)
        .is_ok());
    assert!(matches!(
        ours.verify_signature(&A::RsaSsaPkcs1V15Sha256, MESSAGE, &signature),
        Err(SignatureVerificationError::CryptoError(_))
    ));
}

#[test]
fn a_key_is_used_only_as_its_use_type_and_alg_allow() {
    let key = rsa_key(KEY_1_PEM);
    let signature = key.sign(&A::RsaSsaPkcs1V15Sha256, MESSAGE).expect("sign");
    let verdict = |jwk: Value, alg: A| {
        let ours: Jwk = serde_json::from_value(jwk).expect("jwk");
        ours.verify_signature(&alg, MESSAGE, &signature)
    };
    let refused = |result: Result<(), SignatureVerificationError>, why: &str| {
        assert!(
            matches!(&result, Err(SignatureVerificationError::InvalidKey(message)) if message.contains(why)),
            "{why}: {result:?}"
        );
    };
    let mut encryption_key = jwk_json(&key);
    encryption_key["use"] = json!("enc");
    refused(verdict(encryption_key, A::RsaSsaPkcs1V15Sha256), "usage");
    let mut rs384_only = jwk_json(&key);
    rs384_only["alg"] = json!("RS384");
    refused(verdict(rs384_only, A::RsaSsaPkcs1V15Sha256), "incompatible");
    refused(verdict(jwk_json(&key), A::EcdsaP256Sha256), "key type");
    refused(verdict(jwk_json(&key), A::HmacSha256), "key type");
    let mut rs256_only = jwk_json(&key);
    rs256_only["alg"] = json!("RS256");
    assert!(verdict(rs256_only, A::RsaSsaPkcs1V15Sha256).is_ok());
}

#[test]
fn what_ring_cannot_check_is_left_to_the_crate() {
    // P-521 (ES512): no verifier in ring; the crate's answer, whatever it is, stands.
    let p521 = json!({
        "kty": "EC", "crv": "P-521", "kid": "p521",
        "x": URL_SAFE_NO_PAD.encode([1u8; 66]), "y": URL_SAFE_NO_PAD.encode([2u8; 66]),
    });
    let (ours, theirs) = both(&p521);
    assert_eq!(ours.public, None);
    let signature = [0u8; 132];
    assert_eq!(
        format!("{:?}", ours.verify_signature(&A::EcdsaP521Sha512, MESSAGE, &signature)),
        format!(
            "{:?}",
            theirs.verify_signature(&A::EcdsaP521Sha512, MESSAGE, &signature)
        ),
    );
    // An ES256 token naming a P-384 key: the crate words the mismatch.
    let pair = ec_pair(&signature::ECDSA_P384_SHA384_FIXED_SIGNING);
    let (ours, theirs) = both(&ec_jwk("P-384", pair.public_key().as_ref()));
    let signature = pair.sign(&SystemRandom::new(), MESSAGE).expect("sign");
    let mine = ours.verify_signature(&A::EcdsaP256Sha256, MESSAGE, signature.as_ref());
    assert!(mine.is_err());
    assert_eq!(
        format!("{mine:?}"),
        format!(
            "{:?}",
            theirs.verify_signature(&A::EcdsaP256Sha256, MESSAGE, signature.as_ref())
        )
    );
    // A member that is not base64url leaves the key to the crate too.
    let mut broken = jwk_json(&rsa_key(KEY_1_PEM));
    broken["e"] = json!("A Q A B");
    let (ours, _) = both(&broken);
    assert_eq!(ours.public, None);
}

#[test]
fn a_key_set_keeps_the_keys_it_understands() {
    let key = rsa_key(KEY_1_PEM);
    let set: KeySet = serde_json::from_value(json!({
        "keys": [{"kty": 7}, {"kty": "RSA", "n": 1, "e": "AQAB", "kid": "odd"}, jwk_json(&key)]
    }))
    .expect("key set");
    let signature = key.sign(&A::RsaSsaPkcs1V15Sha256, MESSAGE).expect("sign");
    let usable: Vec<_> = set
        .keys()
        .iter()
        .filter(|jwk| {
            jwk.verify_signature(&A::RsaSsaPkcs1V15Sha256, MESSAGE, &signature)
                .is_ok()
        })
        .collect();
    assert_eq!(usable.len(), 1);
    assert_eq!(usable[0].key_id().map(|kid| kid.as_str()), Some("rsa"));
    // What goes back out is the provider's key, nothing of ours added.
    assert_eq!(serde_json::to_value(usable[0]).expect("serialize"), jwk_json(&key));
}
