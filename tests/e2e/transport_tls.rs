//! TLS termination: the configured certificate, its reload without dropping
//! connections (SIGHUP and file polling), TLS 1.2+ only, and the HTTP→HTTPS redirect
//! listener.

use std::time::Duration;

use crate::common::h1::{self, h1_over};
use crate::common::tls::{peer_leaf, TestPki};
use crate::common::*;

/// A logged-in https stack serving the certificate `pki` has installed.
async fn https_stack(pki: &TestPki, extra: &[(&str, String)]) -> Stack {
    let mut builder = Stack::builder()
        .https()
        .client(Browserless::with_http(pki.reqwest_client()));
    for (k, v) in pki.env().into_iter().chain(extra.iter().cloned()) {
        builder = builder.env(k, v);
    }
    builder.start().await
}

fn cookie(stack: &Stack) -> String {
    format!("portcullis_session={}", stack.session_cookie().expect("session cookie"))
}

/// GET `path` on an open HTTP/1.1 sender; the echo upstream's JSON, or a panic.
async fn echo_get(
    send: &mut hyper::client::conn::http1::SendRequest<crate::common::upstream::TestBody>,
    port: u16,
    path: &str,
    cookie: &str,
) -> EchoSeen {
    let resp = send.send_request(h1::get(port, path, cookie)).await.expect("response");
    let status = resp.status();
    let body = h1::text(resp).await.expect("body");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not echo JSON ({e}): {body}"))
}

/// The certificate a fresh connection to `port` is served.
async fn served_cert(pki: &TestPki, port: u16) -> Vec<u8> {
    peer_leaf(&pki.connect(port, &[b"http/1.1"]).await).to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_configured_certificate_is_served_and_a_replaced_one_is_picked_up_without_dropping_connections() {
    let pki = TestPki::new();
    let first = pki.issue("first.portcullis.test", 1001);
    pki.install(&first);
    let stack = https_stack(&pki, &[]).await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;
    let cookie = cookie(&stack);

    // A kept-alive connection opened under the first certificate.
    let tls = pki.connect(port, &[b"http/1.1"]).await;
    assert_eq!(
        peer_leaf(&tls).to_vec(),
        first.der.to_vec(),
        "not the configured certificate"
    );
    let mut kept = h1_over(tls).await;
    assert_eq!(
        echo_get(&mut kept, port, "/before", &cookie)
            .await
            .values("remote-user"),
        ["john"]
    );

    // Replaced on disk, announced by SIGHUP: new connections get it at once.
    let second = pki.issue("second.portcullis.test", 2002);
    pki.install(&second);
    stack.portcullis.signal("HUP");
    eventually(
        "the second certificate after SIGHUP",
        Duration::from_secs(3),
        || async { (served_cert(&pki, port).await == second.der.to_vec()).then_some(()) },
    )
    .await;
    assert_eq!(
        echo_get(&mut kept, port, "/after-sighup", &cookie)
            .await
            .values("remote-user"),
        ["john"],
        "the kept-alive connection did not survive the reload"
    );

    // Replaced on disk without a signal: the file poll (every 5 s) finds it.
    let third = pki.issue("third.portcullis.test", 3003);
    pki.install(&third);
    eventually(
        "the third certificate from the file poll",
        Duration::from_secs(12),
        || async { (served_cert(&pki, port).await == third.der.to_vec()).then_some(()) },
    )
    .await;
    assert_eq!(
        echo_get(&mut kept, port, "/after-poll", &cookie)
            .await
            .values("remote-user"),
        ["john"],
        "the kept-alive connection did not survive the second reload"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_replacement_certificate_keeps_the_old_one_in_service() {
    let pki = TestPki::new();
    let first = pki.issue("first.portcullis.test", 1001);
    pki.install(&first);
    let mut stack = https_stack(&pki, &[]).await;
    let port = stack.portcullis.app.port;

    std::fs::write(
        pki.cert_path(),
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .expect("write a broken certificate");
    stack.portcullis.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        served_cert(&pki, port).await,
        first.der.to_vec(),
        "after a failed reload the previous certificate must stay in service"
    );
    assert_eq!(
        stack.portcullis.exited(),
        None,
        "a bad certificate file stopped the process"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_2_is_accepted_and_tls_1_1_and_1_0_are_refused() {
    let pki = TestPki::new();
    pki.install(&pki.issue("localhost", 7));
    let stack = https_stack(&pki, &[]).await;
    let port = stack.portcullis.app.port;

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let config = pki.client_config_versions(&[b"http/1.1"], &[&rustls::version::TLS12]);
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("a TLS 1.2-only client is accepted");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );

    for flag in ["-tls1_1", "-tls1"] {
        let out = std::process::Command::new("openssl")
            .args(["s_client", flag, "-cipher", "DEFAULT@SECLEVEL=0", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-servername", "localhost"])
            .stdin(std::process::Stdio::null())
            .output();
        let Ok(out) = out else {
            println!("SKIPPED {flag}: openssl is not installed");
            continue;
        };
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("no protocols available") || text.contains("unknown option") {
            println!("SKIPPED {flag}: this openssl cannot speak it:\n{text}");
            continue;
        }
        println!("openssl s_client {flag}: exit {:?}", out.status.code());
        assert!(!out.status.success(), "openssl s_client {flag} connected:\n{text}");
        assert!(
            !text.contains("BEGIN CERTIFICATE") && text.contains("Cipher is (NONE)"),
            "the server completed a {flag} handshake:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_listener_redirects_to_https_with_path_and_query_whatever_the_host() {
    let pki = TestPki::new();
    pki.install(&pki.issue("localhost", 8));
    let redirect_port = free_port();
    let stack = https_stack(
        &pki,
        &[(
            "PORTCULLIS_SERVER_HTTP_REDIRECT_ADDR",
            format!("127.0.0.1:{redirect_port}"),
        )],
    )
    .await;
    let port = stack.portcullis.app.port;

    for (method, target, host) in [
        ("GET", "/some/page?x=1&y=%20z", "evil.example"),
        ("POST", "/form?a=b", "localhost"),
        ("GET", "/", "attacker.test:8080"),
    ] {
        let resp = raw_request(
            redirect_port,
            &[
                &format!("{method} {target} HTTP/1.1"),
                &format!("Host: {host}"),
                "Content-Length: 0",
                "Connection: close",
            ],
        )
        .await;
        assert_eq!(resp.status, 308, "{method} {target} (Host {host}): {resp:?}");
        assert_eq!(
            resp.header("location"),
            Some(format!("https://localhost:{port}{target}").as_str()),
            "{method} {target} (Host {host}) was sent elsewhere"
        );
    }
}
