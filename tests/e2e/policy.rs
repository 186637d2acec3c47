//! The access policy against the real binary, the test provider and the echo upstream:
//! public paths reach the upstream without a session and without identity; paths that
//! only look public (dot segments, `//`, `;`, `\`, escapes) need a session and never
//! reach the upstream without one; users outside `allowed_groups` or
//! `allowed_email_domains` get 403 and reach nothing, while `/.auth/me` and logout stay
//! open to them.

use std::time::Duration;

use crate::common::upstream::RustUpstream;
use crate::common::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use url::Url;

const PUBLIC_PATHS: &str = "/public/ /robots.txt";

/// The stack with `/public/` (prefix) and `/robots.txt` (exact) public.
async fn public_stack() -> Stack {
    Stack::builder()
        .env("PORTCULLIS_POLICY_PUBLIC_PATHS", PUBLIC_PATHS)
        .start()
        .await
}

/// How a raw request presents itself.
#[derive(Debug, Clone, Copy)]
enum Caller {
    /// A top-level navigation (`Accept: text/html`, `Sec-Fetch-Mode: navigate`).
    Browser,
    /// An API call (`Accept: application/json`).
    Api,
}

/// `GET <target>` sent byte for byte (an HTTP library would normalise the tricks
/// away), with `extra` header lines.
async fn raw_get(stack: &Stack, target: &str, caller: Caller, extra: &[&str]) -> RawResponse {
    let port = stack.portcullis.app.port;
    let request_line = format!("GET {target} HTTP/1.1");
    let host = format!("Host: localhost:{port}");
    let mut head: Vec<&str> = vec![&request_line, &host, "Connection: close"];
    match caller {
        Caller::Browser => head.extend([
            "Accept: text/html,application/xhtml+xml,*/*;q=0.8",
            "Sec-Fetch-Mode: navigate",
        ]),
        Caller::Api => head.push("Accept: application/json"),
    }
    head.extend_from_slice(extra);
    raw_request(port, &head).await
}

/// Browsers are sent to the provider's login, anything else gets 401 naming the login.
#[track_caller]
fn assert_raw_needs_login(resp: &RawResponse, caller: Caller, idp: &Idp, target: &str) {
    match caller {
        Caller::Browser => {
            assert_eq!(
                resp.status,
                302,
                "{target:?} as a browser: expected the login redirect, got {}: {}",
                resp.status,
                resp.body_text()
            );
            let location = resp
                .header("location")
                .and_then(|l| Url::parse(l).ok())
                .unwrap_or_else(|| panic!("{target:?}: a redirect without an absolute Location: {resp:?}"));
            let issuer = idp.issuer_url();
            assert_eq!(
                (location.host_str(), location.port()),
                (issuer.host_str(), issuer.port()),
                "{target:?}: the redirect does not go to the provider: {location}"
            );
            assert!(
                location.path().ends_with("/authorization"),
                "{target:?}: not the authorization endpoint: {location}"
            );
        }
        Caller::Api => {
            assert_eq!(
                resp.status,
                401,
                "{target:?} as an API call: expected 401, got {}: {}",
                resp.status,
                resp.body_text()
            );
            let json: Value = serde_json::from_slice(&resp.body)
                .unwrap_or_else(|e| panic!("{target:?}: the 401 body is not JSON ({e}): {}", resp.body_text()));
            assert_eq!(json["error"], "unauthenticated", "{json}");
            assert!(
                json["login_url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("/.auth/login")),
                "{json}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_path_reaches_the_upstream_without_a_session_and_without_identity() {
    let stack = public_stack().await;

    // Spoofed identity headers in every spelling, as raw bytes so they keep their case.
    let spoofed = [
        "Remote-User: evil",
        "remote_user: evil",
        "REMOTE-GROUPS: admins",
        "Remote_Groups: admins",
        "remote-email: evil@evil.example",
        "REMOTE_NAME: Evil",
    ];
    for caller in [Caller::Browser, Caller::Api] {
        let resp = raw_get(&stack, "/public/hello.css?v=1", caller, &spoofed).await;
        assert_eq!(resp.status, 200, "{caller:?}: {}", resp.body_text());
    }
    let resp = raw_get(&stack, "/public/hello.css?v=1", Caller::Api, &spoofed).await;
    let seen: EchoSeen = serde_json::from_slice(&resp.body).expect("echo JSON");
    assert_eq!(seen.url, "/public/hello.css?v=1");
    assert!(
        seen.identity_headers().is_empty(),
        "identity headers reached the upstream on a public path: {:?}",
        seen.raw_headers
    );
    assert!(
        seen.headers.contains_key("x-forwarded-for"),
        "a public request is still proxied like any other: {:?}",
        seen.headers
    );

    // The exact entry, any method, and the prefix itself.
    let post = stack
        .client
        .send(
            stack
                .client
                .post(&stack.url("/public/form"))
                .header("accept", "application/json")
                .body("a=b"),
        )
        .await;
    assert_eq!(post.echo().method, "POST");
    assert_eq!(
        stack.client.api_get(&stack.url("/robots.txt")).await.echo().url,
        "/robots.txt"
    );
    assert_eq!(
        stack.client.api_get(&stack.url("/public/")).await.echo().url,
        "/public/"
    );
    let landing = stack.client.navigate(&stack.url("/public/page")).await;
    assert_status(&landing, 200);
    assert!(
        stack.client.cookie_names(&stack.base_url()).is_empty(),
        "a public page handed out cookies: {:?}",
        landing.headers
    );

    // No login was started for any of it.
    assert_eq!(stack.idp.stats().await.par, 0);
    assert_eq!(
        stack.echo.received().await,
        [
            "GET /public/hello.css?v=1",
            "GET /public/hello.css?v=1",
            "GET /public/hello.css?v=1",
            "POST /public/form",
            "GET /robots.txt",
            "GET /public/",
            "GET /public/page",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_not_listed_still_needs_a_session() {
    let stack = public_stack().await;
    for target in ["/public", "/publicity", "/robots.txt/x", "/admin", "/"] {
        for caller in [Caller::Browser, Caller::Api] {
            let resp = raw_get(&stack, target, caller, &[]).await;
            assert_raw_needs_login(&resp, caller, &stack.idp, target);
        }
    }
    let received = stack.echo.received().await;
    assert!(received.is_empty(), "reached the upstream: {received:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_that_only_look_public_need_a_session_and_never_reach_the_upstream() {
    let stack = public_stack().await;
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%252e%252e/admin",
        "/public//x",
        "//public/x",
        "/public;x/",
        "/public/..;/admin",
        "/public/x;jsessionid=1",
        "/public%2fx",
        "/public%2Fx",
        "/public%5cx",
        "/public\\x",
        "/public/\\..\\admin",
        "/publi%63/x",
        "/PUBLIC/x",
        "/Public/x",
        "/robots.txt;.css",
        "/robots%2etxt",
    ] {
        for caller in [Caller::Browser, Caller::Api] {
            let resp = raw_get(&stack, target, caller, &["Remote-User: admin"]).await;
            assert_raw_needs_login(&resp, caller, &stack.idp, target);
        }
    }
    let received = stack.echo.received().await;
    assert!(
        received.is_empty(),
        "a disguised path reached the upstream: {received:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_path_ignores_a_valid_session_and_a_protected_one_still_uses_it() {
    let stack = public_stack().await;
    stack.login("john", "/").await;
    let session = stack.session_cookie().expect("a session after login");
    let cookie = format!("Cookie: {SESSION_COOKIE}={session}; theme=dark");

    let public = raw_get(&stack, "/public/x", Caller::Api, &[&cookie]).await;
    assert_eq!(public.status, 200, "{}", public.body_text());
    let seen: EchoSeen = serde_json::from_slice(&public.body).expect("echo JSON");
    assert!(
        seen.identity_headers().is_empty(),
        "a public path got identity headers: {:?}",
        seen.raw_headers
    );
    assert_eq!(
        seen.cookies(),
        [("theme".to_owned(), "dark".to_owned())],
        "the session cookie leaked upstream"
    );

    let protected = raw_get(&stack, "/private", Caller::Api, &[&cookie]).await;
    let seen: EchoSeen = serde_json::from_slice(&protected.body).expect("echo JSON");
    assert_eq!(seen.values("remote-user"), ["john"]);
    // Disguised public paths are ordinary protected paths for a signed-in user.
    let disguised = raw_get(&stack, "/public/..;/private", Caller::Api, &[&cookie]).await;
    let seen: EchoSeen = serde_json::from_slice(&disguised.body).expect("echo JSON");
    assert_eq!(seen.url, "/public/..;/private", "forwarded unchanged");
    assert_eq!(seen.values("remote-user"), ["john"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unauthenticated_websocket_upgrade_on_a_public_path_passes() {
    let upstream = RustUpstream::start().await;
    let stack = Stack::builder()
        .upstream(&upstream.url)
        .env("PORTCULLIS_POLICY_PUBLIC_PATHS", "/ws")
        .start()
        .await;
    let port = stack.portcullis.app.port;
    let key = ws::random_key();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let extra = [
        format!("Origin: http://localhost:{port}"),
        "Remote-User: evil".to_owned(),
    ];
    let request = ws::handshake_request("/ws", &format!("localhost:{port}"), &key, &extra);
    tcp.write_all(request.as_bytes()).await.expect("write handshake");
    let deadline = Duration::from_secs(10);
    let (status, headers) = tokio::time::timeout(deadline, ws::read_head(&mut tcp))
        .await
        .expect("handshake answered in time")
        .expect("handshake answer");
    assert_eq!(status, 101, "{headers:?}");
    let greeting = tokio::time::timeout(deadline, ws::read_frame(&mut tcp))
        .await
        .expect("a frame in time")
        .expect("a frame");
    assert_eq!(greeting, (ws::TEXT, b"hello from upstream".to_vec()));

    let heads = upstream.heads();
    let (_, _, ws_headers) = heads.iter().find(|(_, p, _)| p == "/ws").expect("the /ws head");
    assert!(
        !ws_headers.iter().any(|(name, _)| name.starts_with("remote")),
        "identity headers on an anonymous upgrade: {ws_headers:?}"
    );
}

// ---- allowed groups ------------------------------------------------------------------

/// The 403 page: HTML for a browser, with a way to sign out and nothing that says
/// which rule failed.
#[track_caller]
fn assert_forbidden_page(resp: &Resp) {
    assert_status(resp, 403);
    assert_html_page(resp);
    assert_mentions(resp, "Access denied");
    assert!(
        resp.body.contains("href=\"/.auth/logout\""),
        "no way to sign out:\n{}",
        resp.body
    );
    for detail in ["group", "email", "domain", "verified"] {
        assert!(
            !resp.body.to_ascii_lowercase().contains(detail),
            "the 403 page says why ({detail}):\n{}",
            resp.body
        );
    }
}

#[track_caller]
fn assert_forbidden_json(resp: &Resp) {
    assert_status(resp, 403);
    assert!(resp.content_type().starts_with("application/json"), "{}", resp.body);
    let json = resp.json();
    assert_eq!(json["error"], "forbidden", "{json}");
    assert_eq!(json["logout_url"], "/.auth/logout", "{json}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_outside_the_allowed_groups_gets_403_and_reaches_nothing() {
    let stack = Stack::builder()
        .env("PORTCULLIS_POLICY_ALLOWED_GROUPS", "admins,ops")
        .env("PORTCULLIS_POLICY_PUBLIC_PATHS", "/public/")
        .start()
        .await;

    // harry is in `dev` only: the login works, the app does not.
    let trace = stack
        .client
        .login(&stack.url("/reports?year=2026"), "harry", PASSWORD)
        .await;
    assert_eq!(
        trace.landing().url.as_str(),
        stack.url("/reports?year=2026"),
        "{}",
        trace.describe()
    );
    assert_forbidden_page(trace.landing());
    assert_forbidden_json(&stack.client.api_get(&stack.url("/reports")).await);
    let post = stack
        .client
        .send(
            stack
                .client
                .post(&stack.url("/reports"))
                .header("accept", "application/json"),
        )
        .await;
    assert_forbidden_json(&post);
    assert!(
        stack.echo.received().await.is_empty(),
        "a refused user reached the upstream"
    );

    // Public paths are public to him too (no identity), and he can see who he is.
    let public = stack.client.api_get(&stack.url("/public/x")).await.echo();
    assert!(public.identity_headers().is_empty(), "{:?}", public.raw_headers);
    let me = stack.client.me_json(&stack.base_url()).await;
    assert_eq!(me["claims"]["preferred_username"], "harry", "{me}");

    // The refusal is logged with who and where, without the query or any token.
    let sub = me["claims"]["sub"].as_str().expect("sub").to_owned();
    let access_token = me["accessToken"].as_str().expect("accessToken").to_owned();
    let log = eventually("the refusal in portcullis' log", Duration::from_secs(10), || {
        let log = stack.portcullis.log_text();
        let found = log.contains("access denied by policy");
        async move { found.then_some(log) }
    })
    .await;
    let line = log
        .lines()
        .find(|l| l.contains("access denied by policy") && l.contains("/reports"))
        .unwrap_or_else(|| panic!("no refusal line for /reports:\n{log}"));
    assert!(line.contains("INFO"), "not logged at info: {line}");
    assert!(line.contains(&sub), "the subject is not in the line: {line}");
    assert!(line.contains("allowed_groups"), "the reason is not in the line: {line}");
    assert!(!line.contains("year=2026"), "the query was logged: {line}");
    assert!(!log.contains(&access_token), "a token was logged");

    // And he can sign out.
    let out = stack.client.navigate(&stack.url("/.auth/logout")).await;
    assert_status(&out, 200);
    assert!(
        stack.session_cookie().is_none(),
        "the session cookie survived the logout"
    );
    assert_raw_needs_login(
        &raw_get(&stack, "/reports", Caller::Api, &[]).await,
        Caller::Api,
        &stack.idp,
        "/reports",
    );

    // john is in `admins`: through, with his identity.
    let john = stack.client.fresh();
    let trace = john.login(&stack.url("/reports"), "john", PASSWORD).await;
    assert_status(trace.landing(), 200);
    let seen = john.api_get(&stack.url("/reports")).await.echo();
    assert_eq!(seen.values("remote-user"), ["john"]);
    assert_eq!(seen.values("remote-groups"), ["admins,dev"]);
}

// ---- allowed email domains ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_email_domain_rule_admits_its_domain_and_refuses_others() {
    let stack = Stack::builder()
        .env("PORTCULLIS_POLICY_ALLOWED_EMAIL_DOMAINS", "EXAMPLE.com")
        .start()
        .await;

    // john@example.com, verified.
    stack.login("john", "/inbox").await;
    let seen = stack.client.api_get(&stack.url("/inbox")).await.echo();
    assert_eq!(seen.values("remote-email"), ["john@example.com"]);

    // carol@example.org.
    let carol = stack.client.fresh();
    let trace = carol.login(&stack.url("/inbox"), "carol", PASSWORD).await;
    assert_forbidden_page(trace.landing());
    assert_forbidden_json(&carol.api_get(&stack.url("/inbox")).await);
    assert_eq!(
        stack.echo.received().await,
        ["GET /inbox", "GET /inbox"],
        "only john's requests may reach the upstream"
    );
    let log = stack.portcullis.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("access denied by policy")
                && l.contains("email domain not in policy.allowed_email_domains")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unverified_email_is_refused_even_in_an_allowed_domain() {
    let stack = Stack::builder()
        .env("PORTCULLIS_POLICY_ALLOWED_EMAIL_DOMAINS", "example.org")
        .start()
        .await;

    // carol@example.org, but `email_verified: false`.
    let trace = stack.client.login(&stack.url("/"), "carol", PASSWORD).await;
    assert_forbidden_page(trace.landing());
    // john is verified, but at example.com.
    let john = stack.client.fresh();
    let trace = john.login(&stack.url("/"), "john", PASSWORD).await;
    assert_forbidden_page(trace.landing());

    assert!(
        stack.echo.received().await.is_empty(),
        "a refused user reached the upstream"
    );
    let log = stack.portcullis.log_text();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("access denied by policy")).collect();
    assert!(
        refusals.iter().any(|l| l.contains("email_verified is not true")),
        "{refusals:#?}"
    );
    assert!(
        refusals.iter().any(|l| l.contains("email domain not in")),
        "{refusals:#?}"
    );
}
