//! Forwarded headers and Host: a client's `X-Forwarded-*` are replaced unless the
//! peer is a trusted proxy (then the chain is appended to); `Host` is the client's by
//! default and the upstream's with `preserve_host = false`.

mod common;

use common::*;
use reqwest::header::ACCEPT;

/// GET `path` as the logged-in client with extra headers; the echo's report.
async fn seen_with(stack: &Stack, path: &str, headers: &[(&str, &str)]) -> EchoSeen {
    let mut req = stack.client.get(&stack.url(path)).header(ACCEPT, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    stack.client.send(req).await.echo()
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
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_TRUSTED_PROXIES", "127.0.0.1/32")
        .start()
        .await;
    stack.login("john", "/").await;
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
