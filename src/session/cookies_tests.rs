use std::time::SystemTime;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

use super::*;
use crate::oidc::PendingAuth;
use crate::session::tests::session_config;

fn pending(state: &str, started_at: u64) -> PendingLogin {
    PendingLogin {
        auth: PendingAuth {
            state: state.into(),
            nonce: "n".repeat(43),
            pkce_verifier: "v".repeat(43),
        },
        return_to: "/reports?year=2026".into(),
        started_at,
    }
}

/// Turns `Set-Cookie` values into the `Cookie` header a browser would send back.
fn cookie_header(set_cookies: &[HeaderValue]) -> HeaderMap {
    let pairs: Vec<String> = set_cookies
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(&pairs.join("; ")).unwrap());
    headers
}

fn now_secs() -> u64 {
    unix_seconds(SystemTime::now())
}

#[test]
fn a_sealed_login_opens_with_the_same_state() {
    let codec = CookieCodec::new(&session_config());
    let state = "s".repeat(43);
    let set = codec.seal_login(&pending(&state, now_secs())).unwrap();
    let opened = codec
        .open_login(&cookie_header(&[set]), &state, SystemTime::now())
        .unwrap();
    assert_eq!(opened.return_to, "/reports?year=2026");
    assert_eq!(opened.auth.nonce, "n".repeat(43));
}

#[test]
fn a_login_cookie_is_sealed_only_if_a_browser_would_keep_it() {
    let codec = CookieCodec::new(&session_config());
    let state = "s".repeat(43);
    let name_and_value = |set: &HeaderValue| {
        let text = set.to_str().unwrap();
        text.split(';').next().unwrap().len() - 1 // without the `=`
    };
    let mut fits = pending(&state, now_secs());
    fits.return_to = format!("/r?{}", "q".repeat(2400));
    let set = codec.seal_login(&fits).expect("fits");
    assert!(name_and_value(&set) <= MAX_COOKIE_BYTES, "{}", name_and_value(&set));
    assert!(codec
        .open_login(&cookie_header(&[set]), &state, SystemTime::now())
        .is_some());
    let mut too_long = pending(&state, now_secs());
    too_long.return_to = format!("/r?{}", "q".repeat(3000));
    assert!(codec.seal_login(&too_long).is_none());
}

#[test]
fn a_pending_login_debugs_where_it_returns_to_but_not_its_secrets() {
    let text = format!("{:?}", pending(&"s".repeat(43), 1_790_000_000));
    assert!(
        text.contains("/reports?year=2026") && text.contains("1790000000"),
        "{text}"
    );
    for secret in ["sss", "nnn", "vvv"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[test]
fn the_sealed_cookie_reveals_nothing_and_has_safe_attributes() {
    let codec = CookieCodec::new(&session_config());
    let set = codec.seal_login(&pending(&"s".repeat(43), now_secs())).unwrap();
    let text = set.to_str().unwrap();
    assert!(!text.contains("reports") && !text.contains("nnnn"), "{text}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Secure", "Max-Age=600"] {
        assert!(text.contains(attribute), "{attribute} missing in {text}");
    }
}

#[test]
fn tampered_truncated_or_foreign_login_cookies_do_not_open() {
    let codec = CookieCodec::new(&session_config());
    let state = "t".repeat(43);
    let set = codec.seal_login(&pending(&state, now_secs())).unwrap();
    let mut headers = cookie_header(&[set]);
    let original = headers.get(COOKIE).unwrap().to_str().unwrap().to_string();
    let (name, value) = original.split_once('=').unwrap();

    let mut flipped = value.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let variants = [
        format!("{name}={}", String::from_utf8(flipped).unwrap()),
        format!("{name}={}", &value[..value.len() / 2]),
        format!("{name}="),
    ];
    for variant in variants {
        headers.insert(COOKIE, HeaderValue::from_str(&variant).unwrap());
        assert!(
            codec.open_login(&headers, &state, SystemTime::now()).is_none(),
            "{variant}"
        );
    }

    let mut other = session_config();
    other.secret = crate::config::Secret::new("another-secret-another-secret-another");
    let foreign = CookieCodec::new(&other)
        .seal_login(&pending(&state, now_secs()))
        .unwrap();
    assert!(codec
        .open_login(&cookie_header(&[foreign]), &state, SystemTime::now())
        .is_none());
}

#[test]
fn a_login_cookie_does_not_open_under_another_state() {
    let codec = CookieCodec::new(&session_config());
    let set = codec.seal_login(&pending(&"a".repeat(43), now_secs())).unwrap();
    let value = set
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    // The same sealed value presented under another state's cookie name: the name is
    // authenticated, so it must not open.
    let renamed = format!("{}={value}", codec.login_cookie_name(&"b".repeat(43)));
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(&renamed).unwrap());
    assert!(codec.open_login(&headers, &"b".repeat(43), SystemTime::now()).is_none());
}

#[test]
fn a_login_opens_until_the_end_of_its_last_second() {
    let codec = CookieCodec::new(&session_config()); // login_timeout 600 s
    let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000);
    let state = "t".repeat(43);
    for (age, opens) in [(600, true), (601, false)] {
        let set = codec.seal_login(&pending(&state, 1_790_000_000 - age)).unwrap();
        let opened = codec.open_login(&cookie_header(&[set]), &state, now);
        assert_eq!(opened.is_some(), opens, "age {age} s");
    }
}

#[test]
fn an_expired_login_does_not_open() {
    let codec = CookieCodec::new(&session_config());
    let state = "e".repeat(43);
    let set = codec.seal_login(&pending(&state, now_secs() - 601)).unwrap();
    assert!(codec
        .open_login(&cookie_header(&[set]), &state, SystemTime::now())
        .is_none());
}

#[test]
fn pruning_keeps_at_most_the_configured_number_of_pending_logins() {
    let codec = CookieCodec::new(&session_config()); // max 3
    let now = now_secs();
    let sets: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, s)| codec.seal_login(&pending(&s.repeat(43), now - 100 + i as u64)).unwrap())
        .collect();
    let cleared = codec.prune_logins(&cookie_header(&sets), SystemTime::now());
    // 4 present + 1 new must become 3: the two oldest go.
    let names: Vec<_> = cleared
        .iter()
        .map(|v| v.to_str().unwrap().split('=').next().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            codec.login_cookie_name(&"a".repeat(43)),
            codec.login_cookie_name(&"b".repeat(43))
        ]
    );
    assert!(cleared.iter().all(|v| v.to_str().unwrap().contains("Max-Age=0")));
}

#[test]
fn pruning_drops_expired_and_unreadable_logins_even_below_the_limit() {
    let codec = CookieCodec::new(&session_config()); // max 3
    let now = now_secs();
    let expired = codec.seal_login(&pending(&"x".repeat(43), now - 601)).unwrap();
    let live = codec.seal_login(&pending(&"y".repeat(43), now - 5)).unwrap();
    let mut headers = cookie_header(&[expired, live]);
    let forged = format!("{}zzzz=bm90LXNlYWxlZA", codec.login_prefix);
    let joined = format!("{}; {forged}", headers[COOKIE].to_str().unwrap());
    headers.insert(COOKIE, HeaderValue::from_str(&joined).unwrap());
    let cleared: Vec<_> = codec
        .prune_logins(&headers, SystemTime::now())
        .iter()
        .map(|v| v.to_str().unwrap().split('=').next().unwrap().to_string())
        .collect();
    assert_eq!(
        cleared,
        [
            codec.login_cookie_name(&"x".repeat(43)),
            format!("{}zzzz", codec.login_prefix)
        ]
    );
}

#[test]
fn a_login_cookie_is_named_after_the_safe_start_of_its_state() {
    let codec = CookieCodec::new(&session_config());
    // base64url states keep `-` and `_`; anything a cookie name cannot hold is dropped.
    assert_eq!(
        codec.login_cookie_name("Ab-9_z;= ,\"x/y.0123456789"),
        format!("{}Ab-9_zxy01234567", codec.login_prefix)
    );
}

#[test]
fn the_session_cookie_carries_only_the_id_with_safe_attributes() {
    let codec = CookieCodec::new(&session_config());
    let id = SessionId::generate();
    let set = codec.set_session(&id);
    let text = set.to_str().unwrap();
    assert!(
        text.starts_with(&format!("portcullis_session={};", id.cookie_value())),
        "{text}"
    );
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Secure"] {
        assert!(text.contains(attribute), "{attribute} missing in {text}");
    }
    assert_eq!(
        codec.session_id(&cookie_header(&[set])).map(|s| s.key()),
        Some(id.key())
    );
}

/// A `Cookie` header per value, as an HTTP/2 client may send them.
fn cookie_headers(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append(COOKIE, HeaderValue::from_str(value).unwrap());
    }
    headers
}

#[test]
fn the_session_cookie_is_found_wherever_the_client_put_it() {
    let codec = CookieCodec::new(&session_config());
    let id = SessionId::generate();
    let value = id.cookie_value();
    let found = |headers: &[&str]| codec.session_id(&cookie_headers(headers)).map(|s| s.key());
    for header in [
        format!("portcullis_session={value}"),
        format!("theme=dark; portcullis_session={value}; lang=en"),
        format!("  portcullis_session = {value} ;x=1"),
        format!("portcullis_session=\"{value}\""),
        format!("broken; =nameless; portcullis_session={value}"),
    ] {
        assert_eq!(found(&[&header]), Some(id.key()), "{header}");
        assert!(codec.has_session_cookie(&cookie_headers(&[&header])), "{header}");
    }
    let second_header = ["theme=dark", &format!("portcullis_session={value}")];
    assert_eq!(found(&second_header), Some(id.key()));
    // The first session cookie counts, even when a later one would parse.
    let first_bad = format!("portcullis_session=garbage; portcullis_session={value}");
    assert_eq!(found(&[&first_bad]), None);
}

#[test]
fn lookalike_or_malformed_session_cookies_are_not_a_session() {
    let codec = CookieCodec::new(&session_config());
    let value = SessionId::generate().cookie_value();
    for header in [
        format!("portcullis_session_old={value}"),
        format!("xportcullis_session={value}"),
        format!("portcullis_session {value}"),
        format!("portcullis_session={value}x"),
        format!("portcullis_session={}", &value[..42]),
        "portcullis_session=".to_string(),
        "portcullis_session=\"\"".to_string(),
    ] {
        assert!(codec.session_id(&cookie_headers(&[&header])).is_none(), "{header}");
    }
    assert!(!codec.has_session_cookie(&cookie_headers(&[&format!("portcullis_session_old={value}")])));
    assert!(!codec.has_session_cookie(&HeaderMap::new()));
}

#[test]
fn pending_login_cookies_stay_host_only_when_the_session_cookie_names_a_domain() {
    let mut config = session_config();
    config.cookie_domain = Some("example.com".into());
    config.login_cookie_prefix = "__Host-portcullis_login_".into();
    let codec = CookieCodec::new(&config);
    let state = "s".repeat(43);
    let sealed = codec.seal_login(&pending(&state, now_secs())).unwrap();
    let expired = codec.seal_login(&pending(&"x".repeat(43), now_secs() - 601)).unwrap();
    let pruned = codec.prune_logins(&cookie_header(&[expired]), SystemTime::now());
    assert_eq!(pruned.len(), 1);
    // A `__Host-` cookie with a Domain is dropped by browsers; and a pending login is
    // only ever read back at the redirect URI, on base_url's host.
    for set in [sealed, codec.clear_login(&state), pruned[0].clone()] {
        let text = set.to_str().unwrap().to_ascii_lowercase();
        assert!(!text.contains("domain="), "{text}");
        assert!(text.starts_with("__host-portcullis_login_"), "{text}");
    }
    let session = codec.set_session(&SessionId::generate());
    assert!(session.to_str().unwrap().contains("Domain=example.com"), "{session:?}");
    assert!(codec.clear_session().to_str().unwrap().contains("Domain=example.com"));
}

#[test]
fn the_pairs_scanned_are_those_the_cookie_crates_parser_finds() {
    for header in [
        "a=1",
        "a=1; b=2",
        "  a = 1 ;b=\"2\"  ",
        "a=b=c",
        "x; y=1",
        "=v; k=",
        ";;a=1;;",
        "a=\"\"",
        "a=\"1",
        "a=1\"",
        "",
        ";",
        "a",
        "a=;b",
        "name with space=1",
    ] {
        let headers = cookie_headers(&[header]);
        let ours: Vec<(&[u8], &[u8])> = cookie_pairs(&headers).collect();
        let parsed: Vec<Cookie<'_>> = request_cookies(&headers).collect();
        let theirs: Vec<(&[u8], &[u8])> = parsed
            .iter()
            .map(|c| (c.name().as_bytes(), c.value_trimmed().as_bytes()))
            .collect();
        assert_eq!(ours, theirs, "{header:?}");
    }
}
