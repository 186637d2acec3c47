//! https upstreams: verified against a configured CA file (refused otherwise), the
//! name sent as SNI and checked in the certificate configurable, HTTP/2 by ALPN.

use std::time::Duration;

use crate::common::tls::TestPki;
use crate::common::upstream::RustUpstream;
use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_https_upstream_is_trusted_through_the_configured_ca_file_and_refused_without_it() {
    let pki = TestPki::new();
    let cert = pki.issue("upstream", 11);
    let upstream = RustUpstream::start_tls(cert.server_config(&[b"http/1.1"])).await;

    let stack = Stack::builder()
        .upstream(&upstream.url)
        .env("PORTCULLIS_UPSTREAM_CA_FILE", pki.ca_pem_path().display().to_string())
        .start()
        .await;
    stack.login("john", "/").await;
    let resp = stack.client.api_get(&stack.url("/over-tls")).await;
    assert_status(&resp, 200);
    assert_eq!(resp.body, "upstream page /over-tls");

    // The same upstream without the CA: its certificate is not trusted.
    let hits_before = upstream.hits("/over-tls");
    let untrusting = Stack::builder().upstream(&upstream.url).start().await;
    let trace = untrusting
        .client
        .login(&untrusting.url("/over-tls"), "john", PASSWORD)
        .await;
    assert_status(trace.landing(), 502);
    assert_eq!(
        upstream.hits("/over-tls"),
        hits_before,
        "a request went to an untrusted upstream"
    );
    // The upstream records the refused handshake when its side of it fails, which can
    // come after portcullis has already answered 502.
    eventually(
        "the upstream to see a refused handshake (was TLS used at all?)",
        Duration::from_secs(3),
        || async { (!upstream.tls_failures().is_empty()).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_tls_server_name_is_sent_as_sni_and_checked_in_its_certificate() {
    let pki = TestPki::new();
    let cert = pki.issue_for(&["app.internal"], "app.internal", 12);
    let upstream = RustUpstream::start_tls(cert.server_config(&[b"http/1.1"])).await;
    let ca = pki.ca_pem_path().display().to_string();

    let stack = Stack::builder()
        .upstream(&upstream.url)
        .env("PORTCULLIS_UPSTREAM_CA_FILE", ca.clone())
        .env("PORTCULLIS_UPSTREAM_TLS_SERVER_NAME", "app.internal")
        .start()
        .await;
    stack.login("john", "/").await;
    let resp = stack.client.api_get(&stack.url("/by-name")).await;
    assert_status(&resp, 200);
    assert!(
        upstream.snis().iter().all(|s| s.as_deref() == Some("app.internal")) && !upstream.snis().is_empty(),
        "SNI sent: {:?}",
        upstream.snis()
    );

    // Without the name, 127.0.0.1 does not match a certificate for app.internal.
    let unnamed = Stack::builder()
        .upstream(&upstream.url)
        .env("PORTCULLIS_UPSTREAM_CA_FILE", ca)
        .start()
        .await;
    let trace = unnamed
        .client
        .login(&unnamed.url("/by-address"), "john", PASSWORD)
        .await;
    assert_status(trace.landing(), 502);
    assert_eq!(upstream.hits("/by-address"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_upstream_is_spoken_to_in_http_2_by_alpn_when_configured() {
    let pki = TestPki::new();
    let cert = pki.issue("upstream", 13);
    let upstream = RustUpstream::start_tls(cert.server_config(&[b"h2", b"http/1.1"])).await;
    let stack = Stack::builder()
        .upstream(&upstream.url)
        .env("PORTCULLIS_UPSTREAM_CA_FILE", pki.ca_pem_path().display().to_string())
        .env("PORTCULLIS_UPSTREAM_HTTP2", "true")
        .start()
        .await;
    stack.login("john", "/").await;
    let resp = stack.client.api_get(&stack.url("/grpc-ish")).await;
    assert_status(&resp, 200);
    assert_eq!(upstream.versions().last().map(String::as_str), Some("HTTP/2.0"));
}
