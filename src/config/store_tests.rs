//! The `[session]` store settings: memory by default, Redis with a checked URL, the
//! password out of the URL and out of every printout.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::config::{load_str, Config, ConfigProblem};

const SESSION_SECRET: &str = "session-secret-do-not-print-0123456789abcdef";
const REDIS_PASSWORD: &str = "redis-pass-do-not-print-77";

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("APP_BASE_URL", "https://express.example.com"),
        ("OIDC_ISSUER", "https://auth.example.com"),
        ("OIDC_CLIENT_ID", "Express.js"),
        ("OIDC_CLIENT_SECRET", "client-secret"),
        ("SESSION_ENCRYPTION_SECRET", SESSION_SECRET),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

#[track_caller]
fn ok(toml: &str, pairs: &[(&str, &str)]) -> Config {
    load_str(toml, "test.toml", &env(pairs)).unwrap_or_else(|error| panic!("expected a valid configuration: {error}"))
}

#[track_caller]
fn redis(toml: &str, pairs: &[(&str, &str)]) -> RedisConfig {
    match ok(toml, pairs).session.store {
        SessionStoreConfig::Redis(redis) => redis,
        SessionStoreConfig::Memory => panic!("expected the Redis store"),
    }
}

#[track_caller]
fn rejects(toml: &str, pairs: &[(&str, &str)], key: &str, fragment: &str) -> Vec<ConfigProblem> {
    let problems = match load_str(toml, "test.toml", &env(pairs)) {
        Ok(_) => panic!("expected `{key}: …{fragment}…`, configuration was accepted"),
        Err(error) => error.problems,
    };
    assert!(
        problems.iter().any(|p| p.key == key && p.message.contains(fragment)),
        "no problem `{key}: …{fragment}…` in {problems:#?}"
    );
    problems
}

#[test]
fn the_memory_store_is_the_default() {
    assert_eq!(ok("", &[]).session.store, SessionStoreConfig::Memory);
    assert_eq!(
        ok("[session]\nstore = \"memory\"\nredis_key_prefix = \"x:\"", &[])
            .session
            .store,
        SessionStoreConfig::Memory
    );
}

#[test]
fn the_redis_store_from_the_file_and_from_the_environment() {
    let from_file = redis(
        "[session]\nstore = \"redis\"\nredis_url = \"redis://10.0.0.7:6380/2\"\nredis_timeout = \"500ms\"",
        &[],
    );
    assert_eq!(from_file.url.as_str(), "redis://10.0.0.7:6380/2");
    assert_eq!(from_file.password, None);
    assert_eq!(from_file.key_prefix, DEFAULT_KEY_PREFIX);
    assert_eq!(from_file.timeout, Duration::from_millis(500));

    let from_env = redis(
        "",
        &[
            ("PORTCULLIS_SESSION_STORE", "redis"),
            ("PORTCULLIS_SESSION_REDIS_URL", "rediss://default@redis.internal:6380"),
            ("PORTCULLIS_SESSION_REDIS_PASSWORD", REDIS_PASSWORD),
            ("PORTCULLIS_SESSION_REDIS_KEY_PREFIX", "app1:"),
        ],
    );
    assert_eq!(from_env.url.scheme(), "rediss");
    assert_eq!(from_env.url.username(), "default");
    assert_eq!(from_env.password.as_ref().map(Secret::expose), Some(REDIS_PASSWORD));
    assert_eq!(from_env.key_prefix, "app1:");
    assert_eq!(from_env.timeout, DEFAULT_TIMEOUT);
}

#[test]
fn a_password_in_the_url_is_taken_out_of_it() {
    let config = redis(
        "",
        &[
            ("PORTCULLIS_SESSION_STORE", "redis"),
            ("PORTCULLIS_SESSION_REDIS_URL", "redis://:p%40ss%3Aword@127.0.0.1:6379"),
        ],
    );
    assert_eq!(config.url.as_str(), "redis://127.0.0.1:6379");
    assert_eq!(config.password.as_ref().map(Secret::expose), Some("p@ss:word"));
}

#[test]
fn the_password_is_never_shown() {
    let config = ok(
        "",
        &[
            ("PORTCULLIS_SESSION_STORE", "redis"),
            (
                "PORTCULLIS_SESSION_REDIS_URL",
                &format!("redis://user:{REDIS_PASSWORD}@127.0.0.1"),
            ),
        ],
    );
    let described = config.describe();
    let debugged = format!("{config:?}");
    for text in [&described, &debugged] {
        assert!(!text.contains(REDIS_PASSWORD), "{text}");
    }
    assert!(
        described.contains("redis_url = \"redis://user@127.0.0.1\"\n"),
        "{described}"
    );
    assert!(described.contains("redis_password = \"[redacted]\"\n"), "{described}");

    // A password pasted into the wrong setting is not echoed in the problem either.
    let problems = rejects(
        "",
        &[
            ("PORTCULLIS_SESSION_STORE", "redis"),
            (
                "PORTCULLIS_SESSION_REDIS_URL",
                &format!("redis://user:{REDIS_PASSWORD}@127.0.0.1/x"),
            ),
        ],
        "PORTCULLIS_SESSION_REDIS_URL",
        "database number",
    );
    assert!(!format!("{problems:?}").contains(REDIS_PASSWORD));
}

#[test]
fn the_redis_description_reads_back_as_the_same_configuration() {
    let pairs = [("PORTCULLIS_SESSION_REDIS_PASSWORD_FILE", "")];
    let first = ok(
        "[session]\nstore = \"redis\"\nredis_url = \"rediss://cache.internal:6380/1\"\nredis_key_prefix = \"px:\"\nredis_timeout = \"3s\"",
        &pairs,
    )
    .describe();
    let second = ok(&first, &pairs).describe();
    assert_eq!(first, second);
}

#[test]
fn redis_settings_are_checked() {
    let store = ("PORTCULLIS_SESSION_STORE", "redis");
    let url = |value| ("PORTCULLIS_SESSION_REDIS_URL", value);
    rejects("", &[store], "PORTCULLIS_SESSION_REDIS_URL", "is required");
    rejects(
        "",
        &[store, url("http://127.0.0.1:6379")],
        "PORTCULLIS_SESSION_REDIS_URL",
        "redis://",
    );
    rejects(
        "",
        &[store, url("unix:///run/redis.sock")],
        "PORTCULLIS_SESSION_REDIS_URL",
        "unix",
    );
    rejects("", &[store, url("redis:///0")], "PORTCULLIS_SESSION_REDIS_URL", "host");
    rejects(
        "",
        &[store, url("redis://h/?protocol=resp3")],
        "PORTCULLIS_SESSION_REDIS_URL",
        "query",
    );
    rejects(
        "",
        &[store, url("rediss://h#insecure")],
        "PORTCULLIS_SESSION_REDIS_URL",
        "certificate",
    );
    rejects(
        "",
        &[store, url("redis://h/one")],
        "PORTCULLIS_SESSION_REDIS_URL",
        "database number",
    );
    rejects(
        "",
        &[("PORTCULLIS_SESSION_STORE", "postgres")],
        "PORTCULLIS_SESSION_STORE",
        "\"memory\", \"redis\"",
    );
    rejects(
        "",
        &[
            store,
            url("redis://h"),
            ("PORTCULLIS_SESSION_REDIS_KEY_PREFIX", "has space"),
        ],
        "PORTCULLIS_SESSION_REDIS_KEY_PREFIX",
        "without spaces",
    );
    rejects(
        "",
        &[store, url("redis://h"), ("PORTCULLIS_SESSION_REDIS_TIMEOUT", "0s")],
        "PORTCULLIS_SESSION_REDIS_TIMEOUT",
        "longer than zero",
    );
    rejects(
        "",
        &[store, url("redis://:a@h"), ("PORTCULLIS_SESSION_REDIS_PASSWORD", "b")],
        "PORTCULLIS_SESSION_REDIS_PASSWORD",
        "only one",
    );
}

#[test]
fn redis_settings_without_the_redis_store_are_a_mistake() {
    rejects(
        "",
        &[("PORTCULLIS_SESSION_REDIS_URL", "redis://127.0.0.1")],
        "PORTCULLIS_SESSION_REDIS_URL",
        "session.store is \"memory\"",
    );
    rejects(
        "[session]\nredis_password = \"pw\"",
        &[],
        "session.redis_password",
        "session.store is \"memory\"",
    );
}

#[test]
fn the_redis_store_needs_a_configured_session_secret() {
    let mut pairs = env(&[
        ("PORTCULLIS_SESSION_STORE", "redis"),
        ("PORTCULLIS_SESSION_REDIS_URL", "redis://127.0.0.1"),
    ]);
    pairs.remove("SESSION_ENCRYPTION_SECRET");
    let problems = load_str("", "test.toml", &pairs)
        .err()
        .map(|e| e.problems)
        .unwrap_or_default();
    assert!(
        problems
            .iter()
            .any(|p| p.key == "PORTCULLIS_SESSION_STORE" && p.message.contains("SESSION_ENCRYPTION_SECRET")),
        "{problems:#?}"
    );
}

#[test]
fn the_example_documents_the_store_defaults() {
    let example = include_str!("../../proxy.toml.example");
    for line in [
        "#store = \"memory\"",
        &format!("#redis_key_prefix = \"{DEFAULT_KEY_PREFIX}\""),
        "#redis_timeout = \"2s\"",
        "#   redis_url = ",
        "#   redis_password_file = ",
        "#   redis_ca_file = ",
    ] {
        assert!(example.contains(line), "proxy.toml.example lacks `{line}`");
    }
    assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(2));
}

#[test]
fn a_ca_file_is_read_for_rediss_only_and_must_hold_certificates() {
    let store = ("PORTCULLIS_SESSION_STORE", "redis");
    let certified = rcgen::generate_simple_self_signed(vec!["redis.test".to_owned()]).expect("certificate");
    let mut ca_file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut ca_file, certified.cert.pem().as_bytes()).expect("write");
    let ca_path = ca_file.path().display().to_string();
    let config = redis(
        "",
        &[
            store,
            ("PORTCULLIS_SESSION_REDIS_URL", "rediss://redis.test"),
            ("PORTCULLIS_SESSION_REDIS_CA_FILE", &ca_path),
        ],
    );
    let ca = config.ca.expect("the CA is kept");
    assert_eq!(ca.pem, certified.cert.pem().as_bytes());
    // Its Debug form names the file, not the certificates.
    let shown = format!("{ca:?}");
    assert!(
        shown.starts_with("CaFile { path: ") && shown.contains(&ca_path),
        "{shown}"
    );
    assert!(!shown.contains("BEGIN"), "{shown}");

    let mut empty = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut empty, b"not a certificate\n").expect("write");
    let empty_path = empty.path().display().to_string();
    rejects(
        "",
        &[
            store,
            ("PORTCULLIS_SESSION_REDIS_URL", "rediss://h"),
            ("PORTCULLIS_SESSION_REDIS_CA_FILE", &empty_path),
        ],
        "PORTCULLIS_SESSION_REDIS_CA_FILE",
        "no readable PEM certificate",
    );
    rejects(
        "",
        &[
            store,
            ("PORTCULLIS_SESSION_REDIS_URL", "rediss://h"),
            ("PORTCULLIS_SESSION_REDIS_CA_FILE", "/nonexistent/ca.pem"),
        ],
        "PORTCULLIS_SESSION_REDIS_CA_FILE",
        "cannot read /nonexistent/ca.pem",
    );
    rejects(
        "",
        &[
            store,
            ("PORTCULLIS_SESSION_REDIS_URL", "redis://h"),
            ("PORTCULLIS_SESSION_REDIS_CA_FILE", &empty_path),
        ],
        "PORTCULLIS_SESSION_REDIS_CA_FILE",
        "rediss://",
    );
}
