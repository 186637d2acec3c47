//! TTL arithmetic of the Redis store (idle timeout, cut short by the absolute deadline),
//! its connection managers per thread, its keys and its `Debug` form. (Its commands,
//! against a real redis-server, are tested end to end: `tests/e2e/redis_store.rs`.)

use std::time::{Duration, SystemTime};

use super::*;

const IDLE: Duration = Duration::from_secs(3600);

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

#[test]
fn a_fresh_session_lives_one_idle_timeout() {
    assert_eq!(write_ttl(at(0), at(12 * 3600), IDLE), Some(IDLE));
}

#[test]
fn near_its_deadline_a_session_lives_only_until_the_deadline() {
    assert_eq!(write_ttl(at(0), at(600), IDLE), Some(Duration::from_secs(600)));
    assert_eq!(write_ttl(at(0), at(3600), IDLE), Some(IDLE));
}

#[test]
fn a_session_past_its_deadline_is_not_written() {
    assert_eq!(write_ttl(at(10), at(10), IDLE), None);
    assert_eq!(write_ttl(at(11), at(10), IDLE), None);
}

#[test]
fn a_lookup_slides_the_ttl_only_as_far_as_the_deadline() {
    assert_eq!(slide_passes_deadline(at(0), at(12 * 3600), IDLE), None);
    assert_eq!(slide_passes_deadline(at(0), at(3600), IDLE), None);
    assert_eq!(slide_passes_deadline(at(1), at(3600), IDLE), Some(at(3600)));
    assert_eq!(
        slide_passes_deadline(at(12 * 3600 - 5), at(12 * 3600), IDLE),
        Some(at(12 * 3600))
    );
}

#[test]
fn ttl_milliseconds_round_up_and_are_never_zero() {
    assert_eq!(millis(Duration::from_secs(2)), 2000);
    assert_eq!(millis(Duration::from_micros(1500)), 2);
    assert_eq!(millis(Duration::from_nanos(1)), 1);
    assert_eq!(millis(Duration::ZERO), 1);
    assert_eq!(unix_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(1234)), 1234);
}

#[tokio::test]
async fn each_thread_gets_a_connection_manager_of_its_own_made_once() {
    // Lazy managers: nothing connects to this address.
    let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
    let managers = Managers::new(client, ConnectionManagerConfig::new()).unwrap();
    assert_eq!(managers.count(), 1, "the constructing thread's");
    managers.here().unwrap();
    managers.here().unwrap();
    assert_eq!(managers.count(), 1);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                managers.here().unwrap();
                managers.here().unwrap();
            });
        });
    });
    assert_eq!(managers.count(), 2);
}

/// A store set up for a Redis that is never contacted, its password given in the URL.
fn store_without_redis() -> RedisStore {
    let env: std::collections::HashMap<String, String> = [
        ("APP_BASE_URL", "https://app.example.com"),
        ("OIDC_ISSUER", "https://auth.example.com"),
        ("OIDC_CLIENT_ID", "app"),
        ("OIDC_CLIENT_SECRET", "client-secret"),
        (
            "SESSION_ENCRYPTION_SECRET",
            "a-session-secret-of-at-least-32-characters",
        ),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("PORTCULLIS_SESSION_STORE", "redis"),
        (
            "PORTCULLIS_SESSION_REDIS_URL",
            "redis://:hunter2-in-the-url@127.0.0.1:1/0",
        ),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    let config = crate::config::load_str("", "test.toml", &env).unwrap();
    let crate::config::SessionStoreConfig::Redis(redis) = &config.session.store else {
        panic!("not the Redis store")
    };
    RedisStore::new(redis, &config).unwrap()
}

#[tokio::test]
async fn its_debug_form_names_the_endpoint_and_prefix_but_no_password() {
    let shown = format!("{:?}", store_without_redis());
    assert_eq!(
        shown,
        "RedisStore { endpoint: \"redis://127.0.0.1:1/0\", prefix: \"portcullis:\", .. }"
    );
}

#[tokio::test]
async fn sessions_and_their_refresh_locks_have_keys_of_their_own() {
    let store = store_without_redis();
    let new_key = || crate::session::SessionId::generate().key();
    let (one, other) = (new_key(), new_key());
    assert_eq!(store.session_key(&one), format!("portcullis:{}", one.to_hex()));
    assert_eq!(
        store.lock_key(&one),
        format!("portcullis:refresh-lock:{}", one.to_hex())
    );
    assert_ne!(store.session_key(&one), store.session_key(&other));
    assert_ne!(store.lock_key(&one), store.lock_key(&other));
}
