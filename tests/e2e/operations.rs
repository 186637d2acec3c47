//! Running portcullis in production: Prometheus metrics on their own listener, the
//! access log, systemd readiness notification, and SIGHUP (systemd's reload).

use std::time::Duration;

use crate::common::metrics::{scrape, value};
use crate::common::*;

/// Starts a stack with the metrics listener on its own port; returns the stack and
/// the metrics URL.
async fn stack_with_metrics() -> (Stack, String) {
    let port = free_port();
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .start()
        .await;
    (stack, format!("http://127.0.0.1:{port}/metrics"))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_logins_and_sessions_on_their_own_listener() {
    let (stack, metrics) = stack_with_metrics().await;
    let before = scrape(&metrics).await;
    assert_eq!(value(&before, "portcullis_ready"), 1.0);
    assert_eq!(value(&before, "portcullis_sessions"), 0.0);
    assert_eq!(value(&before, "portcullis_logins_total{result=\"completed\"}"), 0.0);

    // One refused API request, one login, three proxied requests.
    let anonymous = stack.client.fresh();
    assert_status(&anonymous.api_get(&stack.url("/api/x")).await, 401);
    stack.login("john", "/start").await;
    for _ in 0..3 {
        assert_status(&stack.client.api_get(&stack.url("/page")).await, 200);
    }

    let after = eventually("the metrics to show the login", Duration::from_secs(10), || async {
        let text = scrape(&metrics).await;
        // moka counts entries lazily; the session shows once its insert is applied.
        (value(&text, "portcullis_sessions") == 1.0).then_some(text)
    })
    .await;
    assert_eq!(value(&after, "portcullis_logins_total{result=\"completed\"}"), 1.0);
    assert_eq!(value(&after, "portcullis_logins_total{result=\"failed\"}"), 0.0);
    assert!(value(&after, "portcullis_logins_started_total") >= 1.0);
    // The login's own landing on /start is proxied too.
    assert!(value(&after, "portcullis_requests_total{route=\"app\",status=\"2xx\"}") >= 4.0);
    assert!(value(&after, "portcullis_requests_total{route=\"app\",status=\"4xx\"}") >= 1.0);
    assert_eq!(
        value(&after, "portcullis_requests_total{route=\"callback\",status=\"3xx\"}"),
        1.0
    );
    let count = value(&after, "portcullis_request_duration_seconds_count{route=\"app\"}");
    let inf = value(
        &after,
        "portcullis_request_duration_seconds_bucket{route=\"app\",le=\"+Inf\"}",
    );
    assert_eq!(count, inf);
    assert!(value(&after, "portcullis_connections_total") >= 1.0);

    // A connection counts as open while it is, and no longer once it has closed.
    let mut raw =
        std::net::TcpStream::connect(stack.base_url().socket_addrs(|| None).expect("address")[0]).expect("connect");
    std::io::Write::write_all(&mut raw, b"GET /.auth/healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut answer = [0u8; 12];
    std::io::Read::read_exact(&mut raw, &mut answer).expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
    let open = value(&scrape(&metrics).await, "portcullis_connections_open");
    assert!(open >= 1.0, "{open}");
    drop(raw);
    eventually(
        "the closed connection to leave the gauge",
        Duration::from_secs(10),
        || async { (value(&scrape(&metrics).await, "portcullis_connections_open") < open).then_some(()) },
    )
    .await;

    // The metrics are not on the main listener: there /metrics is the app's path.
    let on_main = stack.client.api_get(&stack.url("/metrics")).await;
    assert_eq!(on_main.echo().url, "/metrics");
    // And the metrics listener serves nothing else.
    let other = reqwest::get(metrics.replace("/metrics", "/.auth/me")).await.unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_has_one_line_per_request_with_user_and_without_query_or_secrets() {
    let stack = Stack::start().await;
    let trace = stack.login("john", "/reports?token=s3cr3t-query").await;
    assert_status(&stack.client.api_get(&stack.url("/api/items?page=2")).await, 200);
    let cookie = stack.session_cookie().expect("a session");

    let lines = eventually("the access log line of /api/items", Duration::from_secs(10), || async {
        let lines = stack.portcullis.access_log();
        lines.iter().any(|l| l.contains("/api/items")).then_some(lines)
    })
    .await;
    let item = lines.iter().find(|l| l.contains("/api/items")).unwrap();
    for field in [
        "method=GET",
        "path=/api/items",
        "status=200",
        "duration_ms=",
        "client=127.0.0.1",
    ] {
        assert!(item.contains(field), "{field} missing in: {item}");
    }
    // The user is the session's subject; the anonymous first request has none.
    assert!(!item.contains("user=-"), "{item}");
    let first = lines.iter().find(|l| l.contains("path=/reports")).unwrap();
    assert!(first.contains("status=302") && first.contains("user=-"), "{first}");
    let callback = lines
        .iter()
        .find(|l| l.contains("path=/callback"))
        .expect("the callback is logged");
    assert!(callback.contains("status=302"), "{callback}");

    // The harness polled /.auth/readyz until ready: health checks are not logged.
    assert!(!lines.iter().any(|l| l.contains("path=/.auth/")), "{lines:#?}");

    // No query (codes, states, the app's own parameters), cookie or token anywhere in it.
    let code = trace
        .callback()
        .and_then(|c| {
            c.url
                .query_pairs()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
        })
        .expect("the callback carried a code");
    for line in &lines {
        for secret in [
            code.as_str(),
            cookie.as_str(),
            "s3cr3t-query",
            "page=2",
            "insecure_secret",
        ] {
            assert!(!line.contains(secret), "access log leaks {secret:?}: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_before_the_answer_is_logged_and_counted_as_499() {
    use tokio::io::AsyncWriteExt;

    let (stack, metrics) = stack_with_metrics().await;
    stack.login("john", "/").await;
    let cookie = stack.session_cookie().expect("a session");
    let class = "portcullis_requests_total{route=\"app\",status=\"4xx\"}";
    let before = value(&scrape(&metrics).await, class);

    // The upstream takes 5 s; the client gives up after 300 ms and closes.
    let port = stack.portcullis.app.port;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let head = format!(
        "GET /__slow?ms=5000 HTTP/1.1\r\nHost: localhost:{port}\r\nCookie: portcullis_session={cookie}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(tcp);

    let lines = stack.portcullis.access_lines("/__slow", 1).await;
    let line = &lines[0];
    assert_eq!(access_field(line, "status"), Some("499"), "{line}");
    assert_eq!(access_field(line, "outcome"), Some("client_gone"), "{line}");
    assert_eq!(access_field(line, "body_bytes"), Some("0"), "{line}");
    // The session's subject, known before the upstream was asked.
    assert!(access_field(line, "user").is_some_and(|user| user != "-"), "{line}");
    // Written when the client left, not when the upstream would have answered.
    let duration: f64 = access_field(line, "duration_ms")
        .and_then(|d| d.parse().ok())
        .expect("duration");
    assert!((250.0..4000.0).contains(&duration), "{line}");
    assert!(!line.contains(&cookie), "{line}");
    assert_eq!(value(&scrape(&metrics).await, class), before + 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_can_be_turned_off() {
    let stack = Stack::builder().env("PORTCULLIS_LOG_ACCESS_LOG", "false").start().await;
    stack.login("john", "/").await;
    assert_status(&stack.client.api_get(&stack.url("/x")).await, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stack.portcullis.access_log(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_is_told_ready_once_listening_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let mut stack = Stack::builder()
        .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
        .start()
        .await;

    let mut buf = [0u8; 256];
    let received = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
        .await
        .expect("READY=1 within 10 s")
        .unwrap();
    assert_eq!(std::str::from_utf8(&buf[..received]).unwrap().trim(), "READY=1");

    stack.portcullis.signal("TERM");
    let received = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
        .await
        .expect("STOPPING=1 within 10 s")
        .unwrap();
    assert_eq!(std::str::from_utf8(&buf[..received]).unwrap().trim(), "STOPPING=1");
    let status = stack
        .portcullis
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_without_a_tls_certificate_is_logged_and_portcullis_keeps_serving() {
    let mut stack = Stack::start().await;
    stack.login("john", "/").await;

    // What `systemctl reload` does with `ExecReload=kill -HUP $MAINPID`.
    stack.portcullis.signal("HUP");
    eventually("the SIGHUP log line", Duration::from_secs(10), || {
        let logged = stack.portcullis.log_text().contains("nothing to reload");
        async move { logged.then_some(()) }
    })
    .await;
    assert_eq!(stack.portcullis.exited(), None, "portcullis ended on SIGHUP");
    assert_status(&stack.client.api_get(&stack.url("/after-sighup")).await, 200);
}
