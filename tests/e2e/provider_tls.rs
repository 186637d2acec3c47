//! A provider served over https with a certificate from a private CA, as a self-hosted
//! Authelia often is: the back channel (discovery, JWKS, PAR, token, userinfo) trusts it
//! through `oidc.ca_file`, and without that file refuses it, stays unready and says why.

use std::time::Duration;

use crate::common::tls::TestPki;
use crate::common::*;

/// A test CA and a provider serving https with a certificate it issued (for 127.0.0.1).
fn pki_with_provider_certificate() -> TestPki {
    let pki = TestPki::new();
    pki.install(&pki.issue("test provider", 31));
    pki
}

fn tls_files(pki: &TestPki) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    Some((pki.cert_path(), pki.key_path()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_behind_a_private_ca_is_trusted_through_the_oidc_ca_file() {
    let pki = pki_with_provider_certificate();
    let stack = Stack::builder()
        .idp(|o| o.tls_cert_and_key = tls_files(&pki))
        .env("PORTCULLIS_OIDC_CA_FILE", pki.ca_pem_path().display().to_string())
        // The browser signs in at the provider over https too.
        .client(Browserless::with_http(pki.reqwest_client()))
        .start()
        .await;
    assert!(
        stack.idp.issuer.starts_with("https://127.0.0.1:"),
        "the provider does not serve https: {}",
        stack.idp.issuer
    );

    // Ready (the Stack waited for it): discovery and the JWKS came over TLS. A login
    // takes PAR, the token and the userinfo endpoints over it too.
    let trace = stack.login("john", "/over-tls?x=1").await;
    assert_redirects_to_provider(trace.first(), &stack.idp);
    let seen = stack.client.api_get(&stack.url("/over-tls")).await.echo();
    assert_eq!(seen.values("remote-user"), ["john"], "{:?}", seen.raw_headers);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_ca_file_the_provider_is_refused_and_the_certificate_problem_logged() {
    let pki = pki_with_provider_certificate();
    let app = AppAddr::reserve();
    let (idp, echo) = tokio::join!(
        Idp::start(IdpOptions {
            redirect_uris: vec![app.redirect_uri()],
            tls_cert_and_key: tls_files(&pki),
            ..Default::default()
        }),
        Echo::start()
    );
    let portcullis = Portcullis::builder(app.clone(), &idp.issuer, &echo.url)
        .start_unready()
        .await;

    let failure = eventually("a failed discovery in portcullis' log", Duration::from_secs(15), || {
        let log = portcullis.log_text();
        async move {
            log.lines()
                .find(|line| line.contains("OIDC discovery failed"))
                .map(str::to_owned)
        }
    })
    .await;
    assert!(
        failure.contains("identity provider unreachable") && failure.contains("UnknownIssuer"),
        "the log line does not say the certificate is not trusted: {failure}"
    );

    let client = Browserless::new();
    let readyz = client.send(client.get(&app.url("/.auth/readyz"))).await;
    assert_status(&readyz, 503);
    let nav = client.navigate(&app.url("/wanted")).await;
    assert_status(&nav, 503);
    assert_no_session_issued(&nav);

    let log = portcullis.log_text();
    for secret in ["insecure_secret", "BEGIN CERTIFICATE"] {
        assert!(!log.contains(secret), "the log shows `{secret}`:\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");
}
