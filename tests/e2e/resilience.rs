//! When things go away or come in floods: the provider down at start or later, the
//! upstream down, a client while its request is with the upstream, sessions ended by
//! idleness or age (logout: tests/e2e/logout.rs), one client flooding logins.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::upstream::read_request_head;
use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

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

/// An upstream that never answers `GET /never` (anything else gets `200 ok`). It
/// reports each such request's arrival on the first
/// channel, then on the second how long its connection stayed open after that (`None`:
/// longer than 10 s).
async fn never_answering_upstream() -> (
    String,
    mpsc::UnboundedReceiver<()>,
    mpsc::UnboundedReceiver<Option<Duration>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (arrival, arrivals) = mpsc::unbounded_channel();
    let (closing, closings) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (arrival, closing) = (arrival.clone(), closing.clone());
            tokio::spawn(async move {
                let Some(head) = read_request_head(&mut stream).await else {
                    return;
                };
                if !head.starts_with(b"GET /never ") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                        .await;
                    return;
                }
                let arrived = tokio::time::Instant::now();
                let _ = arrival.send(());
                let mut rest = [0u8; 1024];
                let closed = tokio::time::timeout(Duration::from_secs(10), async {
                    while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
                })
                .await;
                let _ = closing.send(closed.ok().map(|()| arrived.elapsed()));
            });
        }
    });
    (url, arrivals, closings)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_while_its_request_is_upstream_has_the_upstream_request_cancelled() {
    let (upstream, mut arrivals, mut closings) = never_answering_upstream().await;
    let stack = Stack::builder().upstream(&upstream).start().await;
    stack.login("john", "/").await;
    let cookie = stack.session_cookie().expect("session cookie");
    let port = stack.portcullis.app.port;

    // A client that closes its connection, and one that only shuts down its sending side
    // (nginx, with its default `proxy_ignore_client_abort off`, takes both as gone: 499).
    for half_close in [false, true] {
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let request =
            format!("GET /never HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: portcullis_session={cookie}\r\n\r\n");
        client.write_all(request.as_bytes()).await.expect("send the request");
        tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
            .await
            .expect("the request reaches the upstream");
        if half_close {
            client.shutdown().await.expect("half-close");
            let mut answer = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "a half-closed client's connection ends without an answer: {read:?}, {:?}",
                String::from_utf8_lossy(&answer)
            );
        } else {
            drop(client);
        }
        let open_for = tokio::time::timeout(Duration::from_secs(15), closings.recv())
            .await
            .expect("the upstream reports its connection's end")
            .expect("report");
        let open_for = open_for.unwrap_or_else(|| {
            panic!("half_close={half_close}: the upstream connection stayed open 10 s after the client left")
        });
        assert!(
            open_for < Duration::from_secs(2),
            "half_close={half_close}: the upstream connection closed only after {open_for:?}"
        );
    }
}

/// A navigation without a session from `from` (an `X-Forwarded-For` that portcullis
/// believes when loopback is a trusted proxy): each one would start a login.
async fn navigate_from(client: &Browserless, url: &str, from: &str) -> Resp {
    client
        .send(
            client
                .get(url)
                .header(reqwest::header::ACCEPT, ACCEPT_HTML)
                .header("sec-fetch-mode", "navigate")
                .header("x-forwarded-for", from),
        )
        .await
}

/// One client flooding the app with navigations (each a login start, each a PAR at the
/// provider) is held to its own share of the login budget, and someone else signs in
/// while the flood goes on: the global limit protects the provider, but one client can
/// no longer use it all up. An IPv6 client is its /64.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_flooding_logins_is_held_to_its_share_while_others_still_sign_in() {
    let metrics_port = free_port();
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_TRUSTED_PROXIES", "127.0.0.1/32")
        .env("PORTCULLIS_SERVER_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        // Three logins per client, and no more during the test.
        .env("PORTCULLIS_OIDC_LOGIN_RATE_PER_CLIENT_PER_MINUTE", "1")
        .env("PORTCULLIS_OIDC_LOGIN_RATE_PER_CLIENT_BURST", "3")
        // Room for every login below, refilled slowly: a flood that could spend it
        // would keep it empty.
        .env("PORTCULLIS_OIDC_LOGIN_RATE_PER_SECOND", "1")
        .env("PORTCULLIS_OIDC_LOGIN_RATE_BURST", "10")
        .start()
        .await;
    let flooder = stack.client.fresh();
    const FLOODER: &str = "203.0.113.7";
    let flood_began = Instant::now();

    let mut opening = Vec::new();
    for n in 0..20 {
        opening.push(navigate_from(&flooder, &stack.url(&format!("/flood/{n}")), FLOODER).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn({
        let (flooder, url, stop) = (flooder.clone(), stack.url("/flood/more"), stop.clone());
        async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                answers.push(navigate_from(&flooder, &url, FLOODER).await);
            }
            answers
        }
    });
    // The one who is not flooding signs in, from loopback itself, while the flood goes on.
    stack.login("john", "/while-flooded").await;
    stop.store(true, Ordering::Relaxed);
    let flooded = flood.await.expect("the flood task");
    let flood_lasted = flood_began.elapsed();

    for started in &opening[..3] {
        assert_redirects_to_provider(started, &stack.idp);
    }
    assert!(!flooded.is_empty());
    for refused in opening[3..].iter().chain(&flooded) {
        // The client's own doing: 429, told when its bucket (empty from the first
        // refusal on, one token a minute) holds a token again.
        assert_status(refused, 429);
        assert_retry_after_within(refused, 60 - flood_lasted.as_secs().min(59) - 1..=60);
        assert_html_page(refused);
        assert_mentions(refused, "Too many sign-ins");
        assert!(
            !refused
                .set_cookies()
                .iter()
                .any(|c| c.name().starts_with(LOGIN_COOKIE_PREFIX)),
            "a refused login start left a pending login:\n{}",
            refused.summary()
        );
    }
    assert_eq!(
        stack.idp.stats().await.par,
        4,
        "refused login starts reached the provider"
    );

    // Every address of a /64 is one client; the next /64 is another.
    for n in 1..=3 {
        let started = navigate_from(&flooder, &stack.url("/v6"), &format!("2001:db8:7:7::{n}")).await;
        assert_redirects_to_provider(&started, &stack.idp);
    }
    let same_host = navigate_from(&flooder, &stack.url("/v6"), "[2001:db8:7:7:ffff::9]:4711").await;
    assert_status(&same_host, 429);
    assert_retry_after_within(&same_host, 50..=60);
    let next_net = navigate_from(&flooder, &stack.url("/v6"), "2001:db8:7:8::1").await;
    assert_redirects_to_provider(&next_net, &stack.idp);

    // Operators see which limit refused, and one log line per flooding client.
    let metrics = crate::common::metrics::scrape(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    let refused = 17 + flooded.len() + 1;
    for series in [
        format!("portcullis_logins_rate_limited_total{{limit=\"client\"}} {refused}\n"),
        "portcullis_logins_rate_limited_total{limit=\"global\"} 0\n".to_owned(),
    ] {
        assert!(metrics.contains(&series), "no {series:?} in\n{metrics}");
    }
    let log = stack.portcullis.log_text();
    let reached = |client: &str| {
        log.lines()
            .filter(|l| l.contains("a client reached its login rate limit") && l.contains(&format!("client={client}")))
            .count()
    };
    assert_eq!(reached(FLOODER), 1, "{log}");
    assert_eq!(reached("2001:db8:7:7::/64"), 1, "{log}");
}

/// `resp` says to retry after a whole number of seconds in `seconds`.
#[track_caller]
fn assert_retry_after_within(resp: &Resp, seconds: RangeInclusive<u64>) {
    let retry_after = resp.header("retry-after").and_then(|value| value.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|value| seconds.contains(&value)),
        "Retry-After {:?}, not whole seconds in {seconds:?}: {}",
        resp.header("retry-after"),
        resp.summary()
    );
}

/// Beyond the global cap every client is refused alike, and it is a matter of capacity
/// (the provider protected), not any one client's doing: 503, told to retry in the second
/// the global bucket takes to hold a token again.
#[tokio::test(flavor = "multi_thread")]
async fn beyond_the_global_login_cap_every_client_gets_a_503_that_says_when_to_retry() {
    let metrics_port = free_port();
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_TRUSTED_PROXIES", "127.0.0.1/32")
        .env("PORTCULLIS_SERVER_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("PORTCULLIS_OIDC_LOGIN_RATE_PER_SECOND", "1")
        .env("PORTCULLIS_OIDC_LOGIN_RATE_BURST", "2")
        .start()
        .await;
    let client = stack.client.fresh();
    // Two clients spend the global burst, each well within its own share; the tokens
    // that trickle in meanwhile (one a second) are spent by the rounds that follow.
    let mut started = 0u64;
    let mut refused = Vec::new();
    let began = Instant::now();
    for n in 0..40 {
        let resp = navigate_from(&client, &stack.url("/capped"), &format!("192.0.2.{}", n % 4 + 1)).await;
        if resp.status.as_u16() == 503 {
            refused.push(resp);
        } else {
            assert_redirects_to_provider(&resp, &stack.idp);
            started += 1;
        }
    }
    assert!(
        started <= 2 + began.elapsed().as_secs() + 1 && !refused.is_empty(),
        "{started} of 40 login starts went through in {:?}",
        began.elapsed()
    );
    for refused in &refused {
        assert_retry_after_within(refused, 1..=1);
        assert_html_page(refused);
        assert_mentions(refused, "Too many sign-ins");
    }
    assert_eq!(stack.idp.stats().await.par, started);
    let metrics = crate::common::metrics::scrape(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    for series in [
        format!(
            "portcullis_logins_rate_limited_total{{limit=\"global\"}} {}\n",
            refused.len()
        ),
        "portcullis_logins_rate_limited_total{limit=\"client\"} 0\n".to_owned(),
    ] {
        assert!(metrics.contains(&series), "no {series:?} in\n{metrics}");
    }
}
