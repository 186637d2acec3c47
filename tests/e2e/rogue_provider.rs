//! Forged and broken provider responses (design.md §5, ID-token invariants; §2,
//! RFC 9207 and userinfo `sub`): portcullis logs in through a hand-written rogue
//! OpenID Provider (tests/rogue/server.mjs) that deviates from the protocol in one
//! way per mode. `honest` proves the rogue itself works; every other mode must end
//! on a clear error page with no session, no 500, and no token or secret shown. A
//! provider out of service at the code exchange leaves the sign-in to a reload.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use url::Url;

use crate::common::metrics::{scrape, value};
use crate::common::*;
use crate::rogue::Rogue;

/// What the redirect URI must answer.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Redirect back to the protected URL with a session.
    LoggedIn,
    /// A refusal page with a status from `statuses` (or any 4xx for `&[]`),
    /// mentioning `mentions` when set.
    Refused {
        statuses: &'static [u16],
        mentions: Option<&'static str>,
        /// The code must never reach the token endpoint (callback checks come first).
        code_redeemed: bool,
        /// The provider was out of service, so the pending login stays for a reload to
        /// retry; any other failure ends it.
        pending_kept: bool,
    },
}

/// Forged or invalid tokens and provider answers: the "failed validation" page.
const FORGED: Expect = Expect::Refused {
    statuses: &[502],
    mentions: Some("failed validation"),
    code_redeemed: true,
    pending_kept: false,
};
/// A callback the provider's RFC 9207 promise rules out: any 4xx, code never redeemed.
const BAD_CALLBACK: Expect = Expect::Refused {
    statuses: &[],
    mentions: None,
    code_redeemed: false,
    pending_kept: false,
};

const PROTECTED: &str = "/vault/report?id=42&view=full";

/// `url` has `base` as its scheme, host, port and path.
fn starts_at(url: &Url, base: &str) -> bool {
    let base = Url::parse(base).expect("base is a URL");
    (url.scheme(), url.host_str(), url.port_or_known_default(), url.path())
        == (
            base.scheme(),
            base.host_str(),
            base.port_or_known_default(),
            base.path(),
        )
}

fn describe(resp: &Resp) -> String {
    let body: String = resp.body.chars().take(1500).collect();
    format!("{}\nheaders: {:?}\nbody: {body}", resp.summary(), resp.headers)
}

async fn run(mode: &str, expect: Expect) {
    let app = AppAddr::reserve();
    let redirect_uri = app.redirect_uri();
    let (rogue, echo) = tokio::join!(Rogue::start(mode, &redirect_uri), Echo::start());
    let mut builder = Portcullis::builder(app.clone(), &rogue.issuer, &echo.url);
    if mode == "slow-token" {
        builder = builder.env("PORTCULLIS_OIDC_HTTP_TIMEOUT", "2s");
    }
    let portcullis = builder.start().await;
    let app_url = portcullis.base_url();
    let client = Browserless::new();
    let protected = portcullis.url(PROTECTED);

    // 1. A navigation without a session goes to the rogue's authorization endpoint (PAR).
    let start = client.navigate(&protected).await;
    assert_eq!(
        start.status,
        StatusCode::FOUND,
        "[{mode}] protected URL:\n{}",
        describe(&start)
    );
    let authorize = start.location().expect("Location");
    assert!(
        starts_at(&authorize, &rogue.authorization_endpoint()),
        "[{mode}] the login does not go to the rogue: {authorize}"
    );

    // 2. The rogue answers at once with a code (no login form).
    let from_op = client.navigate(authorize.as_str()).await;
    assert_eq!(
        from_op.status,
        StatusCode::FOUND,
        "[{mode}] rogue authorization endpoint:\n{}\n{}",
        describe(&from_op),
        rogue.log_tail()
    );
    let callback = from_op.location().expect("Location");
    assert!(
        starts_at(&callback, &redirect_uri),
        "[{mode}] the rogue did not send the browser to the redirect URI: {callback}"
    );

    // 3. The redirect URI.
    let pending = pending_logins(&client, &app_url);
    assert_eq!(
        pending.len(),
        1,
        "[{mode}] pending logins before the callback: {pending:?}"
    );
    let began = Instant::now();
    let landing = client.navigate(callback.as_str()).await;
    let took = began.elapsed();
    let issued = rogue.issued().await;
    let stats = rogue.stats().await;
    eprintln!(
        "[{mode}] the redirect URI answered {} after {took:?}; jwks fetched {}x; cookies now {:?}",
        landing.status,
        stats.jwks,
        client.cookie_names(&app_url)
    );
    if std::env::var_os("ROGUE_SHOW_LOG").is_some() {
        eprintln!("{}", portcullis.log_tail());
    }
    let context = format!(
        "[{mode}] callback answered after {took:?}:\n{}\nrogue stats: {stats:?}",
        describe(&landing)
    );
    assert_ne!(landing.status, StatusCode::INTERNAL_SERVER_ERROR, "{context}");
    // At discovery, and at most once more for an unknown kid: a forged token cannot
    // make portcullis hammer the provider.
    assert!(stats.jwks <= 2, "{context}\nthe JWKS was fetched {} times", stats.jwks);
    for (what, secret) in issued.secrets() {
        assert!(!landing.body.contains(&secret), "{context}\nthe page shows the {what}");
        if let Some(loc) = landing.location_raw() {
            assert!(!loc.contains(&secret), "{context}\nthe Location carries the {what}");
        }
    }

    match expect {
        Expect::LoggedIn => {
            assert_eq!(
                landing.status,
                StatusCode::FOUND,
                "{context}\n{}",
                portcullis.log_tail()
            );
            assert_eq!(
                landing.location().map(|u| u.to_string()),
                Some(protected.clone()),
                "{context}\nthe login did not return to the protected URL"
            );
            let set = landing
                .set_cookie(SESSION_COOKIE)
                .unwrap_or_else(|| panic!("{context}\nno session cookie"));
            assert_session_cookie_attributes(&set);
            let seen = client.api_get(&protected).await.echo();
            let ids = seen.identity_headers();
            assert_eq!(ids.get("remote-user"), Some(&vec!["rogue".to_owned()]), "{ids:?}");
            assert_eq!(
                ids.get("remote-groups"),
                Some(&vec!["rogues,testers".to_owned()]),
                "{ids:?}"
            );
            assert_eq!(stats.userinfo, 1, "{context}");
        }
        Expect::Refused {
            statuses,
            mentions,
            code_redeemed,
            pending_kept,
        } => {
            let status = landing.status.as_u16();
            let status_ok = if statuses.is_empty() {
                landing.status.is_client_error()
            } else {
                statuses.contains(&status)
            };
            assert!(
                status_ok,
                "{context}\nexpected {}\n{}",
                if statuses.is_empty() {
                    "a 4xx".to_owned()
                } else {
                    format!("one of {statuses:?}")
                },
                portcullis.log_tail()
            );
            assert_html_page(&landing);
            if let Some(needle) = mentions {
                assert_mentions(&landing, needle);
            }
            assert_no_session_issued(&landing);
            assert!(
                client
                    .cookie(&app_url, SESSION_COOKIE)
                    .filter(|v| !v.is_empty())
                    .is_none(),
                "{context}\nthe browser holds a session cookie"
            );
            let (cleared, held) = if pending_kept {
                (vec![], pending.clone())
            } else {
                (pending.clone(), vec![])
            };
            assert_eq!(
                (pending_logins_cleared(&landing), pending_logins(&client, &app_url)),
                (cleared, held),
                "{context}\nthe pending login must be {} (removed by the response, held by the browser)",
                if pending_kept { "kept" } else { "cleared" }
            );
            assert_eq!(
                stats.token,
                u64::from(code_redeemed),
                "{context}\ntoken endpoint calls (the code must be redeemed {})",
                if code_redeemed { "once" } else { "never" }
            );
            if !pending_kept {
                // The attempt is spent, whatever failed (a forged token's 502 included):
                // the way forward is a new sign-in, back to where the user was going.
                let rd: String = url::form_urlencoded::byte_serialize(PROTECTED.as_bytes()).collect();
                let link = format!(
                    "<a href=\"{}\">Sign in again</a>",
                    html_escape(&format!("/.auth/login?rd={rd}"))
                );
                assert!(
                    landing.body.contains(&link),
                    "{context}\nthe page offers no sign-in back to {PROTECTED}"
                );
            }
            if pending_kept {
                // This rogue spent the code before the outage: a reload meets
                // `invalid_grant`, which ends the attempt.
                let reload = client.navigate(callback.as_str()).await;
                assert_status(&reload, 400);
                assert_mentions(&reload, "already used");
                assert_no_session_issued(&reload);
                assert_eq!(
                    pending_logins_cleared(&reload),
                    pending,
                    "[{mode}] {}",
                    describe(&reload)
                );
            }

            // Still signed out: a navigation goes to the provider again, an API call gets 401.
            let again = client.navigate(&protected).await;
            assert_eq!(
                again.status,
                StatusCode::FOUND,
                "[{mode}] afterwards:\n{}",
                describe(&again)
            );
            assert!(
                again
                    .location()
                    .is_some_and(|u| starts_at(&u, &rogue.authorization_endpoint())),
                "[{mode}] afterwards the navigation is not sent to the provider:\n{}",
                describe(&again)
            );
            assert_login_required_json(&client.api_get(&protected).await);
            assert_status(&client.api_get(&portcullis.url("/.auth/me")).await, 401);
        }
    }

    // Nothing secret in the log either (errors never carry tokens or the client secret).
    assert_log_shows_no_secret(&portcullis.log_tail(), &issued.secrets(), &format!("[{mode}]"));
    if mode == "slow-token" {
        assert!(
            took < Duration::from_secs(10),
            "[{mode}] the 2 s provider timeout was not applied: {took:?}"
        );
    }
}

macro_rules! rogue_test {
    ($($name:ident: $mode:literal => $expect:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            run($mode, $expect).await;
        }
    )*};
}

rogue_test! {
    honest_rogue_logs_in: "honest" => Expect::LoggedIn;
    alg_none_is_refused: "alg-none" => FORGED;
    token_signed_by_an_unpublished_key_is_refused: "wrong-key" => FORGED;
    hs256_keyed_with_the_public_key_is_refused: "hs256-confusion" => FORGED;
    token_from_another_issuer_is_refused: "wrong-iss" => FORGED;
    token_for_another_client_is_refused: "wrong-aud" => FORGED;
    several_audiences_without_azp_are_refused: "multi-aud-no-azp" => FORGED;
    expired_token_is_refused: "expired" => FORGED;
    token_issued_in_the_future_is_refused: "future-iat" => FORGED;
    token_with_another_nonce_is_refused: "wrong-nonce" => FORGED;
    token_without_nonce_is_refused: "missing-nonce" => FORGED;
    token_with_a_wrong_at_hash_is_refused: "bad-at-hash" => FORGED;
    callback_from_another_issuer_is_refused: "callback-wrong-iss" => BAD_CALLBACK;
    callback_without_iss_is_refused: "callback-no-iss" => BAD_CALLBACK;
    userinfo_about_someone_else_is_refused: "userinfo-sub-mismatch" => FORGED;
    token_endpoint_refusing_the_code_is_a_clear_page: "token-error" => Expect::Refused {
        statuses: &[400, 502],
        mentions: None,
        code_redeemed: true,
        pending_kept: false,
    };
    token_endpoint_garbage_is_refused: "token-garbage" => FORGED;
    token_signed_under_an_unknown_kid_is_refused: "unknown-kid" => FORGED;
    // A timeout is an outage: the sign-in stays for a reload, which meets the spent code
    // (this rogue spends it before it hangs) and ends the attempt.
    token_endpoint_that_hangs_times_out: "slow-token" => Expect::Refused {
        statuses: &[503],
        mentions: Some("reload this page"),
        code_redeemed: true,
        pending_kept: true,
    };
}

/// `portcullis_logins_total` by result: (completed, failed, unreachable).
async fn logins_by_result(metrics: &str) -> (f64, f64, f64) {
    let text = scrape(metrics).await;
    let result = |r: &str| value(&text, &format!("portcullis_logins_total{{result=\"{r}\"}}"));
    (result("completed"), result("failed"), result("unreachable"))
}

/// The provider's token endpoint out of service at the callback (`kind` as in
/// [`Rogue::token_outage`]): the page says so with a 503 and `Retry-After`, the pending login
/// stays, and once the provider is back a reload of the same URL completes the sign-in on
/// the page the user asked for. The metrics count the attempts the outage met as
/// `unreachable`, never as `failed`, and the reload as `completed`.
async fn a_reload_after_an_outage_completes_the_sign_in(kind: &str) {
    let app = AppAddr::reserve();
    let redirect_uri = app.redirect_uri();
    let (rogue, echo) = tokio::join!(Rogue::start("honest", &redirect_uri), Echo::start());
    let metrics_port = free_port();
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let portcullis = Portcullis::builder(app, &rogue.issuer, &echo.url)
        .env("PORTCULLIS_SERVER_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .start()
        .await;
    let app_url = portcullis.base_url();
    let client = Browserless::new();
    let protected = portcullis.url(PROTECTED);
    let authorize = client.navigate(&protected).await;
    let authorize = authorize
        .location()
        .unwrap_or_else(|| panic!("[{kind}] no login started:\n{}", describe(&authorize)));
    let from_op = client.navigate(authorize.as_str()).await;
    let callback = from_op
        .location()
        .unwrap_or_else(|| panic!("[{kind}] the rogue sent no code:\n{}", describe(&from_op)));
    let pending = pending_logins(&client, &app_url);
    assert_eq!(pending.len(), 1, "[{kind}] {pending:?}");

    rogue.token_outage(kind).await;
    for attempt in 1..=2 {
        let down = client.navigate(callback.as_str()).await;
        let context = format!(
            "[{kind}] attempt {attempt}: {}\n{}",
            describe(&down),
            portcullis.log_tail()
        );
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE, "{context}");
        assert_eq!(down.header("retry-after"), Some("5"), "{context}");
        assert_html_page(&down);
        assert_mentions(&down, "reload this page");
        assert_no_session_issued(&down);
        assert_eq!(pending_logins_cleared(&down), Vec::<String>::new(), "{context}");
        assert_eq!(pending_logins(&client, &app_url), pending, "{context}");
        assert_eq!(rogue.stats().await.token, attempt, "{context}");
    }
    assert_eq!(
        logins_by_result(&metrics).await,
        (0.0, 0.0, 2.0),
        "[{kind}] (completed, failed, unreachable) during the outage"
    );

    rogue.token_outage("off").await;
    let back = client.navigate(callback.as_str()).await;
    let context = format!(
        "[{kind}] after the outage: {}\n{}",
        describe(&back),
        portcullis.log_tail()
    );
    assert_eq!(back.status, StatusCode::FOUND, "{context}");
    assert_eq!(
        back.location().map(|u| u.to_string()),
        Some(protected.clone()),
        "{context}"
    );
    let session = back
        .set_cookie(SESSION_COOKIE)
        .unwrap_or_else(|| panic!("{context}\nno session cookie"));
    assert_session_cookie_attributes(&session);
    assert_eq!(pending_logins_cleared(&back), pending, "{context}");
    assert_eq!(client.api_get(&protected).await.echo().values("remote-user"), ["rogue"]);
    assert_eq!(
        logins_by_result(&metrics).await,
        (1.0, 0.0, 2.0),
        "[{kind}] (completed, failed, unreachable) after the reload"
    );

    assert_log_shows_no_secret(
        &portcullis.log_tail(),
        &rogue.issued().await.secrets(),
        &format!("[{kind}]"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_endpoint_dropping_connections_keeps_the_sign_in_for_a_reload() {
    a_reload_after_an_outage_completes_the_sign_in("reset").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_endpoint_answering_temporarily_unavailable_keeps_the_sign_in_for_a_reload() {
    a_reload_after_an_outage_completes_the_sign_in("unavailable").await;
}

/// Logs in through the rogue in `mode` with refresh tokens and 1 s access tokens, lets
/// the access token expire, and checks what the next request gets: the session `kept`
/// (refreshed), or ended. OIDC Core §12.2: a refreshed ID token must be about the login's
/// authentication (same `auth_time`, and the same `nonce` if it carries one); another's
/// ends the session as a refused refresh does.
async fn refresh_through_the_rogue(mode: &str, kept: bool) {
    let app = AppAddr::reserve();
    let redirect_uri = app.redirect_uri();
    let (rogue, echo) = tokio::join!(Rogue::start_with_access_ttl(mode, &redirect_uri, 1), Echo::start());
    let portcullis = Portcullis::builder(app, &rogue.issuer, &echo.url)
        .env("OIDC_SCOPES", SCOPES_WITH_REFRESH)
        .start()
        .await;
    let client = Browserless::new();
    let protected = portcullis.url(PROTECTED);
    // To the rogue, back to the redirect URI, back to the protected URL.
    let mut hop = client.navigate(&protected).await;
    for _ in 0..2 {
        let next = hop
            .location()
            .unwrap_or_else(|| panic!("[{mode}] login stopped at {}", describe(&hop)));
        hop = client.navigate(next.as_str()).await;
    }
    assert_eq!(
        hop.location().map(|u| u.to_string()),
        Some(protected.clone()),
        "[{mode}] {}",
        describe(&hop)
    );
    assert_eq!(client.api_get(&protected).await.echo().values("remote-user"), ["rogue"]);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    let after = client.api_get(&protected).await;
    let stats = rogue.stats().await;
    assert_eq!(stats.refresh, 1, "[{mode}] {stats:?}\n{}", portcullis.log_tail());
    if kept {
        assert_eq!(
            after.echo().values("remote-user"),
            ["rogue"],
            "[{mode}] {}",
            describe(&after)
        );
    } else {
        assert_login_required_json(&after);
        let log = portcullis.log_tail();
        assert!(log.contains("token refresh refused"), "[{mode}] {log}");
        // Ended, not retried.
        assert_login_required_json(&client.api_get(&protected).await);
        assert_eq!(rogue.stats().await.refresh, 1);
    }
    assert_log_shows_no_secret(
        &portcullis.log_tail(),
        &rogue.issued().await.secrets(),
        &format!("[{mode}]"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refreshed_id_token_with_the_logins_auth_time_and_nonce_keeps_the_session() {
    refresh_through_the_rogue("honest", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refreshed_id_token_from_another_authentication_time_ends_the_session() {
    refresh_through_the_rogue("refresh-other-auth-time", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refreshed_id_token_with_another_nonce_ends_the_session() {
    refresh_through_the_rogue("refresh-other-nonce", false).await;
}
