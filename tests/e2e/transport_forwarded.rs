//! Forwarded headers and Host: a client's `X-Forwarded-*` are replaced unless the
//! peer is a trusted proxy (then the chain is appended to); `Host` is the client's by
//! default and the upstream's with `preserve_host = false`; a request that names no
//! valid host gets 400 on every route and never reaches the upstream, nor does one whose
//! trusted proxy relayed an `X-Forwarded-Host` that names none.

use crate::common::h1::{self, h2_over};
use crate::common::*;
use http::{Request, Version};
use reqwest::header::ACCEPT;
use serde_json::Value;
use tokio::net::TcpStream;

/// GET `path` as the logged-in client with extra headers; the echo's report.
async fn seen_with(stack: &Stack, path: &str, headers: &[(&str, &str)]) -> EchoSeen {
    let mut req = stack.client.get(&stack.url(path)).header(ACCEPT, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    stack.client.send(req).await.echo()
}

/// A stack that trusts the test's own address as a proxy, signed in as john.
async fn signed_in_behind_a_trusted_proxy() -> Stack {
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_TRUSTED_PROXIES", "127.0.0.1/32")
        .start()
        .await;
    stack.login("john", "/").await;
    stack
}

const FORGED: [(&str, &str); 3] = [
    ("X-Forwarded-For", "203.0.113.9, 198.51.100.7"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "forged.example"),
];

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_peer_has_its_forwarded_headers_replaced() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;

    let seen = seen_with(&stack, "/fwd", &FORGED).await;
    assert_eq!(
        seen.values("x-forwarded-for"),
        ["127.0.0.1"],
        "the forged chain was believed"
    );
    assert_eq!(seen.values("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.values("x-forwarded-host"), [format!("localhost:{port}")]);
    assert!(seen.values("forwarded").is_empty(), "a client Forwarded header passed");

    let plain = seen_with(&stack, "/fwd", &[]).await;
    assert_eq!(plain.values("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_has_its_chain_appended_to_and_its_proto_and_host_kept() {
    let stack = signed_in_behind_a_trusted_proxy().await;
    let port = stack.portcullis.app.port;

    let seen = seen_with(&stack, "/fwd", &FORGED).await;
    assert_eq!(
        seen.values("x-forwarded-for").join(", "),
        "203.0.113.9, 198.51.100.7, 127.0.0.1",
        "a trusted peer's chain must be kept and the peer appended"
    );
    assert_eq!(
        seen.values("x-forwarded-proto"),
        ["https"],
        "a trusted proxy's proto is kept"
    );
    assert_eq!(
        seen.values("x-forwarded-host"),
        ["forged.example"],
        "a trusted proxy's host is kept"
    );

    // Without a chain from the trusted peer, the peer alone.
    let plain = seen_with(&stack, "/fwd", &[]).await;
    assert_eq!(plain.values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(plain.values("x-forwarded-proto"), ["http"]);
    assert_eq!(plain.values("x-forwarded-host"), [format!("localhost:{port}")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_relaying_an_x_forwarded_host_that_names_no_host_gets_400() {
    let stack = signed_in_behind_a_trusted_proxy().await;
    for relayed in [
        "public.example/../admin",
        "public.example, evil example",
        "user@public.example",
    ] {
        let req = stack
            .client
            .get(&stack.url("/fwd"))
            .header(ACCEPT, "application/json")
            .header("X-Forwarded-Host", relayed);
        let resp = stack.client.send(req).await;
        assert_status(&resp, 400);
        assert_eq!(resp.json()["error"], "invalid_host", "{relayed}: {}", resp.body);
        assert!(
            !resp.body.contains(relayed),
            "the page echoes {relayed:?}: {}",
            resp.body
        );
    }
    // A list of hosts goes on as the proxy sent it.
    let seen = seen_with(
        &stack,
        "/fwd",
        &[("X-Forwarded-Host", "public.example, edge.example:8443")],
    )
    .await;
    assert_eq!(seen.values("x-forwarded-host"), ["public.example, edge.example:8443"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_is_the_clients_by_default_and_the_upstreams_when_not_preserved() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;
    let seen = seen_with(&stack, "/host", &[]).await;
    assert_eq!(
        seen.values("host"),
        [format!("localhost:{port}")],
        "Host must be preserved by default"
    );

    let stack = Stack::builder()
        .env("PORTCULLIS_UPSTREAM_PRESERVE_HOST", "false")
        .start()
        .await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;
    let upstream_authority = stack.echo.url.trim_start_matches("http://").to_owned();
    let seen = seen_with(&stack, "/host", &[]).await;
    assert_eq!(
        seen.values("host"),
        [upstream_authority.as_str()],
        "with preserve_host=false the upstream's authority is the Host"
    );
    assert_eq!(
        seen.values("x-forwarded-host"),
        [format!("localhost:{port}")],
        "the client's Host is still told in X-Forwarded-Host"
    );
}

/// `GET target` as raw HTTP/1.1 with `lines` (Host lines included, or not) and the
/// session `cookie`, asking for JSON.
async fn raw_get_with(port: u16, target: &str, lines: &[&str], cookie: &str) -> RawResponse {
    let request_line = format!("GET {target} HTTP/1.1");
    let cookie = format!("Cookie: {SESSION_COOKIE}={cookie}");
    let mut head = vec![request_line.as_str()];
    head.extend_from_slice(lines);
    head.extend([cookie.as_str(), "Accept: application/json", "Connection: close"]);
    raw_request(port, &head).await
}

/// A 400 that says the host is invalid, and echoes nothing of what was sent.
#[track_caller]
fn assert_invalid_host(resp: &RawResponse, sent: &str) {
    assert_eq!(resp.status, 400, "{sent:?}: {resp:?}");
    let body: Value = serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{sent:?}: {e}: {resp:?}"));
    assert_eq!(body["error"], "invalid_host", "{sent:?}: {body}");
    assert!(
        !resp.body_text().contains("evil"),
        "{sent:?}: the value came back: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_names_no_valid_host_gets_400_on_every_route_and_never_reaches_the_upstream() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;
    let cookie = stack.session_cookie().expect("session cookie");
    let good = format!("Host: localhost:{port}");
    let refused: [&[&str]; 10] = [
        &["Host: evil.example bad"],
        &["Host: evil.example/path"],
        &["Host: evil.example@localhost"],
        &["Host: localhost, evil.example"],
        &["Host: evil.example;x=1"],
        &["Host: ..evil.example"],
        &["Host: evil.example:80:80"],
        &[&good, "Host: evil.example"],
        &[&good, &good],
        &[],
    ];
    for lines in refused {
        let sent = lines.join(" | ");
        assert_invalid_host(&raw_get_with(port, "/bad-host", lines, &cookie).await, &sent);
        // Portcullis' own routes too, and a refused login is not started.
        assert_invalid_host(&raw_get_with(port, "/.auth/healthz", lines, &cookie).await, &sent);
        assert_invalid_host(&raw_get_with(port, "/.auth/login?rd=/x", lines, "").await, &sent);
    }
    assert_eq!(
        stack.idp.stats().await.par,
        1,
        "only the test's own login reached the provider"
    );
    let received = stack.echo.received().await;
    assert!(
        received.iter().all(|r| !r.contains("/bad-host")),
        "a request without a valid host reached the upstream: {received:#?}"
    );

    // A target in authority form (CONNECT's) names a host and no path: no request to forward.
    let resp = raw_get_with(port, &format!("localhost:{port}"), &[&good], &cookie).await;
    assert_eq!(resp.status, 400, "{resp:?}");
    let body: Value = serde_json::from_slice(&resp.body).expect("JSON");
    assert_eq!(body["error"], "invalid_host", "{body}");
    assert_eq!(
        stack.echo.received().await.len(),
        received.len(),
        "it reached the upstream"
    );

    // The same request with one valid Host goes through.
    let resp = raw_get_with(port, "/good-host", &[&good], &cookie).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen: EchoSeen = serde_json::from_slice(&resp.body).expect("echo JSON");
    assert_eq!(seen.values("host"), [format!("localhost:{port}")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absolute_form_target_names_the_host_and_http_1_0_may_name_none() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;
    let cookie = stack.session_cookie().expect("session cookie");

    // RFC 9112 §3.2.2: the target's authority replaces Host, whatever Host said.
    let target = "http://App.Example.test:8080/abs?q=1";
    let resp = raw_get_with(port, target, &["Host: evil.example"], &cookie).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen: EchoSeen = serde_json::from_slice(&resp.body).expect("echo JSON");
    assert_eq!(seen.url, "/abs?q=1");
    assert_eq!(seen.values("host"), ["App.Example.test:8080"]);
    assert_eq!(seen.values("x-forwarded-host"), ["App.Example.test:8080"]);
    // User information in the target is refused as in Host.
    let target = "http://evil.example@app.example.test/abs";
    assert_invalid_host(
        &raw_get_with(port, target, &["Host: app.example.test"], &cookie).await,
        target,
    );

    let head = [
        "GET /old HTTP/1.0".to_owned(),
        format!("Cookie: {SESSION_COOKIE}={cookie}"),
        "Accept: application/json".to_owned(),
    ];
    let resp = raw_request(port, &head.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen: EchoSeen = serde_json::from_slice(&resp.body).expect("echo JSON");
    let upstream_authority = stack.echo.url.trim_start_matches("http://");
    assert_eq!(
        seen.values("host"),
        [upstream_authority],
        "no client host: the upstream's"
    );
    assert!(seen.values("x-forwarded-host").is_empty(), "{:?}", seen.raw_headers);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_http2_a_host_header_must_name_the_authority() {
    let stack = Stack::builder().env("PORTCULLIS_SERVER_H2C", "true").start().await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;
    let cookie = format!("{SESSION_COOKIE}={}", stack.session_cookie().expect("session cookie"));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let send = h2_over(tcp).await.expect("h2c handshake");
    let get = |host: Option<&str>| {
        let mut send = send.clone();
        let mut request = Request::get(format!("http://localhost:{port}/h2-host"))
            .header("cookie", &cookie)
            .header("accept", "application/json");
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let request = request.body(h1::empty()).expect("request");
        async move {
            let resp = send.send_request(request).await.expect("h2 response");
            assert_eq!(resp.version(), Version::HTTP_2);
            let status = resp.status();
            (status, h1::text(resp).await.expect("body"))
        }
    };

    for host in [None, Some(format!("LOCALHOST:{port}"))] {
        let (status, body) = get(host.as_deref()).await;
        assert_eq!(status, 200, "Host {host:?}: {body}");
        let seen: EchoSeen = serde_json::from_str(&body).expect("echo JSON");
        assert_eq!(
            seen.values("host"),
            [format!("localhost:{port}")],
            "the :authority is sent"
        );
    }
    for host in [
        "evil.example".to_owned(),
        format!("localhost:{}", port + 1),
        "a b".to_owned(),
    ] {
        let (status, body) = get(Some(&host)).await;
        assert_eq!(status, 400, "Host {host:?}: {body}");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["error"], "invalid_host");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_started_under_a_foreign_host_still_returns_to_the_configured_base_url() {
    let stack = Stack::start().await;
    let port = stack.portcullis.app.port;
    let resp = raw_request(
        port,
        &[
            "GET /.auth/login?rd=/x HTTP/1.1",
            "Host: evil.example:8443",
            "Accept: text/html",
            "Connection: close",
        ],
    )
    .await;
    assert_eq!(resp.status, 302, "{resp:?}");
    let location = resp.header("location").expect("a Location");
    assert!(
        location.starts_with(stack.idp.issuer_url().as_str().trim_end_matches('/')),
        "not sent to the provider: {location}"
    );
    assert!(!location.contains("evil"), "{location}");
    // The provider accepts only the redirect URI registered for the base URL, and it
    // took this login's (sent in the pushed request, not in the Location).
    assert_eq!(stack.idp.stats().await.par, 1);
}
