//! Logging in: PAR + PKCE against the test provider, the identity the upstream
//! sees, the session cookie, the dump page, and where a login may return to.

use std::collections::BTreeMap;

use cookie::SameSite;
use reqwest::header::ACCEPT;
use reqwest::Method;
use serde_json::Value;

use crate::common::*;

/// The identity headers the upstream must see for john, folded as CGI would.
fn johns_identity() -> BTreeMap<String, Vec<String>> {
    [
        ("remote-email", "john@example.com"),
        ("remote-groups", "admins,dev"),
        ("remote-name", "John Doe"),
        ("remote-user", "john"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), vec![v.to_owned()]))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_through_par_and_pkce_returns_to_the_requested_url_with_its_query() {
    let stack = Stack::start().await;
    let app = stack.base_url();
    let requested = stack.url("/reports/2024?q=a%20b&sort=desc");

    let trace = stack.client.login(&requested, "john", PASSWORD).await;

    // The navigation went to the provider through PAR, holding a pending-login cookie.
    let first = trace.first();
    assert_redirects_to_provider(first, &stack.idp);
    let pending = first
        .set_cookies()
        .into_iter()
        .find(|c| c.name().starts_with(LOGIN_COOKIE_PREFIX))
        .unwrap_or_else(|| {
            panic!(
                "no {LOGIN_COOKIE_PREFIX}* cookie on the login redirect:\n{}",
                trace.describe()
            )
        });
    assert!(
        pending.http_only(),
        "pending-login cookie without HttpOnly: {}",
        pending.raw
    );
    assert!(!pending.secure(), "Secure on an http base URL: {}", pending.raw);
    // Strict would not come back with the cross-site redirect from the provider.
    assert_ne!(pending.same_site(), Some(SameSite::Strict), "{}", pending.raw);

    // The callback handed out the session and sent the browser back where it started.
    let callback = trace
        .callback()
        .unwrap_or_else(|| panic!("no callback:\n{}", trace.describe()));
    assert!(
        callback.is_redirect(),
        "callback did not redirect:\n{}",
        trace.describe()
    );
    assert_eq!(
        callback.location().map(String::from),
        Some(requested.clone()),
        "{}",
        trace.describe()
    );
    let session = callback
        .set_cookie(SESSION_COOKIE)
        .unwrap_or_else(|| panic!("the callback set no session cookie:\n{}", trace.describe()));
    assert_session_cookie_attributes(&session);
    assert!(
        !stack
            .client
            .cookie_names(&app)
            .iter()
            .any(|n| n.starts_with(LOGIN_COOKIE_PREFIX)),
        "the callback did not consume the pending-login cookie: {:?}",
        stack.client.cookies(&app)
    );

    // The browser landed on the upstream's answer to the original URL and query.
    let landing = trace.landing();
    assert_status(landing, 200);
    assert_eq!(landing.url.as_str(), requested);
    assert!(
        landing
            .body
            .contains(&html_escape("GET /reports/2024?q=a%20b&sort=desc")),
        "the upstream did not receive the original path and query:\n{}",
        landing.body
    );

    let stats = stack.idp.stats().await;
    assert_eq!(
        (stats.par, stats.authorization_code, stats.userinfo),
        (1, 1, 1),
        "{stats:?}"
    );
}

/// Browsers drop a cookie of more than 4096 bytes without a word, and the login would then
/// always end in "sign-in expired". A deep link whose query is too long for the pending-login
/// cookie returns to its path without the query; a path too long even for that, to `/`.
#[tokio::test(flavor = "multi_thread")]
async fn a_return_path_too_long_for_a_cookie_loses_its_query_not_the_login() {
    let stack = Stack::start().await;
    let long_query = format!("q={}", "x".repeat(3500));
    let long_path = format!("/{}", "p".repeat(3500));
    for (requested, lands_on) in [
        (format!("/dashboard?{long_query}"), "/dashboard".to_owned()),
        (
            format!("/dashboard?q={}", "x".repeat(2000)),
            format!("/dashboard?q={}", "x".repeat(2000)),
        ),
        (long_path.clone(), "/".to_owned()),
    ] {
        let client = stack.client.fresh();
        let trace = client.login(&stack.url(&requested), "john", PASSWORD).await;
        let pending = trace
            .first()
            .set_cookies()
            .into_iter()
            .find(|c| c.name().starts_with(LOGIN_COOKIE_PREFIX))
            .unwrap_or_else(|| panic!("no pending-login cookie:\n{}", trace.describe()));
        assert!(
            pending.name().len() + pending.value().len() <= 4096,
            "a browser would drop this {}-byte cookie",
            pending.name().len() + pending.value().len()
        );
        let callback = trace
            .callback()
            .unwrap_or_else(|| panic!("no callback:\n{}", trace.describe()));
        assert_eq!(
            callback.location().map(String::from),
            Some(stack.url(&lands_on)),
            "{}",
            &requested[..40]
        );
        assert_status(trace.landing(), 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_sees_identity_headers_and_none_of_the_spoofed_ones() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    let session = stack.session_cookie().expect("session cookie after login");

    // Raw bytes, so the spoofed names keep their case and `_` spelling on the wire.
    let host = format!("localhost:{}", stack.portcullis.app.port);
    let resp = raw_request(
        stack.portcullis.app.port,
        &[
            "GET /whoami?x=1 HTTP/1.1",
            &format!("Host: {host}"),
            "Accept: application/json",
            &format!("Cookie: {SESSION_COOKIE}={session}"),
            "Remote-User: evil",
            "remote_user: evil",
            "REMOTE-GROUPS: admins",
            "Remote_Groups: admins",
            "remote-email: evil@evil.example",
            "REMOTE_NAME: Evil",
            "Connection: close, X-Hop",
            "X-Hop: hop-by-hop secret",
        ],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let seen: EchoSeen = serde_json::from_slice(&resp.body).expect("echo JSON");
    assert_eq!(seen.url, "/whoami?x=1");

    assert_eq!(
        seen.identity_headers(),
        johns_identity(),
        "raw headers: {:?}",
        seen.raw_headers
    );
    for (name, _) in &seen.raw_headers {
        assert!(!name.contains('_'), "an underscore header reached the upstream: {name}");
    }

    assert_eq!(seen.headers.get("x-hop"), None, "a hop-by-hop header was forwarded");
    assert_eq!(seen.headers.get("x-forwarded-proto").map(String::as_str), Some("http"));
    assert_eq!(seen.headers.get("x-forwarded-host"), Some(&host));
    assert!(
        seen.headers
            .get("x-forwarded-for")
            .is_some_and(|v| v.contains("127.0.0.1")),
        "X-Forwarded-For: {:?}",
        seen.headers.get("x-forwarded-for")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_login_issues_a_new_session_id() {
    let stack = Stack::start().await;
    let app = stack.base_url();
    // Session fixation: a cookie planted before login must not become the session.
    let planted = "planted0123456789planted0123456789planted0123456789";
    stack.client.put_cookie(&app, SESSION_COOKIE, planted);

    let first = stack.login("john", "/one").await;
    let first_id = stack.session_cookie().expect("session after the first login");
    assert_ne!(first_id, planted, "the planted cookie became the session");
    assert_session_cookie_attributes(&first.callback().unwrap().set_cookie(SESSION_COOKIE).unwrap());
    let first_token = stack.client.me_json(&app).await["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned();

    // Logging in again while holding a session (the provider remembers john, so
    // no form this time) still rotates the id.
    let again = stack
        .client
        .login(&stack.url("/.auth/login?rd=/two"), "john", PASSWORD)
        .await;
    assert_eq!(again.landing().url.as_str(), stack.url("/two"), "{}", again.describe());
    let second_id = stack.session_cookie().expect("session after the second login");
    assert_ne!(
        second_id,
        first_id,
        "the session id was reused at login:\n{}",
        again.describe()
    );
    let stats = stack.idp.stats().await;
    assert_eq!(stats.authorization_code, 2);

    // The session held before ends, and its tokens are revoked as at a logout: nobody
    // holds them any more.
    let stale = stack.client.fresh();
    stale.put_cookie(&app, SESSION_COOKIE, &first_id);
    assert_login_required_json(&stale.api_get(&stack.url("/")).await);
    assert_eq!(stats.revocation, 1, "{stats:?}");
    assert_eq!(
        stack.idp.userinfo_status(&first_token).await,
        401,
        "the replaced session's access token still works"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_gets_the_apps_cookies_but_never_portcullis_cookies() {
    let stack = Stack::start().await;
    let app = stack.base_url();
    stack.login("john", "/").await;
    stack
        .client
        .put_cookie(&app, "portcullis_login_stale", "leftover-pending-login");

    let resp = stack
        .client
        .send(
            stack
                .client
                .get(&stack.url("/cookies"))
                .header("accept", "application/json")
                .header("cookie", "theme=dark; lang=en"),
        )
        .await;
    let seen = resp.echo();
    let cookies = seen.cookies();
    let names: Vec<&str> = cookies.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"theme") && names.contains(&"lang"),
        "the app's cookies were dropped: {cookies:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("portcullis_")),
        "a portcullis cookie reached the upstream: {cookies:?}"
    );
    assert_eq!(
        cookies.iter().find(|(n, _)| n == "theme").map(|(_, v)| v.as_str()),
        Some("dark")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn me_json_has_every_field_of_the_dump_page() {
    let stack = Stack::builder().env("OIDC_SCOPES", SCOPES_WITH_REFRESH).start().await;
    stack.login("john", "/").await;

    let me = stack.client.me_json(&stack.base_url()).await;
    for field in ["accessToken", "refreshToken", "idToken", "claims", "scopes", "userInfo"] {
        assert!(
            me.get(field).is_some_and(|v| !v.is_null()),
            "/.auth/me lacks {field}: {me:#}"
        );
    }
    for token in ["accessToken", "refreshToken", "idToken"] {
        assert!(
            me[token].as_str().is_some_and(|t| t.len() > 10),
            "{token} is not a token: {me:#}"
        );
    }
    assert_eq!(
        me["idToken"].as_str().unwrap().split('.').count(),
        3,
        "idToken is not a JWS: {me:#}"
    );

    let scopes: Vec<String> = match &me["scopes"] {
        Value::Array(a) => a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect(),
        Value::String(s) => s.split(' ').map(str::to_owned).collect(),
        other => panic!("scopes is neither a list nor a string: {other}"),
    };
    for scope in ["openid", "profile", "email", "groups", "offline_access"] {
        assert!(scopes.iter().any(|s| s == scope), "scope {scope} missing: {scopes:?}");
    }

    let info = &me["userInfo"];
    assert_eq!(info["preferred_username"], "john", "{me:#}");
    assert_eq!(info["email"], "john@example.com");
    assert_eq!(info["groups"], serde_json::json!(["admins", "dev"]));
    assert!(me["claims"]["sub"].as_str().is_some_and(|s| !s.is_empty()), "{me:#}");
    assert_eq!(
        me["claims"]["sub"], info["sub"],
        "ID token and userinfo subjects differ: {me:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn me_html_escapes_every_value_and_headers_carry_them_verbatim() {
    let stack = Stack::start().await;
    stack.login("mallory", "/").await;

    let page = stack.client.navigate(&stack.url("/.auth/me")).await;
    assert_status(&page, 200);
    assert_html_page(&page);
    assert!(
        !page.body.contains("<script>alert"),
        "the dump page runs mallory's script:\n{}",
        page.body
    );
    assert!(
        !page.body.contains("<b>bold</b>"),
        "the dump page renders mallory's group as HTML:\n{}",
        page.body
    );
    assert!(
        page.body.contains("&lt;script&gt;alert("),
        "mallory's name is not shown escaped:\n{}",
        page.body
    );
    assert!(
        page.body.contains("&lt;b&gt;bold&lt;/b&gt;"),
        "mallory's group is not shown escaped:\n{}",
        page.body
    );

    // Headers are not HTML: the upstream gets the values as they are.
    let seen = stack.client.api_get(&stack.url("/")).await.echo();
    assert_eq!(seen.values("remote-name"), [r#"<script>alert("pwned")</script>"#]);
    assert_eq!(seen.values("remote-groups"), ["<b>bold</b>,dev"]);
    assert_eq!(seen.values("remote-user"), ["mallory"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_from_the_id_token_or_only_from_userinfo_give_the_same_identity_headers() {
    async fn identity_seen(claims_in_id_token: bool) -> BTreeMap<String, Vec<String>> {
        let stack = Stack::builder()
            .idp(|o| o.claims_in_id_token = claims_in_id_token)
            .start()
            .await;
        stack.login("john", "/").await;
        stack.client.api_get(&stack.url("/")).await.echo().identity_headers()
    }
    let (userinfo_only, in_id_token) = tokio::join!(identity_seen(false), identity_seen(true));
    assert_eq!(
        userinfo_only,
        johns_identity(),
        "Authelia 4.39 style (claims only from userinfo)"
    );
    assert_eq!(
        in_id_token,
        johns_identity(),
        "Authelia 4.38 style (claims also in the ID token)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_api_requests_get_401_json_and_browsers_go_to_the_provider() {
    let stack = Stack::start().await;
    let c = &stack.client;
    let url = stack.url("/api/items?page=2");

    let api_calls = [
        (
            "Accept: application/json",
            c.get(&url).header("accept", "application/json"),
        ),
        (
            "POST form",
            c.post(&url).header("accept", ACCEPT_HTML).form(&[("a", "b")]),
        ),
        (
            "X-Requested-With",
            c.get(&url)
                .header("accept", ACCEPT_HTML)
                .header("x-requested-with", "XMLHttpRequest"),
        ),
        (
            "Sec-Fetch-Mode: cors",
            c.get(&url).header("accept", "*/*").header("sec-fetch-mode", "cors"),
        ),
    ];
    for (what, req) in api_calls {
        let resp = c.send(req).await;
        assert!(
            resp.status == 401,
            "{what}: expected 401:\n{}\n{}",
            resp.summary(),
            resp.body
        );
        assert_login_required_json(&resp);
    }
    assert_eq!(
        stack.idp.stats().await.par,
        0,
        "an API request started a login at the provider"
    );

    let navigations = [
        ("Accept: text/html", c.get(&url).header("accept", ACCEPT_HTML)),
        ("Accept: */* (curl)", c.get(&url).header("accept", "*/*")),
        (
            "HEAD",
            c.request(reqwest::Method::HEAD, &url).header("accept", ACCEPT_HTML),
        ),
    ];
    for (what, req) in navigations {
        let resp = c.send(req).await;
        assert!(
            resp.is_redirect(),
            "{what}: expected a login redirect: {}",
            resp.summary()
        );
        assert_redirects_to_provider(&resp, &stack.idp);
    }
    assert_eq!(stack.idp.stats().await.par, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn post_login_redirects_never_leave_the_app() {
    let stack = Stack::start().await;
    let app = stack.base_url();
    let targets = [
        "//evil.example",
        "https://evil.example",
        "http://evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "%2F%2Fevil.example",
        "/%2F/evil.example",
        "/%2F%2Fevil.example",
        "%5C%5Cevil.example",
        "/%5Cevil.example",
        "https:evil.example",
        "https%3A%2F%2Fevil.example",
        "/%09/evil.example",
        "%2F%09%2Fevil.example",
        "///evil.example",
        "javascript:alert(1)",
    ];
    for rd in targets {
        // A fresh browser each time: the provider's session would otherwise make
        // later walks skip the form, which is fine but hides nothing.
        let client = stack.client.fresh();
        let start = stack.url(&format!("/.auth/login?rd={rd}"));
        let trace = client.login(&start, "john", PASSWORD).await;
        let first = trace.first();
        assert!(
            first.status.is_client_error() || first.is_redirect(),
            "rd={rd}: expected a refusal or a login redirect:\n{}",
            trace.describe()
        );
        assert_walk_stays_on_app(&trace, &app, &stack.idp);
    }

    // A protected path that looks like a scheme-relative URL is still local.
    let client = stack.client.fresh();
    let trace = client.login(&stack.url("//evil.example/path"), "john", PASSWORD).await;
    assert_walk_stays_on_app(&trace, &app, &stack.idp);
}

#[tokio::test(flavor = "multi_thread")]
async fn portcullis_routes_answer_other_methods_with_405_and_allow_and_do_nothing() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    stack.idp.reset_stats().await;
    let c = &stack.client;
    for (method, path, allow) in [
        (Method::POST, "/.auth/login?rd=/x", "GET, HEAD"),
        (Method::PUT, "/callback?state=s&code=c", "GET"),
        (Method::POST, "/.auth/me", "GET, HEAD"),
        (Method::DELETE, "/.auth/logout", "GET, HEAD, POST"),
        (Method::POST, "/.auth/healthz", "GET, HEAD"),
        (Method::DELETE, "/.auth/readyz", "GET, HEAD"),
    ] {
        let resp = c
            .send(
                c.request(method.clone(), &stack.url(path))
                    .header(ACCEPT, "application/json"),
            )
            .await;
        assert_status(&resp, 405);
        assert_eq!(resp.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(resp.json()["error"], "method_not_allowed", "{method} {path}");
        assert_no_session_issued(&resp);
    }
    assert_eq!(
        stack.idp.stats().await,
        IdpStats::default(),
        "a refused request reached the provider"
    );
    // The DELETE did not sign out.
    assert_status(&c.api_get(&stack.url("/.auth/me")).await, 200);

    // HEAD is GET without the body.
    let head = c.send(c.request(Method::HEAD, &stack.url("/.auth/me"))).await;
    assert_status(&head, 200);
    assert!(head.body.is_empty(), "{}", head.body);
    let head = c.send(c.request(Method::HEAD, &stack.url("/.auth/login?rd=/x"))).await;
    assert_redirects_to_provider(&head, &stack.idp);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_token_goes_where_configured_and_the_dump_page_can_hide_it() {
    for (setting, header, prefix) in [
        ("authorization", "authorization", "Bearer "),
        ("x-forwarded-access-token", "x-forwarded-access-token", ""),
    ] {
        let stack = Stack::builder()
            .env("OIDC_SCOPES", SCOPES_WITH_REFRESH)
            .env("PORTCULLIS_IDENTITY_ACCESS_TOKEN", setting)
            .env("PORTCULLIS_PAGES_SHOW_TOKENS", "false")
            .start()
            .await;
        stack.login("john", "/").await;
        let c = &stack.client;

        // A value the client sends itself is replaced, never passed on beside ours.
        let forged = format!("{prefix}forged");
        let seen = c
            .send(
                c.get(&stack.url("/api"))
                    .header(ACCEPT, "application/json")
                    .header(header, &forged),
            )
            .await
            .echo();
        let values = seen.values(header);
        assert_eq!(values.len(), 1, "{setting}: {values:?}");
        let token = values[0]
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{setting}: {:?}", values[0]));
        assert_ne!(token, "forged", "{setting}");
        assert_eq!(
            stack.idp.userinfo_status(token).await,
            200,
            "{setting}: the forwarded token is not the session's"
        );

        let me = c.me_json(&stack.base_url()).await;
        for field in ["accessToken", "refreshToken", "idToken"] {
            assert!(me[field].is_null(), "{setting}: {field} shown: {me:#}");
        }
        assert_eq!(me["tokensHidden"], true, "{me:#}");
        assert_eq!(me["claims"]["preferred_username"], "john", "{me:#}");
        let page = c.navigate(&stack.url("/.auth/me")).await;
        assert_mentions(&page, "hidden by configuration");
        assert!(!page.body.contains(token), "{setting}: the page shows the access token");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_access_token_forwarding_the_clients_own_authorization_passes_through() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    let c = &stack.client;
    let seen = c
        .send(
            c.get(&stack.url("/api"))
                .header(ACCEPT, "application/json")
                .header("authorization", "Basic YXBwOmtleQ==")
                .header("x-forwarded-access-token", "forged"),
        )
        .await
        .echo();
    assert_eq!(seen.values("authorization"), ["Basic YXBwOmtleQ=="]);
    assert!(
        seen.values("x-forwarded-access-token").is_empty(),
        "{:?}",
        seen.raw_headers
    );
    let me = c.me_json(&stack.base_url()).await;
    assert!(me["accessToken"].is_string(), "tokens are shown by default: {me:#}");
    assert_eq!(me.get("tokensHidden"), None);
}

/// A reverse proxy in front that pools its connections sends the requests of many users,
/// one after another, on one connection: each must be judged by its own cookie, even
/// though a connection remembers the store key of the cookie it saw last.
#[tokio::test(flavor = "multi_thread")]
async fn one_connection_carrying_several_users_gives_each_request_its_own_identity() {
    let stack = Stack::start().await;
    let app = stack.base_url();
    let port = stack.portcullis.app.port;
    stack.login("john", "/").await;
    let john = format!("{SESSION_COOKIE}={}", stack.session_cookie().expect("john's session"));
    let other = stack.client.fresh();
    other.login(&stack.url("/"), "harry", PASSWORD).await;
    let harry = format!(
        "{SESSION_COOKIE}={}",
        other.cookie(&app, SESSION_COOKIE).expect("harry's session")
    );
    let unknown = format!("{SESSION_COOKIE}={}", "A".repeat(43));

    let mut connection = crate::common::h1::h1_connect(port).await;
    let mut ask = async |cookie: &str| {
        connection
            .ready()
            .await
            .expect("the kept connection takes the next request");
        let resp = connection
            .send_request(crate::common::h1::get(port, "/who", cookie))
            .await
            .expect("response on the kept connection");
        let status = resp.status().as_u16();
        let body = crate::common::h1::text(resp).await.expect("body");
        match status {
            200 => serde_json::from_str::<EchoSeen>(&body)
                .expect("echo JSON")
                .values("remote-user")
                .join(","),
            status => status.to_string(),
        }
    };
    for (whose, cookie, expected) in [
        ("john's", &john, "john"),
        ("john's", &john, "john"),
        ("harry's", &harry, "harry"),
        ("john's", &john, "john"),
        ("an unknown", &unknown, "401"),
        ("harry's", &harry, "harry"),
        ("harry's", &harry, "harry"),
    ] {
        assert_eq!(ask(cookie).await, expected, "with {whose} cookie");
    }

    // john logs out elsewhere: his cookie on this connection is refused from then on.
    let resp = stack.client.navigate(&stack.url("/.auth/logout")).await;
    assert!(resp.status.as_u16() < 400, "logout: {}", resp.summary());
    assert_eq!(ask(&john).await, "401");
    assert_eq!(ask(&harry).await, "harry");
    assert_eq!(ask(&john).await, "401");
}
