//! What several targets share: the seed app's environment and a valid configuration
//! from it.

use std::collections::HashMap;

use portcullis::config::{load_str, Config};

pub const CLIENT_SECRET: &str = "fuzz-client-secret-q7Zx";
pub const SESSION_SECRET: &str = "fuzz-session-secret-Vh3k-0123456789abcdef";

/// The seed's five variables and an upstream.
pub fn seed_env() -> HashMap<String, String> {
    [
        ("APP_BASE_URL", "https://express.example.com"),
        ("OIDC_ISSUER", "https://auth.example.com"),
        ("OIDC_CLIENT_ID", "Express.js"),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ("SESSION_ENCRYPTION_SECRET", SESSION_SECRET),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The configuration of [`seed_env`] with `extra` settings on top.
#[allow(dead_code)] // not every target that includes this module needs it
pub fn config(extra: &[(&str, &str)]) -> Config {
    let mut env = seed_env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    match load_str("", "fuzz", &env) {
        Ok(config) => config,
        Err(error) => panic!("the fuzz configuration is invalid: {error}"),
    }
}
