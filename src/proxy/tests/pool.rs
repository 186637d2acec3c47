//! Upstream connection reuse: what each downstream connection keeps, what goes to the
//! idle list, and what happens when the upstream closes a kept connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONNECTION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client_http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::support::{front, front_on_another_thread, http_target, upstream, ClientBody};
use crate::proxy::pool::IDLE_TIMEOUT;
use crate::proxy::Upstream;

const LONG: Duration = Duration::from_secs(30);

/// How the counting upstream treats its connections.
#[derive(Clone, Copy)]
enum Keep {
    /// Keep-alive as long as the client wants.
    Alive,
    /// `Connection: close` on every response.
    CloseAfterEach,
    /// Close a connection that has been idle this long (an upstream keep-alive timeout).
    IdleFor(Duration),
}

/// An upstream that counts the connections it accepted and answers each request
/// with its connection's number and a 16 KiB body (64 MiB for `/big`; after N
/// milliseconds for `/wait/N`; no body for `/no-content` (204), `/not-modified` (304)
/// and `/zero` (`Content-Length: 0`); for `/chunked` three chunks, 20 ms apart, without
/// a length).
async fn counting_upstream(keep: Keep) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let service = service_fn(move |request: Request<Incoming>| async move {
                if let Some(ms) = request.uri().path().strip_prefix("/wait/") {
                    let ms = ms.parse().expect("/wait/<milliseconds>");
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let size = if request.uri().path() == "/big" {
                    64 << 20
                } else {
                    16 << 10
                };
                let (status, body) = match request.uri().path() {
                    "/no-content" => (StatusCode::NO_CONTENT, super::support::empty()),
                    "/not-modified" => (StatusCode::NOT_MODIFIED, super::support::empty()),
                    "/zero" => (StatusCode::OK, super::support::full("")),
                    "/chunked" => {
                        let (chunks, body) = super::support::channel_body(1);
                        tokio::spawn(async move {
                            for chunk in ["one ", "two ", "three"] {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                let _ = chunks.send(Bytes::from_static(chunk.as_bytes())).await;
                            }
                        });
                        (StatusCode::OK, body)
                    }
                    _ => (StatusCode::OK, Full::new(Bytes::from(vec![b'x'; size])).boxed()),
                };
                let mut response = Response::new(body);
                *response.status_mut() = status;
                response.headers_mut().insert("x-connection", HeaderValue::from(number));
                if let Keep::CloseAfterEach = keep {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            if let Keep::IdleFor(idle) = keep {
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(idle);
            }
            tokio::spawn(async move {
                let _served = builder.serve_connection(TokioIo::new(io), service).await;
            });
        }
    });
    (addr, accepted)
}

/// One downstream connection to the front server (one upstream slot).
async fn downstream(front: SocketAddr) -> client_http1::SendRequest<ClientBody> {
    let io = TokioIo::new(TcpStream::connect(front).await.unwrap());
    let (sender, connection) = client_http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// GETs `/` on the downstream connection and reads the whole body; returns the
/// upstream connection number that answered.
async fn get_whole(sender: &mut client_http1::SendRequest<ClientBody>) -> usize {
    let (status, number, body) = exchange(sender, http::Method::GET, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 16 * 1024);
    number
}

/// Sends `method path` on the downstream connection and reads the whole answer; returns
/// its status, the upstream connection number and the body.
async fn exchange(
    sender: &mut client_http1::SendRequest<ClientBody>,
    method: http::Method,
    path: &str,
) -> (StatusCode, usize, Bytes) {
    sender.ready().await.unwrap();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "app.example")
        .body(super::support::empty())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (status, number) = (response.status(), connection_number(&response));
    (status, number, response.into_body().collect().await.unwrap().to_bytes())
}

fn connection_number(response: &Response<Incoming>) -> usize {
    response.headers()["x-connection"].to_str().unwrap().parse().unwrap()
}

async fn setup(keep: Keep) -> (SocketAddr, Arc<AtomicUsize>, Arc<Upstream>) {
    let (addr, accepted) = counting_upstream(keep).await;
    let upstream = upstream(http_target(addr, "/"), LONG);
    (front(upstream.clone()).await, accepted, upstream)
}

#[tokio::test]
async fn a_downstream_connection_keeps_one_upstream_connection() {
    let (front, accepted, _upstream) = setup(Keep::Alive).await;
    let mut client = downstream(front).await;
    for _ in 0..10 {
        assert_eq!(get_whole(&mut client).await, 1);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// A downstream connection to a front server whose connection tasks count the wakes
/// they give themselves, with its upstream connection made (not what is measured).
async fn probed_connected_client() -> (client_http1::SendRequest<ClientBody>, Arc<super::support::SelfWakes>) {
    let (addr, _accepted) = counting_upstream(Keep::Alive).await;
    let probe = Arc::new(super::support::SelfWakes::default());
    let front = super::support::front_probed(upstream(http_target(addr, "/"), LONG), Some(probe.clone())).await;
    let mut client = downstream(front).await;
    get_whole(&mut client).await;
    probe.take();
    (client, probe)
}

#[tokio::test]
async fn a_request_on_a_kept_connection_does_not_wake_its_own_task() {
    // The connection task drives the upstream connection itself; handing it the request
    // and reading the response body must not schedule the task once more each time
    // (see `driver_waker`): only the sockets wake it.
    let (mut client, probe) = probed_connected_client().await;
    for _ in 0..5 {
        get_whole(&mut client).await;
    }
    assert_eq!(probe.take(), 0, "wakes the connection task gave itself in 5 requests");
}

#[tokio::test]
async fn a_connection_is_kept_after_answers_without_a_body_and_after_a_chunked_one() {
    // hyper never polls a body that says it is empty (HEAD, 204, 304, length 0): the
    // connection is kept all the same. A chunked body ends with the end of its stream.
    let (front, accepted, _upstream) = setup(Keep::Alive).await;
    let mut client = downstream(front).await;
    for (method, path, status, body) in [
        (http::Method::HEAD, "/", StatusCode::OK, ""),
        (http::Method::GET, "/no-content", StatusCode::NO_CONTENT, ""),
        (http::Method::GET, "/not-modified", StatusCode::NOT_MODIFIED, ""),
        (http::Method::GET, "/zero", StatusCode::OK, ""),
        (http::Method::GET, "/chunked", StatusCode::OK, "one two three"),
        (http::Method::GET, "/chunked", StatusCode::OK, "one two three"),
    ] {
        let answer = exchange(&mut client, method.clone(), path).await;
        assert_eq!(answer, (status, 1, Bytes::from(body)), "{method} {path}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_that_arrives_slowly_does_not_wake_its_own_task() {
    // Between the chunks nothing is ready and the driver did not wake itself: the task
    // waits for the socket, not for a wake it gave itself.
    let (mut client, probe) = probed_connected_client().await;
    for _ in 0..3 {
        let (_, _, body) = exchange(&mut client, http::Method::GET, "/chunked").await;
        assert_eq!(body, "one two three");
    }
    assert_eq!(
        probe.take(),
        0,
        "wakes the connection task gave itself in 3 slow bodies"
    );
}

#[tokio::test]
async fn a_closed_downstream_connection_hands_its_upstream_connection_on() {
    let (front, accepted, upstream) = setup(Keep::Alive).await;
    let mut first = downstream(front).await;
    assert_eq!(get_whole(&mut first).await, 1);
    drop(first);
    // The front server drops the slot when it notices the closed connection.
    let deadline = tokio::time::Instant::now() + LONG;
    while upstream.http1.idle_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection never reached the idle list"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut second = downstream(front).await;
    assert_eq!(get_whole(&mut second).await, 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// Waits until the idle list holds `count` connections.
async fn idle_reaches(upstream: &Upstream, count: usize) {
    let deadline = tokio::time::Instant::now() + LONG;
    while upstream.http1.idle_count() != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle list never held {count} connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lets `duration` pass on tokio's clock at once (the connections' idle times are read from it).
async fn idle_for(duration: Duration) {
    tokio::time::pause();
    tokio::time::advance(duration).await;
    tokio::time::resume();
}

#[tokio::test]
async fn an_idle_connection_is_used_until_the_idle_timeout_and_then_closed() {
    let (front, accepted, upstream) = setup(Keep::Alive).await;
    let mut first = downstream(front).await;
    assert_eq!(get_whole(&mut first).await, 1);
    drop(first);
    idle_reaches(&upstream, 1).await;

    idle_for(IDLE_TIMEOUT - Duration::from_secs(1)).await;
    let mut second = downstream(front).await;
    assert_eq!(get_whole(&mut second).await, 1, "still young enough");
    drop(second);
    idle_reaches(&upstream, 1).await;

    idle_for(IDLE_TIMEOUT).await;
    let mut third = downstream(front).await;
    assert_eq!(get_whole(&mut third).await, 2, "too old: a new connection");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(upstream.http1.idle_count(), 0, "the old connection is closed, not kept");
}

#[tokio::test]
async fn a_stale_connection_behind_a_fresh_one_in_the_idle_list_is_closed_not_used() {
    // The list is pruned from its front only (the oldest put in), but a connection can
    // be put in after a younger one: the one kept longer by its downstream connection.
    let (front, accepted, upstream) = setup(Keep::Alive).await;
    let mut older = downstream(front).await;
    assert_eq!(get_whole(&mut older).await, 1);
    idle_for(Duration::from_secs(5)).await;
    let mut younger = downstream(front).await;
    assert_eq!(get_whole(&mut younger).await, 2);
    drop(younger);
    idle_reaches(&upstream, 1).await;
    drop(older);
    idle_reaches(&upstream, 2).await;

    // Connection 1 (last put in, so the first choice) is past the idle timeout,
    // connection 2 (at the front) is not.
    idle_for(IDLE_TIMEOUT - Duration::from_secs(2)).await;
    let mut client = downstream(front).await;
    assert_eq!(get_whole(&mut client).await, 2, "the stale connection was skipped");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(
        upstream.http1.idle_count(),
        0,
        "the stale connection is closed, not kept"
    );
}

#[tokio::test]
async fn a_new_downstream_connection_takes_an_idle_connection_dialed_on_its_own_thread_first() {
    let (front_here, accepted, upstream) = setup(Keep::Alive).await;
    let front_there = front_on_another_thread(upstream.clone());

    let mut here = downstream(front_here).await;
    assert_eq!(get_whole(&mut here).await, 1);
    let mut there = downstream(front_there).await;
    assert_eq!(get_whole(&mut there).await, 2);
    drop(here);
    idle_reaches(&upstream, 1).await;
    drop(there);
    idle_reaches(&upstream, 2).await;

    // Connection 2 is the newest idle one, but it was dialed on the other thread.
    let mut here = downstream(front_here).await;
    assert_eq!(get_whole(&mut here).await, 1);
    // With none of its own left, a thread takes another thread's rather than dial.
    let mut also_here = downstream(front_here).await;
    assert_eq!(get_whole(&mut also_here).await, 2);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_downstream_connections_use_their_own_upstream_connections() {
    let (front, accepted, _upstream) = setup(Keep::Alive).await;
    let mut a = downstream(front).await;
    let mut b = downstream(front).await;
    let (first_a, first_b) = tokio::join!(get_whole(&mut a), get_whole(&mut b));
    assert_ne!(first_a, first_b);
    for _ in 0..5 {
        assert_eq!(get_whole(&mut a).await, first_a);
        assert_eq!(get_whole(&mut b).await, first_b);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connection_close_from_the_upstream_means_a_new_connection_each_time() {
    let (front, accepted, _upstream) = setup(Keep::CloseAfterEach).await;
    let mut client = downstream(front).await;
    let numbers: Vec<usize> = {
        let mut numbers = Vec::new();
        for _ in 0..5 {
            numbers.push(get_whole(&mut client).await);
        }
        numbers
    };
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_kept_connection_the_upstream_closed_while_idle_is_replaced_without_an_error() {
    // Idle for longer than RACE_IDLE (a copy of the request is kept) and for less (none
    // is: the request, never written, comes back from the closed connection).
    for (upstream_keep_alive, pause) in [(500, 1500), (100, 300)] {
        let (front, accepted, _upstream) = setup(Keep::IdleFor(Duration::from_millis(upstream_keep_alive))).await;
        let mut client = downstream(front).await;
        assert_eq!(get_whole(&mut client).await, 1);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        assert_eq!(get_whole(&mut client).await, 2, "after {pause} ms");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn a_response_abandoned_mid_body_does_not_leave_its_connection_for_reuse() {
    let (front, accepted, _upstream) = setup(Keep::Alive).await;
    let mut abandoning = downstream(front).await;
    abandoning.ready().await.unwrap();
    let request = Request::get("/big").body(super::support::empty()).unwrap();
    let response = abandoning.send_request(request).await.unwrap();
    assert_eq!(connection_number(&response), 1);
    // Far more than the socket buffers hold: the proxy is mid-body when the client leaves.
    drop(response);
    drop(abandoning);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut next = downstream(front).await;
    assert_eq!(get_whole(&mut next).await, 2);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// Reads from `io` into `buffer` until it holds a whole request head; the head's
/// length, or `None` when the connection ends first.
async fn read_head(io: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0; 4096];
    loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The `Content-Length` of a request head (0 without one).
fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// An upstream that answers each request as soon as it has read the head, and only
/// then reads (and discards) the request body, keeping the connection. Counts the
/// connections it accepted and the request bodies it read to the end.
async fn answering_before_reading_the_body() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(AtomicUsize::new(0));
    let (counter, bodies) = (accepted.clone(), drained.clone());
    tokio::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = vec![0; 64 << 10];
                loop {
                    let Some(head_end) = read_head(&mut io, &mut buffer).await else {
                        return;
                    };
                    let length = content_length(&buffer[..head_end]);
                    io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly")
                        .await
                        .unwrap();
                    buffer.drain(..head_end);
                    while buffer.len() < length {
                        match io.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buffer.drain(..length);
                    bodies.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, accepted, drained)
}

/// Waits (at most [`LONG`]) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + LONG;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_upload_answered_before_it_was_read_still_finishes_and_the_connection_is_reused() {
    // The response is complete while the request body is still going out: the exchange
    // has to go on without the task that read the response. The client writes raw bytes
    // (hyper's client does not always notice that its connection is ready again after an
    // early response, whatever the server does).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, accepted, drained) = answering_before_reading_the_body().await;
    let front = front(upstream(http_target(addr, "/"), LONG)).await;
    let mut client = TcpStream::connect(front).await.unwrap();
    let upload = 8 << 20;
    for round in 0..3 {
        let (mut reading, mut writing) = client.split();
        let send = async {
            let head = format!("POST / HTTP/1.1\r\nhost: app.example\r\ncontent-length: {upload}\r\n\r\n");
            writing.write_all(head.as_bytes()).await.unwrap();
            writing.write_all(&vec![b'u'; upload]).await.unwrap();
        };
        let receive = async {
            let mut response = Vec::new();
            let mut chunk = [0; 4096];
            while !response.ends_with(b"\r\n\r\nearly") {
                let n = reading.read(&mut chunk).await.unwrap();
                assert!(n > 0, "round {round}: connection closed");
                response.extend_from_slice(&chunk[..n]);
            }
            response
        };
        let ((), response) = tokio::time::timeout(LONG, async { tokio::join!(send, receive) })
            .await
            .unwrap_or_else(|_| panic!("round {round}: the upload or its response stalled"));
        assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"), "round {round}");
        until("the upload reached the upstream", || {
            drained.load(Ordering::SeqCst) == round + 1
        })
        .await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// An upstream that answers an upload before it has read it and goes on reading it, as
/// Node.js does when a handler ends without consuming the body: for each `POST` it sends
/// a [`oneshot::Sender`] on the returned channel and answers when that is used (or
/// dropped), while its body is read in the background; anything else is answered at
/// once. Every answer carries its connection's number (`x-connection`); the bytes of
/// each upload read to its end are added to the returned count.
async fn answering_uploads_early_and_reading_on() -> (SocketAddr, mpsc::Receiver<oneshot::Sender<()>>, Arc<AtomicUsize>)
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (uploads_tx, uploads) = mpsc::channel(1);
    let uploaded = Arc::new(AtomicUsize::new(0));
    let total = uploaded.clone();
    tokio::spawn(async move {
        for number in 1usize.. {
            let Ok((io, _)) = listener.accept().await else { return };
            let (uploads_tx, total) = (uploads_tx.clone(), total.clone());
            let service = service_fn(move |request: Request<Incoming>| {
                let (uploads_tx, total) = (uploads_tx.clone(), total.clone());
                async move {
                    if request.method() == http::Method::POST {
                        let body = request.into_body();
                        tokio::spawn(async move {
                            if let Ok(read) = body.collect().await {
                                total.fetch_add(read.to_bytes().len(), Ordering::SeqCst);
                            }
                        });
                        let (answer, answered) = oneshot::channel();
                        uploads_tx.send(answer).await.unwrap();
                        let _ = answered.await;
                    }
                    let mut response = Response::new(super::support::full("answered"));
                    response.headers_mut().insert("x-connection", HeaderValue::from(number));
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let _served = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), service)
                    .await;
            });
        }
    });
    (addr, uploads, uploaded)
}

#[tokio::test]
async fn a_connection_still_carrying_an_upload_is_not_handed_to_another_client_and_is_kept_once_it_ends() {
    // The upload's answer comes while the upload goes on, and the upload's downstream
    // connection already keeps another upstream connection: the one carrying the upload
    // would go to the shared idle list, where another client's request would wait on it
    // until the upload ended.
    let (addr, mut uploads, uploaded) = answering_uploads_early_and_reading_on().await;
    let upstream = upstream(http_target(addr, "/"), LONG);
    let front = front(upstream.clone()).await;
    let h2 = super::support::h2_client();

    let (upload, body) = super::support::channel_body(1);
    upload.send(Bytes::from_static(b"first part")).await.unwrap();
    let post = Request::post(format!("http://{front}/upload")).body(body).unwrap();
    let posted = tokio::spawn(h2.request(post));
    // The upstream has the upload's head, on connection 1: a stream of the same
    // downstream connection dials connection 2, which its slot keeps.
    let answer = uploads.recv().await.unwrap();
    let other_stream = h2.request(super::support::get(front, "/").body(super::support::empty()).unwrap());
    let other_stream = other_stream.await.unwrap();
    assert_eq!(connection_number(&other_stream), 2);
    other_stream.into_body().collect().await.unwrap();
    // The upload is answered, and its answer read, while it goes on.
    answer.send(()).unwrap();
    let posted = posted.await.unwrap().unwrap();
    assert_eq!(connection_number(&posted), 1);
    assert_eq!(posted.into_body().collect().await.unwrap().to_bytes(), "answered");

    // Another client is answered at once, on a new connection.
    let mut another = downstream(front).await;
    let answered = tokio::time::timeout(Duration::from_secs(5), get_number(&mut another, "/"))
        .await
        .expect("another client's request waited for the upload");
    assert_eq!(answered, Ok(3));
    drop(another);
    idle_reaches(&upstream, 1).await;

    // Once the upload has ended, its connection takes requests again: the newest idle one.
    upload.send(Bytes::from_static(b" and the rest")).await.unwrap();
    drop(upload);
    until("the whole upload reached the upstream", || {
        uploaded.load(Ordering::SeqCst) == "first part and the rest".len()
    })
    .await;
    idle_reaches(&upstream, 2).await;
    let mut next = downstream(front).await;
    assert_eq!(get_number(&mut next, "/").await, Ok(1));
}

/// What a scripted upstream does with a request it has read.
#[derive(Clone, Copy)]
enum Act {
    Answer,
    /// Close the connection without an answer.
    Close,
    /// Answer bytes that are no HTTP response.
    Garble,
}

/// An upstream that reads each request (head and `Content-Length` body) and then does
/// what `script(connection number, index of the request on it)` says. Counts the
/// connections and every request it read.
async fn scripted_upstream(script: fn(usize, usize) -> Act) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            let number = c.fetch_add(1, Ordering::SeqCst) + 1;
            let requests = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for served in 0.. {
                    // Read one head (and its Content-Length body) or give up on EOF.
                    let Some(head_end) = read_head(&mut io, &mut buf).await else {
                        return;
                    };
                    let length = content_length(&buf[..head_end]);
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match io.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    requests.fetch_add(1, Ordering::SeqCst);
                    let answer = match script(number, served) {
                        Act::Close => return,
                        Act::Garble => "HTTQ/9 nonsense\r\n\r\n".to_owned(),
                        Act::Answer => {
                            format!("HTTP/1.1 200 OK\r\nx-connection: {number}\r\ncontent-length: 2\r\n\r\nok")
                        }
                    };
                    if io.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections, requests)
}

/// An upstream whose keep-alive ends badly: it answers the first request on each
/// connection, and closes the connection under the second one after reading it, as an
/// upstream does whose keep-alive timeout fires just as a request arrives.
async fn closing_under_second_request() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    scripted_upstream(|_, served| if served == 1 { Act::Close } else { Act::Answer }).await
}

/// Sends a GET, reads its answer, waits `pause` and sends a second GET on the same
/// downstream connection, whose answer is returned.
async fn second_get_after(front: SocketAddr, pause: Duration) -> Response<Incoming> {
    let mut client = downstream(front).await;
    let first = send_on(&mut client, Request::get("/").body(super::support::empty()).unwrap()).await;
    assert_eq!(first.status(), StatusCode::OK);
    first.into_body().collect().await.unwrap();
    tokio::time::sleep(pause).await;
    send_on(&mut client, Request::get("/").body(super::support::empty()).unwrap()).await
}

async fn send_on(
    sender: &mut client_http1::SendRequest<ClientBody>,
    request: Request<ClientBody>,
) -> Response<Incoming> {
    sender.ready().await.unwrap();
    sender.send_request(request).await.unwrap()
}

#[tokio::test]
async fn a_get_crossed_by_the_upstreams_keep_alive_close_is_sent_again_on_a_new_connection() {
    let (addr, connections, requests) = closing_under_second_request().await;
    let front = front(upstream(http_target(addr, "/"), LONG)).await;
    let mut client = downstream(front).await;
    let first = send_on(&mut client, Request::get("/").body(super::support::empty()).unwrap()).await;
    assert_eq!(connection_number(&first), 1);
    first.into_body().collect().await.unwrap();

    // Idle long enough that the upstream's close may cross the next request.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = send_on(&mut client, Request::get("/").body(super::support::empty()).unwrap()).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(connection_number(&second), 2);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    // Connection 1 read the request and dropped it, connection 2 answered it.
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_post_crossed_by_the_upstreams_keep_alive_close_is_not_sent_twice() {
    // With a body or without one: a POST is not idempotent.
    for body in ["buy 1", ""] {
        let (addr, connections, requests) = closing_under_second_request().await;
        let front = front(upstream(http_target(addr, "/"), LONG)).await;
        let mut client = downstream(front).await;
        let first = send_on(&mut client, Request::get("/").body(super::support::empty()).unwrap()).await;
        first.into_body().collect().await.unwrap();

        tokio::time::sleep(Duration::from_millis(700)).await;
        let post = Request::post("/orders").body(super::support::full(body)).unwrap();
        let answer = send_on(&mut client, post).await;
        assert_eq!(super::support::proxy_error(&answer), "request", "{body:?}");
        assert_eq!(connections.load(Ordering::SeqCst), 1, "{body:?}");
        assert_eq!(
            requests.load(Ordering::SeqCst),
            2,
            "the POST {body:?} reached the upstream exactly once"
        );
    }
}

#[tokio::test]
async fn a_get_is_sent_again_once_at_most() {
    // The new connection closes under the request too: that is an answer (502).
    let (addr, connections, requests) = scripted_upstream(|number, served| {
        if number == 1 && served == 0 {
            Act::Answer
        } else {
            Act::Close
        }
    })
    .await;
    let front = front(upstream(http_target(addr, "/"), LONG)).await;
    let second = second_get_after(front, Duration::from_millis(700)).await;
    assert_eq!(super::support::proxy_error(&second), "request");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_get_crossed_by_a_close_on_a_busy_connection_is_not_sent_again() {
    // Only a connection idle for a while can meet the upstream's keep-alive timeout; on
    // a busy one the close is the upstream's doing, and its answer (none) stands.
    let (addr, connections, requests) = closing_under_second_request().await;
    let front = front(upstream(http_target(addr, "/"), LONG)).await;
    let second = second_get_after(front, Duration::ZERO).await;
    assert_eq!(super::support::proxy_error(&second), "request");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_get_answered_with_garbage_on_an_idle_connection_is_not_sent_again() {
    let (addr, connections, requests) =
        scripted_upstream(|_, served| if served == 1 { Act::Garble } else { Act::Answer }).await;
    let front = front(upstream(http_target(addr, "/"), LONG)).await;
    let second = second_get_after(front, Duration::from_millis(700)).await;
    assert_eq!(super::support::proxy_error(&second), "request");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_idle_list_keeps_at_most_its_bound_closing_the_oldest() {
    let (addr, accepted) = counting_upstream(Keep::Alive).await;
    let mut built =
        super::support::build_upstream(&super::support::upstream_config(http_target(addr, "/"), LONG), &[]).unwrap();
    built.http1 = built.http1.with_max_idle(2);
    let upstream = Arc::new(built);
    let front = front(upstream.clone()).await;
    // Three downstream connections in turn, each keeping the connection it dialed.
    let mut clients = Vec::new();
    for number in 1..=3 {
        let mut client = downstream(front).await;
        assert_eq!(get_whole(&mut client).await, number);
        clients.push(client);
    }
    // Closed in turn, each handing its connection to the idle list.
    for (client, idle) in clients.into_iter().zip([1, 2, 2]) {
        drop(client);
        tokio::time::sleep(Duration::from_millis(100)).await;
        idle_reaches(&upstream, idle).await;
    }
    // Full when the third came: the oldest (the likeliest to have been closed by the
    // upstream in the meantime) was closed; the newest is used first.
    let mut held = Vec::new();
    for number in [3, 2] {
        let mut client = downstream(front).await;
        assert_eq!(get_whole(&mut client).await, number);
        held.push(client);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    let mut client = downstream(front).await;
    assert_eq!(get_whole(&mut client).await, 4, "connection 1 was closed, not kept");
}

#[test]
fn a_slots_debug_form_shows_nothing_of_its_connection() {
    let upstream = upstream(http_target("127.0.0.1:9".parse().unwrap(), "/"), LONG);
    let slot = upstream.slot("10.0.0.1:4000".parse().unwrap(), Arc::new(()), None);
    assert_eq!(format!("{slot:?}"), "UpstreamSlot { .. }");
}

#[tokio::test]
async fn the_peer_address_is_rendered_once_per_connection_and_canonical() {
    let upstream = upstream(http_target("127.0.0.1:9".parse().unwrap(), "/"), LONG);
    let mapped: SocketAddr = "[::ffff:10.0.0.1]:4000".parse().unwrap();
    let slot = upstream.slot(mapped, Arc::new(()), None);
    assert_eq!(slot.peer_value("10.0.0.1".parse().unwrap()), "10.0.0.1");
    // Another address than the connection's (not a path portcullis takes) is rendered anew.
    assert_eq!(slot.peer_value("2001:db8::1".parse().unwrap()), "2001:db8::1");
}

/// GETs `path` on the downstream connection; the answering upstream connection's
/// number, or the proxy error the front server reported.
async fn get_number(sender: &mut client_http1::SendRequest<ClientBody>, path: &str) -> Result<usize, String> {
    let request = Request::get(path).body(super::support::empty()).unwrap();
    let response = send_on(sender, request).await;
    if response.status() != StatusCode::OK {
        return Err(super::support::proxy_error(&response).to_owned());
    }
    let number = connection_number(&response);
    response.into_body().collect().await.unwrap();
    Ok(number)
}

/// A kept connection reuses one response timer for its requests (`timeout::ResponseTimer`),
/// left at whatever deadline an earlier request set. Each request must still get its own.
#[tokio::test]
async fn each_request_on_a_kept_connection_gets_its_own_response_timeout() {
    let (addr, accepted) = counting_upstream(Keep::Alive).await;
    let timeout = Duration::from_millis(300);
    let front = front(upstream(http_target(addr, "/"), timeout)).await;
    let mut client = downstream(front).await;
    assert_eq!(get_number(&mut client, "/wait/0").await, Ok(1));
    // The first request's deadline passes while the connection is idle, and a request
    // answered within its own timeout is not cut off by that.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(get_number(&mut client, "/wait/200").await, Ok(1));
    // The timer fires at the previous request's deadline while this one waits: it is
    // moved on to this one's, which has not passed.
    assert_eq!(get_number(&mut client, "/wait/200").await, Ok(1));
    // An answer later than the timeout is still cut off, at the timeout.
    let started = tokio::time::Instant::now();
    assert_eq!(get_number(&mut client, "/wait/2000").await, Err("timeout".to_owned()));
    let waited = started.elapsed();
    assert!(waited >= timeout && waited < Duration::from_millis(1500), "{waited:?}");
    // That connection is given up; the next request dials one with a timer of its own.
    assert_eq!(get_number(&mut client, "/wait/100").await, Ok(2));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// An upstream that turns uploads away: it reads a `POST`'s head, answers (with
/// `answer`, or nothing) without reading the body, and closes the connection, so its
/// kernel resets it as the body arrives. A `GET` gets `200 ok` on a kept connection.
async fn turning_uploads_away(answer: Option<&'static [u8]>) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let Some(head_end) = read_head(&mut io, &mut buffer).await else {
                        return;
                    };
                    if !buffer.starts_with(b"POST ") {
                        buffer.drain(..head_end);
                        io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .unwrap();
                        continue;
                    }
                    if let Some(answer) = answer {
                        io.write_all(answer).await.unwrap();
                    }
                    return; // dropped with the body unread: a reset
                }
            });
        }
    });
    addr
}

/// The size of [`upload_raw`]'s body: far more than the sockets between the client and
/// portcullis can hold, so that it cannot all be sent unless portcullis reads it.
const UPLOAD: usize = 256 << 20;

/// Sends a `POST` with an [`UPLOAD`]-byte body on a new connection to `front`, as raw
/// bytes, and returns everything read back until the connection ends, and how much of
/// the body was sent before a write failed (if one did).
async fn upload_raw(front: SocketAddr) -> (Vec<u8>, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut client = TcpStream::connect(front).await.unwrap();
    let (mut reading, mut writing) = client.split();
    let send = async {
        let head = format!("POST /upload HTTP/1.1\r\nhost: app.example\r\ncontent-length: {UPLOAD}\r\n\r\n");
        let mut sent = 0;
        if writing.write_all(head.as_bytes()).await.is_ok() {
            let chunk = vec![b'u'; 1 << 20];
            while sent < UPLOAD && writing.write_all(&chunk).await.is_ok() {
                sent += chunk.len();
            }
        }
        sent
    };
    let receive = async {
        let mut response = Vec::new();
        let mut chunk = [0; 4096];
        while let Ok(n @ 1..) = reading.read(&mut chunk).await {
            response.extend_from_slice(&chunk[..n]);
        }
        response
    };
    let (sent, response) = tokio::time::timeout(LONG, async { tokio::join!(send, receive) })
        .await
        .expect("the upload or its response stalled");
    (response, sent)
}

#[tokio::test]
async fn an_upstream_that_turns_an_upload_away_and_resets_the_connection_is_answered_with_its_answer() {
    // The upstream's kernel resets the connection as the rest of the body arrives; its
    // answer is in portcullis' socket before the reset. Whether a write hits the reset
    // before the answer is read is a race: many rounds, each on a new connection.
    let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 10\r\n\r\ntoo large\n";
    for close in [false, true] {
        let answer: &'static [u8] = if close {
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 10\r\nconnection: close\r\n\r\ntoo large\n"
        } else {
            answer
        };
        let upstream = upstream(http_target(turning_uploads_away(Some(answer)).await, "/"), LONG);
        let front = front(upstream).await;
        for round in 0..20 {
            let (response, sent) = upload_raw(front).await;
            let text = String::from_utf8_lossy(&response);
            assert!(
                text.starts_with("HTTP/1.1 413 ") && text.ends_with("\r\n\r\ntoo large\n"),
                "close {close}, round {round}: {text}"
            );
            // The rest of the upload had nowhere to go: it was not read.
            assert!(sent < UPLOAD, "close {close}, round {round}: the whole upload was read");
        }
        // Its connection is not kept: a request right after is answered on another.
        let mut sender = downstream(front).await;
        let response = sender.send_request(Request::get("/").body(super::support::empty()).unwrap());
        let response = tokio::time::timeout(LONG, response).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "close {close}");
    }
}

#[tokio::test]
async fn an_upstream_that_resets_an_upload_without_an_answer_is_a_bad_gateway() {
    let upstream = upstream(http_target(turning_uploads_away(None).await, "/"), LONG);
    let front = front(upstream).await;
    for round in 0..5 {
        let (response, _) = upload_raw(front).await;
        let text = String::from_utf8_lossy(&response);
        assert!(
            text.starts_with("HTTP/1.1 502 ") && text.contains("x-proxy-error: request\r\n"),
            "round {round}: {text}"
        );
    }
}
