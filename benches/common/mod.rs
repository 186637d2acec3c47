//! Shared by the session-store benchmarks: a configuration, deterministic session keys,
//! and Authelia-sized sessions.
//!
//! A session here is what a login against Authelia 4.39 leaves behind:
//! - opaque access and refresh tokens in Authelia's format (`authelia_at_…`, `authelia_rt_…`,
//!   HMAC strategy: `<prefix><43 chars>.<43 chars>`),
//! - a ~1 KiB RS256 ID token (JWS compact: header, payload with Authelia's claims, 256-byte
//!   signature),
//! - ID-token claims (`sub` and protocol claims only, as since 4.39: iss, sub, aud, exp, iat,
//!   auth_time, nonce, amr, azp, jti, at_hash) merged with userinfo (`name`,
//!   `preferred_username`, `email`, `email_verified`, 5 `groups`, `rat`),
//! - the upstream headers prepared once, exactly as the login does.
//!
//! Every session has its own random tokens and its own user, so nothing is shared between
//! sessions that would not be shared in production.

#![allow(dead_code)] // each bench uses a different part of this module

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use portcullis::config::{Config, Secret};
use portcullis::oidc::{Claims, TokenSet};
use portcullis::session::{NewSession, Session, SessionId, SessionKey};
use rand::RngCore;
use serde_json::json;

/// A valid configuration from the environment variables alone (nothing is contacted).
/// The session store's memory bound is raised to `max_memory_bytes` so that the
/// benchmark measures the sessions, not the eviction.
pub fn config(max_memory_bytes: u64) -> Config {
    let env: HashMap<String, String> = [
        ("APP_BASE_URL", "https://express.example.com"),
        ("OIDC_ISSUER", "https://auth.example.com"),
        ("OIDC_CLIENT_ID", "Express.js"),
        ("OIDC_CLIENT_SECRET", "insecure_secret"),
        (
            "SESSION_ENCRYPTION_SECRET",
            "bench-secret-bench-secret-bench-secret-0123",
        ),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("OIDC_SCOPES", "openid profile email groups offline_access"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut config = portcullis::config::load_str("", "bench", &env).expect("benchmark configuration is valid");
    config.session.max_memory_bytes = max_memory_bytes;
    config
}

/// splitmix64: a cheap, deterministic stream for session ids.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The cookie value of session number `i` (43 characters of base64url, like a real one).
pub fn cookie_value(i: u64) -> String {
    let mut state = i ^ 0x5EED_0FC0_FFEE;
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the request path does with a cookie: parse it, hash it into the store key.
pub fn key_from_cookie(cookie: &str) -> SessionKey {
    SessionId::parse(cookie).expect("a 43-character base64url cookie").key()
}

/// The store key of session number `i`, derived again on demand so that the benchmark
/// keeps no list of keys (which would count as session memory).
pub fn key(i: u64) -> SessionKey {
    key_from_cookie(&cookie_value(i))
}

fn random_b64(len_bytes: usize) -> String {
    let mut bytes = vec![0u8; len_bytes];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn uuid() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Authelia's opaque token format (fosite HMAC-SHA256 strategy): `<prefix><key>.<signature>`.
fn authelia_token(prefix: &str) -> String {
    format!("{prefix}{}.{}", random_b64(32), random_b64(32))
}

fn object(value: serde_json::Value) -> Claims {
    match value {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    }
}

/// Session number `i`, as the login handler builds it (see `auth.rs`).
pub fn session(i: u64, config: &Config) -> Session {
    let now = SystemTime::now();
    let epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let sub = uuid();
    let id_token_claims = object(json!({
        "amr": ["pwd", "otp", "mfa"],
        "at_hash": random_b64(16),
        "aud": ["Express.js"],
        "auth_time": epoch - 2,
        "azp": "Express.js",
        "exp": epoch + 3600,
        "iat": epoch,
        "iss": "https://auth.example.com",
        "jti": uuid(),
        "nonce": random_b64(32),
        "sub": sub,
    }));
    let userinfo = object(json!({
        "email": format!("user{i}@example.com"),
        "email_verified": true,
        "groups": ["admins", "dev", "ops", "finance", "users"],
        "name": format!("User Number {i}"),
        "preferred_username": format!("user{i}"),
        "rat": epoch - 5,
        "sub": sub,
    }));

    let kid: String = random_b64(32).bytes().take(32).map(|b| format!("{:02x}", b)).collect();
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&id_token_claims).expect("json"));
    let id_token = format!("{header}.{payload}.{}", random_b64(256));

    let tokens = TokenSet {
        access_token: Secret::new(authelia_token("authelia_at_")),
        token_type: "bearer".to_string(),
        expires_at: Some(now + Duration::from_secs(3600)),
        received_at: Some(now),
        refresh_token: Some(Secret::new(authelia_token("authelia_rt_"))),
        id_token: Some(Secret::new(id_token)),
        scopes: "openid profile email groups offline_access".to_owned(),
    };
    Session::new(
        NewSession {
            subject: sub,
            userinfo: Some(&userinfo),
            tokens,
            created_at: now,
            expires_at: now + config.session.max_lifetime,
        },
        &config.identity,
        &portcullis::policy::Rule::new(&config.policy.allowed_groups, &config.policy.allowed_email_domains),
    )
}

/// Bytes of token material and claims in one session, for the report.
pub fn describe(session: &Session) -> String {
    let t = &session.tokens;
    format!(
        "access token {} B, refresh token {} B, ID token {} B, claims {} (userinfo {}), identity headers {}, approximate_size() {} B",
        t.access_token.expose().len(),
        t.refresh_token.as_ref().map_or(0, |s| s.expose().len()),
        t.id_token.as_ref().map_or(0, |s| s.expose().len()),
        session.claims().len(),
        session.userinfo().map_or(0, |u| u.len()),
        session.upstream_headers.identity.len(),
        session.approximate_size(),
    )
}
