//! Graceful shutdown: on SIGTERM/SIGINT portcullis stops accepting, lets in-flight
//! requests and open WebSockets finish within the grace period, and exits 0.

use std::time::{Duration, Instant};

use crate::common::upstream::RustUpstream;
use crate::common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// True once connecting to `port` is refused.
async fn refuses_connections(port: u16) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(("127.0.0.1", port))).await,
        Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_response_lets_it_complete_refuses_new_connections_and_exits_0() {
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_SHUTDOWN_GRACE", "10s")
        .start()
        .await;
    stack.login("john", "/").await;
    let Stack {
        idp: _idp,
        echo: _echo,
        mut portcullis,
        client,
    } = stack;
    let port = portcullis.app.port;

    let url = portcullis.url("/__slow?ms=3000");
    let in_flight = tokio::spawn(async move { client.api_get(&url).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let signalled = Instant::now();
    portcullis.signal("TERM");

    eventually(
        "new connections refused after SIGTERM",
        Duration::from_secs(2),
        || async { refuses_connections(port).await.then_some(()) },
    )
    .await;
    assert!(
        portcullis.exited().is_none(),
        "portcullis exited with a request in flight"
    );

    let resp = in_flight.await.expect("the in-flight request task");
    let completed = signalled.elapsed();
    assert_eq!(
        resp.echo().url,
        "/__slow?ms=3000",
        "the in-flight response did not complete as the upstream's"
    );
    let status = portcullis
        .wait_exit(Duration::from_secs(12))
        .await
        .unwrap_or_else(|| panic!("still running 12 s after SIGTERM (grace 10 s)"));
    let exited = signalled.elapsed();
    println!("response completed {completed:?} after SIGTERM, process exited after {exited:?} with {status}");
    assert!(status.success(), "exit status {status}, expected 0");
    assert!(
        exited < completed + Duration::from_secs(2),
        "the process lingered {:?} after its last request finished",
        exited - completed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_on_an_idle_proxy_exits_0_at_once() {
    let Stack {
        idp: _idp,
        echo: _echo,
        mut portcullis,
        ..
    } = Stack::start().await;
    let signalled = Instant::now();
    portcullis.signal("INT");
    let status = portcullis
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exited within 5 s of SIGINT");
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "an idle proxy took {:?} to stop",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_websocket_keeps_working_through_the_drain_and_the_process_exits_when_it_closes() {
    let upstream = RustUpstream::start().await;
    let stack = Stack::builder()
        .upstream(&upstream.url)
        .env("PORTCULLIS_SERVER_SHUTDOWN_GRACE", "10s")
        .start()
        .await;
    stack.login("john", "/").await;
    let port = stack.portcullis.app.port;
    let cookie = format!(
        "Cookie: portcullis_session={}",
        stack.session_cookie().expect("session")
    );
    let Stack {
        idp: _idp,
        echo: _echo,
        mut portcullis,
        ..
    } = stack;

    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let req = ws::handshake_request("/ws", &format!("localhost:{port}"), &ws::random_key(), &[cookie]);
    tcp.write_all(req.as_bytes()).await.unwrap();
    let (status, _) = ws::read_head(&mut tcp).await.expect("handshake");
    assert_eq!(status, 101);
    assert_eq!(ws::read_frame(&mut tcp).await.unwrap().1, b"hello from upstream");

    let signalled = Instant::now();
    portcullis.signal("TERM");
    eventually(
        "new connections refused after SIGTERM",
        Duration::from_secs(2),
        || async { refuses_connections(port).await.then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ws::write_frame(&mut tcp, ws::TEXT, b"still there?", true)
        .await
        .expect("send during drain");
    let reply = tokio::time::timeout(Duration::from_secs(5), ws::read_frame(&mut tcp))
        .await
        .expect("a reply during the drain")
        .expect("the WebSocket was cut during the drain");
    assert_eq!(reply, (ws::TEXT, b"echo: still there?".to_vec()));
    assert!(portcullis.exited().is_none(), "portcullis exited with a WebSocket open");

    ws::write_frame(&mut tcp, ws::CLOSE, &1000u16.to_be_bytes(), true)
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), ws::read_frame(&mut tcp)).await;
    drop(tcp);
    let closed = signalled.elapsed();
    let status = portcullis
        .wait_exit(Duration::from_secs(12))
        .await
        .expect("exited after the last WebSocket closed");
    let exited = signalled.elapsed();
    println!("WebSocket closed {closed:?} after SIGTERM, process exited after {exited:?} with {status}");
    assert!(status.success(), "exit status {status}");
    assert!(
        exited < closed + Duration::from_secs(2),
        "the process waited {:?} after the last WebSocket closed",
        exited - closed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_outlasting_the_grace_period_is_cut_and_the_process_still_exits_0() {
    let stack = Stack::builder()
        .env("PORTCULLIS_SERVER_SHUTDOWN_GRACE", "1s")
        .start()
        .await;
    stack.login("john", "/").await;
    let cookie = format!("portcullis_session={}", stack.session_cookie().expect("session"));
    let port = stack.portcullis.app.port;
    let Stack {
        idp: _idp,
        echo: _echo,
        mut portcullis,
        ..
    } = stack;

    let mut send = crate::common::h1::h1_connect(port).await;
    let pending = tokio::spawn(async move {
        let resp = send
            .send_request(crate::common::h1::get(port, "/__slow?ms=8000", &cookie))
            .await;
        match resp {
            Ok(resp) => format!(
                "{} {:?}",
                resp.status(),
                crate::common::h1::text(resp).await.map(|t| t.len())
            ),
            Err(e) => format!("error: {e}"),
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    portcullis.signal("TERM");
    let status = portcullis
        .wait_exit(Duration::from_secs(6))
        .await
        .expect("exited within 6 s of SIGTERM with a 1 s grace");
    let exited = signalled.elapsed();
    let outcome = tokio::time::timeout(Duration::from_secs(3), pending)
        .await
        .expect("the cut request ended")
        .expect("task");
    println!("exited after {exited:?} with {status}; the slow request: {outcome}");
    assert!(status.success(), "exit status {status}");
    assert!(exited < Duration::from_secs(3), "the 1 s grace took {exited:?}");
    assert!(
        !outcome.starts_with("200 OK Ok"),
        "an 8 s response cannot have completed: {outcome}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_at_once_and_does_not_hold_the_exit() {
    use tokio::io::AsyncReadExt;
    let Stack {
        idp: _idp,
        echo: _echo,
        mut portcullis,
        ..
    } = Stack::builder()
        .env("PORTCULLIS_SERVER_SHUTDOWN_GRACE", "10s")
        .start()
        .await;
    // One answered request, then the connection stays open and idle, as a browser's does.
    let mut idle = TcpStream::connect(("127.0.0.1", portcullis.app.port))
        .await
        .expect("connect");
    idle.write_all(b"GET /.auth/healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = vec![0u8; 4096];
    let read = idle.read(&mut answer).await.expect("read the answer");
    assert!(
        answer[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..read])
    );

    let signalled = Instant::now();
    portcullis.signal("TERM");
    let status = portcullis
        .wait_exit(Duration::from_secs(12))
        .await
        .unwrap_or_else(|| panic!("still running 12 s after SIGTERM (grace 10 s)"));
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "an idle keep-alive connection held the exit for {:?}",
        signalled.elapsed()
    );
    let closed = tokio::time::timeout(Duration::from_secs(1), idle.read(&mut answer)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection was not closed: {closed:?}"
    );
}
