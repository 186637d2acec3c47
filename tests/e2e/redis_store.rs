//! The Redis session store, end to end: two portcullis replicas (same secret, same
//! Redis) behind an imagined load balancer, a real redis-server per test, the real
//! provider and the echo upstream.
//!
//! "Through B" means the client's session cookie from A is sent to B: one host name in
//! front of both replicas amounts to that.

use std::time::Duration;

use crate::common::redis_server::{redis_replica, PREFIX};
use crate::common::*;

/// Access-token lifetime at the provider for the refresh test, in seconds.
const ACCESS_TTL: u64 = 2;

fn assert_store_unavailable_json(resp: &Resp) {
    assert_status(resp, 503);
    assert!(
        resp.content_type().starts_with("application/json"),
        "{}",
        resp.summary()
    );
    assert_eq!(resp.json()["error"], "session_store_unavailable", "{}", resp.body);
    assert!(resp.header("retry-after").is_some(), "503 without Retry-After");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_made_through_one_replica_works_through_the_other() {
    const PASSWORD: &str = "redis-pass-must-not-be-logged-5c1";
    let r = Replicas::builder().redis_password(PASSWORD).start().await;
    let cookie = r.login_through_a("john", "/hello").await;
    r.share_cookie_with_b(&cookie);

    let through_b = r.client.api_get(&r.b.url("/from-b")).await;
    let seen = through_b.echo();
    assert_eq!(seen.url, "/from-b");
    assert_eq!(seen.values("remote-user"), ["john"]);
    assert_eq!(seen.values("remote-email"), ["john@example.com"]);
    assert!(
        seen.values("remote-groups").iter().any(|g| g.contains("admins")),
        "{seen:?}"
    );
    let me = r.client.me_json(&r.b.base_url()).await;
    assert_eq!(me["claims"]["preferred_username"], "john", "{me:#}");

    for (name, replica) in [("A", &r.a), ("B", &r.b)] {
        let log = replica.log_text();
        assert!(
            log.contains("session store: Redis"),
            "replica {name} did not name its store:\n{log}"
        );
        assert!(
            !log.contains(PASSWORD),
            "replica {name} logged the Redis password:\n{log}"
        );
        assert!(!log.contains(&cookie), "replica {name} logged the session cookie");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_on_one_replica_ends_the_session_on_the_other() {
    let r = Replicas::builder().start().await;
    let cookie = r.login_through_a("john", "/").await;
    r.share_cookie_with_b(&cookie);
    assert_status(&r.client.api_get(&r.b.url("/before")).await, 200);
    assert_eq!(r.redis.session_keys(PREFIX).await.len(), 1);
    r.idp.reset_stats().await;

    let logout = r.client.navigate(&r.a.url("/.auth/logout")).await;
    assert_status(&logout, 200);
    assert!(
        r.redis.session_keys(PREFIX).await.is_empty(),
        "logout left the session in Redis"
    );
    // The session read back as Redis removed it (GETDEL) names the tokens to revoke.
    assert_eq!(r.idp.stats().await.revocation, 1);

    // B still has the cookie (it never saw the logout's Set-Cookie), and it is worth nothing.
    r.share_cookie_with_b(&cookie);
    assert_login_required_json(&r.client.api_get(&r.b.url("/after")).await);
    r.share_cookie_with_b(&cookie);
    assert_redirects_to_provider(&r.client.navigate(&r.b.url("/after")).await, &r.idp);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_holds_sealed_values_under_hashed_keys_only() {
    let r = Replicas::builder()
        .env("OIDC_SCOPES", SCOPES_WITH_REFRESH)
        .start()
        .await;
    let cookie = r.login_through_a("john", "/").await;
    let me = r.client.me_json(&r.a.base_url()).await;
    let secrets: Vec<String> = ["accessToken", "refreshToken", "idToken"]
        .iter()
        .map(|field| {
            me[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} missing: {me:#}"))
                .to_owned()
        })
        .collect();

    let keys = r.redis.keys().await;
    assert_eq!(keys.len(), 1, "one session, no leftover locks: {keys:?}");
    let key = &keys[0];
    let hex = key.strip_prefix(PREFIX).expect("the configured prefix");
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a SHA-256 in hex: {key}"
    );
    assert!(!key.contains(&cookie), "the key contains the cookie id");
    let value = r.redis.get(key).await.expect("the session value");
    let text = String::from_utf8_lossy(&value);
    let mut needles = secrets.clone();
    needles.extend(
        [
            "john@example.com",
            "John Doe",
            "admins",
            "5b0e7b0c-3c9f-4d57-9a44-1f1f8e1c0a01",
            "preferred_username",
            &cookie,
        ]
        .map(str::to_owned),
    );
    for needle in &needles {
        assert!(!text.contains(needle.as_str()), "the stored value shows `{needle}`");
    }
    // Not even a part of a token survives in clear (a JWT's header or payload segment).
    for segment in secrets[2].split('.').take(2) {
        assert!(!text.contains(segment), "an ID-token segment is readable in Redis");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_requests_over_two_replicas_share_one_refresh() {
    twenty_concurrent_requests_share_one_refresh(true).await;
}

/// A provider that uses the same refresh token again (not Authelia, but Keycloak's and
/// Google's default): the replica that waited sees the fresh access token instead.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_provider_that_keeps_the_refresh_token_the_replicas_still_refresh_once() {
    twenty_concurrent_requests_share_one_refresh(false).await;
}

/// Twenty requests, over two replicas, arrive just after the access token expired.
/// `rotating`: whether the provider issues a new refresh token at each refresh.
async fn twenty_concurrent_requests_share_one_refresh(rotating: bool) {
    let r = Replicas::builder()
        .idp(|o| {
            o.access_token_ttl = Some(ACCESS_TTL);
            o.rotate_refresh_token = rotating;
        })
        .env("OIDC_SCOPES", SCOPES_WITH_REFRESH)
        .env("PORTCULLIS_IDENTITY_ACCESS_TOKEN", "x-forwarded-access-token")
        .start()
        .await;
    let cookie = r.login_through_a("john", "/").await;
    r.share_cookie_with_b(&cookie);
    let before = r.client.me_json(&r.a.base_url()).await;
    assert!(before["refreshToken"].is_string(), "no refresh token: {before:#}");
    r.idp.reset_stats().await;

    tokio::time::sleep(Duration::from_millis(ACCESS_TTL * 1000 + 600)).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = r.client.clone();
        let replica = if i % 2 == 0 { &r.a } else { &r.b };
        let url = replica.url(&format!("/data/{i}"));
        requests.spawn(async move { (i, client.api_get(&url).await) });
    }
    let mut forwarded_tokens = Vec::new();
    while let Some(joined) = requests.join_next().await {
        let (i, resp) = joined.expect("request task");
        let seen = resp.echo();
        assert_eq!(seen.url, format!("/data/{i}"));
        assert_eq!(seen.values("remote-user"), ["john"], "request {i} lost its identity");
        forwarded_tokens.push((i, seen.values("x-forwarded-access-token").join(",")));
    }

    let stats = r.idp.stats().await;
    assert_eq!(
        stats.refresh_token, 1,
        "refresh is not single-flight across replicas: {stats:?}"
    );
    assert_eq!(stats.authorization_code, 0, "a request logged in again: {stats:?}");

    // Both replicas now see the rotated tokens, and the grant was not revoked.
    let after_a = r.client.me_json(&r.a.base_url()).await;
    r.share_cookie_with_b(&cookie);
    let after_b = r.client.me_json(&r.b.base_url()).await;
    assert_eq!(
        after_a["refreshToken"] != before["refreshToken"],
        rotating,
        "the refresh token rotated, or did not, unlike the provider's setting"
    );
    assert_eq!(after_a["refreshToken"], after_b["refreshToken"]);
    // Every request waited for the one refresh (on whichever replica made it) and went
    // upstream with the new access token, none with the expired one.
    let fresh = after_a["accessToken"].as_str().expect("an access token");
    assert_ne!(before["accessToken"].as_str(), Some(fresh));
    for (i, token) in &forwarded_tokens {
        assert_eq!(token, fresh, "request {i} went upstream with another access token");
    }
    assert_eq!(after_b["userInfo"]["preferred_username"], "john", "{after_b:#}");
    assert!(
        r.redis.keys().await.iter().all(|k| !k.contains("refresh-lock")),
        "a refresh lock was left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_store_answers_503_then_sessions_work_again_when_it_is_back() {
    let mut r = Replicas::builder().start().await;
    let cookie = r.login_through_a("john", "/").await;
    r.redis.save().await;
    r.redis.stop().await;

    let api = r.client.api_get(&r.a.url("/during")).await;
    assert_store_unavailable_json(&api);
    let page = r.client.navigate(&r.a.url("/during")).await;
    assert_status(&page, 503);
    assert_html_page(&page);
    assert_mentions(&page, "Session store unavailable");
    assert!(page.location_raw().is_none(), "no login loop: {}", page.summary());
    let ready = r.client.get(&r.a.url("/.auth/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap_or_default().contains("session store"));
    // Without a cookie there is nothing to look up: a browser is still sent to log in.
    let anonymous = r.client.fresh().navigate(&r.a.url("/")).await;
    assert_redirects_to_provider(&anonymous, &r.idp);
    assert!(
        r.a.log_text().contains("Redis session store unreachable"),
        "the log does not name the problem"
    );

    // Back on the same port with its saved data: the same session works again.
    r.redis.restart().await;
    let url = r.a.url("/after");
    let client = r.client.clone();
    let resp = eventually("the session to work again", Duration::from_secs(10), || {
        let (client, url) = (client.clone(), url.clone());
        async move { Some(client.api_get(&url).await).filter(|resp| resp.status == 200) }
    })
    .await;
    assert_eq!(resp.echo().values("remote-user"), ["john"]);
    r.share_cookie_with_b(&cookie);
    assert_status(&r.client.api_get(&r.b.url("/after")).await, 200);
    let ready = r.client.get(&r.a.url("/.auth/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    // Each change is logged once, not each of the requests that met it.
    let log = r.a.log_text();
    assert_eq!(log.matches("Redis session store unreachable").count(), 1, "{log}");
    assert_eq!(log.matches("Redis session store reachable again").count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_down_at_the_callback_offers_a_new_sign_in_that_works_once_it_is_back() {
    // By the time the new session is to be stored the code is spent, and the pending
    // login with it: a reload cannot finish this sign-in, only a new one can, back to
    // where the user was going.
    const DEEP: &str = "/reports/q3?view=full";
    let mut r = Replicas::builder().start().await;
    let (_, callback) = r.client.login_until_callback(&r.a.url(DEEP), "john", PASSWORD).await;
    let pending = pending_logins(&r.client, &r.a.base_url());
    assert_eq!(pending.len(), 1, "{pending:?}");
    r.redis.stop().await;

    let page = r.client.navigate(callback.as_str()).await;
    assert_status(&page, 503);
    assert!(page.header("retry-after").is_some(), "503 without Retry-After");
    assert_mentions(&page, "could not be saved");
    assert_offers_sign_in(&page, &login_again_to(DEEP));
    assert_eq!(pending_logins_cleared(&page), pending, "the spent login was kept");
    assert!(page.set_cookie(SESSION_COOKIE).is_none(), "{}", page.summary());

    r.redis.restart().await;
    store_ready(&r.client, &r.a).await;
    let again = r.a.url(&login_again_to(DEEP));
    let trace = r.client.login(&again, "john", PASSWORD).await;
    let landing = trace.landing();
    assert_eq!(
        (landing.status, landing.url.as_str()),
        (reqwest::StatusCode::OK, r.a.url(DEEP).as_str()),
        "{}",
        trace.describe()
    );
    let seen = r.client.api_get(&r.a.url(DEEP)).await.echo();
    assert_eq!(seen.values("remote-user"), ["john"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_redis_dropped_while_idle_is_replaced_within_the_request() {
    // Redis restarted, failed over, or a firewall dropped the idle connection: the next
    // request finds the connection gone, and gets its answer on a new one, not a 503.
    let r = Replicas::builder().start().await;
    r.login_through_a("john", "/").await;
    assert_status(&r.client.api_get(&r.a.url("/before")).await, 200);
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut r.redis.client().await)
        .await
        .expect("CLIENT KILL");
    assert!(killed >= 1, "no connection of portcullis was open");
    for i in 0..3 {
        let resp = r.client.api_get(&r.a.url(&format!("/after/{i}"))).await;
        assert_status(&resp, 200);
        assert_eq!(resp.echo().values("remote-user"), ["john"]);
    }
    let log = r.a.log_text();
    assert!(!log.contains("unreachable"), "{log}");
}

/// One portcullis on the Redis store at `redis_url` (which need not be up), with its
/// own provider and echo upstream, for the tests that need no second replica.
async fn lone_replica(redis_url: String) -> (Idp, Echo, PortcullisBuilder) {
    let app = AppAddr::reserve();
    let idp = Idp::start(IdpOptions {
        redirect_uris: vec![app.redirect_uri()],
        ..IdpOptions::default()
    })
    .await;
    let echo = Echo::start().await;
    let builder = Portcullis::builder(app, &idp.issuer, &echo.url)
        .env("SESSION_ENCRYPTION_SECRET", "e2e-lone-redis-replica-0123456789abcdef")
        .env("PORTCULLIS_SESSION_STORE", "redis")
        .env("PORTCULLIS_SESSION_REDIS_URL", redis_url)
        .env("PORTCULLIS_SESSION_REDIS_TIMEOUT", "1s");
    (idp, echo, builder)
}

/// Waits until readyz answers 503 naming the session store.
async fn store_not_ready(client: &Browserless, portcullis: &Portcullis) {
    let readyz = portcullis.url("/.auth/readyz");
    eventually("readyz to name the session store", Duration::from_secs(10), || {
        let (client, readyz) = (client.clone(), readyz.clone());
        async move {
            let resp = client.send(client.get(&readyz)).await;
            (resp.status == 503 && resp.body.contains("session store")).then_some(())
        }
    })
    .await;
}

/// Waits until readyz answers 200 again.
async fn store_ready(client: &Browserless, portcullis: &Portcullis) {
    let readyz = portcullis.url("/.auth/readyz");
    eventually("readyz to answer 200", Duration::from_secs(10), || {
        let (client, readyz) = (client.clone(), readyz.clone());
        async move { (client.send(client.get(&readyz)).await.status == 200).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn portcullis_starts_while_redis_is_down_and_is_ready_once_it_is_up() {
    let redis_port = free_port();
    let (_idp, _echo, builder) = lone_replica(format!("redis://127.0.0.1:{redis_port}")).await;
    let mut portcullis = builder.start_unready().await;
    let client = Browserless::new();
    store_not_ready(&client, &portcullis).await;

    let _redis = Redis::start_on(redis_port, None).await;
    portcullis.wait_ready().await;
    let url = portcullis.url("/hello");
    let trace = client.login(&url, "john", PASSWORD).await;
    assert_status(trace.landing(), 200);
    assert_eq!(client.api_get(&url).await.echo().values("remote-user"), ["john"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_or_moved_value_is_no_session() {
    let r = Replicas::builder().start().await;
    r.login_through_a("john", "/").await;
    let john_key = r.redis.session_keys(PREFIX).await.remove(0);

    // Another user's sealed session copied under john's key: not a way to become harry.
    let harry = r.client.fresh();
    let harry_trace = harry.login(&r.a.url("/"), "harry", PASSWORD).await;
    assert_status(harry_trace.landing(), 200);
    let harry_key = r
        .redis
        .session_keys(PREFIX)
        .await
        .into_iter()
        .find(|k| *k != john_key)
        .expect("harry's key");
    let harry_value = r.redis.get(&harry_key).await.expect("harry's value");
    r.redis.set_keep_ttl(&john_key, &harry_value).await;
    assert_login_required_json(&r.client.api_get(&r.a.url("/moved")).await);

    // A flipped byte in the ciphertext.
    let mut tampered = harry_value.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x40;
    r.redis.set_keep_ttl(&harry_key, &tampered).await;
    let harry_cookie = harry.cookie(&r.a.base_url(), SESSION_COOKIE).expect("harry's cookie");
    harry.put_cookie(&r.b.base_url(), SESSION_COOKIE, &harry_cookie);
    assert_login_required_json(&harry.api_get(&r.b.url("/tampered")).await);
    harry.put_cookie(&r.b.base_url(), SESSION_COOKIE, &harry_cookie);
    let nav = harry.navigate(&r.b.url("/tampered")).await;
    assert_redirects_to_provider(&nav, &r.idp);

    // Junk that is not a sealed value at all.
    r.redis.set_keep_ttl(&harry_key, b"{\"subject\":\"admin\"}").await;
    harry.put_cookie(&r.a.base_url(), SESSION_COOKIE, &harry_cookie);
    assert_login_required_json(&harry.api_get(&r.a.url("/junk")).await);

    for replica in [&r.a, &r.b] {
        assert!(!replica.logged_status(500), "a 500 was logged:\n{}", replica.log_tail());
    }
    assert!(
        r.a.log_text().contains("stored session ignored") || r.b.log_text().contains("stored session ignored"),
        "the ignored value was not logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ttl_slides_with_use_but_never_past_the_absolute_deadline() {
    let r = Replicas::builder()
        .env("PORTCULLIS_SESSION_IDLE_TIMEOUT", "3s")
        .env("PORTCULLIS_SESSION_MAX_LIFETIME", "5s")
        .start()
        .await;
    let cookie = r.login_through_a("john", "/").await;
    let key = r.redis.session_keys(PREFIX).await.remove(0);
    let ttl = r.redis.pttl(&key).await;
    assert!(
        (1..=3000).contains(&ttl),
        "TTL after login is the idle timeout: {ttl} ms"
    );

    // Used within the idle timeout: alive, and the TTL is back to the idle timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_status(&r.client.api_get(&r.a.url("/used")).await, 200);
    let slid = r.redis.pttl(&key).await;
    assert!(slid > 2500, "a lookup did not slide the idle TTL: {slid} ms");

    // Later lookups cannot carry it past the absolute deadline (5 s after login).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    r.share_cookie_with_b(&cookie);
    assert_status(&r.client.api_get(&r.b.url("/late")).await, 200);
    let pinned = r.redis.pttl(&key).await;
    assert!(
        (1..=2100).contains(&pinned),
        "the TTL passes the absolute deadline: {pinned} ms left"
    );
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        r.redis.pttl(&key).await,
        -2,
        "the session outlived its absolute deadline in Redis"
    );
    assert_login_required_json(&r.client.api_get(&r.a.url("/expired")).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_session_expires_in_redis() {
    let r = Replicas::builder()
        .env("PORTCULLIS_SESSION_IDLE_TIMEOUT", "2s")
        .start()
        .await;
    let cookie = r.login_through_a("john", "/").await;
    let key = r.redis.session_keys(PREFIX).await.remove(0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(r.redis.pttl(&key).await, -2, "the idle session is still in Redis");
    r.share_cookie_with_b(&cookie);
    assert_login_required_json(&r.client.api_get(&r.b.url("/idle")).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_with_another_secret_cannot_read_the_sessions() {
    let r = Replicas::builder().start().await;
    let cookie = r.login_through_a("john", "/").await;
    let app = AppAddr::reserve();
    let stranger = redis_replica(
        Portcullis::builder(app, &r.idp.issuer, &r.echo.url),
        &r.redis,
        "another-secret-another-secret-0123456789",
    )
    .start()
    .await;
    r.client.put_cookie(&stranger.base_url(), SESSION_COOKIE, &cookie);
    assert_login_required_json(&r.client.api_get(&stranger.url("/x")).await);
    // The stranger did not delete what it could not read: A still has the session.
    assert_status(&r.client.api_get(&r.a.url("/still")).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_travel_to_redis_over_tls_checked_against_the_configured_ca() {
    let pki = crate::common::tls::TestPki::new();
    pki.install(&pki.issue("localhost", 1));
    let redis = Redis::start_tls(&pki).await;
    let stack = Stack::builder()
        .env("PORTCULLIS_SESSION_STORE", "redis")
        .env("PORTCULLIS_SESSION_REDIS_URL", redis.tls_url())
        .env(
            "PORTCULLIS_SESSION_REDIS_CA_FILE",
            pki.ca_pem_path().display().to_string(),
        )
        .start()
        .await;
    stack.login("john", "/tls").await;
    let resp = stack.client.api_get(&stack.url("/tls")).await;
    assert_eq!(resp.echo().values("remote-user"), ["john"]);
    assert_eq!(
        redis.session_keys("portcullis:").await.len(),
        1,
        "the session is not in Redis"
    );

    // Without the CA (system roots only) the same server is not trusted: not ready, 503.
    let untrusting = Portcullis::builder(AppAddr::reserve(), &stack.idp.issuer, &stack.echo.url)
        .env("PORTCULLIS_SESSION_STORE", "redis")
        .env("PORTCULLIS_SESSION_REDIS_URL", redis.tls_url())
        .start_unready()
        .await;
    store_not_ready(&Browserless::new(), &untrusting).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_redis_password_is_a_clear_503_and_never_logged() {
    const WRONG: &str = "wrong-redis-password-7d2e";
    let redis = Redis::start_with_password("the-right-redis-password-4a1").await;
    let (_idp, _echo, builder) = lone_replica(format!("redis://default@127.0.0.1:{}", redis.port)).await;
    let portcullis = builder
        .env("PORTCULLIS_SESSION_REDIS_PASSWORD", WRONG)
        .start_unready()
        .await;
    let client = Browserless::new();
    store_not_ready(&client, &portcullis).await;

    // Any well-formed session cookie needs the store.
    client.put_cookie(&portcullis.base_url(), SESSION_COOKIE, &"A".repeat(43));
    assert_store_unavailable_json(&client.api_get(&portcullis.url("/x")).await);
    let log = portcullis.log_text();
    assert!(!log.contains(WRONG), "the Redis password was logged:\n{log}");
    assert!(
        log.to_ascii_lowercase().contains("wrongpass") || log.to_ascii_lowercase().contains("auth"),
        "the log does not say that authentication failed:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_rule_is_judged_by_the_replica_that_loads_the_session() {
    // A admits everyone, B only the group "guests" (john is in admins and dev): the
    // verdict is not stored in Redis but judged again on every load, by each replica's rule.
    let r = Replicas::builder()
        .env_b("PORTCULLIS_POLICY_ALLOWED_GROUPS", "guests")
        .start()
        .await;
    let cookie = r.login_through_a("john", "/hello").await;
    r.share_cookie_with_b(&cookie);

    assert_status(&r.client.api_get(&r.a.url("/again-on-a")).await, 200);
    let refused = r.client.api_get(&r.b.url("/on-b")).await;
    assert_status(&refused, 403);
    assert_eq!(refused.json()["error"], "forbidden", "{}", refused.body);
    // Nothing of the refused request reached the upstream; A's did.
    let seen = r.echo.received().await;
    assert!(seen.iter().any(|r| r == "GET /again-on-a"), "{seen:?}");
    assert!(!seen.iter().any(|r| r.ends_with(" /on-b")), "{seen:?}");
}

/// Redis fails after the provider has rotated the refresh token (here it is killed while
/// the refresh grant's answer is on its way). The stored session still holds the spent
/// refresh token, and a refresh with it would make the provider end the grant: the
/// replica keeps the new tokens, serves the request with them, and stores them once Redis
/// is back, so the session survives with one refresh at the provider.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_rotated_while_redis_fails_are_stored_once_it_is_back_not_lost() {
    rotated_tokens_survive_a_redis_failure(false).await;
}

/// As above, with Redis down until the rescued access token has expired too: once Redis
/// is back, the rescued tokens are stored and refreshed at once (with the rotated refresh
/// token), so no request goes upstream with an expired access token.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_rotated_while_redis_fails_are_refreshed_if_they_expired_meanwhile() {
    rotated_tokens_survive_a_redis_failure(true).await;
}

/// Access-token lifetime at the provider for the tests where Redis fails during a
/// refresh: long enough for the refreshed token to stay fresh while Redis restarts.
const LONGER_TTL: u64 = 4;

/// Replicas whose provider answers each refresh grant late (after carrying it out),
/// and that forward the access token upstream.
fn replicas_with_slow_refreshes() -> crate::common::redis_server::ReplicasBuilder {
    Replicas::builder()
        .idp(|o| {
            o.access_token_ttl = Some(LONGER_TTL);
            o.refresh_delay = Duration::from_millis(1500);
        })
        .env("OIDC_SCOPES", SCOPES_WITH_REFRESH)
        .env("PORTCULLIS_IDENTITY_ACCESS_TOKEN", "x-forwarded-access-token")
}

/// Lets the session's access token expire, then sends a request through A and kills
/// Redis while the provider's answer to A's refresh (new tokens, the old refresh token
/// spent) is on its way. Returns A's answer, checked to be served as john.
async fn refresh_while_redis_dies(r: &mut Replicas) -> Resp {
    tokio::time::sleep(Duration::from_millis(LONGER_TTL * 1000 + 600)).await;
    let (client, url) = (r.client.clone(), r.a.url("/during"));
    let during = tokio::spawn(async move { client.api_get(&url).await });
    eventually(
        "the refresh grant to be carried out",
        Duration::from_secs(5),
        || async { (r.idp.stats().await.refresh_token == 1).then_some(()) },
    )
    .await;
    r.redis.stop().await;
    let during = during.await.expect("request task");
    assert_eq!(
        during.echo().values("remote-user"),
        ["john"],
        "the request whose refresh went through was not served:\n{}",
        r.a.log_tail()
    );
    during
}

async fn rotated_tokens_survive_a_redis_failure(expire_while_down: bool) {
    let mut r = replicas_with_slow_refreshes().start().await;
    let cookie = r.login_through_a("john", "/").await;
    let before = r.client.me_json(&r.a.base_url()).await;
    r.redis.save().await;
    r.idp.reset_stats().await;
    let during = refresh_while_redis_dies(&mut r).await;
    let rescued_token = during.echo().values("x-forwarded-access-token").join(",");
    if expire_while_down {
        tokio::time::sleep(Duration::from_millis(LONGER_TTL * 1000 + 600)).await;
    }

    // Back with the data saved before the refresh: the spent refresh token.
    r.redis.restart().await;
    let url = r.a.url("/after");
    let client = r.client.clone();
    let after = eventually("the session to work again", Duration::from_secs(10), || {
        let (client, url) = (client.clone(), url.clone());
        async move { Some(client.api_get(&url).await).filter(|resp| resp.status != 503) }
    })
    .await;
    assert_eq!(after.echo().values("remote-user"), ["john"], "{}", r.a.log_tail());
    let forwarded = after.echo().values("x-forwarded-access-token").join(",");
    let stats = r.idp.stats().await;
    if expire_while_down {
        assert_eq!(stats.refresh_token, 2, "{stats:?}");
        assert_ne!(forwarded, rescued_token, "an expired access token went upstream");
    } else {
        assert_eq!(
            stats.refresh_token, 1,
            "the spent refresh token was used again: {stats:?}"
        );
        assert_eq!(forwarded, rescued_token);
    }
    assert_eq!(stats.revocation, 0, "{stats:?}");

    // Redis now holds the newest tokens: the other replica uses them without a refresh.
    r.share_cookie_with_b(&cookie);
    let on_b = r.client.me_json(&r.b.base_url()).await;
    assert_ne!(on_b["refreshToken"], before["refreshToken"]);
    assert_eq!(on_b["accessToken"].as_str(), Some(forwarded.as_str()), "{on_b:#}");
    assert_eq!(r.idp.stats().await.refresh_token, stats.refresh_token);
    assert!(
        r.a.log_text().contains("refreshed tokens could not be stored"),
        "the log does not say what happened"
    );
}

/// As above, but the session's next request goes to the other replica. Replica A, which
/// holds the rotated tokens, stores them by itself as soon as Redis is back, without
/// waiting for a request of the session: otherwise B would find the spent refresh token
/// in Redis, refresh with it, and the provider would end the grant (and the session).
#[tokio::test(flavor = "multi_thread")]
async fn tokens_rotated_while_redis_fails_reach_redis_without_a_request_on_that_replica() {
    let metrics_port = free_port();
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let mut r = replicas_with_slow_refreshes()
        .env_a("PORTCULLIS_SERVER_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .start()
        .await;
    let cookie = r.login_through_a("john", "/").await;
    let before = r.client.me_json(&r.a.base_url()).await;
    let keys = r.redis.session_keys(PREFIX).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let spent = r.redis.get(&keys[0]).await.expect("the session in Redis");
    r.redis.save().await;
    r.idp.reset_stats().await;
    let during = refresh_while_redis_dies(&mut r).await;
    let rescued_token = during.echo().values("x-forwarded-access-token").join(",");

    // Back with the data saved before the refresh: the spent refresh token. No request
    // of the session reaches A from here on.
    r.redis.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stored_by_a = loop {
        if r.redis.get(&keys[0]).await.is_some_and(|now| now != spent) {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    r.share_cookie_with_b(&cookie);
    let on_b = r.client.api_get(&r.b.url("/on-b")).await;
    assert_status(&on_b, 200);
    assert_eq!(
        on_b.echo().values("remote-user"),
        ["john"],
        "the session ended on B (A stored the rotated tokens: {stored_by_a}):\n{}\n{}",
        r.a.log_tail(),
        r.b.log_tail()
    );
    assert!(stored_by_a, "A did not store the rotated tokens once Redis was back");
    // B went on with the rotated tokens: as they are, or refreshed with the rotated
    // refresh token if they were due by then; never with the spent one.
    let stats = r.idp.stats().await;
    assert!((1..=2).contains(&stats.refresh_token), "{stats:?}");
    assert_eq!(stats.revocation, 0, "{stats:?}");
    let forwarded = on_b.echo().values("x-forwarded-access-token").join(",");
    assert!(
        stats.refresh_token == 2 || forwarded == rescued_token,
        "B sent neither the rescued nor a newer access token"
    );
    let me_on_b = r.client.me_json(&r.b.base_url()).await;
    assert_ne!(me_on_b["refreshToken"], before["refreshToken"], "{me_on_b:#}");
    // And A, which still held the rescued tokens, goes on with what Redis has now.
    assert_eq!(
        r.client.api_get(&r.a.url("/on-a")).await.echo().values("remote-user"),
        ["john"]
    );
    assert_eq!(r.idp.stats().await.revocation, 0);

    let text = crate::common::metrics::scrape(&metrics).await;
    let rescued = crate::common::metrics::value(&text, "portcullis_refresh_rescues_total{result=\"stored\"}");
    assert_eq!(rescued, 1.0, "{text}");
    let log = r.a.log_text();
    assert!(
        log.contains("rescued tokens stored"),
        "the log does not say what happened:\n{log}"
    );
    for secret in [&rescued_token, &cookie] {
        assert!(!log.contains(secret.as_str()), "A logged a token or the cookie");
    }
}
