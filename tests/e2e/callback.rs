//! The redirect URI under attack: forged state, replays, RFC 9207 `iss` checks,
//! provider errors, and cookies that are tampered with, cut short or foreign.
//! Every refusal is a clear 4xx page (or the usual login redirect), never a 500.

use url::Url;

use crate::common::*;

/// `url` with query parameter `name` set to `value` (`None` removes it), the
/// other parameters kept in order.
fn with_param(url: &Url, name: &str, value: Option<&str>) -> Url {
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().filter(|(k, _)| k != name).collect();
    let mut out = url.clone();
    {
        let mut q = out.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        if let Some(v) = value {
            q.append_pair(name, v);
        }
    }
    out
}

fn param(url: &Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{url} has no {name}"))
}

/// Changes one character in the middle of `value` (every bit of a middle
/// character counts, unlike the last one of unpadded base64).
fn tamper(value: &str) -> String {
    let mut chars: Vec<char> = value.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// The redirect URI as the provider would send the browser there with `error` instead
/// of a code, answering the login whose genuine callback URL is `genuine`.
fn provider_error(stack: &Stack, genuine: &Url, error: &str, description: &str) -> Url {
    let mut url = stack.base_url().join("/callback").unwrap();
    url.query_pairs_mut()
        .append_pair("error", error)
        .append_pair("error_description", description)
        .append_pair("state", &param(genuine, "state"))
        .append_pair("iss", &stack.idp.issuer);
    url
}

/// A deep link the failed-sign-in tests start from.
const DEEP: &str = "/reports/2026?view=full&sort=name";

/// `resp` is a JSON answer `status` with `error` whose `login_url` is `login_again`.
#[track_caller]
fn assert_offers_login_url(resp: &Resp, status: u16, error: &str, login_again: &str) {
    assert_status(resp, status);
    let body = resp.json();
    assert_eq!(
        (&body["error"], &body["login_url"]),
        (&error.into(), &login_again.into()),
        "{body}"
    );
}

/// Walks a login as `user` from [`DEEP`] up to the redirect URI: its URL, and the one
/// pending login the browser holds then.
async fn deep_callback(stack: &Stack, client: &Browserless, user: &str) -> (Url, Vec<String>) {
    let (_, callback) = client.login_until_callback(&stack.url(DEEP), user, PASSWORD).await;
    let pending = pending_logins(client, &stack.base_url());
    assert_eq!(pending.len(), 1, "{pending:?}");
    (callback, pending)
}

/// Walks a login as john up to the redirect URI and returns its URL.
async fn callback_url(stack: &Stack, client: &Browserless) -> Url {
    let (_, callback) = client
        .login_until_callback(&stack.url("/start"), "john", PASSWORD)
        .await;
    callback
}

/// `client` navigates to the genuine `callback` and is signed in: a redirect that sets
/// the session cookie. Returns the response.
async fn signs_in(client: &Browserless, callback: &Url) -> Resp {
    let resp = client.navigate(callback.as_str()).await;
    assert!(
        resp.is_redirect() && resp.set_cookie(SESSION_COOKIE).is_some(),
        "the callback did not sign in:\n{}\n{}",
        resp.summary(),
        resp.body
    );
    resp
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_with_another_state_is_refused_without_a_session() {
    let stack = Stack::start().await;
    let genuine = callback_url(&stack, &stack.client).await;
    let forged = with_param(&genuine, "state", Some("forged-state-0123456789abcdefghij"));

    let resp = stack.client.navigate(forged.as_str()).await;
    assert_status(&resp, 400);
    assert_html_page(&resp);
    assert_no_session_issued(&resp);
    assert_eq!(
        stack.idp.stats().await.authorization_code,
        0,
        "the code was redeemed despite the state mismatch"
    );
    assert_status(&stack.client.api_get(&stack.url("/.auth/me")).await, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_callback_gets_a_clear_page_not_a_crash() {
    let stack = Stack::start().await;
    let app = stack.base_url();
    let callback = callback_url(&stack, &stack.client).await;
    let pending: Vec<(String, String, String)> = stack
        .client
        .cookies(&app)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with(LOGIN_COOKIE_PREFIX))
        .collect();
    assert!(!pending.is_empty(), "no pending-login cookie before the callback");

    let first = stack.client.navigate(callback.as_str()).await;
    assert!(
        first.is_redirect(),
        "the genuine callback failed:\n{}\n{}",
        first.summary(),
        first.body
    );
    assert!(first.set_cookie(SESSION_COOKIE).is_some());

    // The same browser again: its pending login was consumed.
    let again = stack.client.navigate(callback.as_str()).await;
    assert_client_error(&again);
    assert_html_page(&again);
    assert_no_session_issued(&again);

    // Someone who kept the URL and the pending-login cookie: the code is spent.
    let thief = stack.client.fresh();
    for (name, _, value) in &pending {
        thief.put_cookie(&app, name, value);
    }
    let stolen = thief.navigate(callback.as_str()).await;
    assert_status(&stolen, 400);
    assert_html_page(&stolen);
    assert_mentions(&stolen, "already used or has expired");
    assert_no_session_issued(&stolen);
    assert_eq!(thief.cookie(&app, SESSION_COOKIE), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_without_iss_or_with_another_iss_is_refused() {
    let stack = Stack::start().await;
    let cases = [
        ("missing iss", None),
        ("another issuer", Some("http://127.0.0.1:1".to_owned())),
        ("issuer with a trailing slash", Some(format!("{}/", stack.idp.issuer))),
    ];
    for (what, iss) in cases {
        let client = stack.client.fresh();
        let genuine = callback_url(&stack, &client).await;
        assert_eq!(
            param(&genuine, "iss"),
            stack.idp.issuer,
            "the provider sends iss (RFC 9207)"
        );
        let rewritten = with_param(&genuine, "iss", iss.as_deref());

        let resp = client.navigate(rewritten.as_str()).await;
        assert!(
            resp.status == 400,
            "{what}: expected 400:\n{}\n{}",
            resp.summary(),
            resp.body
        );
        assert_html_page(&resp);
        assert_no_session_issued(&resp);
    }
    assert_eq!(
        stack.idp.stats().await.authorization_code,
        0,
        "a code was redeemed despite a bad iss"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_error_is_shown_on_a_page_with_its_description_escaped() {
    let stack = Stack::start().await;
    let genuine = callback_url(&stack, &stack.client).await;
    let error = provider_error(
        &stack,
        &genuine,
        "access_denied",
        "<script>alert(1)</script> The user denied access",
    );

    let resp = stack.client.navigate(error.as_str()).await;
    assert_client_error(&resp);
    assert_html_page(&resp);
    assert_no_session_issued(&resp);
    assert!(
        !resp.body.contains("<script>alert(1)"),
        "the provider's description is rendered as HTML:\n{}",
        resp.body
    );
    assert_mentions(&resp, "denied");
    assert_eq!(stack.idp.stats().await.authorization_code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_callback_offers_a_new_sign_in_that_returns_where_the_user_was() {
    let stack = Stack::start().await;
    let app = stack.base_url();
    let (deep, login_again) = (DEEP, login_again_to(DEEP));

    // A page, with the link escaped as an attribute value.
    let (genuine, pending) = deep_callback(&stack, &stack.client, "john").await;
    let declined = provider_error(&stack, &genuine, "access_denied", "The user denied access");
    let resp = stack.client.navigate(declined.as_str()).await;
    assert_status(&resp, 403);
    assert_offers_sign_in(&resp, &login_again);
    // The attempt is over all the same.
    assert_eq!(pending_logins_cleared(&resp), pending, "{}", resp.summary());
    assert_eq!(pending_logins(&stack.client, &app), Vec::<String>::new());

    // The link signs in (the provider still knows john) and lands where the user was going.
    let trace = stack.client.login(&stack.url(&login_again), "john", PASSWORD).await;
    assert_status(trace.landing(), 200);
    assert_eq!(trace.landing().url.as_str(), stack.url(deep), "{}", trace.describe());
    assert_eq!(
        stack
            .client
            .api_get(&stack.url(deep))
            .await
            .echo()
            .values("remote-user"),
        ["john"]
    );

    // JSON, for another browser whose login failed alike.
    let other = stack.client.fresh();
    let (_, genuine) = other.login_until_callback(&stack.url(deep), "harry", PASSWORD).await;
    let declined = provider_error(&stack, &genuine, "access_denied", "The user denied access");
    let resp = other.api_get(declined.as_str()).await;
    assert_offers_login_url(&resp, 403, "authorization_denied", &login_again);

    // A callback whose pending login did not open knows no return path: the bare login.
    let stranger = stack.client.fresh();
    let resp = stranger.api_get(declined.as_str()).await;
    assert_status(&resp, 400);
    assert_eq!(resp.json()["login_url"], "/.auth/login");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_truncated_and_foreign_session_cookies_count_as_no_session() {
    // Two portcullis instances with different secrets in front of one provider:
    // a cookie of one is foreign to the other.
    let (app_a, app_b) = (AppAddr::reserve(), AppAddr::reserve());
    let idp_opts = IdpOptions {
        redirect_uris: vec![app_a.redirect_uri(), app_b.redirect_uri()],
        ..Default::default()
    };
    let (idp, echo) = tokio::join!(Idp::start(idp_opts), Echo::start());
    let (a, b) = tokio::join!(
        Portcullis::builder(app_a, &idp.issuer, &echo.url).start(),
        Portcullis::builder(app_b, &idp.issuer, &echo.url).start(),
    );
    let (url_a, url_b) = (a.base_url(), b.base_url());

    let alice = Browserless::new();
    alice.login(&a.url("/"), "john", PASSWORD).await;
    let genuine = alice.cookie(&url_a, SESSION_COOKIE).expect("session at A");
    let bob = Browserless::new();
    bob.login(&b.url("/"), "harry", PASSWORD).await;
    let foreign = bob.cookie(&url_b, SESSION_COOKIE).expect("session at B");
    assert_ne!(genuine, foreign);

    let variants = [
        ("tampered", tamper(&genuine)),
        ("truncated", genuine[..genuine.len() / 2].to_owned()),
        ("extended", format!("{genuine}A")),
        ("foreign", foreign.clone()),
        ("empty", String::new()),
        ("garbage", "%00%ff..--__!!".to_owned()),
        ("oversized", "A".repeat(4000)),
    ];
    for (what, value) in &variants {
        let mallory = Browserless::new();
        mallory.put_cookie(&url_a, SESSION_COOKIE, value);
        let nav = mallory.navigate(&a.url("/private")).await;
        assert!(
            nav.status.as_u16() < 500,
            "{what} cookie: {}\n{}",
            nav.summary(),
            nav.body
        );
        assert_redirects_to_provider(&nav, &idp);
        mallory.put_cookie(&url_a, SESSION_COOKIE, value);
        let api = mallory.api_get(&a.url("/private")).await;
        assert!(api.status == 401, "{what} cookie: {}\n{}", api.summary(), api.body);
        assert_login_required_json(&api);
    }

    // None of that disturbed the genuine sessions.
    assert_eq!(
        alice.api_get(&a.url("/still")).await.echo().values("remote-user"),
        ["john"]
    );
    assert_eq!(
        bob.api_get(&b.url("/still")).await.echo().values("remote-user"),
        ["harry"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_pending_login_cookie_is_refused_at_the_callback() {
    let stack = Stack::start().await;
    let app = stack.base_url();
    let callback = callback_url(&stack, &stack.client).await;
    let pending: Vec<(String, String)> = stack
        .client
        .cookies(&app)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with(LOGIN_COOKIE_PREFIX))
        .map(|(n, _, v)| (n, v))
        .collect();
    assert!(!pending.is_empty(), "no pending-login cookie before the callback");

    for (label, change) in [
        ("tampered", tamper as fn(&str) -> String),
        ("truncated", |v: &str| v[..v.len() / 2].to_owned()),
    ] {
        let client = stack.client.fresh();
        for (name, value) in &pending {
            client.put_cookie(&app, name, &change(value));
        }
        let resp = client.navigate(callback.as_str()).await;
        assert!(
            resp.status == 400,
            "{label} pending-login cookie: {}\n{}",
            resp.summary(),
            resp.body
        );
        assert_html_page(&resp);
        assert_no_session_issued(&resp);
    }
    assert_eq!(stack.idp.stats().await.authorization_code, 0);

    // The untouched cookie still completes the login.
    signs_in(&stack.client, &callback).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_or_post_to_the_callback_changes_nothing_and_the_browsers_get_still_signs_in() {
    let stack = Stack::start().await;
    let app = stack.base_url();
    let callback = callback_url(&stack, &stack.client).await;
    let pending = pending_logins(&stack.client, &app);
    assert_eq!(pending.len(), 1, "{pending:?}");

    // A link checker or prefetcher (HEAD), or a form (POST), with the browser's cookies.
    for method in [reqwest::Method::HEAD, reqwest::Method::POST] {
        let c = &stack.client;
        let resp = c
            .send(
                c.request(method.clone(), callback.as_str())
                    .header("accept", ACCEPT_HTML),
            )
            .await;
        assert_status(&resp, 405);
        assert_eq!(resp.header("allow"), Some("GET"), "{method}: {}", resp.summary());
        assert!(
            resp.set_cookies().is_empty(),
            "{method}: the 405 sets cookies: {:?}",
            resp.headers
        );
        assert_eq!(pending_logins(c, &app), pending, "{method}");
    }
    assert_eq!(
        stack.idp.stats().await.authorization_code,
        0,
        "the code was redeemed by a request that is not GET"
    );

    // The code and the pending login are intact: the GET completes the sign-in.
    let ok = signs_in(&stack.client, &callback).await;
    assert_eq!(pending_logins_cleared(&ok), pending, "{}", ok.summary());
    assert_eq!(
        stack.client.api_get(&stack.url("/")).await.echo().values("remote-user"),
        ["john"]
    );
}

/// The provider refuses the code exchange for a reason of its own (here it does not
/// accept the client's secret: a configuration to fix): a 502, the pending login spent.
/// Signing in again is still the user's way forward, so the page offers it, back to
/// where the user was going, as every other failed callback does.
#[tokio::test(flavor = "multi_thread")]
async fn a_502_at_the_callback_offers_a_new_sign_in_that_returns_where_the_user_was() {
    // Without PAR the wrong secret first meets the provider at the token endpoint.
    let stack = Stack::builder()
        .idp(|o| o.require_par = false)
        .env("PORTCULLIS_OIDC_PAR", "never")
        .env("OIDC_CLIENT_SECRET", "not-the-secret-the-provider-knows")
        .start()
        .await;
    let login_again = login_again_to(DEEP);
    let (callback, pending) = deep_callback(&stack, &stack.client, "john").await;
    let resp = stack.client.navigate(callback.as_str()).await;
    assert_status(&resp, 502);
    assert_mentions(&resp, "refused the sign-in request");
    assert_offers_sign_in(&resp, &login_again);
    assert_no_session_issued(&resp);
    assert_eq!(pending_logins_cleared(&resp), pending, "{}", resp.summary());

    // JSON, for another browser whose sign-in fails alike.
    let other = stack.client.fresh();
    let (callback, _) = deep_callback(&stack, &other, "harry").await;
    let resp = other.api_get(callback.as_str()).await;
    assert_offers_login_url(&resp, 502, "idp_rejected", &login_again);
}
