use http::header::{CONNECTION, COOKIE, TE, TRAILER, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::config::{AccessTokenForwarding, IdentityConfig, IdentityHeader};

fn identity(access_token: AccessTokenForwarding) -> IdentityConfig {
    let header = |name: &'static str| IdentityHeader {
        header: HeaderName::from_static(name),
        claims: vec!["sub".into()],
    };
    IdentityConfig {
        headers: vec![
            header("remote-user"),
            header("remote-email"),
            header("remote-name"),
            header("remote-groups"),
        ],
        strip_headers: vec![HeaderName::from_static("x-forwarded-user")],
        access_token,
    }
}

/// Builds a map from raw `(name, value)` pairs; names keep the test's spelling until
/// `HeaderName` lowercases them, as hyper does on the wire.
fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

/// The names present, sorted (a `HeaderMap` does not keep order across removals).
fn names(headers: &HeaderMap) -> Vec<&str> {
    let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    names
}

fn all<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
}

fn filter() -> CookieFilter {
    CookieFilter {
        session_cookie: "portcullis".into(),
        login_cookie_prefix: "portcullis_login_".into(),
    }
}

#[test]
fn identity_headers_are_stripped_in_every_case_and_underscore_spelling() {
    let mut headers = map(&[
        ("Remote-User", "a"),
        ("remote-user", "b"),
        ("REMOTE_USER", "c"),
        ("Remote_User", "d"),
        ("remote-groups", "admins"),
        ("Remote-Groups", "root"),
        ("REMOTE-EMAIL", "e@x"),
        ("remote_name", "n"),
        ("X-Forwarded-User", "f"),
        ("x_forwarded_user", "g"),
        ("x-forwarded-access-token", "t"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("authorization", "Basic abc"),
        ("accept", "text/html"),
        ("remote-userx", "kept: not the same name"),
    ]);
    StripSet::new(&identity(AccessTokenForwarding::None)).strip(&mut headers);
    assert_eq!(names(&headers), ["accept", "authorization", "remote-userx"]);
}

#[test]
fn the_default_identity_headers_are_stripped_whatever_the_mapping() {
    // As the configuration builds it for `identity.headers` naming only two of them.
    let header = |name: &'static str| IdentityHeader {
        header: HeaderName::from_static(name),
        claims: vec!["sub".into()],
    };
    let identity = IdentityConfig {
        headers: vec![header("remote-user"), header("x-email")],
        strip_headers: vec![
            HeaderName::from_static("remote-user"),
            HeaderName::from_static("x-email"),
        ],
        access_token: AccessTokenForwarding::None,
    };
    let mut headers = map(&[
        ("Remote-Groups", "admins"),
        ("remote_groups", "admins"),
        ("Remote-Name", "Mallory"),
        ("REMOTE_NAME", "Mallory"),
        ("Remote-Email", "root@example.com"),
        ("remote_email", "root@example.com"),
        ("remote-user", "mallory"),
        ("X_Email", "root@example.com"),
        ("accept", "text/html"),
    ]);
    StripSet::new(&identity).strip(&mut headers);
    assert_eq!(names(&headers), ["accept"]);
}

#[test]
fn authorization_is_stripped_only_when_the_access_token_goes_there() {
    for (mode, kept) in [
        (AccessTokenForwarding::None, true),
        (AccessTokenForwarding::XForwardedAccessToken, true),
        (AccessTokenForwarding::AuthorizationBearer, false),
    ] {
        let mut headers = map(&[("Authorization", "Bearer spoofed"), ("x-forwarded-access-token", "x")]);
        StripSet::new(&identity(mode)).strip(&mut headers);
        assert_eq!(headers.contains_key("authorization"), kept, "{mode:?}");
        assert!(!headers.contains_key("x-forwarded-access-token"), "{mode:?}");
    }
}

#[test]
fn identity_values_are_set_exactly_once_after_stripping() {
    let mut headers = map(&[("remote-user", "mallory"), ("remote_user", "mallory")]);
    StripSet::new(&identity(AccessTokenForwarding::AuthorizationBearer)).strip(&mut headers);
    let ours = [
        (
            HeaderName::from_static("remote-user"),
            HeaderValue::from_static("alice"),
        ),
        (
            HeaderName::from_static("remote-groups"),
            HeaderValue::from_static("admins,dev"),
        ),
    ];
    let token = HeaderValue::from_static("Bearer at");
    set_identity(&mut headers, &ours, Some((&AUTHORIZATION, &token)));
    assert_eq!(all(&headers, "remote-user"), ["alice"]);
    assert_eq!(all(&headers, "remote-groups"), ["admins,dev"]);
    assert_eq!(all(&headers, "authorization"), ["Bearer at"]);
    assert_eq!(headers.len(), 3);
}

#[test]
fn identity_values_replace_unstripped_client_values_and_keep_a_name_listed_twice() {
    // Without the strip (a caller bug), every name is still cleared before it is set;
    // a name listed twice keeps both of our values.
    let mut headers = map(&[("remote-user", "mallory"), ("remote-groups", "admins")]);
    let ours = [
        (
            HeaderName::from_static("remote-user"),
            HeaderValue::from_static("alice"),
        ),
        (
            HeaderName::from_static("remote-groups"),
            HeaderValue::from_static("dev"),
        ),
        (
            HeaderName::from_static("remote-user"),
            HeaderValue::from_static("alice@example.com"),
        ),
    ];
    set_identity(&mut headers, &ours, None);
    assert_eq!(all(&headers, "remote-user"), ["alice", "alice@example.com"]);
    assert_eq!(all(&headers, "remote-groups"), ["dev"]);
    assert_eq!(headers.len(), 3);
}

#[test]
fn hop_by_hop_and_connection_named_headers_are_removed() {
    let mut headers = map(&[
        ("connection", "keep-alive, X-Secret , close"),
        ("connection", "x-other"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("x-secret", "1"),
        ("x-other", "2"),
        ("te", "gzip"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("proxy-authorization", "Basic abc"),
        ("proxy-authenticate", "Basic"),
        ("accept", "*/*"),
    ]);
    remove_hop_by_hop(&mut headers, Message::Request, false);
    assert_eq!(names(&headers), ["accept"]);
}

#[test]
fn hop_by_hop_names_listed_in_connection_go_in_any_case_with_the_others_it_lists() {
    for listed in [
        "keep-alive",
        "Keep-Alive",
        "KEEP-ALIVE, x-secret",
        "x-secret, Proxy-Connection, keep-alive",
    ] {
        let mut headers = map(&[
            ("connection", listed),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("x-secret", "1"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut headers, Message::Response, false);
        let expected: &[&str] = if listed.contains("x-secret") {
            &["accept"]
        } else {
            &["accept", "x-secret"]
        };
        let mut left = names(&headers);
        left.sort_unstable();
        assert_eq!(left, expected, "Connection: {listed}");
    }
}

#[test]
fn a_lone_upgrade_header_is_removed_outside_an_upgrade() {
    // No `Connection` names it: `Upgrade` is connection-specific anyway (RFC 9110 §7.6.1).
    let mut headers = map(&[("upgrade", "websocket"), ("accept", "*/*")]);
    remove_hop_by_hop(&mut headers, Message::Request, false);
    assert_eq!(names(&headers), ["accept"]);
}

#[test]
fn the_length_filter_lets_every_hop_by_hop_name_through() {
    let mut lengths: Vec<usize> = HOP_BY_HOP
        .iter()
        .copied()
        .chain([&TE, &UPGRADE, &TRAILER])
        .map(|n| n.as_str().len())
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    assert_eq!(lengths, HOP_BY_HOP_LENGTHS);
}

#[test]
fn a_responses_trailer_declaration_passes_and_a_requests_goes() {
    let mut headers = map(&[("trailer", "x-checksum"), ("accept", "*/*")]);
    remove_hop_by_hop(&mut headers, Message::Response, false);
    assert_eq!(all(&headers, "trailer"), ["x-checksum"]);
    // The request's trailers are dropped, so its declaration would be a lie.
    let mut headers = map(&[("Trailer", "Remote-User, X-Forwarded-For"), ("accept", "*/*")]);
    remove_hop_by_hop(&mut headers, Message::Request, false);
    assert_eq!(names(&headers), ["accept"]);
}

#[test]
fn te_trailers_survives() {
    let mut headers = map(&[("te", "gzip, trailers")]);
    remove_hop_by_hop(&mut headers, Message::Request, false);
    assert_eq!(all(&headers, "te"), ["trailers"]);
    assert!(headers.get(TE).is_some());
}

#[test]
fn upgrade_keeps_upgrade_and_reduces_connection_to_upgrade() {
    let mut headers = map(&[
        ("Connection", "keep-alive, Upgrade, x-secret"),
        ("Upgrade", "websocket"),
        ("x-secret", "1"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]);
    assert!(is_upgrade_request(&headers));
    remove_hop_by_hop(&mut headers, Message::Request, true);
    assert_eq!(all(&headers, "connection"), ["upgrade"]);
    assert_eq!(all(&headers, "upgrade"), ["websocket"]);
    assert!(!headers.contains_key("x-secret"));
    assert!(headers.contains_key("sec-websocket-key"));
}

#[test]
fn upgrade_needs_both_connection_upgrade_and_an_upgrade_header() {
    assert!(!is_upgrade_request(&map(&[("upgrade", "websocket")])));
    assert!(!is_upgrade_request(&map(&[("connection", "upgrade")])));
    assert!(!is_upgrade_request(&map(&[
        ("connection", "upgraded"),
        ("upgrade", "websocket")
    ])));
    assert!(is_upgrade_request(&map(&[
        ("connection", "close"),
        ("connection", "UPGRADE"),
        ("upgrade", "h2c")
    ])));
    let mut headers = map(&[(CONNECTION.as_str(), "upgrade"), (UPGRADE.as_str(), "x")]);
    remove_hop_by_hop(&mut headers, Message::Request, false);
    assert!(headers.is_empty());
}

#[test]
fn portcullis_cookies_are_removed_and_others_kept_in_order() {
    let mut headers = map(&[(
        "cookie",
        "theme=dark; portcullis=SESSION; portcullis_login_a=1;lang=en-GB;  b=\"x y\"; portcullis_login_b=2",
    )]);
    filter_cookies(&mut headers, &filter());
    assert_eq!(all(&headers, "cookie"), ["theme=dark; lang=en-GB; b=\"x y\""]);
}

#[test]
fn a_cookie_merely_starting_with_the_session_name_is_kept() {
    let mut headers = map(&[("cookie", "portcullis2=a; xportcullis=b; portcullis=c")]);
    filter_cookies(&mut headers, &filter());
    assert_eq!(all(&headers, "cookie"), ["portcullis2=a; xportcullis=b"]);
}

#[test]
fn cookie_header_is_removed_when_only_portcullis_cookies_were_sent() {
    let mut headers = map(&[
        ("cookie", "portcullis=SESSION"),
        ("cookie", "portcullis_login_x=1; portcullis_login_y=2"),
        ("accept", "*/*"),
    ]);
    filter_cookies(&mut headers, &filter());
    assert_eq!(names(&headers), ["accept"]);
}

#[test]
fn several_cookie_headers_are_joined_for_http1() {
    let mut headers = map(&[
        ("cookie", "a=1"),
        ("cookie", "portcullis=SESSION"),
        ("cookie", "b=2; c=3"),
    ]);
    filter_cookies(&mut headers, &filter());
    assert_eq!(all(&headers, "cookie"), ["a=1; b=2; c=3"]);

    let mut headers = map(&[("cookie", "a=1"), ("cookie", "b=2")]);
    filter_cookies(&mut headers, &filter());
    assert_eq!(all(&headers, "cookie"), ["a=1; b=2"]);
}

#[test]
fn a_single_cookie_header_without_portcullis_cookies_is_untouched() {
    let raw = "a=1;b=2 ;  weird;=x";
    let mut headers = map(&[("cookie", raw)]);
    filter_cookies(&mut headers, &filter());
    assert_eq!(headers.get(COOKIE).unwrap(), raw);
}
