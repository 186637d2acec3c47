//! Ending a session: by link or form, where it goes afterwards, and what becomes of
//! its tokens at the provider.

use crate::common::*;
use reqwest::header::CONTENT_TYPE;

/// Posts the sign-out form `fields` as a browser would.
async fn post_logout(stack: &Stack, fields: &[(&str, &str)]) -> Resp {
    let origin = stack.base_url().origin().ascii_serialization();
    let form = stack
        .client
        .post(&stack.url("/.auth/logout"))
        .header("accept", ACCEPT_HTML)
        .header("origin", origin)
        .form(fields);
    stack.client.send(form).await
}

/// The session is gone for this browser and on the server.
async fn assert_logged_out(stack: &Stack, old_cookie: &str) {
    let app = stack.base_url();
    assert_eq!(stack.session_cookie(), None, "the session cookie is still held");
    assert_status(&stack.client.api_get(&stack.url("/.auth/me")).await, 401);
    assert_redirects_to_provider(&stack.client.navigate(&stack.url("/")).await, &stack.idp);
    // A copy of the old cookie is worthless too.
    let replay = stack.client.fresh();
    replay.put_cookie(&app, SESSION_COOKIE, old_cookie);
    assert_status(&replay.api_get(&stack.url("/.auth/me")).await, 401);
    assert_status(&replay.api_get(&stack.url("/data")).await, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_by_link_clears_the_session_and_returns_to_rd() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    let cookie = stack.session_cookie().expect("session");

    let resp = stack.client.navigate(&stack.url("/.auth/logout?rd=/goodbye")).await;
    assert!(
        resp.is_redirect(),
        "logout did not redirect: {}\n{}",
        resp.summary(),
        resp.body
    );
    assert_eq!(resp.location().map(String::from), Some(stack.url("/goodbye")));
    let cleared = resp
        .set_cookie(SESSION_COOKIE)
        .expect("logout clears the session cookie");
    assert!(cleared.is_removal(), "not a removal: {}", cleared.raw);
    assert_eq!(
        cleared.path(),
        Some("/"),
        "the removal must match the cookie's path: {}",
        cleared.raw
    );
    assert_logged_out(&stack, &cookie).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_by_form_post_clears_the_session() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    let cookie = stack.session_cookie().expect("session");

    let resp = post_logout(&stack, &[("rd", "/")]).await;
    assert!(
        resp.status.as_u16() < 400,
        "logout by POST failed: {}\n{}",
        resp.summary(),
        resp.body
    );
    if resp.is_redirect() {
        assert_on_app(&resp.location().unwrap(), &stack.base_url());
    }
    let cleared = resp
        .set_cookie(SESSION_COOKIE)
        .expect("logout clears the session cookie");
    assert!(cleared.is_removal(), "not a removal: {}", cleared.raw);
    assert_logged_out(&stack, &cookie).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_never_redirects_off_site() {
    let stack = Stack::start().await;
    for rd in [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "%2F%2Fevil.example",
    ] {
        let resp = stack
            .client
            .navigate(&stack.url(&format!("/.auth/logout?rd={rd}")))
            .await;
        assert!(resp.status.as_u16() < 500, "rd={rd}: {}", resp.summary());
        if let Some(loc) = resp.location() {
            assert_on_app(&loc, &stack.base_url());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_revokes_the_refresh_token_and_a_posted_form_names_where_to_go() {
    let stack = Stack::builder().env("OIDC_SCOPES", SCOPES_WITH_REFRESH).start().await;
    stack.login("john", "/").await;
    let cookie = stack.session_cookie().expect("session");
    assert!(stack.client.me_json(&stack.base_url()).await["refreshToken"].is_string());
    stack.idp.reset_stats().await;

    let resp = post_logout(&stack, &[("rd", "/goodbye?from=form")]).await;
    assert!(resp.is_redirect(), "{}\n{}", resp.summary(), resp.body);
    assert_eq!(resp.location().map(String::from), Some(stack.url("/goodbye?from=form")));
    assert_eq!(
        stack.idp.stats().await.revocation,
        1,
        "the refresh token was not revoked at the provider"
    );
    assert_logged_out(&stack, &cookie).await;

    // A posted rd that leaves the app is ignored: the signed-out page instead.
    stack.login("john", "/").await;
    let resp = post_logout(&stack, &[("rd", "//evil.example/x")]).await;
    assert_status(&resp, 200);
    assert!(resp.body.contains("Signed out"), "{}", resp.body);
}

/// The access token `/.auth/me` shows for the client's session.
async fn access_token(stack: &Stack) -> String {
    let me = stack.client.me_json(&stack.base_url()).await;
    me["accessToken"].as_str().expect("accessToken").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_without_a_refresh_token_revokes_the_access_token() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    let cookie = stack.session_cookie().expect("session");
    let token = access_token(&stack).await;
    assert_eq!(stack.idp.userinfo_status(&token).await, 200, "the token works before");
    stack.idp.reset_stats().await;

    let resp = stack.client.navigate(&stack.url("/.auth/logout")).await;
    assert_status(&resp, 200);
    assert_mentions(&resp, "Signed out");
    assert_eq!(stack.idp.stats().await.revocation, 1);
    assert_eq!(
        stack.idp.userinfo_status(&token).await,
        401,
        "the provider still honours the access token of an ended session"
    );
    assert_logged_out(&stack, &cookie).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_revocation_turned_off_logout_ends_only_the_local_session() {
    let stack = Stack::builder()
        .env("OIDC_SCOPES", SCOPES_WITH_REFRESH)
        .env("PORTCULLIS_OIDC_REVOKE_ON_LOGOUT", "false")
        .start()
        .await;
    stack.login("john", "/").await;
    let cookie = stack.session_cookie().expect("session");
    let token = access_token(&stack).await;
    stack.idp.reset_stats().await;

    let resp = stack.client.navigate(&stack.url("/.auth/logout?rd=/bye")).await;
    assert_eq!(resp.location().map(String::from), Some(stack.url("/bye")));
    assert_eq!(stack.idp.stats().await.revocation, 0, "revoked although turned off");
    assert_eq!(stack.idp.userinfo_status(&token).await, 200);
    assert_logged_out(&stack, &cookie).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_posted_rd_counts_only_in_a_form_of_reasonable_size_but_the_logout_always_happens() {
    let stack = Stack::start().await;
    let post = |content_type: &str, body: String| {
        stack
            .client
            .post(&stack.url("/.auth/logout"))
            .header(CONTENT_TYPE, content_type)
            .body(body)
    };

    // The media type is matched without regard to case, parameters allowed.
    stack.login("john", "/").await;
    let resp = stack
        .client
        .send(post(
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            "rd=%2Fbye".into(),
        ))
        .await;
    assert_eq!(
        resp.location().map(String::from),
        Some(stack.url("/bye")),
        "{}",
        resp.summary()
    );

    // A link (GET) is not a form, whatever it carries.
    stack.login("john", "/").await;
    let resp = stack
        .client
        .send(
            stack
                .client
                .get(&stack.url("/.auth/logout"))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body("rd=%2Fbye"),
        )
        .await;
    assert_status(&resp, 200);
    assert_mentions(&resp, "Signed out");

    // Not a form, or a form larger than a sign-out form can be: the rd is not read.
    let padding = "x".repeat(5000);
    for (content_type, body) in [
        ("application/json", r#"{"rd":"/bye"}"#.to_owned()),
        ("text/plain", "rd=/bye".to_owned()),
        ("application/x-www-form-urlencoded", format!("rd=%2Fbye&pad={padding}")),
    ] {
        stack.login("john", "/").await;
        let cookie = stack.session_cookie().expect("session");
        let resp = stack.client.send(post(content_type, body)).await;
        assert_status(&resp, 200);
        assert_mentions(&resp, "Signed out");
        assert_logged_out(&stack, &cookie).await;
    }
}
