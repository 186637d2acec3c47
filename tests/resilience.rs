//! When things go away: the provider down at start or later, the upstream down,
//! sessions ended by idleness or age (logout: tests/logout.rs).

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_down_at_start_is_waited_for_and_logins_work_once_it_is_up() {
    let app = AppAddr::reserve();
    let idp_port = free_port();
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let echo = Echo::start().await;
    let mut portcullis = Portcullis::builder(app.clone(), &issuer, &echo.url)
        .start_unready()
        .await;
    let client = Browserless::new();

    let readyz = client.send(client.get(&app.url("/.auth/readyz"))).await;
    assert_status(&readyz, 503);
    let nav = client.navigate(&app.url("/wanted?x=1")).await;
    assert_status(&nav, 503);
    assert_html_page(&nav);
    assert_mentions(&nav, "identity provider");
    assert_no_session_issued(&nav);

    let idp = Idp::start(IdpOptions {
        port: idp_port,
        redirect_uris: vec![app.redirect_uri()],
        ..Default::default()
    })
    .await;
    portcullis.wait_ready().await;

    let trace = client.login(&app.url("/wanted?x=1"), "john", PASSWORD).await;
    assert_status(trace.landing(), 200);
    assert_eq!(
        trace.landing().url.as_str(),
        app.url("/wanted?x=1"),
        "{}",
        trace.describe()
    );
    assert_redirects_to_provider(trace.first(), &idp);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_keep_working_while_the_provider_is_down_and_new_logins_get_a_503() {
    let stack = Stack::start().await;
    stack.login("john", "/").await;
    let Stack {
        idp,
        echo: _echo,
        portcullis,
        client,
    } = stack;
    idp.stop().await;

    let resp = client.api_get(&portcullis.url("/during-outage")).await;
    assert_eq!(
        resp.echo().values("remote-user"),
        ["john"],
        "a held session stopped working"
    );

    let newcomer = Browserless::new();
    let nav = newcomer.navigate(&portcullis.url("/during-outage")).await;
    assert_status(&nav, 503);
    assert_html_page(&nav);
    assert_mentions(&nav, "identity provider");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_upstream_gives_a_502_page_that_does_not_reveal_its_address() {
    let dead_port = free_port();
    let stack = Stack::builder()
        .upstream(format!("http://127.0.0.1:{dead_port}"))
        .start()
        .await;

    let trace = stack.client.login(&stack.url("/app"), "john", PASSWORD).await;
    let landing = trace.landing();
    assert_eq!(landing.url.as_str(), stack.url("/app"), "{}", trace.describe());
    assert_status(landing, 502);
    assert_html_page(landing);

    let api = stack.client.api_get(&stack.url("/app")).await;
    assert_status(&api, 502);
    for resp in [landing, &api] {
        assert!(
            !resp.body.contains(&dead_port.to_string()) && !resp.body.contains("127.0.0.1"),
            "the error page reveals the upstream address:\n{}",
            resp.body
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_session_ends_after_the_idle_timeout() {
    let stack = Stack::builder()
        .env("PORTCULLIS_SESSION_IDLE_TIMEOUT", "2s")
        .start()
        .await;
    stack.login("john", "/").await;
    assert_status(&stack.client.api_get(&stack.url("/active")).await, 200);

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_login_required_json(&stack.client.api_get(&stack.url("/idle")).await);
    assert_redirects_to_provider(&stack.client.navigate(&stack.url("/idle")).await, &stack.idp);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_in_use_still_ends_at_its_maximum_lifetime() {
    // Idle timeout as long as the lifetime (it may not be longer), so that only
    // the lifetime can end the session below.
    let stack = Stack::builder()
        .env("PORTCULLIS_SESSION_IDLE_TIMEOUT", "3s")
        .env("PORTCULLIS_SESSION_MAX_LIFETIME", "3s")
        .start()
        .await;
    stack.login("john", "/").await;
    let started = tokio::time::Instant::now();

    // Busy the whole time: idleness is not what ends it.
    while started.elapsed() < Duration::from_millis(2000) {
        assert_status(&stack.client.api_get(&stack.url("/busy")).await, 200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_login_required_json(&stack.client.api_get(&stack.url("/busy")).await);
}
