//! The seal: round trip, and every way a stored value can be wrong.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::session::tests::session;

const KEY: &[u8] = b"portcullis:6a1f00000000000000000000000000000000000000000000000000000000beef";
const OTHER_KEY: &[u8] = b"portcullis:0000000000000000000000000000000000000000000000000000000000000001";

fn sealer() -> Sealer {
    Sealer::new(&Secret::new("0123456789abcdef0123456789abcdef-test"))
}

fn user() -> Session {
    session(
        json!({"sub": "0b2f6f4e-sub", "preferred_username": "john", "email": "john.doe@example.com", "groups": ["admins", "dev"]}),
        Duration::from_secs(3600),
    )
}

#[test]
fn a_sealed_session_opens_as_the_same_session() {
    let original = user();
    let sealed = sealer().seal(KEY, &original).expect("seal");
    let opened = sealer().open(KEY, &sealed).expect("open");
    assert_eq!(opened.subject, original.subject);
    assert_eq!(opened.claims(), original.claims());
    assert_eq!(opened.created_at, original.created_at);
    assert_eq!(opened.expires_at, original.expires_at);
    assert_eq!(opened.tokens.access_token, original.tokens.access_token);
    assert_eq!(opened.tokens.refresh_token, original.tokens.refresh_token);
    assert_eq!(opened.tokens.expires_at, original.tokens.expires_at);
    assert_eq!(opened.tokens.scopes, original.tokens.scopes);
    assert!(
        opened.upstream_headers.identity.is_empty(),
        "headers are rebuilt by the store, not stored"
    );
}

#[test]
fn the_sealed_form_shows_nothing_of_the_session() {
    let sealed = sealer().seal(KEY, &user()).expect("seal");
    let text = String::from_utf8_lossy(&sealed);
    for needle in [
        "authelia_at_example",
        "authelia_rt_example",
        "john",
        "example.com",
        "0b2f6f4e",
        "admins",
    ] {
        assert!(!text.contains(needle), "`{needle}` is readable in the sealed value");
    }
}

#[test]
fn every_write_uses_a_fresh_nonce() {
    let session = user();
    let first = sealer().seal(KEY, &session).expect("seal");
    let second = sealer().seal(KEY, &session).expect("seal");
    assert_ne!(first[1..13], second[1..13], "nonce reused");
    assert_ne!(first, second);
}

#[test]
fn another_secret_cannot_open_it() {
    let sealed = sealer().seal(KEY, &user()).expect("seal");
    let other = Sealer::new(&Secret::new("another-secret-another-secret-another"));
    assert_eq!(other.open(KEY, &sealed).err(), Some(SealError::Forged));
}

#[test]
fn a_value_moved_to_another_key_does_not_open() {
    let sealed = sealer().seal(KEY, &user()).expect("seal");
    assert_eq!(sealer().open(OTHER_KEY, &sealed).err(), Some(SealError::Forged));
}

#[test]
fn a_truncated_value_does_not_open() {
    let sealed = sealer().seal(KEY, &user()).expect("seal");
    for len in [0, 1, 12, 28, sealed.len() / 2, sealed.len() - 1] {
        let error = sealer().open(KEY, &sealed[..len]).err();
        assert!(
            matches!(error, Some(SealError::Truncated | SealError::Forged)),
            "truncated to {len}: {error:?}"
        );
    }
}

#[test]
fn a_tampered_value_does_not_open() {
    let sealed = sealer().seal(KEY, &user()).expect("seal");
    // The version byte, a nonce byte, ciphertext bytes at both ends, the last tag byte.
    for at in [1, 5, 13, sealed.len() / 2, sealed.len() - 17, sealed.len() - 1] {
        let mut tampered = sealed.clone();
        tampered[at] ^= 0x01;
        assert_eq!(
            sealer().open(KEY, &tampered).err(),
            Some(SealError::Forged),
            "byte {at} flipped"
        );
    }
    let mut other_version = sealed.clone();
    other_version[0] = 2;
    assert_eq!(
        sealer().open(KEY, &other_version).err(),
        Some(SealError::UnknownVersion)
    );
    let forged_plaintext = br#"{"subject":"admin","tokens":{"access_token":"x","token_type":"bearer"}}"#;
    assert_eq!(
        sealer().open(KEY, forged_plaintext).err(),
        Some(SealError::UnknownVersion)
    );
}
