//! Refreshing tokens: single-flight per session (Authelia revokes the whole grant
//! when one refresh token is used twice), rotation, and the end of a session
//! whose refresh token was revoked.
//!
//! These tests wait for real time to pass: the provider issues access tokens
//! that live 2 s and portcullis refreshes only expired ones
//! (`PORTCULLIS_SESSION_REFRESH_BEFORE_EXPIRY=0s`, the harness default).

use std::time::Duration;

use crate::common::*;

/// Access-token lifetime at the provider, in seconds.
const ACCESS_TTL: u64 = 2;

/// Long enough for any access token issued before the call to have expired.
async fn let_the_access_token_expire() {
    tokio::time::sleep(Duration::from_millis(ACCESS_TTL * 1000 + 600)).await;
}

async fn refresh_stack() -> Stack {
    Stack::builder()
        .idp(|o| o.access_token_ttl = Some(ACCESS_TTL))
        .env("OIDC_SCOPES", SCOPES_WITH_REFRESH)
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_requests_after_expiry_share_one_refresh() {
    let stack = refresh_stack().await;
    stack.login("john", "/").await;
    let before = stack.client.me_json(&stack.base_url()).await;
    assert!(
        before["refreshToken"].is_string(),
        "no refresh token with offline_access: {before:#}"
    );
    stack.idp.reset_stats().await;

    let_the_access_token_expire().await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = stack.client.clone();
        let url = stack.url(&format!("/data/{i}"));
        requests.spawn(async move { (i, client.api_get(&url).await) });
    }
    while let Some(joined) = requests.join_next().await {
        let (i, resp) = joined.expect("request task");
        assert_status(&resp, 200);
        let seen = resp.echo();
        assert_eq!(seen.url, format!("/data/{i}"));
        assert_eq!(seen.values("remote-user"), ["john"], "request {i} lost its identity");
    }

    let stats = stack.idp.stats().await;
    assert_eq!(stats.refresh_token, 1, "refresh is not single-flight: {stats:?}");
    assert_eq!(
        stats.authorization_code, 0,
        "a request logged in again instead of refreshing: {stats:?}"
    );

    // Rotation: the session now holds the new tokens.
    let after = stack.client.me_json(&stack.base_url()).await;
    assert_ne!(
        after["refreshToken"], before["refreshToken"],
        "the refresh token did not rotate"
    );
    assert_ne!(
        after["accessToken"], before["accessToken"],
        "the access token did not change"
    );
    assert_eq!(after["userInfo"]["preferred_username"], "john", "{after:#}");
    // Still the same session: refreshing does not log the user in anew.
    assert_eq!(stack.idp.stats().await.authorization_code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_expiry_refreshes_again_with_the_rotated_token() {
    let stack = refresh_stack().await;
    stack.login("john", "/").await;
    stack.idp.reset_stats().await;

    for round in 1..=2u64 {
        let_the_access_token_expire().await;
        let resp = stack.client.api_get(&stack.url(&format!("/round/{round}"))).await;
        assert_eq!(resp.echo().values("remote-user"), ["john"], "round {round}");
        assert_eq!(stack.idp.stats().await.refresh_token, round, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_refresh_token_ends_the_session_once_the_access_token_expires() {
    let stack = refresh_stack().await;
    stack.login("john", "/").await;
    assert_status(&stack.client.api_get(&stack.url("/before")).await, 200);

    stack.idp.revoke_refresh_tokens().await;
    stack.idp.reset_stats().await;
    let_the_access_token_expire().await;

    let session = stack.session_cookie().expect("session cookie");
    let api = stack.client.api_get(&stack.url("/after")).await;
    assert_login_required_json(&api);

    // Even a browser that kept the old cookie is not let in: the session is over
    // on the server, not retried at the provider on every request.
    let app = stack.base_url();
    stack.client.put_cookie(&app, SESSION_COOKIE, &session);
    let nav = stack.client.navigate(&stack.url("/after")).await;
    assert_redirects_to_provider(&nav, &stack.idp);
    stack.client.put_cookie(&app, SESSION_COOKIE, &session);
    let me = stack.client.api_get(&stack.url("/.auth/me")).await;
    assert_status(&me, 401);

    let stats = stack.idp.stats().await;
    assert_eq!(stats.refresh_token, 1, "{stats:?}");
}

/// A logout that lands while the session's refresh is at the provider ends the session
/// for good: the refresh's result is not stored (which would bring the session back for
/// anyone holding the cookie, with fresh tokens), and the tokens it brought are revoked.
/// The provider here carries out the grant at once and answers late, the worst case: the
/// logout's revocation meets an already rotated refresh token.
#[tokio::test(flavor = "multi_thread")]
async fn a_logout_during_a_refresh_is_not_undone_by_the_refresh() {
    let stack = Stack::builder()
        .idp(|o| {
            o.access_token_ttl = Some(ACCESS_TTL);
            o.refresh_delay = Duration::from_millis(1500);
        })
        .env("OIDC_SCOPES", SCOPES_WITH_REFRESH)
        .start()
        .await;
    stack.login("john", "/").await;
    let cookie = stack.session_cookie().expect("session cookie");
    let app = stack.base_url();
    stack.idp.reset_stats().await;
    let_the_access_token_expire().await;

    let refreshing = stack.client.fresh();
    refreshing.put_cookie(&app, SESSION_COOKIE, &cookie);
    let url = stack.url("/during");
    let during = tokio::spawn(async move { refreshing.api_get(&url).await });
    eventually("the refresh reached the provider", Duration::from_secs(5), || async {
        (stack.idp.stats().await.refresh_token == 1).then_some(())
    })
    .await;

    let logging_out = stack.client.fresh();
    logging_out.put_cookie(&app, SESSION_COOKIE, &cookie);
    let logout = logging_out.navigate(&stack.url("/.auth/logout")).await;
    assert_status(&logout, 200);
    let during = during.await.expect("request task");
    assert_login_required_json(&during);

    let replay = stack.client.fresh();
    replay.put_cookie(&app, SESSION_COOKIE, &cookie);
    assert_login_required_json(&replay.api_get(&stack.url("/after")).await);
    let stats = stack.idp.stats().await;
    assert_eq!(stats.refresh_token, 1, "{stats:?}");
    assert_eq!(
        stats.revocation, 2,
        "the logout revokes the tokens it saw, the refresh the ones it brought: {stats:?}"
    );
}

/// A provider that hangs on refresh grants costs a session one timeout, not one per
/// request: the requests that queued behind the refresh, and those that follow within the
/// pause after it, go on with the last tokens instead of each waiting out a refresh of
/// its own (which would also send the provider one grant per request).
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_hanging_on_refresh_costs_a_session_one_timeout_not_one_per_request() {
    let stack = Stack::builder()
        .idp(|o| {
            o.access_token_ttl = Some(ACCESS_TTL);
            o.refresh_delay = Duration::from_secs(60);
            o.refresh_delay_before = true;
        })
        .env("OIDC_SCOPES", SCOPES_WITH_REFRESH)
        .env("PORTCULLIS_OIDC_HTTP_TIMEOUT", "2s")
        .start()
        .await;
    stack.login("john", "/").await;
    stack.idp.reset_stats().await;
    let_the_access_token_expire().await;

    let started = std::time::Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..5 {
        let client = stack.client.clone();
        let url = stack.url(&format!("/page/{i}"));
        requests.spawn(async move { (i, client.api_get(&url).await, started.elapsed()) });
    }
    while let Some(joined) = requests.join_next().await {
        let (i, resp, took) = joined.expect("request task");
        assert_eq!(resp.echo().values("remote-user"), ["john"], "request {i}");
        assert!(
            took < Duration::from_millis(3500),
            "request {i} took {took:?}: it waited for refreshes of its own"
        );
    }
    let later = std::time::Instant::now();
    let resp = stack.client.api_get(&stack.url("/later")).await;
    assert_eq!(resp.echo().values("remote-user"), ["john"]);
    assert!(later.elapsed() < Duration::from_secs(1), "{:?}", later.elapsed());
    let stats = stack.idp.stats().await;
    assert_eq!(
        stats.refresh_token, 1,
        "one grant per session, not per request: {stats:?}"
    );
}

/// Authelia 4.39 sends groups only from userinfo, so a refresh asks userinfo again: a
/// user's changed groups reach the identity headers and the access rule within one
/// access-token lifetime, not at the next login.
#[tokio::test(flavor = "multi_thread")]
async fn groups_changed_at_the_provider_count_from_the_next_refresh() {
    let stack = Stack::builder()
        .idp(|o| o.access_token_ttl = Some(ACCESS_TTL))
        .env("OIDC_SCOPES", SCOPES_WITH_REFRESH)
        .env("PORTCULLIS_POLICY_ALLOWED_GROUPS", "admins")
        .start()
        .await;
    stack.login("john", "/").await;
    let resp = stack.client.api_get(&stack.url("/before")).await;
    assert_eq!(resp.echo().values("remote-groups"), ["admins,dev"]);

    stack.idp.set_groups("john", &["admins", "ops"]).await;
    let resp = stack.client.api_get(&stack.url("/not-yet")).await;
    assert_eq!(
        resp.echo().values("remote-groups"),
        ["admins,dev"],
        "before the refresh"
    );
    let_the_access_token_expire().await;
    let resp = stack.client.api_get(&stack.url("/regrouped")).await;
    assert_eq!(resp.echo().values("remote-groups"), ["admins,ops"], "after the refresh");

    stack.idp.set_groups("john", &["dev"]).await;
    let_the_access_token_expire().await;
    let resp = stack.client.api_get(&stack.url("/demoted")).await;
    assert_status(&resp, 403);
    assert_eq!(stack.idp.stats().await.refresh_token, 2);
}

/// A provider issuing access tokens shorter than `session.refresh_before_expiry` (here the
/// default, 30 s) gets one refresh per half token lifetime, not one per request: each
/// fresh token would otherwise be due for a refresh as soon as it arrived.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_shorter_than_the_refresh_lead_are_not_refreshed_on_every_request() {
    let stack = Stack::builder()
        .idp(|o| o.access_token_ttl = Some(4))
        .env("OIDC_SCOPES", SCOPES_WITH_REFRESH)
        .env("PORTCULLIS_SESSION_REFRESH_BEFORE_EXPIRY", "30s")
        .start()
        .await;
    stack.login("john", "/").await;
    stack.idp.reset_stats().await;
    five_requests(&stack, "early").await;
    let stats = stack.idp.stats().await;
    assert_eq!(
        stats.refresh_token, 0,
        "tokens refreshed as soon as they arrived: {stats:?}"
    );

    // Past half the token's lifetime: one refresh, and its new token is not due either.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    five_requests(&stack, "later").await;
    let stats = stack.idp.stats().await;
    assert_eq!(stats.refresh_token, 1, "{stats:?}");
}

async fn five_requests(stack: &Stack, phase: &str) {
    for i in 0..5 {
        let resp = stack.client.api_get(&stack.url(&format!("/{phase}/{i}"))).await;
        assert_eq!(resp.echo().values("remote-user"), ["john"], "{phase} {i}");
    }
}
