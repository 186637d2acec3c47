//! Checks of the end-to-end harness itself against the node peers, without
//! portcullis: the provider's PAR + login walk driven by hand, the echo report,
//! the cookie jar. If these fail, every other end-to-end test would too.

use crate::common::*;
use base64::Engine as _;
use sha2::Digest as _;

#[tokio::test(flavor = "multi_thread")]
async fn echo_reports_every_header_line_as_sent() {
    let echo = Echo::start().await;
    let client = Browserless::new();
    let resp = client
        .send(
            client
                .get(&format!("{}/some/path?x=1", echo.url))
                .header("accept", "application/json")
                .header("Remote-User", "a")
                .header("remote_user", "b")
                .header("cookie", "theme=dark; other=1"),
        )
        .await;
    let seen = resp.echo();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.url, "/some/path?x=1");
    let ids = seen.identity_headers();
    assert_eq!(ids.get("remote-user").map(Vec::len), Some(2), "{ids:?}");
    assert_eq!(
        seen.cookies(),
        [("theme".into(), "dark".into()), ("other".into(), "1".into())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_login_walk_reaches_the_redirect_uri_through_par() {
    let app = AppAddr::reserve();
    let idp = Idp::start(IdpOptions {
        redirect_uris: vec![app.redirect_uri()],
        ..Default::default()
    })
    .await;

    // What portcullis does at login, by hand: PAR with Basic auth, PKCE S256.
    let verifier = "a-very-long-pkce-verifier-of-at-least-43-characters-0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier));
    let par = peers::plain_client()
        .post(idp.url("/api/oidc/pushed-authorization-request"))
        .basic_auth("Express.js", Some("insecure_secret"))
        .form(&[
            ("response_type", "code"),
            ("client_id", "Express.js"),
            ("redirect_uri", app.redirect_uri().as_str()),
            ("scope", "openid profile email groups"),
            ("state", "state-0123456789"),
            ("nonce", "nonce-0123456789"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .expect("PAR");
    assert_eq!(par.status(), 201);
    let par: serde_json::Value = par.json().await.expect("PAR JSON");
    let request_uri = par["request_uri"].as_str().expect("request_uri");
    let mut authorize = url::Url::parse(&idp.url("/api/oidc/authorization")).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("client_id", "Express.js")
        .append_pair("request_uri", request_uri);

    let client = Browserless::new();
    let (trace, callback) = client.login_until_callback(authorize.as_str(), "john", PASSWORD).await;
    assert!(trace.hops.iter().any(|r| r.method == "POST"), "{}", trace.describe());
    assert_eq!(callback.as_str().split('?').next(), Some(app.redirect_uri().as_str()));
    let params: std::collections::HashMap<String, String> = callback.query_pairs().into_owned().collect();
    assert_eq!(params.get("state").map(String::as_str), Some("state-0123456789"));
    assert_eq!(params.get("iss"), Some(&idp.issuer));
    assert!(params.contains_key("code"), "{callback}");
    assert_eq!(idp.stats().await.par, 1);
    // The provider's cookies stay with the provider's host and port.
    assert!(client.cookie_names(&app.base_url.parse().unwrap()).is_empty());
    assert!(!client.cookie_names(&idp.issuer_url()).is_empty());
}

#[test]
fn the_jar_keeps_ports_apart_matches_paths_and_honours_removals() {
    use crate::common::cookies::Jar;
    let app: url::Url = "http://localhost:1000/a/b".parse().unwrap();
    let other_port: url::Url = "http://localhost:2000/a/b".parse().unwrap();
    let mut jar = Jar::default();
    for raw in ["s=1; Path=/; HttpOnly", "scoped=2; Path=/a/b", "defaulted=3"] {
        jar.store(&app, &SetCookie::parse(raw).unwrap());
    }
    assert_eq!(jar.header_for(&app).as_deref(), Some("scoped=2; defaulted=3; s=1"));
    assert_eq!(jar.header_for(&other_port), None, "cookies leaked to another port");
    let root: url::Url = "http://localhost:1000/".parse().unwrap();
    assert_eq!(jar.header_for(&root).as_deref(), Some("s=1"));
    let sibling: url::Url = "http://localhost:1000/a/bc".parse().unwrap();
    assert_eq!(jar.get(&sibling, "scoped"), None, "/a/b must not match /a/bc");

    jar.store(&app, &SetCookie::parse("s=; Path=/; Max-Age=0").unwrap());
    jar.store(
        &app,
        &SetCookie::parse("defaulted=; Expires=Thu, 01 Jan 1970 00:00:00 GMT").unwrap(),
    );
    assert_eq!(jar.header_for(&app).as_deref(), Some("scoped=2"));
}

#[test]
fn the_form_parser_finds_the_login_action() {
    let html = r#"<p>x</p><form method="post" action="/interaction/Ab_-9/login" autocomplete="off">
        <input name="username"><input name="password" type="password"></form>"#;
    assert_eq!(
        client::login_form_action(html).as_deref(),
        Some("/interaction/Ab_-9/login")
    );
    assert_eq!(
        client::login_form_action("<form action=\"/search\"><input name=q></form>"),
        None
    );
}

#[test]
fn a_backslash_location_counts_as_off_site() {
    // What the open-redirect tests rely on: Location resolves the way browsers do.
    let base: url::Url = "http://localhost:1000/callback?code=x".parse().unwrap();
    for (location, off_site) in [
        ("/\\evil.example", true),
        ("//evil.example", true),
        ("/\t/evil.example", true),
        ("https:evil.example", true),
        ("/%2F/evil.example", false),
        ("/ok?next=//evil.example", false),
    ] {
        let resolved = base.join(location).unwrap();
        assert_eq!(
            resolved.host_str() != Some("localhost"),
            off_site,
            "{location:?} -> {resolved}"
        );
    }
}
