//! The upstream transport options: `Host`, trusted proxies, upstream TLS (CA file,
//! server name), HTTP/2 (h2c and h2 by ALPN).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::header::{CONNECTION, HOST, UPGRADE};
use ipnet::IpNet;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::NamedTempFile;
use url::Url;

use super::support::*;
use super::LONG;
use crate::config::UpstreamTarget;
use crate::proxy::ProxyError;

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

/// The upstream's view of `request` (sent without a body).
async fn seen_through(request: http::request::Builder) -> Seen {
    Seen::from(client().request(request.body(empty()).unwrap()).await.unwrap()).await
}

#[tokio::test]
async fn host_is_the_clients_or_the_upstream_authority() {
    let upstream_addr = tcp_upstream().await;
    let preserving = front(upstream(http_target(upstream_addr, ""), LONG)).await;
    let seen = seen_through(get(preserving, "/x").header(HOST, "app.example.test")).await;
    assert_eq!(seen.all("host"), ["app.example.test"]);
    assert_eq!(seen.all("x-forwarded-host"), ["app.example.test"]);

    let mut config = upstream_config(http_target(upstream_addr, ""), LONG);
    config.preserve_host = false;
    let replacing = front(Arc::new(build_upstream(&config, &[]).unwrap())).await;
    let seen = seen_through(get(replacing, "/x").header(HOST, "app.example.test")).await;
    assert_eq!(seen.all("host"), [upstream_addr.to_string()]);
    assert_eq!(seen.all("x-forwarded-host"), ["app.example.test"]);
}

/// A request as a trusted proxy in front of portcullis would relay it, with spoofed
/// identity headers on top.
fn relayed_request(front: SocketAddr) -> http::request::Builder {
    get(front, "/x")
        .header(HOST, "internal.example")
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "public.example")
        .header("X_Forwarded_For", "7.7.7.7")
        .header("remote-user", "mallory")
        .header("Remote_User", "mallory")
}

#[tokio::test]
async fn trusted_peer_chain_is_appended_to_and_identity_still_stripped() {
    let upstream_addr = tcp_upstream().await;
    let config = upstream_config(http_target(upstream_addr, ""), LONG);
    let upstream = Arc::new(build_upstream(&config, &nets(&["127.0.0.0/8", "::1/128"])).unwrap());
    let front = front(upstream).await;
    let seen = seen_through(relayed_request(front)).await;
    assert_eq!(seen.all("x-forwarded-for"), ["6.6.6.6, 203.0.113.9, 127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), ["https"]);
    assert_eq!(seen.all("x-forwarded-host"), ["public.example"]);
    assert_eq!(seen.all("remote-user"), ["alice"]);
    assert_eq!(seen.all("host"), ["internal.example"]);
}

#[tokio::test]
async fn trusted_peer_relaying_a_forwarded_host_that_names_no_host_is_refused_before_the_upstream() {
    let upstream_addr = tcp_upstream().await;
    let config = upstream_config(http_target(upstream_addr, ""), LONG);
    let upstream = Arc::new(build_upstream(&config, &nets(&["127.0.0.0/8", "::1/128"])).unwrap());
    let front = front(upstream).await;
    for relayed in ["public.example/../admin", "user@public.example", "public.example, a b"] {
        let request = get(front, "/x")
            .header(HOST, "internal.example")
            .header("x-forwarded-host", relayed)
            .body(empty())
            .unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(proxy_error(&response), "invalid-forwarded-host", "{relayed}");
    }
    // A list of hosts, as Apache's mod_proxy appends to it, goes on as sent.
    let seen = seen_through(relayed_request(front).header("x-forwarded-host", "edge.example:8443")).await;
    assert_eq!(seen.all("x-forwarded-host"), ["public.example", "edge.example:8443"]);
}

#[tokio::test]
async fn untrusted_peer_chain_is_replaced() {
    let upstream_addr = tcp_upstream().await;
    let config = upstream_config(http_target(upstream_addr, ""), LONG);
    let upstream = Arc::new(build_upstream(&config, &nets(&["10.0.0.0/8"])).unwrap());
    let front = front(upstream).await;
    let seen = seen_through(relayed_request(front)).await;
    assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.all("x-forwarded-host"), ["internal.example"]);
    assert_eq!(seen.all("remote-user"), ["alice"]);
}

#[test]
fn upstream_client_ip_uses_the_configured_trusted_proxies() {
    let config = upstream_config(http_target("127.0.0.1:1".parse().unwrap(), ""), LONG);
    let upstream = build_upstream(&config, &nets(&["10.0.0.0/8"])).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-forwarded-for", "6.6.6.6, 198.51.100.7".parse().unwrap());
    assert_eq!(
        upstream.client_ip("10.0.0.1".parse().unwrap(), &headers),
        "198.51.100.7".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(
        upstream.client_ip("192.0.2.1".parse().unwrap(), &headers),
        "192.0.2.1".parse::<std::net::IpAddr>().unwrap()
    );
}

#[tokio::test]
async fn h2c_upstream_receives_http2_with_the_identity() {
    let upstream_addr = h2c_upstream().await;
    let mut config = upstream_config(http_target(upstream_addr, "/base/"), LONG);
    config.http2 = true;
    let front = front(Arc::new(build_upstream(&config, &[]).unwrap())).await;
    let request = get(front, "/x?y")
        .header(HOST, "app.example.test")
        .header("remote-user", "mallory")
        .header("te", "trailers, deflate")
        .header(CONNECTION, "keep-alive");
    let seen = seen_through(request).await;
    assert_eq!(seen.version, "HTTP/2.0");
    // `:authority` is the client's host, and `Host` says the same.
    assert_eq!(seen.uri, "http://app.example.test/base/x?y");
    assert_eq!(seen.all("host"), ["app.example.test"]);
    assert_eq!(seen.all("remote-user"), ["alice"]);
    assert_eq!(seen.all("remote-groups"), ["admins,dev"]);
    assert_eq!(seen.all("authorization"), ["Bearer real-token"]);
    assert_eq!(seen.all("te"), ["trailers"]);
    assert!(seen.all("connection").is_empty());

    // An HTTP/2 client too; and without `preserve_host` the upstream's authority.
    config.preserve_host = false;
    let front = front_for(&config).await;
    let response = h2_client()
        .request(get(front, "/z").body(empty()).unwrap())
        .await
        .unwrap();
    let seen = Seen::from(response).await;
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.uri, format!("http://{upstream_addr}/base/z"));
    assert_eq!(seen.all("host"), [upstream_addr.to_string()]);
    assert_eq!(seen.all("x-forwarded-host"), [front.to_string()]);
}

#[tokio::test]
async fn each_thread_speaks_http2_to_the_upstream_over_a_client_of_its_own() {
    let upstream_addr = h2c_upstream().await;
    let mut config = upstream_config(http_target(upstream_addr, ""), LONG);
    config.http2 = true;
    let upstream = Arc::new(build_upstream(&config, &[]).unwrap());
    let here = front(upstream.clone()).await;
    let there = front_on_another_thread(upstream.clone());
    for front in [here, there, here, there] {
        let seen = seen_through(get(front, "/")).await;
        assert_eq!(seen.version, "HTTP/2.0");
    }
    let super::super::Transport::Http2(clients) = &upstream.transport else {
        panic!("an HTTP/2 transport");
    };
    assert_eq!(clients.by_thread.count(), 2);
}

async fn front_for(config: &crate::config::UpstreamConfig) -> SocketAddr {
    front(Arc::new(build_upstream(config, &[]).unwrap())).await
}

#[tokio::test]
async fn http2_upstream_refuses_upgrades() {
    let upstream_addr = h2c_upstream().await;
    let mut config = upstream_config(http_target(upstream_addr, ""), LONG);
    config.http2 = true;
    let front = front_for(&config).await;
    let request = get(front, "/ws")
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .body(empty())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(proxy_error(&response), "bad-request");
}

/// A test CA (its certificate in a PEM file) and a server configuration whose leaf
/// certificate, signed by it, is valid for `names` only.
fn pki(names: &[&str], alpn: &[&[u8]]) -> (NamedTempFile, rustls::ServerConfig) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();

    let mut ca_file = NamedTempFile::new().unwrap();
    ca_file.write_all(ca_cert.pem().as_bytes()).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (ca_file, server)
}

fn https_target(host: &str, addr: SocketAddr) -> UpstreamTarget {
    UpstreamTarget::Http(Url::parse(&format!("https://{host}:{}/", addr.port())).unwrap())
}

fn tls_config(
    target: UpstreamTarget,
    ca_file: Option<&Path>,
    server_name: Option<&str>,
) -> crate::config::UpstreamConfig {
    let mut config = upstream_config(target, LONG);
    config.ca_file = ca_file.map(|path| crate::config::CaFile {
        path: path.to_path_buf(),
        pem: std::fs::read(path).unwrap(),
    });
    config.tls_server_name = server_name.map(str::to_owned);
    config
}

#[tokio::test]
async fn https_upstream_is_verified_against_the_ca_file() {
    let (ca_file, server) = pki(&["localhost"], &[b"http/1.1"]);
    let upstream_addr = tls_upstream(server).await;
    let target = https_target("localhost", upstream_addr);

    let front = front_for(&tls_config(target.clone(), Some(ca_file.path()), None)).await;
    let seen = seen_through(get(front, "/x").header(HOST, "app.example.test")).await;
    assert_eq!(seen.version, "HTTP/1.1");
    assert_eq!(seen.all("remote-user"), ["alice"]);
    assert_eq!(seen.all("host"), ["app.example.test"]);

    // The system roots alone do not know the test CA.
    let front = front_for(&tls_config(target, None, None)).await;
    let response = client().request(get(front, "/x").body(empty()).unwrap()).await.unwrap();
    assert_eq!(proxy_error(&response), "connect");
}

#[tokio::test]
async fn tls_server_name_verifies_a_certificate_for_another_name() {
    let (ca_file, server) = pki(&["app.internal"], &[]);
    let upstream_addr = tls_upstream(server).await;
    let target = https_target("127.0.0.1", upstream_addr);

    let front = front_for(&tls_config(target.clone(), Some(ca_file.path()), Some("app.internal"))).await;
    let seen = seen_through(get(front, "/x").header(HOST, "app.example.test")).await;
    assert_eq!(seen.all("remote-user"), ["alice"]);
    // The server name does not change `Host`.
    assert_eq!(seen.all("host"), ["app.example.test"]);

    // Without it, the certificate does not match 127.0.0.1.
    let front = front_for(&tls_config(target.clone(), Some(ca_file.path()), None)).await;
    let response = client().request(get(front, "/x").body(empty()).unwrap()).await.unwrap();
    assert_eq!(proxy_error(&response), "connect");

    // Nor with a name the certificate is not for.
    let front = front_for(&tls_config(target, Some(ca_file.path()), Some("other.internal"))).await;
    let response = client().request(get(front, "/x").body(empty()).unwrap()).await.unwrap();
    assert_eq!(proxy_error(&response), "connect");
}

#[tokio::test]
async fn https_upstream_speaks_h2_by_alpn() {
    let (ca_file, server) = pki(&["localhost"], &[b"h2", b"http/1.1"]);
    let upstream_addr = tls_upstream(server).await;
    let mut config = tls_config(https_target("localhost", upstream_addr), Some(ca_file.path()), None);
    config.http2 = true;
    let front = front_for(&config).await;
    let seen = seen_through(get(front, "/x").header(HOST, "app.example.test")).await;
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.uri, "https://app.example.test/x");
    assert_eq!(seen.all("remote-user"), ["alice"]);
}

/// The configuration refuses these (and reads the CA file: see `config::ca`); the
/// upstream client refuses them again rather than ignore them.
#[test]
fn tls_options_on_a_plain_upstream_are_configuration_errors() {
    let message = |config: &crate::config::UpstreamConfig| match build_upstream(config, &[]) {
        Err(ProxyError::Config(message)) => message,
        other => panic!("expected a configuration error, got {other:?}"),
    };
    let (ca_file, _) = pki(&["localhost"], &[]);
    let plain = http_target("127.0.0.1:1".parse().unwrap(), "");
    let m = message(&tls_config(plain.clone(), Some(ca_file.path()), None));
    assert!(m.contains("ca_file"), "{m}");
    let m = message(&tls_config(plain, None, Some("app.internal")));
    assert!(m.contains("tls_server_name"), "{m}");
}

#[tokio::test]
async fn an_http2_upstream_that_answers_too_late_is_a_timeout() {
    let upstream_addr = h2c_upstream().await;
    let timeout = std::time::Duration::from_millis(300);
    let mut config = upstream_config(http_target(upstream_addr, ""), timeout);
    config.http2 = true;
    let front = front(Arc::new(build_upstream(&config, &[]).unwrap())).await;
    let started = tokio::time::Instant::now();
    let response = client()
        .request(get(front, "/slow").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(proxy_error(&response), "timeout");
    let waited = started.elapsed();
    assert!(
        waited >= timeout && waited < std::time::Duration::from_millis(1500),
        "{waited:?}"
    );
    // A request answered in time on the same upstream connection is not affected.
    let seen = seen_through(get(front, "/x")).await;
    assert_eq!(seen.version, "HTTP/2.0");
}
