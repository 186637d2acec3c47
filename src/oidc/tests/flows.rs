//! Whole flows against the rogue provider: discovery, PAR, code exchange, userinfo,
//! refresh, revocation, JWKS rotation, and errors that must not leak secrets.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{assert_no_secret, config, ready_client, SECRET};
use crate::config::{ParMode, Secret};
use crate::oidc::test_provider::{id_claims, jwks, key, sign_rs256, Canned, TestProvider, CLIENT_ID};
use crate::oidc::{CallbackParams, Claims, OidcClient, OidcError, PendingAuth, TokenTypeHint};

const PAR: &str = "/api/oidc/pushed-authorization-request";
const TOKEN: &str = "/api/oidc/token";
const USERINFO: &str = "/api/oidc/userinfo";
const REVOKE: &str = "/api/oidc/revocation";
const AT: &str = "authelia_at_access-token-value";
const RT: &str = "authelia_rt_refresh-token-value";
const SUB: &str = "3b1b2c4e-6f1a-4c7e-9a55-2f1c0d9e8b7a";

fn pending() -> PendingAuth {
    PendingAuth {
        state: "state-0123456789-abcdefghij".into(),
        nonce: "nonce-0123456789-abcdefghij".into(),
        pkce_verifier: "verifier-0123456789-abcdefghij-0123456789-abc".into(),
    }
}

fn callback(p: &TestProvider, code: &str) -> CallbackParams {
    CallbackParams {
        code: Some(code.into()),
        state: Some(pending().state),
        iss: Some(p.issuer.clone()),
        ..Default::default()
    }
}

fn token_body(id_token: &str) -> Value {
    json!({"access_token": AT, "token_type": "bearer", "expires_in": 3600, "refresh_token": RT,
           "id_token": id_token, "scope": "openid profile email groups offline_access"})
}

fn serve_login(p: &TestProvider, kid_key: u8) {
    let id_token = sign_rs256(
        &id_claims(&p.issuer, &pending().nonce, AT),
        &key(kid_key),
        &format!("key-{kid_key}"),
    );
    p.set(TOKEN, Canned::json(200, token_body(&id_token)));
    p.set(
        USERINFO,
        Canned::json(
            200,
            json!({"sub": SUB, "name": "John Doe", "email": "john@example.com", "groups": ["admin", "dev"],
                                 "preferred_username": "john"}),
        ),
    );
}

fn basic_credentials(header: &Option<String>) -> String {
    let value = header
        .as_deref()
        .and_then(|h| h.strip_prefix("Basic "))
        .expect("basic auth");
    String::from_utf8(STANDARD.decode(value).expect("b64")).expect("utf8")
}

#[tokio::test]
async fn discovery_loads_metadata_and_keys() {
    let p = TestProvider::start().await;
    let client = ready_client(&p, |_| {}).await;
    assert!(client.supports_revocation());
    assert_eq!(p.jwks_fetches(), 1);
}

#[tokio::test]
async fn discovery_refuses_an_issuer_that_differs_by_a_trailing_slash() {
    let p = TestProvider::start().await;
    p.patch_discovery("issuer", json!(format!("{}/", p.issuer)));
    let client = OidcClient::new(Arc::new(config(&p.issuer))).expect("client");
    assert!(client.discover_once().await.is_err());
    assert!(!client.is_ready());
}

#[tokio::test]
async fn discovery_retries_until_the_provider_answers() {
    let p = TestProvider::start().await;
    p.set(
        "/.well-known/openid-configuration",
        Canned {
            status: 503,
            content_type: "text/html",
            body: "down".into(),
        },
    );
    let client = OidcClient::new(Arc::new(config(&p.issuer))).expect("client");
    let task = tokio::spawn({
        let client = client.clone();
        async move { client.run_discovery().await }
    });
    // Let the first attempt fail, then heal the provider; the 1 s backoff retries.
    let first_attempt = async {
        while p.requests("/.well-known/openid-configuration").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), first_attempt)
        .await
        .expect("discovery asks the provider");
    assert!(!client.is_ready());
    p.patch_discovery("unused", json!(1));
    p.set(
        "/.well-known/openid-configuration",
        Canned::json(200, crate::oidc::test_provider::authelia_discovery(&p.issuer)),
    );
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("finished")
        .expect("joined");
    assert!(client.is_ready());
}

#[tokio::test]
async fn unreachable_and_silent_providers_are_unreachable_within_the_timeout() {
    // A port with nothing listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let client = OidcClient::new(Arc::new(config(&format!("http://{addr}")))).expect("client");
    assert!(matches!(
        client.discover_once().await,
        Err(OidcError::ProviderUnreachable(_))
    ));
    // A provider that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let mut cfg = config(&format!("http://{addr}"));
    cfg.http_timeout = Duration::from_millis(300);
    let client = OidcClient::new(Arc::new(cfg)).expect("client");
    let started = std::time::Instant::now();
    assert!(matches!(
        client.discover_once().await,
        Err(OidcError::ProviderUnreachable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(silent);
}

#[tokio::test]
async fn calls_before_discovery_are_not_ready() {
    let client = OidcClient::new(Arc::new(config("https://auth.example.com"))).expect("client");
    assert!(!client.is_ready());
    assert!(matches!(client.begin_login().await, Err(OidcError::NotReady)));
    assert!(matches!(
        client.complete_login(&pending(), &CallbackParams::default()).await,
        Err(OidcError::NotReady)
    ));
}

#[tokio::test]
async fn begin_login_pushes_every_parameter_and_redirects_with_request_uri_only() {
    let p = TestProvider::start().await;
    p.patch_discovery(
        "authorization_endpoint",
        json!(p.url("/api/oidc/authorization?tenant=a")),
    );
    p.set(
        PAR,
        Canned::json(
            201,
            json!({"request_uri": "urn:ietf:params:oauth:request_uri:xyz", "expires_in": 300}),
        ),
    );
    let client = ready_client(&p, |_| {}).await;
    let login = client.begin_login().await.expect("login");

    let pushed = p.requests(PAR);
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].method, "POST");
    assert_eq!(
        basic_credentials(&pushed[0].authorization),
        format!("Express.js:{SECRET}")
    );
    let form = pushed[0].form();
    assert_eq!(form["response_type"], "code");
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["redirect_uri"], "https://express.example.com/callback");
    assert_eq!(form["scope"], "openid profile email groups");
    assert_eq!(form["state"], login.pending.state);
    assert_eq!(form["nonce"], login.pending.nonce);
    assert_eq!(form["code_challenge_method"], "S256");
    assert!(!form.contains_key("client_secret"));
    assert_eq!(login.pending.state.len(), 43);
    assert_eq!(login.pending.nonce.len(), 43);
    assert_ne!(login.pending.state, login.pending.nonce);
    // S256: challenge = base64url(sha256(verifier)).
    use sha2::Digest as _;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(login.pending.pkce_verifier.as_bytes()));
    assert_eq!(form["code_challenge"], challenge);

    assert_eq!(login.url.host_str(), Some("127.0.0.1"));
    assert_eq!(login.url.path(), "/api/oidc/authorization");
    let query: Vec<(String, String)> = login.url.query_pairs().into_owned().collect();
    assert_eq!(
        query,
        [
            ("tenant", "a"),
            ("client_id", CLIENT_ID),
            ("request_uri", "urn:ietf:params:oauth:request_uri:xyz")
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );

    // The login's secrets stay out of its `Debug` form; the redirect URL is no secret.
    let shown = format!("{login:?}");
    assert!(shown.contains("pending: PendingAuth([redacted])"), "{shown}");
    for secret in [&login.pending.state, &login.pending.nonce, &login.pending.pkce_verifier] {
        assert!(!shown.contains(secret.as_str()), "{shown}");
    }
}

#[tokio::test]
async fn begin_login_reports_a_par_rejection() {
    let p = TestProvider::start().await;
    p.set(
        PAR,
        Canned::json(
            400,
            json!({"error": "invalid_request", "error_description": "The state is missing"}),
        ),
    );
    let client = ready_client(&p, |_| {}).await;
    match client.begin_login().await {
        Err(OidcError::ProviderRejected {
            endpoint: "pushed authorization",
            error,
            ..
        }) => assert_eq!(error, "invalid_request"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn begin_login_without_par_puts_everything_in_the_authorize_url() {
    let p = TestProvider::start().await;
    p.patch_discovery("pushed_authorization_request_endpoint", Value::Null);
    let client = ready_client(&p, |_| {}).await;
    let login = client.begin_login().await.expect("login");
    let q: std::collections::HashMap<String, String> = login.url.query_pairs().into_owned().collect();
    assert_eq!(q["state"], login.pending.state);
    assert_eq!(q["nonce"], login.pending.nonce);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(!q.contains_key("request_uri"));

    let always = ready_client(&p, |c| c.par = ParMode::Always).await;
    assert!(matches!(always.begin_login().await, Err(OidcError::ParUnsupported)));
}

#[tokio::test]
async fn par_never_skips_an_advertised_endpoint() {
    let p = TestProvider::start().await;
    let client = ready_client(&p, |c| c.par = ParMode::Never).await;
    let login = client.begin_login().await.expect("login");
    assert!(login.url.query_pairs().any(|(k, _)| k == "code_challenge"));
    assert!(p.requests(PAR).is_empty());
}

#[tokio::test]
async fn complete_login_exchanges_the_code_and_merges_userinfo() {
    let p = TestProvider::start().await;
    serve_login(&p, 1);
    let client = ready_client(&p, |_| {}).await;
    let outcome = client
        .complete_login(&pending(), &callback(&p, "the-code"))
        .await
        .expect("login");

    let exchange = p.requests(TOKEN);
    assert_eq!(exchange.len(), 1);
    assert_eq!(
        basic_credentials(&exchange[0].authorization),
        format!("Express.js:{SECRET}")
    );
    let form = exchange[0].form();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "the-code");
    assert_eq!(form["code_verifier"], pending().pkce_verifier);
    assert_eq!(form["redirect_uri"], "https://express.example.com/callback");
    assert!(!form.contains_key("client_secret"));
    assert_eq!(
        p.requests(USERINFO)[0].authorization.as_deref(),
        Some(format!("Bearer {AT}").as_str())
    );

    assert_eq!(outcome.subject, SUB);
    assert_eq!(outcome.tokens.access_token.expose(), AT);
    assert_eq!(outcome.tokens.refresh_token.as_ref().map(Secret::expose), Some(RT));
    assert!(outcome.tokens.id_token.is_some());
    assert!(outcome.tokens.scopes.split_whitespace().any(|s| s == "offline_access"));
    assert!(outcome.tokens.expires_at.is_some());
    assert_eq!(outcome.id_token_claims["amr"], json!(["pwd", "otp", "mfa"]));
    assert!(outcome.id_token_claims.get("groups").is_none());
    assert_eq!(outcome.claims["groups"], json!(["admin", "dev"]));
    assert_eq!(outcome.claims["email"], json!("john@example.com"));
    assert_eq!(outcome.claims["auth_time"], outcome.id_token_claims["auth_time"]);
    assert_eq!(
        outcome.userinfo.as_ref().map(|u| u["name"].clone()),
        Some(json!("John Doe"))
    );
}

#[tokio::test]
async fn callback_checks_run_before_any_provider_call() {
    let p = TestProvider::start().await;
    serve_login(&p, 1);
    let client = ready_client(&p, |_| {}).await;
    let mut cb = callback(&p, "code");
    cb.iss = None;
    assert!(matches!(
        client.complete_login(&pending(), &cb).await,
        Err(OidcError::MissingIssuer)
    ));
    cb.state = Some("replayed-other-state".into());
    assert!(matches!(
        client.complete_login(&pending(), &cb).await,
        Err(OidcError::StateMismatch)
    ));
    assert!(p.requests(TOKEN).is_empty());
}

#[tokio::test]
async fn a_replayed_code_is_a_token_endpoint_rejection_without_secrets() {
    let p = TestProvider::start().await;
    let client = ready_client(&p, |_| {}).await;
    let verifier = pending().pkce_verifier;
    p.set(
        TOKEN,
        Canned::json(
            400,
            json!({"error": "invalid_grant",
            "error_description": format!("code used-code with verifier {verifier} and secret {SECRET} already used")}),
        ),
    );
    let e = client
        .complete_login(&pending(), &callback(&p, "used-code"))
        .await
        .expect_err("error");
    assert!(matches!(&e, OidcError::ProviderRejected { endpoint: "token", error, .. } if error == "invalid_grant"));
    assert_no_secret(&e, &["used-code", &verifier, SECRET]);
}

#[tokio::test]
async fn userinfo_about_another_subject_fails_the_login() {
    let p = TestProvider::start().await;
    serve_login(&p, 1);
    p.set(
        USERINFO,
        Canned::json(200, json!({"sub": "someone-else", "name": "Mallory"})),
    );
    let client = ready_client(&p, |_| {}).await;
    let e = client
        .complete_login(&pending(), &callback(&p, "c"))
        .await
        .expect_err("error");
    assert!(matches!(e, OidcError::SubjectMismatch));
}

#[tokio::test]
async fn forged_id_token_from_the_token_endpoint_fails_the_login() {
    let p = TestProvider::start().await;
    serve_login(&p, 1);
    let mut claims = id_claims(&p.issuer, "some-other-nonce", AT);
    claims["sub"] = json!(SUB);
    p.set(
        TOKEN,
        Canned::json(200, token_body(&sign_rs256(&claims, &key(1), "key-1"))),
    );
    let client = ready_client(&p, |_| {}).await;
    let e = client
        .complete_login(&pending(), &callback(&p, "c"))
        .await
        .expect_err("error");
    assert!(matches!(e, OidcError::InvalidIdToken(_)), "{e:?}");
    assert_no_secret(&e, &[AT, RT]);
}

#[tokio::test]
async fn rotated_signing_key_is_fetched_once_and_accepted() {
    let p = TestProvider::start().await;
    let client = ready_client(&p, |_| {}).await;
    assert_eq!(p.jwks_fetches(), 1);
    p.set_jwks(jwks(&[&key(2)]));
    serve_login(&p, 2);
    client
        .complete_login(&pending(), &callback(&p, "c"))
        .await
        .expect("login with the new key");
    assert_eq!(p.jwks_fetches(), 2);
    // The new key is now cached: no further fetch.
    client
        .complete_login(&pending(), &callback(&p, "c"))
        .await
        .expect("again");
    assert_eq!(p.jwks_fetches(), 2);
}

#[tokio::test]
async fn unknown_kid_refetches_once_per_interval_even_when_concurrent() {
    let p = TestProvider::start().await;
    let client = ready_client(&p, |_| {}).await;
    serve_login(&p, 2); // key 2 is never published
    let (pa, cb) = (pending(), callback(&p, "c"));
    let (a, b) = tokio::join!(client.complete_login(&pa, &cb), client.complete_login(&pa, &cb));
    assert!(matches!(a, Err(OidcError::InvalidIdToken(_))));
    assert!(matches!(b, Err(OidcError::InvalidIdToken(_))));
    assert_eq!(p.jwks_fetches(), 2, "one discovery fetch + one shared re-fetch");
    let c = client.complete_login(&pending(), &callback(&p, "c")).await;
    assert!(matches!(c, Err(OidcError::InvalidIdToken(_))));
    assert_eq!(p.jwks_fetches(), 2, "rate-limited");
}

#[tokio::test]
async fn refresh_returns_rotated_tokens_and_validates_the_new_id_token() {
    let p = TestProvider::start().await;
    let client = ready_client(&p, |_| {}).await;
    let mut claims = id_claims(&p.issuer, "ignored", "authelia_at_new");
    claims.as_object_mut().expect("object").remove("nonce");
    let id_token = sign_rs256(&claims, &key(1), "key-1");
    p.set(
        TOKEN,
        Canned::json(
            200,
            json!({"access_token": "authelia_at_new", "token_type": "bearer", "expires_in": 3600,
        "refresh_token": "authelia_rt_new", "id_token": id_token}),
        ),
    );
    let out = client
        .refresh(&Secret::new(RT), SUB, &Claims::new())
        .await
        .expect("refresh");
    assert_eq!(out.tokens.access_token.expose(), "authelia_at_new");
    assert_eq!(
        out.tokens.refresh_token.as_ref().map(Secret::expose),
        Some("authelia_rt_new")
    );
    assert_eq!(out.tokens.scopes, config(&p.issuer).scopes.join(" "));
    assert!(out.id_token_claims.is_some());
    let form = p.requests(TOKEN)[0].form();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], RT);

    // Another user's ID token on refresh.
    assert!(matches!(
        client
            .refresh(&Secret::new(RT), "another-subject", &Claims::new())
            .await,
        Err(OidcError::SubjectMismatch)
    ));

    // About the login's authentication (OIDC Core §12.2): its auth_time, and its nonce
    // where both carry one; this refreshed token carries none.
    let mut login: Claims = claims.as_object().cloned().expect("object");
    login.insert("nonce".into(), json!("n-of-the-login"));
    client
        .refresh(&Secret::new(RT), SUB, &login)
        .await
        .expect("the same authentication");
    let auth_time = claims["auth_time"].as_i64().expect("auth_time");
    login.insert("auth_time".into(), json!(auth_time - 600));
    assert!(matches!(
        client.refresh(&Secret::new(RT), SUB, &login).await,
        Err(OidcError::InvalidIdToken(detail)) if detail.contains("auth_time")
    ));

    // No rotated token, no ID token: keep the old refresh token.
    p.set(
        TOKEN,
        Canned::json(200, json!({"access_token": "authelia_at_3", "token_type": "Bearer"})),
    );
    let out = client
        .refresh(&Secret::new(RT), SUB, &Claims::new())
        .await
        .expect("refresh");
    assert_eq!(out.tokens.refresh_token.as_ref().map(Secret::expose), Some(RT));
    assert!(out.id_token_claims.is_none());
}

#[tokio::test]
async fn refresh_fetches_userinfo_anew_with_the_new_access_token() {
    let p = TestProvider::start().await;
    let client = ready_client(&p, |_| {}).await;
    p.set(
        TOKEN,
        Canned::json(200, json!({"access_token": "authelia_at_new", "token_type": "Bearer"})),
    );
    p.set(
        USERINFO,
        Canned::json(200, json!({"sub": SUB, "groups": ["dev", "ops"]})),
    );
    let out = client
        .refresh(&Secret::new(RT), SUB, &Claims::new())
        .await
        .expect("refresh");
    assert_eq!(out.userinfo.expect("userinfo")["groups"], json!(["dev", "ops"]));
    let asked = p.requests(USERINFO);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].authorization.as_deref(), Some("Bearer authelia_at_new"));

    // Another user's userinfo ends the session, like another user's ID token.
    p.set(USERINFO, Canned::json(200, json!({"sub": "another-subject"})));
    assert!(matches!(
        client.refresh(&Secret::new(RT), SUB, &Claims::new()).await,
        Err(OidcError::SubjectMismatch)
    ));

    // A userinfo that fails otherwise keeps the tokens and the previous claims.
    p.set(USERINFO, Canned::json(503, json!({"error": "temporarily_unavailable"})));
    let out = client
        .refresh(&Secret::new(RT), SUB, &Claims::new())
        .await
        .expect("refresh");
    assert_eq!(out.tokens.access_token.expose(), "authelia_at_new");
    assert!(out.userinfo.is_none());
}

#[tokio::test]
async fn refresh_rejections_and_outages_are_told_apart() {
    let p = TestProvider::start().await;
    let client = ready_client(&p, |_| {}).await;
    for (status, error) in [
        (400, "invalid_grant"),
        (400, "invalid_request"),
        (401, "invalid_client"),
    ] {
        p.set(
            TOKEN,
            Canned::json(
                status,
                json!({"error": error, "error_description": format!("token {RT} is bad")}),
            ),
        );
        let e = client
            .refresh(&Secret::new(RT), SUB, &Claims::new())
            .await
            .expect_err("error");
        assert!(matches!(&e, OidcError::RefreshRejected(code) if code == error), "{e:?}");
        assert_no_secret(&e, &[RT, SECRET]);
    }
    // Outages keep the session: a 5xx or 429 whatever the body, and the OAuth codes that
    // say the provider is not working (Authelia's answer to a failure of its storage).
    for (status, body) in [
        (
            502,
            Canned {
                status: 502,
                content_type: "text/html",
                body: "<h1>Bad Gateway</h1>".into(),
            },
        ),
        (
            500,
            Canned::json(
                500,
                json!({"error": "server_error", "error_description": format!("{RT}: db down")}),
            ),
        ),
        (503, Canned::json(503, json!({"error": "temporarily_unavailable"}))),
        (400, Canned::json(400, json!({"error": "temporarily_unavailable"}))),
        (500, Canned::json(500, json!({"error": "invalid_grant"}))),
        (
            429,
            Canned {
                status: 429,
                content_type: "text/plain",
                body: "slow down".into(),
            },
        ),
        (429, Canned::json(429, json!({"error": "invalid_request"}))),
    ] {
        p.set(TOKEN, body);
        let e = client
            .refresh(&Secret::new(RT), SUB, &Claims::new())
            .await
            .expect_err("error");
        assert!(
            matches!(&e, OidcError::ProviderUnreachable(detail) if detail.contains(&status.to_string())),
            "HTTP {status}: {e:?}"
        );
        assert_no_secret(&e, &[RT, SECRET]);
    }
}

#[tokio::test]
async fn an_outage_at_the_code_exchange_or_userinfo_is_told_from_a_refusal() {
    let p = TestProvider::start().await;
    let client = ready_client(&p, |_| {}).await;
    // The provider saying it is not working, whatever the status it says it with: the
    // callback keeps its pending login for these, so a reload retries the exchange.
    for (status, error) in [
        (503, "temporarily_unavailable"),
        (500, "server_error"),
        (400, "temporarily_unavailable"),
        (400, "server_error"),
    ] {
        p.set(TOKEN, Canned::json(status, json!({"error": error})));
        let e = client
            .complete_login(&pending(), &callback(&p, "the-code"))
            .await
            .expect_err("an outage");
        assert!(
            matches!(&e, OidcError::ProviderUnreachable(detail) if detail.contains(error)),
            "{status} {error}: {e:?}"
        );
    }
    p.set(TOKEN, Canned::json(400, json!({"error": "invalid_grant"})));
    assert!(matches!(
        client.complete_login(&pending(), &callback(&p, "the-code")).await,
        Err(OidcError::ProviderRejected { endpoint: "token", error, .. }) if error == "invalid_grant"
    ));
    p.set(USERINFO, Canned::json(503, json!({"error": "temporarily_unavailable"})));
    assert!(matches!(
        client.userinfo(&Secret::new(AT), SUB).await,
        Err(OidcError::ProviderUnreachable(_))
    ));
    p.set(USERINFO, Canned::json(500, json!({"error": "server_error"})));
    assert!(matches!(
        client.userinfo(&Secret::new(AT), SUB).await,
        Err(OidcError::ProviderUnreachable(_))
    ));
    p.set(USERINFO, Canned::json(403, json!({"error": "insufficient_scope"})));
    assert!(matches!(
        client.userinfo(&Secret::new(AT), SUB).await,
        Err(OidcError::ProviderRejected { endpoint: "userinfo", error, .. }) if error == "insufficient_scope"
    ));
}

#[tokio::test]
async fn userinfo_errors_are_classified() {
    let p = TestProvider::start().await;
    let client = ready_client(&p, |_| {}).await;
    p.set(
        USERINFO,
        Canned::json(
            401,
            json!({"error": "invalid_token", "error_description": format!("{AT} expired")}),
        ),
    );
    let e = client.userinfo(&Secret::new(AT), SUB).await.expect_err("error");
    assert!(matches!(&e, OidcError::ProviderRejected { endpoint: "userinfo", error, .. } if error == "invalid_token"));
    assert_no_secret(&e, &[AT]);
    p.set(
        USERINFO,
        Canned {
            status: 200,
            content_type: "application/jwt",
            body: "a.b.c".into(),
        },
    );
    assert!(matches!(
        client.userinfo(&Secret::new(AT), SUB).await,
        Err(OidcError::InvalidResponse { .. })
    ));
    p.set(USERINFO, Canned::json(200, json!({"name": "no sub"})));
    assert!(matches!(
        client.userinfo(&Secret::new(AT), SUB).await,
        Err(OidcError::InvalidResponse { .. })
    ));
    p.set(
        USERINFO,
        Canned::json(200, json!({"sub": SUB, "email": "john@example.com"})),
    );
    assert_eq!(
        client.userinfo(&Secret::new(AT), SUB).await.expect("ok")["email"],
        json!("john@example.com")
    );
}

#[tokio::test]
async fn revoke_posts_the_token_with_a_hint_and_basic_auth() {
    let p = TestProvider::start().await;
    let client = ready_client(&p, |_| {}).await;
    p.set(REVOKE, Canned::json(200, json!({})));
    client
        .revoke(&Secret::new(RT), TokenTypeHint::RefreshToken)
        .await
        .expect("revoked");
    let r = &p.requests(REVOKE)[0];
    assert_eq!(basic_credentials(&r.authorization), format!("Express.js:{SECRET}"));
    assert_eq!(r.form()["token"], RT);
    assert_eq!(r.form()["token_type_hint"], "refresh_token");
    p.set(REVOKE, Canned::json(400, json!({"error": "unsupported_token_type"})));
    let e = client
        .revoke(&Secret::new(AT), TokenTypeHint::AccessToken)
        .await
        .expect_err("error");
    assert!(matches!(
        e,
        OidcError::ProviderRejected {
            endpoint: "revocation",
            ..
        }
    ));

    p.patch_discovery("revocation_endpoint", Value::Null);
    let without = ready_client(&p, |_| {}).await;
    assert!(!without.supports_revocation());
    assert!(matches!(
        without.revoke(&Secret::new(RT), TokenTypeHint::RefreshToken).await,
        Err(OidcError::RevocationUnsupported)
    ));
}

#[tokio::test]
async fn redirects_from_the_provider_are_not_followed() {
    let p = TestProvider::start().await;
    let client = ready_client(&p, |_| {}).await;
    p.set(
        TOKEN,
        Canned {
            status: 307,
            content_type: "text/plain",
            body: String::new(),
        },
    );
    p.set_header(TOKEN, "location", &p.url("/elsewhere"));
    p.set(
        "/elsewhere",
        Canned::json(200, json!({"access_token": "x", "token_type": "bearer"})),
    );
    let e = client
        .refresh(&Secret::new(RT), SUB, &Claims::new())
        .await
        .expect_err("error");
    assert!(
        matches!(e, OidcError::RefreshRejected(ref c) if c == "HTTP 307"),
        "{e:?}"
    );
    assert!(p.requests("/elsewhere").is_empty(), "redirect followed");
}

#[tokio::test]
async fn provider_answers_are_read_up_to_one_mebibyte_and_no_further() {
    const LIMIT: usize = 1024 * 1024;
    let p = TestProvider::start().await;
    let client = ready_client(&p, |_| {}).await;
    // A userinfo document of exactly `len` bytes.
    let sized = |len: usize| {
        let empty = json!({"sub": SUB, "pad": ""}).to_string();
        let body = json!({"sub": SUB, "pad": "x".repeat(len - empty.len())}).to_string();
        assert_eq!(body.len(), len);
        Canned {
            status: 200,
            content_type: "application/json",
            body,
        }
    };
    p.set(USERINFO, sized(LIMIT));
    assert_eq!(
        client.userinfo(&Secret::new(AT), SUB).await.expect("at the limit")["sub"],
        json!(SUB)
    );
    p.set(USERINFO, sized(LIMIT + 1));
    let e = client.userinfo(&Secret::new(AT), SUB).await.expect_err("one byte over");
    assert!(
        matches!(&e, OidcError::InvalidResponse { endpoint: "userinfo", detail } if detail.contains("larger than 1048576 bytes")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_failed_discovery_is_an_outage_only_when_the_provider_answers_5xx() {
    const DISCOVERY: &str = "/.well-known/openid-configuration";
    let p = TestProvider::start().await;
    let http = crate::oidc::http::build_client(
        Duration::from_secs(5),
        crate::oidc::http::tls_config(None).expect("TLS"),
    )
    .expect("client");
    let page = |status| Canned {
        status,
        content_type: "text/html",
        body: "<h1>not here</h1>".into(),
    };
    p.set(DISCOVERY, page(503));
    match crate::oidc::discovery::discover(&http, &p.issuer).await {
        Err(OidcError::ProviderUnreachable(why)) => assert!(why.contains("HTTP 503"), "{why}"),
        other => panic!("a 503 is an outage, got {:?}", other.map(|_| ())),
    }
    p.set(DISCOVERY, page(404));
    match crate::oidc::discovery::discover(&http, &p.issuer).await {
        Err(OidcError::InvalidResponse {
            endpoint: "discovery", ..
        }) => {}
        other => panic!("a 404 is a wrong issuer, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn discovery_and_jwks_bodies_are_bounded_like_every_other_provider_answer() {
    const DISCOVERY: &str = "/.well-known/openid-configuration";
    let p = TestProvider::start().await;
    let http = crate::oidc::http::build_client(
        Duration::from_secs(5),
        crate::oidc::http::tls_config(None).expect("TLS"),
    )
    .expect("client");
    let oversized = |value: Value| Canned {
        status: 200,
        content_type: "application/json",
        // Valid JSON, padded past the limit: refused for its size, not its syntax.
        body: {
            let mut object = value.as_object().cloned().expect("object");
            object.insert("padding".into(), json!("x".repeat(1024 * 1024)));
            Value::Object(object).to_string()
        },
    };
    let discovery = crate::oidc::test_provider::authelia_discovery(&p.issuer);
    p.set(DISCOVERY, oversized(discovery.clone()));
    match crate::oidc::discovery::discover(&http, &p.issuer).await {
        Err(OidcError::InvalidResponse { endpoint, detail }) => {
            assert_eq!(endpoint, "discovery");
            assert!(detail.contains("larger than 1048576 bytes"), "{detail}");
        }
        other => panic!("an oversized discovery document was read: {:?}", other.map(|_| ())),
    }

    // The same documents within the limit load (the media type and status still reach
    // `openidconnect`), and an oversized JWKS is refused on its own.
    p.set(DISCOVERY, Canned::json(200, discovery));
    assert!(crate::oidc::discovery::discover(&http, &p.issuer).await.is_ok());
    p.set("/jwks.json", oversized(jwks(&[&key(1)])));
    assert!(
        matches!(
            crate::oidc::discovery::discover(&http, &p.issuer).await,
            Err(OidcError::InvalidResponse { endpoint: "discovery", detail }) if detail.contains("larger than")
        ),
        "an oversized JWKS was read at discovery"
    );
    // And on the key-rotation path.
    let uri = openidconnect::JsonWebKeySetUrl::new(format!("{}/jwks.json", p.issuer)).expect("url");
    match crate::oidc::discovery::fetch_jwks(&http, &uri).await {
        Err(OidcError::InvalidResponse { endpoint, detail }) => {
            assert_eq!(endpoint, "JWKS");
            assert!(detail.contains("larger than"), "{detail}");
        }
        other => panic!("an oversized JWKS was read: {:?}", other.map(|_| ())),
    }
}

/// A TLS listener presenting a certificate for 127.0.0.1 issued by a fresh CA (whose PEM
/// is returned), offering `http/1.1`. It completes handshakes, reports the protocol each
/// negotiated (or `None` for a failed one), and hangs up.
async fn tls_listener_from_a_private_ca() -> (
    std::net::SocketAddr,
    String,
    tokio::sync::mpsc::Receiver<Option<Vec<u8>>>,
) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_pem = ca_params.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf");
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("server certificate");
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (report, handshakes) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let negotiated = match acceptor.accept(tcp).await {
                Ok(tls) => Some(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec).unwrap_or_default()),
                Err(_) => None,
            };
            let _ = report.send(negotiated).await;
        }
    });
    (addr, ca_pem, handshakes)
}

#[tokio::test]
async fn the_providers_certificate_is_verified_against_the_system_roots_and_the_ca_file() {
    let (addr, ca_pem, mut handshakes) = tls_listener_from_a_private_ca().await;
    let issuer = format!("https://{addr}");

    // Its CA is neither a system root nor configured: refused, and the error says why.
    let client = OidcClient::new(Arc::new(config(&issuer))).expect("client");
    match client.discover_once().await {
        Err(error @ OidcError::ProviderUnreachable(_)) => {
            let why = error.to_string();
            assert!(why.contains("invalid peer certificate: UnknownIssuer"), "{why}");
            assert_no_secret(&error, &[SECRET]);
        }
        other => panic!("expected an untrusted provider, got {other:?}"),
    }
    assert_eq!(handshakes.recv().await, Some(None), "the handshake failed");

    // With the CA file the handshake completes, offering what reqwest speaks.
    let mut cfg = config(&issuer);
    cfg.ca_file = Some(crate::config::CaFile {
        path: "/etc/portcullis/provider-ca.pem".into(),
        pem: ca_pem.into_bytes(),
    });
    let client = OidcClient::new(Arc::new(cfg)).expect("client");
    // The listener hangs up after the handshake: still unreachable, for another reason.
    match client.discover_once().await {
        Err(OidcError::ProviderUnreachable(why)) => assert!(!why.contains("certificate"), "{why}"),
        other => panic!("expected a provider that hangs up, got {other:?}"),
    }
    assert_eq!(handshakes.recv().await, Some(Some(b"http/1.1".to_vec())));
}
