//! The `Cookie` headers of a request, as the session phase and the login routes read
//! them. Whatever a client sends: a session id is found only as the canonical value of
//! the session cookie; a pending-login cookie never opens unless portcullis sealed it;
//! pruning only ever clears pending-login cookies the request carried; and a login
//! sealed for any `state` opens again with that state and the same contents.
#![no_main]

mod common;

use std::sync::LazyLock;
use std::time::SystemTime;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::oidc::PendingAuth;
use portcullis::session::cookies::{CookieCodec, PendingLogin};

struct Fixture {
    codec: CookieCodec,
    session_cookie: String,
    login_prefix: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let session = common::config(&[]).session;
    Fixture {
        codec: CookieCodec::new(&session),
        session_cookie: session.cookie_name.clone(),
        login_prefix: session.login_cookie_prefix.clone(),
    }
});

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    let codec = &fixture.codec;
    let now = SystemTime::now();

    // Several `Cookie` headers (HTTP/2 sends one per cookie), split at 0xFF, which no
    // header value can hold; values hyper would refuse are left out.
    let mut headers = HeaderMap::new();
    for part in data.split(|&b| b == 0xFF) {
        if let Ok(value) = HeaderValue::from_bytes(part) {
            headers.append(COOKIE, value);
        }
    }
    let sent: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();

    if let Some(id) = codec.session_id(&headers) {
        let canonical = format!("{}={}", fixture.session_cookie, id.cookie_value());
        let quoted = format!("{}=\"{}\"", fixture.session_cookie, id.cookie_value());
        assert!(
            sent.iter().any(|v| v.contains(&canonical) || v.contains(&quoted)),
            "a session id was read that the request does not carry canonically"
        );
        assert!(codec.has_session_cookie(&headers));
    }

    let state = String::from_utf8_lossy(data);
    assert!(
        codec.open_login(&headers, &state, now).is_none(),
        "a pending-login cookie opened that portcullis never sealed"
    );
    for cleared in codec.prune_logins(&headers, now) {
        let cleared = cleared.to_str().expect("a clearing cookie is ASCII");
        let name = cleared.split('=').next().unwrap_or_default();
        assert!(name.starts_with(&fixture.login_prefix), "pruning cleared {name:?}");
        assert!(
            sent.iter().any(|v| v.contains(name)),
            "pruning cleared {name:?}, never sent"
        );
        assert!(cleared.contains("Max-Age=0"));
    }

    let pending = PendingLogin {
        auth: PendingAuth {
            state: state.clone().into_owned(),
            nonce: "n".repeat(43),
            pkce_verifier: "v".repeat(43),
        },
        return_to: "/after/login".to_owned(),
        started_at: portcullis::session::cookies::unix_seconds(now),
    };
    let sealed = codec.seal_login(&pending).expect("any state can be sealed");
    let pair = sealed
        .to_str()
        .expect("a sealed cookie is ASCII")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut returned = HeaderMap::new();
    returned.insert(
        COOKIE,
        HeaderValue::from_str(&pair).expect("the browser sends back what it got"),
    );
    let opened = codec
        .open_login(&returned, &state, now)
        .expect("a sealed login opens with its state");
    assert!(opened.auth == pending.auth && opened.return_to == pending.return_to);
});
