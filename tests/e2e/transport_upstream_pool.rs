//! Upstream connections: a downstream connection keeps the one it uses while it sends
//! requests, and gives it to the shared pool once it has been quiet for a second (a
//! browser between clicks), so that the upstream connections held open follow the
//! clients being served, not those merely connected.

use std::time::Duration;

use crate::common::h1::{self, h1_connect, h2_over};
use crate::common::upstream::{RustUpstream, TestBody};
use crate::common::*;

/// A stack whose `/public/` pages need no login, with h2c on.
async fn public_stack(upstream: &RustUpstream) -> Stack {
    Stack::builder()
        .upstream(upstream.url.clone())
        .env("PORTCULLIS_POLICY_PUBLIC_PATHS", "/public/")
        .env("PORTCULLIS_SERVER_H2C", "true")
        .start()
        .await
}

/// GETs `/public/<name>` on the connection `send`.
async fn page(send: &mut hyper::client::conn::http1::SendRequest<TestBody>, port: u16, name: &str) {
    let path = format!("/public{name}");
    let path = path.as_str();
    send.ready().await.expect("connection still open");
    let resp = send.send_request(h1::get(port, path, "x=1")).await.expect("a response");
    assert_eq!(resp.status(), 200);
    assert!(h1::text(resp).await.expect("body").contains(path));
}

/// 2.5 s on (the release comes a second after the last answer; the rest is room for a
/// loaded machine), a new client's request goes out on the one upstream connection so
/// far (the quiet client's); the new client's connection, kept open.
async fn after_a_pause_a_new_client_reuses_the_connection(
    port: u16,
    upstream: &RustUpstream,
) -> hyper::client::conn::http1::SendRequest<TestBody> {
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut other = h1_connect(port).await;
    page(&mut other, port, "/other").await;
    assert_eq!(
        upstream.connections(),
        1,
        "the quiet client's upstream connection was reused"
    );
    other
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_client_connection_lends_its_upstream_connection_to_the_next_client() {
    let upstream = RustUpstream::start().await;
    let stack = public_stack(&upstream).await;
    let port = stack.portcullis.app.port;

    let mut reader = h1_connect(port).await;
    page(&mut reader, port, "/first").await;
    assert_eq!(upstream.connections(), 1);
    // The reader pauses (its connection stays open); another client comes.
    let _other = after_a_pause_a_new_client_reuses_the_connection(port, &upstream).await;
    // The reader's next click is served too: on a new connection, as the other client
    // keeps the one it has just used.
    page(&mut reader, port, "/second").await;
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_sending_requests_keeps_its_upstream_connection() {
    let upstream = RustUpstream::start().await;
    let stack = public_stack(&upstream).await;
    let port = stack.portcullis.app.port;

    let mut busy = h1_connect(port).await;
    for n in 0..15 {
        page(&mut busy, port, &format!("/busy/{n}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(upstream.connections(), 1, "one connection for all its requests");
    let mut other = h1_connect(port).await;
    page(&mut other, port, "/other").await;
    assert_eq!(
        upstream.connections(),
        2,
        "the busy client's connection was not handed on"
    );
    page(&mut busy, port, "/busy/again").await;
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_http2_connection_lends_its_upstream_connection_too() {
    let upstream = RustUpstream::start().await;
    let stack = public_stack(&upstream).await;
    let port = stack.portcullis.app.port;

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut h2 = h2_over(tcp).await.expect("h2c handshake");
    let request = http::Request::get(format!("http://localhost:{port}/public/h2"))
        .body(h1::empty())
        .expect("request");
    let resp = h2.send_request(request).await.expect("a response");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert!(h1::text(resp).await.expect("body").contains("/public/h2"));
    assert_eq!(upstream.connections(), 1);
    after_a_pause_a_new_client_reuses_the_connection(port, &upstream).await;
}
