use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

use super::store::{MemoryStore, SessionBackend};
use super::*;
use crate::config::{IdentityHeader, Secret, SessionConfig};

pub(crate) fn session_config() -> SessionConfig {
    SessionConfig {
        secret: Secret::new("0123456789abcdef0123456789abcdef-test"),
        secret_is_ephemeral: false,
        cookie_name: "portcullis_session".into(),
        login_cookie_prefix: "portcullis_login_".into(),
        cookie_secure: true,
        cookie_domain: None,
        idle_timeout: Duration::from_secs(3600),
        max_lifetime: Duration::from_secs(12 * 3600),
        max_memory_bytes: 16 * 1024 * 1024,
        refresh_before_expiry: Duration::from_secs(30),
        login_timeout: Duration::from_secs(600),
        max_pending_logins: 3,
        store: crate::config::SessionStoreConfig::Memory,
    }
}

fn identity_config() -> IdentityConfig {
    let header = |name: &'static str, claims: &[&str]| IdentityHeader {
        header: HeaderName::from_static(name),
        claims: claims.iter().map(|c| c.to_string()).collect(),
    };
    IdentityConfig {
        headers: vec![
            header("remote-user", &["preferred_username", "sub"]),
            header("remote-groups", &["groups"]),
            header("remote-name", &["name"]),
            header("remote-email", &["email"]),
        ],
        strip_headers: vec![],
        access_token: AccessTokenForwarding::None,
    }
}

pub(crate) fn session(claims: serde_json::Value, lifetime: Duration) -> Session {
    let claims = claims.as_object().cloned().unwrap_or_default();
    let now = SystemTime::now();
    Session::new(
        NewSession {
            subject: "0b2f6f4e-sub".into(),
            userinfo: Some(&claims),
            tokens: TokenSet {
                access_token: Secret::new("authelia_at_example"),
                token_type: "bearer".into(),
                expires_at: Some(now + Duration::from_secs(3600)),
                received_at: Some(now),
                refresh_token: Some(Secret::new("authelia_rt_example")),
                id_token: None,
                scopes: "openid".into(),
            },
            created_at: now,
            expires_at: now + lifetime,
        },
        &identity_config(),
        &Rule::default(),
    )
}

fn header<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session
        .upstream_headers
        .identity
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.to_str().ok())
}

#[test]
fn session_ids_round_trip_through_the_cookie_and_hash_to_a_different_key() {
    let id = SessionId::generate();
    let parsed = SessionId::parse(&id.cookie_value()).expect("own cookie value parses");
    assert_eq!(parsed.key(), id.key());
    assert_ne!(id.key().0, id.0, "the store key is a hash, not the id");
    assert_ne!(SessionId::generate().key(), id.key());
}

#[test]
fn a_connection_memo_gives_each_cookie_its_own_key_whatever_came_before() {
    let memo = SessionKeyMemo::default();
    let (first, second) = (SessionId::generate(), SessionId::generate());
    for id in [&first, &first, &second, &first, &second, &second] {
        assert_eq!(memo.key_of(id.cookie_value().as_bytes()), Some(id.key()));
    }
    // One character changed, anywhere: another id, or none.
    let value = first.cookie_value();
    for at in [0, 20, 42] {
        let mut changed = value.clone().into_bytes();
        changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
        let expected = SessionId::parse(std::str::from_utf8(&changed).expect("ascii")).map(|id| id.key());
        assert_eq!(memo.key_of(&changed), expected);
        assert_ne!(memo.key_of(&changed), Some(first.key()));
    }
    assert_eq!(memo.key_of(value.as_bytes()), Some(first.key()));
}

#[test]
fn a_connection_memo_refuses_what_is_not_a_session_id_and_forgets_nothing_for_it() {
    let memo = SessionKeyMemo::default();
    let id = SessionId::generate();
    let value = id.cookie_value();
    assert_eq!(memo.key_of(value.as_bytes()), Some(id.key()));
    let longer = format!("{value}A");
    let not_ids: [&[u8]; 5] = [
        b"",
        &value.as_bytes()[..42],
        longer.as_bytes(),
        b"!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0\xef\xee\xed\xec\xeb\xea\xe9\xe8\xe7\xe6\xe5\xe4\xe3\xe2\xe1\xe0\xdf\xde\xdd\xdc\xdb\xda\xd9\xd8\xd7\xd6\xd5",
    ];
    for not_id in not_ids {
        assert_eq!(memo.key_of(not_id), None, "{not_id:?}");
    }
    assert_eq!(memo.key_of(value.as_bytes()), Some(id.key()));
    assert_eq!(format!("{memo:?}"), "SessionKeyMemo([redacted])");
}

#[test]
fn a_connection_memo_in_use_by_another_stream_still_gives_the_key() {
    let memo = SessionKeyMemo::default();
    let (held, other) = (SessionId::generate(), SessionId::generate());
    assert_eq!(memo.key_of(held.cookie_value().as_bytes()), Some(held.key()));
    let busy = memo.last.lock().expect("not poisoned");
    assert_eq!(memo.key_of(other.cookie_value().as_bytes()), Some(other.key()));
    assert_eq!(memo.key_of(held.cookie_value().as_bytes()), Some(held.key()));
    drop(busy);
    assert_eq!(memo.key_of(other.cookie_value().as_bytes()), Some(other.key()));
}

#[test]
fn the_store_key_is_the_ids_sha256_in_lowercase_hex_and_neither_debug_form_reveals_the_id() {
    let id = SessionId(std::array::from_fn(|i| i as u8));
    let hex = "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd";
    assert_eq!(id.key().to_hex(), hex);
    let mut appended = String::from("portcullis:");
    id.key().push_hex(&mut appended);
    assert_eq!(appended, format!("portcullis:{hex}"));

    assert_eq!(format!("{id:?}"), "SessionId([redacted])");
    assert_eq!(format!("{:?}", id.key()), "SessionKey(630dcd2966c4…)");
}

#[test]
fn malformed_session_cookie_values_are_not_ids() {
    for value in ["", "short", &"A".repeat(44), &"!".repeat(43), "../../etc/passwd"] {
        assert!(SessionId::parse(value).is_none(), "{value:?}");
    }
}

#[test]
fn identity_headers_follow_authelia_conventions() {
    let session = session(
        json!({"sub": "abc", "preferred_username": "john", "name": "John Doe",
               "email": "john@example.com", "groups": ["admins", "dev"]}),
        Duration::from_secs(60),
    );
    assert_eq!(header(&session, "remote-user"), Some("john"));
    assert_eq!(header(&session, "remote-groups"), Some("admins,dev"));
    assert_eq!(header(&session, "remote-name"), Some("John Doe"));
    assert_eq!(header(&session, "remote-email"), Some("john@example.com"));
}

#[test]
fn remote_user_falls_back_to_sub_and_missing_claims_send_no_header() {
    let session = session(json!({"sub": "abc"}), Duration::from_secs(60));
    assert_eq!(header(&session, "remote-user"), Some("abc"));
    assert_eq!(header(&session, "remote-email"), None);
    assert_eq!(header(&session, "remote-groups"), None);
}

#[test]
fn claims_of_every_json_type_have_a_header_form_or_none() {
    let typed = session(
        json!({"sub": "abc", "preferred_username": {"nested": "object"}, "name": true,
               "email": 42, "groups": ["admins", 7, true, null, {"x": 1}, ""]}),
        Duration::from_secs(60),
    );
    // An object has no header form: the next claim in the list is used.
    assert_eq!(header(&typed, "remote-user"), Some("abc"));
    assert_eq!(header(&typed, "remote-name"), Some("true"));
    assert_eq!(header(&typed, "remote-email"), Some("42"));
    // Strings and numbers of an array, in order; the rest (and empty strings) left out.
    assert_eq!(header(&typed, "remote-groups"), Some("admins,7"));

    let empty = session(
        json!({"sub": "abc", "name": "", "groups": ["", ""]}),
        Duration::from_secs(60),
    );
    assert_eq!(header(&empty, "remote-name"), None);
    assert_eq!(header(&empty, "remote-groups"), None);
}

#[test]
fn claims_with_control_characters_never_become_headers() {
    let session = session(
        json!({"sub": "abc", "name": "Eve\r\nRemote-User: admin", "email": "eve@example.com"}),
        Duration::from_secs(60),
    );
    assert_eq!(header(&session, "remote-name"), None);
    // The values around the refused one are intact.
    assert_eq!(header(&session, "remote-user"), Some("abc"));
    assert_eq!(header(&session, "remote-email"), Some("eve@example.com"));
}

#[test]
fn the_access_token_header_is_prepared_beside_the_identity_and_kept_out_of_debug_output() {
    let claims = json!({"sub": "abc", "email": "john@example.com"});
    let claims = claims.as_object().cloned().unwrap_or_default();
    let mut identity = identity_config();
    for (forwarding, expected) in [
        (AccessTokenForwarding::AuthorizationBearer, "Bearer authelia_at_example"),
        (AccessTokenForwarding::XForwardedAccessToken, "authelia_at_example"),
    ] {
        identity.access_token = forwarding;
        let session = session(json!({}), Duration::from_secs(60));
        let headers = UpstreamHeaders::build(&identity, &claims, &session.tokens);
        let token = headers.access_token.as_ref().expect("token header prepared");
        assert_eq!(token.to_str().ok(), Some(expected));
        assert!(token.is_sensitive());
        assert!(!format!("{headers:?}").contains("authelia_at_example"));
        let values: Vec<_> = headers
            .identity
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().ok()))
            .collect();
        assert_eq!(
            values,
            [("remote-user", Some("abc")), ("remote-email", Some("john@example.com"))]
        );
    }
}

#[test]
fn a_session_expires_at_its_deadline_not_a_moment_before() {
    let session = session(json!({"sub": "abc"}), Duration::from_secs(60));
    assert!(!session.is_expired(session.expires_at - Duration::from_nanos(1)));
    assert!(session.is_expired(session.expires_at));
    assert!(session.is_expired(session.expires_at + Duration::from_secs(1)));
}

#[test]
fn the_size_estimate_counts_every_byte_held_once_plus_a_bounded_overhead() {
    let mut template = session(
        json!({"preferred_username": "john", "name": "John", "email": "john@example.com", "groups": ["a", "b"]}),
        Duration::from_secs(60),
    );
    template.tokens.id_token = Some(Secret::new("header.payload.signature"));
    let held = |s: &Session| {
        let tokens = &s.tokens;
        let optional = |t: &Option<Secret>| t.as_ref().map_or(0, |t| t.expose().len());
        std::mem::size_of::<Session>()
            + s.subject.len()
            + s.userinfo.as_deref().map_or(0, str::len)
            + tokens.access_token.expose().len()
            + optional(&tokens.refresh_token)
            + optional(&tokens.id_token)
            + tokens.token_type.len()
            + tokens.scopes.len()
            + s.upstream_headers.identity.iter().map(|(_, v)| v.len()).sum::<usize>()
    };
    let size = template.approximate_size();
    assert!(size > held(&template), "{size} <= {}", held(&template));
    assert!(size < held(&template) + 1024, "{size}: overhead beyond 1 KiB");

    let more = "x".repeat(1000);
    fn longer(token: &Secret, more: &str) -> Secret {
        Secret::new(format!("{}{more}", token.expose()))
    }
    type Grow = fn(&mut Session, &str);
    let grow: [(&str, Grow); 8] = [
        ("subject", |s, more| s.subject.push_str(more)),
        ("userinfo", |s, more| {
            s.userinfo = Some(format!("{}{more}", s.userinfo.as_deref().unwrap_or("")).into())
        }),
        ("access token", |s, more| {
            s.tokens.access_token = longer(&s.tokens.access_token, more)
        }),
        ("refresh token", |s, more| {
            s.tokens.refresh_token = s.tokens.refresh_token.as_ref().map(|t| longer(t, more))
        }),
        ("ID token", |s, more| {
            s.tokens.id_token = s.tokens.id_token.as_ref().map(|t| longer(t, more))
        }),
        ("token type", |s, more| s.tokens.token_type.push_str(more)),
        ("scopes", |s, more| s.tokens.scopes.push_str(more)),
        ("header value", |s, more| {
            let value = HeaderValue::from_str(&format!("john{more}")).unwrap();
            s.upstream_headers.identity[0].1 = value;
        }),
    ];
    for (what, grow) in grow {
        let mut bigger = template.clone();
        grow(&mut bigger, &more);
        assert_eq!(bigger.approximate_size() as isize - size as isize, 1000, "{what}");
    }
}

#[test]
fn refresh_is_due_only_with_a_refresh_token_near_expiry() {
    let mut session = session(json!({"sub": "abc"}), Duration::from_secs(60));
    let now = SystemTime::now();
    session.tokens.received_at = Some(now - Duration::from_secs(3580));
    session.tokens.expires_at = Some(now + Duration::from_secs(20));
    assert!(session.needs_refresh(now, Duration::from_secs(30)));
    assert!(!session.needs_refresh(now, Duration::ZERO));
    session.tokens.refresh_token = None;
    assert!(!session.needs_refresh(now + Duration::from_secs(60), Duration::ZERO));
}

#[test]
fn tokens_shorter_than_the_refresh_lead_are_refreshed_at_half_their_lifetime_not_at_once() {
    let mut session = session(json!({"sub": "abc"}), Duration::from_secs(60));
    let received = SystemTime::now();
    let lead = Duration::from_secs(30);
    session.tokens.received_at = Some(received);
    session.tokens.expires_at = Some(received + Duration::from_secs(20));
    assert!(!session.needs_refresh(received, lead), "due as soon as it arrived");
    assert!(!session.needs_refresh(received + Duration::from_millis(9_999), lead));
    assert!(session.needs_refresh(received + Duration::from_secs(10), lead));
    // A long-lived token keeps the whole lead.
    session.tokens.expires_at = Some(received + Duration::from_secs(3600));
    assert!(!session.needs_refresh(received + Duration::from_secs(3569), lead));
    assert!(session.needs_refresh(received + Duration::from_secs(3570), lead));
    // A session stored before `received_at` existed keeps the configured lead.
    session.tokens.received_at = None;
    session.tokens.expires_at = Some(received + Duration::from_secs(20));
    assert!(session.needs_refresh(received, lead));
    // A clock set back past the arrival counts as a lifetime of zero: due at expiry.
    session.tokens.received_at = Some(received + Duration::from_secs(60));
    assert!(!session.needs_refresh(received + Duration::from_secs(19), lead));
    assert!(session.needs_refresh(received + Duration::from_secs(20), lead));
}

#[tokio::test]
async fn memory_store_returns_what_was_inserted_and_forgets_removed_sessions() {
    let store = MemoryStore::new(&session_config());
    assert!(store.is_empty());
    let key = SessionId::generate().key();
    let other = SessionId::generate().key();
    for key in [key, other] {
        store
            .insert(key, Arc::new(session(json!({"sub": "abc"}), Duration::from_secs(60))))
            .await
            .unwrap();
    }
    store.cache.run_pending_tasks().await;
    assert_eq!((store.len(), store.is_empty()), (2, false));
    assert_eq!(store.get(&key).await.unwrap().unwrap().subject, "0b2f6f4e-sub");
    let removed = store.remove(&key).await.unwrap();
    assert_eq!(removed.map(|s| s.subject.clone()).as_deref(), Some("0b2f6f4e-sub"));
    assert!(store.get(&key).await.unwrap().is_none());
    assert!(store.remove(&key).await.unwrap().is_none(), "removed twice");
    assert!(store.get(&other).await.unwrap().is_some());
    store.cache.run_pending_tasks().await;
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn memory_store_replaces_a_held_session_but_never_brings_back_a_removed_one() {
    let store = MemoryStore::new(&session_config());
    let key = SessionId::generate().key();
    let first = Arc::new(session(json!({"preferred_username": "first"}), Duration::from_secs(60)));
    let refreshed = Arc::new(session(
        json!({"preferred_username": "refreshed"}),
        Duration::from_secs(60),
    ));
    assert!(!store.replace(key, refreshed.clone()).await.unwrap(), "never held");
    assert!(store.get(&key).await.unwrap().is_none());

    store.insert(key, first).await.unwrap();
    store
        .get(&key)
        .await
        .unwrap()
        .expect("held, and now in this thread's memo");
    assert!(store.replace(key, refreshed.clone()).await.unwrap());
    let seen = store.get(&key).await.unwrap().expect("held");
    assert_eq!(
        seen.upstream_headers.identity[0].1.as_bytes(),
        b"refreshed",
        "the memo saw the replacement"
    );

    // A logout while the refresh was at the provider: the refresh's result is not stored.
    store.remove(&key).await.unwrap();
    assert!(!store.replace(key, refreshed).await.unwrap());
    assert!(store.get(&key).await.unwrap().is_none());
    store.cache.run_pending_tasks().await;
    assert!(store.is_empty());
}

#[tokio::test]
async fn memory_store_drops_sessions_past_their_absolute_deadline_and_does_not_replace_them() {
    let store = MemoryStore::new(&session_config());
    let key = SessionId::generate().key();
    store
        .insert(key, Arc::new(session(json!({"sub": "abc"}), Duration::from_millis(50))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(store.get(&key).await.unwrap().is_none());
    let refreshed = Arc::new(session(json!({"sub": "abc"}), Duration::from_secs(60)));
    assert!(!store.replace(key, refreshed).await.unwrap());
    assert!(store.get(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn memory_store_entries_carry_their_sessions_deadline_not_only_the_idle_timeout() {
    // Asked of moka directly: `get` checks the deadline itself as well.
    let store = MemoryStore::new(&session_config());
    let short = || Arc::new(session(json!({"sub": "abc"}), Duration::from_millis(50)));
    let created = SessionId::generate().key();
    store.insert(created, short()).await.unwrap();
    // A replaced session gets the deadline of its replacement.
    let replaced = SessionId::generate().key();
    let long = Arc::new(session(json!({"sub": "abc"}), Duration::from_secs(3600)));
    store.insert(replaced, long).await.unwrap();
    store.insert(replaced, short()).await.unwrap();
    assert!(store.cache.contains_key(&created) && store.cache.contains_key(&replaced));

    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(!store.cache.contains_key(&created), "kept past its deadline");
    assert!(
        !store.cache.contains_key(&replaced),
        "kept past its replacement's deadline"
    );
}

#[tokio::test]
async fn memory_store_stays_within_its_memory_bound() {
    let mut config = session_config();
    config.max_memory_bytes = 256 * 1024;
    let store = MemoryStore::new(&config);
    let template = Arc::new(session(
        json!({"sub": "abc", "name": "x".repeat(1000)}),
        Duration::from_secs(60),
    ));
    let size = template.approximate_size() as u64;
    for _ in 0..2_000 {
        store
            .insert(SessionId::generate().key(), template.clone())
            .await
            .unwrap();
    }
    store.cache.run_pending_tasks().await;
    assert!(
        store.len() * size <= config.max_memory_bytes,
        "{} sessions of {size} bytes",
        store.len()
    );
    assert!(!store.is_empty());
}

/// An ID token whose payload is `claims` (the signature is not checked here: sessions
/// only ever hold tokens validated at login).
fn id_token(claims: serde_json::Value) -> Secret {
    let part = |value: serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
    Secret::new(format!(
        "{}.{}.c2lnbmF0dXJl",
        part(json!({"alg": "RS256"})),
        part(claims)
    ))
}

#[test]
fn claims_are_the_id_token_claims_overlaid_with_userinfo() {
    let now = SystemTime::now();
    let userinfo = json!({"sub": "abc", "name": "John Doe", "groups": ["dev"]});
    let mut tokens = session(json!({}), Duration::from_secs(60)).tokens;
    tokens.id_token = Some(id_token(
        json!({"sub": "abc", "iss": "https://auth.example.com", "name": "Old Name"}),
    ));
    let session = Session::new(
        NewSession {
            subject: "abc".into(),
            userinfo: userinfo.as_object(),
            tokens,
            created_at: now,
            expires_at: now + Duration::from_secs(60),
        },
        &identity_config(),
        &Rule::default(),
    );
    let claims = session.claims();
    assert_eq!(claims["name"], "John Doe");
    assert_eq!(claims["iss"], "https://auth.example.com");
    assert_eq!(header(&session, "remote-name"), Some("John Doe"));
    assert_eq!(session.id_token_claims()["name"], "Old Name");

    let mut new_tokens = session.tokens.clone();
    new_tokens.id_token = Some(id_token(
        json!({"sub": "abc", "iss": "https://auth.example.com", "amr": ["pwd"]}),
    ));
    let refreshed = session.refreshed(new_tokens, None, &identity_config(), &Rule::default());
    assert_eq!(refreshed.id_token_claims().get("name"), None);
    assert_eq!(refreshed.id_token_claims()["amr"], json!(["pwd"]));
    assert_eq!(
        refreshed.claims()["name"],
        "John Doe",
        "userinfo still wins after a refresh"
    );
    assert_eq!(header(&refreshed, "remote-groups"), Some("dev"));

    let mut without_id_token = refreshed.tokens.clone();
    without_id_token.id_token = None;
    let kept = refreshed.refreshed(without_id_token.clone(), None, &identity_config(), &Rule::default());
    assert_eq!(
        kept.id_token_claims()["amr"],
        json!(["pwd"]),
        "a refresh without an ID token keeps the last one"
    );

    let fresh_userinfo = json!({"sub": "abc", "name": "John Doe", "groups": ["dev", "ops"]});
    let regrouped = kept.refreshed(
        without_id_token,
        fresh_userinfo.as_object(),
        &identity_config(),
        &Rule::default(),
    );
    assert_eq!(
        header(&regrouped, "remote-groups"),
        Some("dev,ops"),
        "the new userinfo counts"
    );
    assert_eq!(regrouped.userinfo(), fresh_userinfo.as_object().cloned());
}

#[test]
fn a_session_survives_serialisation_for_a_shared_store() {
    let original = session(
        json!({"sub": "abc", "preferred_username": "john"}),
        Duration::from_secs(60),
    );
    let text = serde_json::to_string(&original).unwrap();
    assert!(!text.contains("upstream_headers"));
    let mut restored: Session = serde_json::from_str(&text).unwrap();
    assert!(!text.contains("\"access\""));
    assert_eq!(
        restored.access,
        Access::Refused(crate::policy::Refusal::NotEvaluated),
        "a session read back is refused until it is prepared"
    );
    restored.prepare(&identity_config(), &Rule::default());
    assert_eq!(header(&restored, "remote-user"), Some("john"));
    assert_eq!(restored.access, Access::Granted);
    assert_eq!(restored.claims(), original.claims());
}

#[test]
fn the_access_verdict_is_prepared_at_login_and_again_after_a_refresh() {
    let admins = Rule::new(&["admins".to_owned()], &[]);
    let now = SystemTime::now();
    let mut tokens = session(json!({}), Duration::from_secs(60)).tokens;
    tokens.id_token = Some(id_token(json!({"sub": "abc", "groups": ["dev"]})));
    let login = |tokens: TokenSet| {
        Session::new(
            NewSession {
                subject: "abc".into(),
                userinfo: None,
                tokens,
                created_at: now,
                expires_at: now + Duration::from_secs(60),
            },
            &identity_config(),
            &admins,
        )
    };
    let session = login(tokens.clone());
    assert_eq!(session.access, Access::Refused(crate::policy::Refusal::NoAllowedGroup));

    let mut promoted = tokens;
    promoted.id_token = Some(id_token(json!({"sub": "abc", "groups": ["dev", "admins"]})));
    let refreshed = session.refreshed(promoted, None, &identity_config(), &admins);
    assert_eq!(refreshed.access, Access::Granted);
    assert_eq!(
        login(refreshed.tokens.clone()).access,
        Access::Granted,
        "the same verdict as a fresh login"
    );
}

/// The Redis variant must not make the memory store's per-request lookup future larger
/// (it is moved with every request): its arm is boxed.
#[test]
fn the_store_dispatch_adds_almost_nothing_to_the_memory_lookup_future() {
    use super::store::SessionStore;
    let store = MemoryStore::new(&session_config());
    let key = SessionId::generate().key();
    let direct = std::mem::size_of_val(&SessionBackend::get(&store, &key));
    let dispatched = SessionStore::Memory(store);
    let through_enum = std::mem::size_of_val(&dispatched.get(&key));
    assert!(
        through_enum <= direct + 64,
        "SessionStore::get future is {through_enum} B, MemoryStore::get {direct} B"
    );
}

/// The per-thread memo (`store::near`) must not outlive a logout or a refresh done on
/// another thread: once `remove` or `insert` has returned there, this thread sees it.
#[tokio::test]
async fn memory_store_lookups_see_removals_and_replacements_made_on_other_threads_at_once() {
    let store = MemoryStore::new(&session_config());
    let key = SessionId::generate().key();
    let user = |session: &Session| session.upstream_headers.identity[0].1.clone();
    let first = Arc::new(session(json!({"preferred_username": "john"}), Duration::from_secs(60)));
    store.insert(key, first).await.unwrap();
    let remembered = store.get(&key).await.unwrap().unwrap();
    let again = store.get(&key).await.unwrap().unwrap();
    assert!(
        Arc::ptr_eq(&remembered, &again),
        "the second lookup is this thread's memo"
    );

    let on_another_thread = |change: &'static str| {
        let store = store.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                match change {
                    "refresh" => {
                        let refreshed =
                            session(json!({"preferred_username": "john.refreshed"}), Duration::from_secs(60));
                        store.insert(key, Arc::new(refreshed)).await.unwrap();
                    }
                    _ => drop(store.remove(&key).await.unwrap()),
                }
            });
        })
        .join()
        .unwrap();
    };
    on_another_thread("refresh");
    assert_eq!(user(&store.get(&key).await.unwrap().unwrap()), "john.refreshed");
    on_another_thread("logout");
    assert!(store.get(&key).await.unwrap().is_none());
}

/// Idle sessions go; a session used only through the memo still counts as used (the
/// memo asks the store again after a tenth of a short idle timeout).
#[tokio::test]
async fn memory_store_drops_idle_sessions_but_not_those_in_use_through_the_memo() {
    let mut config = session_config();
    config.idle_timeout = Duration::from_millis(600);
    let store = MemoryStore::new(&config);
    let key = SessionId::generate().key();
    store
        .insert(key, Arc::new(session(json!({"sub": "abc"}), Duration::from_secs(60))))
        .await
        .unwrap();
    // Used for 1.5 s, two and a half idle timeouts, mostly through the memo.
    let in_use_until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < in_use_until {
        for _ in 0..5 {
            assert!(store.get(&key).await.unwrap().is_some(), "in use, so not idle");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(store.get(&key).await.unwrap().is_none(), "idle");
}
