//! One signing key of the provider: `openidconnect`'s own JWK, whose signatures `ring`
//! checks instead of the crate's `rsa`, `p256`, `p384` and `ed25519-dalek` code.
//!
//! Why: `openidconnect` checks RS256 with the `rsa` crate's portable big numbers, and
//! under `perf` that one check was 19–24% of the CPU a whole login costs portcullis;
//! with `ring`, already here for rustls, it is 2% (README, Performance). Everything else (which key a token names, key use,
//! key type and `alg` against the token's algorithm, `at_hash`) stays the crate's: only
//! the arithmetic moves. A key or algorithm `ring` has no verifier for (P-521, say; not
//! among the algorithms discovery accepts) goes to the crate's code, as before.
//!
//! The one difference in what is accepted: `ring` refuses RSA keys shorter than 2048
//! bits (too weak since 2013, NIST SP 800-131A) and takes up to 8192 where `rsa` stopped
//! at 4096.

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeyType, CoreJsonWebKeyUse, CoreJwsSigningAlgorithm};
use openidconnect::{
    JsonWebKey, JsonWebKeyAlgorithm, JsonWebKeyId, JsonWebKeySet, JsonWebKeyUse, JwsSigningAlgorithm,
    SignatureVerificationError,
};
use ring::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The provider's key set, of [`Jwk`]s.
pub(super) type KeySet = JsonWebKeySet<Jwk>;

/// A JWK from the provider's key set: the crate's key, plus its public key in the form
/// `ring` verifies with, decoded once when the key set is read.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct Jwk {
    key: CoreJsonWebKey,
    #[serde(skip)]
    public: Option<PublicKey>,
}

/// The public key material `ring` verifies with. Public: `Debug` may show it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PublicKey {
    /// Modulus and exponent, big-endian, without leading zero bytes.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed SEC 1 point: `0x04 || x || y`.
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// The key in `jwk`, or `None` for a key type or curve `ring` has no verifier for,
    /// or members that do not decode (the crate's code then judges the key).
    fn of(jwk: &Value) -> Option<Self> {
        let bytes = |member: &str| decode_base64url(jwk.get(member)?.as_str()?);
        let point = || {
            let mut point = vec![0x04];
            point.extend(bytes("x")?);
            point.extend(bytes("y")?);
            Some(point)
        };
        let curve = jwk.get("crv").and_then(Value::as_str);
        match (jwk.get("kty")?.as_str()?, curve) {
            ("RSA", _) => Some(PublicKey::Rsa {
                n: without_leading_zeros(bytes("n")?),
                e: without_leading_zeros(bytes("e")?),
            }),
            ("EC", Some("P-256")) => point().map(PublicKey::P256),
            ("EC", Some("P-384")) => point().map(PublicKey::P384),
            ("OKP", Some("Ed25519")) => bytes("x").map(PublicKey::Ed25519),
            _ => None,
        }
    }
}

fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    ENGINE.decode(text).ok()
}

/// RFC 7518 §6.3.1 forbids leading zeros in `n` and `e`, yet some providers send them;
/// `ring` reads a big-endian integer only in its shortest form.
fn without_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.drain(..zeros);
    bytes
}

impl<'de> Deserialize<'de> for Jwk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let key = CoreJsonWebKey::deserialize(&value).map_err(serde::de::Error::custom)?;
        Ok(Jwk {
            public: PublicKey::of(&value),
            key,
        })
    }
}

/// `openidconnect`'s own check that `key` may sign with `alg` (its `check_key_compatibility`
/// is private): the key set's lookup already applied it, this keeps `verify_signature`
/// safe on its own.
fn check_compatible(key: &Jwk, alg: &CoreJwsSigningAlgorithm) -> Result<(), SignatureVerificationError> {
    let refuse = |why: &str| Err(SignatureVerificationError::InvalidKey(why.to_owned()));
    if key.key_use().is_some_and(|usage| !usage.allows_signature()) {
        return refuse("key usage not permitted for digital signatures");
    }
    if alg.key_type().as_ref() != Some(key.key_type()) {
        return refuse("key type does not match signature algorithm");
    }
    match key.signing_alg() {
        JsonWebKeyAlgorithm::Unspecified => Ok(()),
        JsonWebKeyAlgorithm::Algorithm(only) if only == alg => Ok(()),
        JsonWebKeyAlgorithm::Algorithm(_) => refuse("incompatible key algorithm"),
        JsonWebKeyAlgorithm::Unsupported => refuse("key algorithm is not a signing algorithm"),
    }
}

impl JsonWebKey for Jwk {
    type KeyUse = CoreJsonWebKeyUse;
    type SigningAlgorithm = CoreJwsSigningAlgorithm;

    fn key_id(&self) -> Option<&JsonWebKeyId> {
        self.key.key_id()
    }

    fn key_type(&self) -> &CoreJsonWebKeyType {
        self.key.key_type()
    }

    fn key_use(&self) -> Option<&CoreJsonWebKeyUse> {
        self.key.key_use()
    }

    fn signing_alg(&self) -> JsonWebKeyAlgorithm<&CoreJwsSigningAlgorithm> {
        self.key.signing_alg()
    }

    fn new_symmetric(key: Vec<u8>) -> Self {
        Jwk {
            key: CoreJsonWebKey::new_symmetric(key),
            public: None,
        }
    }

    fn verify_signature(
        &self,
        alg: &CoreJwsSigningAlgorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureVerificationError> {
        use CoreJwsSigningAlgorithm as A;
        check_compatible(self, alg)?;
        let verified = match (&self.public, rsa_parameters(alg)) {
            (Some(PublicKey::Rsa { n, e }), Some(parameters)) => {
                RsaPublicKeyComponents { n, e }.verify(parameters, message, signature)
            }
            (Some(PublicKey::P256(point)), _) if *alg == A::EcdsaP256Sha256 => {
                unparsed(&signature::ECDSA_P256_SHA256_FIXED, point, message, signature)
            }
            (Some(PublicKey::P384(point)), _) if *alg == A::EcdsaP384Sha384 => {
                unparsed(&signature::ECDSA_P384_SHA384_FIXED, point, message, signature)
            }
            (Some(PublicKey::Ed25519(x)), _) if *alg == A::EdDsa => {
                unparsed(&signature::ED25519, x, message, signature)
            }
            // Whatever `ring` has no verifier for, and the mismatches the crate words its
            // own errors for (an ES256 token naming a P-384 key).
            _ => return self.key.verify_signature(alg, message, signature),
        };
        verified.map_err(|_| SignatureVerificationError::CryptoError("bad signature".to_owned()))
    }

    fn hash_bytes(&self, bytes: &[u8], alg: &CoreJwsSigningAlgorithm) -> Result<Vec<u8>, String> {
        self.key.hash_bytes(bytes, alg)
    }
}

/// `ring`'s parameters for an RSA algorithm; `None` for any other.
fn rsa_parameters(alg: &CoreJwsSigningAlgorithm) -> Option<&'static RsaParameters> {
    use CoreJwsSigningAlgorithm as A;
    Some(match alg {
        A::RsaSsaPkcs1V15Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        A::RsaSsaPkcs1V15Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        A::RsaSsaPkcs1V15Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        A::RsaSsaPssSha256 => &signature::RSA_PSS_2048_8192_SHA256,
        A::RsaSsaPssSha384 => &signature::RSA_PSS_2048_8192_SHA384,
        A::RsaSsaPssSha512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn unparsed(
    alg: &'static dyn VerificationAlgorithm,
    public: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), ring::error::Unspecified> {
    UnparsedPublicKey::new(alg, public).verify(message, signature)
}

#[cfg(test)]
#[path = "jwk_tests.rs"]
mod tests;
