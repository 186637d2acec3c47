//! The floor of portcullis' own stack, for the benchmark (`bench/run.sh`): hyper's
//! HTTP/1.1 server and hyper-util's pooled client forwarding every request to
//! `UPSTREAM_URL`, with no authentication, no header rewriting and no timeouts.
//! Not a proxy to deploy: it exists to show what portcullis adds to what it is built on.
//!
//! `LISTEN_ADDR=127.0.0.1:8081 UPSTREAM_URL=http://127.0.0.1:8080 target/release/examples/bare_proxy`

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listen = std::env::var("LISTEN_ADDR")?;
    let upstream: Uri = std::env::var("UPSTREAM_URL")?.parse()?;
    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build_http();
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut request: Request<Incoming>| {
                let client = client.clone();
                let mut parts = upstream.clone().into_parts();
                parts.path_and_query = request.uri().path_and_query().cloned();
                let target = Uri::from_parts(parts).map_err(std::io::Error::other);
                async move {
                    *request.uri_mut() = target?;
                    client.request(request).await.map_err(std::io::Error::other)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
