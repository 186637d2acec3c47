//! Sessions sealed at rest: what a shared store (Redis) holds is unreadable and
//! unforgeable without the session secret.
//!
//! - **Cipher**: AES-256-GCM (RustCrypto `aes-gcm`), a fresh random 96-bit nonce per write.
//!   Random nonces are safe for about 2^32 messages under one key; sessions are written
//!   at login and at refresh, orders of magnitude fewer.
//! - **Key**: HKDF-SHA256 of the session secret with its own info label, so it differs
//!   from the pending-login cookie key derived from the same secret.
//! - **Associated data**: the format version and the Redis key the value is stored under,
//!   so a value copied under another key (another user's session) fails to open.
//! - **Layout**: `version (1) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`; the plaintext is the
//!   session as JSON (tokens, raw ID token, userinfo). The prepared upstream headers are
//!   not part of it: the store rebuilds them from the claims on load.
//!
//! Every failure to open is one [`SealError`] and means "no session" to the caller;
//! none of them carries any part of the value.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;

use crate::config::Secret;
use crate::session::Session;

/// First byte of every sealed value; a new layout gets a new number.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// HKDF info: what this key is for. Never reuse it for another purpose.
const KEY_LABEL: &[u8] = b"portcullis/session-store/aes-256-gcm/v1";

/// Why a stored value is not a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The session could not be turned into JSON (cannot happen with serde_json and
    /// string-keyed maps; kept so sealing never panics).
    #[error("session could not be serialised")]
    Serialize,
    /// Shorter than version, nonce and tag: truncated, or not written by portcullis.
    #[error("stored value is too short to be a sealed session")]
    Truncated,
    /// Another layout version: written by a newer portcullis, or not by portcullis.
    #[error("stored value has an unknown format version")]
    UnknownVersion,
    /// Authentication failed: tampered with, moved from another key, or sealed with
    /// another session secret (replicas configured with different secrets).
    #[error("stored value failed authentication (tampered, moved, or another secret)")]
    Forged,
    /// Authentic, but not a session this version understands (an older field layout).
    #[error("stored value is not a session this version can read")]
    Unreadable,
}

/// Seals and opens sessions under the key derived from the session secret.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    pub fn new(secret: &Secret) -> Self {
        let hkdf = Hkdf::<Sha256>::new(None, secret.expose().as_bytes());
        let mut key = [0u8; 32];
        // Cannot fail: 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
        let _ = hkdf.expand(KEY_LABEL, &mut key);
        Sealer {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// The sealed form of `session`, to be stored under `store_key` only.
    pub fn seal(&self, store_key: &[u8], session: &Session) -> Result<Vec<u8>, SealError> {
        let plaintext = serde_json::to_vec(session).map_err(|_| SealError::Serialize)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(store_key);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Serialize)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// The session sealed in `value`, if it was sealed under `store_key` with this key.
    /// Its upstream headers are empty: the caller prepares them.
    pub fn open(&self, store_key: &[u8], value: &[u8]) -> Result<Session, SealError> {
        if value.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(SealError::Truncated);
        }
        let (version, rest) = value.split_at(1);
        if version != [VERSION] {
            return Err(SealError::UnknownVersion);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let aad = associated_data(store_key);
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Forged)?;
        serde_json::from_slice(&plaintext).map_err(|_| SealError::Unreadable)
    }
}

/// `version ‖ store key`: binds the value to its layout and to where it is stored.
fn associated_data(store_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + store_key.len());
    aad.push(VERSION);
    aad.extend_from_slice(store_key);
    aad
}

#[cfg(test)]
#[path = "seal_tests.rs"]
mod tests;
