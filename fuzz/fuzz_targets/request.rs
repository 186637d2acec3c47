//! Whole requests, as raw bytes on a real connection to a real portcullis (memory
//! store, `/public/` public) in front of a real upstream, with a provider that serves
//! its discovery document and keys (so logins start: PAR is not advertised, so starting
//! one makes no back-channel call) but nothing else.
//! Whatever a client sends:
//! - nothing panics (libFuzzer's panic hook aborts on a panic in any thread);
//! - no answer is a `500`: every failure is a deliberate status;
//! - the upstream never receives a client's identity header (`Remote-User`, `-Groups`,
//!   `-Name`, `-Email`, in any case or `_` spelling) or `Forwarded`, and sees exactly one
//!   `X-Forwarded-For` (the real client's address) and `X-Forwarded-Proto`;
//! - nothing reaches the upstream that needed a session.
#![no_main]

mod common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use libfuzzer_sys::fuzz_target;
use tokio::net::TcpListener;

/// The listening portcullis; the runtime serving it lives on its own thread for the
/// whole run.
static PORTCULLIS: LazyLock<SocketAddr> = LazyLock::new(start);

fn start() -> SocketAddr {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let upstream = TcpListener::bind("127.0.0.1:0").await.expect("an upstream port");
            let upstream_addr = upstream.local_addr().expect("an address");
            tokio::spawn(serve_upstream(upstream));

            let provider = TcpListener::bind("127.0.0.1:0").await.expect("a provider port");
            let issuer = format!("http://{}", provider.local_addr().expect("an address"));
            tokio::spawn(serve_provider(provider, issuer.clone()));

            let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
            let addr = listener.local_addr().expect("an address");
            let base_url = format!("http://{addr}");
            let upstream_url = format!("http://{upstream_addr}");
            let config = common::config(&[
                ("APP_BASE_URL", &base_url),
                ("OIDC_ISSUER", &issuer),
                ("UPSTREAM_URL", &upstream_url),
                ("PORTCULLIS_POLICY_PUBLIC_PATHS", "/public/ /robots.txt"),
                ("PORTCULLIS_LOG_ACCESS_LOG", "false"),
                // Far above the fuzzer's pace, so logins get past the limiter.
                ("PORTCULLIS_OIDC_LOGIN_RATE_PER_SECOND", "100000"),
                ("PORTCULLIS_OIDC_LOGIN_RATE_BURST", "100000"),
            ]);
            ready_tx.send(addr).expect("the fuzzer waits");
            let served = portcullis::run(config, listener, std::future::pending()).await;
            panic!("portcullis stopped: {served:?}");
        });
    });
    let addr = ready_rx.recv().expect("portcullis starts");
    // Discovery runs in the background; wait for it, so that every input meets the same
    // portcullis. Generously: the test command runs this fuzz run at idle priority beside
    // the end-to-end tests (tests/run.sh), which can keep both cores for a while.
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if exchange(
            addr,
            b"GET /.auth/readyz HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n",
        )
        .starts_with("HTTP/1.1 200")
        {
            return addr;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("portcullis did not become ready");
}

/// Writes `request` and then [`LAST_REQUEST`] on a new connection; all that came back.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    // A refused connect can be this host running out of ports for a moment; a
    // portcullis that stopped accepting fails every retry.
    let mut stream = (0..50)
        .find_map(|attempt| {
            std::thread::sleep(Duration::from_millis(attempt * 20));
            TcpStream::connect(addr).ok()
        })
        .expect("portcullis accepts connections");
    // An input that promises more body than it has leaves the server waiting: such an
    // input ends at this timeout, not as a finding.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    // The server may answer and close before it has read everything: a failed write
    // is not a finding either.
    let _ = stream.write_all(request).and_then(|()| stream.write_all(LAST_REQUEST));
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let _ = stream.shutdown(Shutdown::Both);
    String::from_utf8_lossy(&answer).into_owned()
}

async fn serve_upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|request: Request<Incoming>| async move {
                check_forwarded(&request);
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"upstream"))))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A provider as far as discovery goes: its metadata and an empty key set; every
/// other endpoint answers 404 (a callback's code exchange fails as a provider refusal).
async fn serve_provider(listener: TcpListener, issuer: String) {
    let metadata = Bytes::from(format!(
        r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/authorize","token_endpoint":"{issuer}/token","userinfo_endpoint":"{issuer}/userinfo","jwks_uri":"{issuer}/jwks","response_types_supported":["code"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}}"#
    ));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metadata = metadata.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let body = match request.uri().path() {
                    "/.well-known/openid-configuration" => Some(metadata.clone()),
                    "/jwks" => Some(Bytes::from_static(br#"{"keys":[]}"#)),
                    _ => None,
                };
                async move {
                    match body {
                        Some(body) => Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(body)),
                        None => Response::builder().status(404).body(Full::new(Bytes::new())),
                    }
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Headers no client copy of may reach the upstream (the default identity headers and
/// the access-token header), lower-cased with `_` folded to `-`.
const STRIPPED: [&str; 6] = [
    "remote-user",
    "remote-groups",
    "remote-name",
    "remote-email",
    "x-forwarded-access-token",
    "forwarded",
];

/// What the upstream may be given: runs on the upstream's side of every forwarded request.
fn check_forwarded(request: &Request<Incoming>) {
    let folded: Vec<(String, &[u8])> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().replace('_', "-"), value.as_bytes()))
        .collect();
    for (name, _) in &folded {
        assert!(!STRIPPED.contains(&name.as_str()), "{name} reached the upstream");
    }
    let values = |wanted: &str| -> Vec<&[u8]> {
        folded
            .iter()
            .filter(|(name, _)| name == wanted)
            .map(|(_, value)| *value)
            .collect()
    };
    assert_eq!(
        values("x-forwarded-for"),
        [b"127.0.0.1"],
        "X-Forwarded-For as forwarded"
    );
    assert_eq!(values("x-forwarded-proto"), [b"http"], "X-Forwarded-Proto as forwarded");
    assert!(values("x-forwarded-host").len() <= 1, "X-Forwarded-Host as forwarded");
    let path = request.uri().path();
    assert!(
        path == "/robots.txt" || path.starts_with("/public/"),
        "{path:?} needed a session but was forwarded without one"
    );
}

/// Sent after every input: a complete request that ends the connection, so the server
/// has answered everything before it (hyper closes at once when a client half-closes).
const LAST_REQUEST: &[u8] = b"GET /.auth/healthz HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let answer = exchange(*PORTCULLIS, data);
    assert!(!answer.contains(" 500 "), "an internal error: {answer}");
});
