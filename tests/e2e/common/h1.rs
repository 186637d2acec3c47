//! hyper's own HTTP/1.1 and HTTP/2 client connections, for streaming bodies of any
//! size and for checking the protocol actually spoken.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::upstream::{BoxError, TestBody};

/// An HTTP/1.1 connection to `127.0.0.1:port`.
pub async fn h1_connect(port: u16) -> http1::SendRequest<TestBody> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    h1_over(tcp).await
}

/// An HTTP/1.1 connection over an established stream.
pub async fn h1_over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S) -> http1::SendRequest<TestBody> {
    let (send, conn) = http1::handshake(TokioIo::new(io)).await.expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// An HTTP/2 connection over an established stream (prior knowledge or after ALPN).
pub async fn h2_over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
) -> Result<http2::SendRequest<TestBody>, hyper::Error> {
    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

pub fn empty() -> TestBody {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

/// A GET of `path` on `localhost:port` carrying the session cookie `cookie` (`name=value`).
pub fn get(port: u16, path: &str, cookie: &str) -> Request<TestBody> {
    Request::get(path)
        .header("host", format!("localhost:{port}"))
        .header("cookie", cookie)
        .header("accept", "application/json")
        .body(empty())
        .expect("request")
}

/// Reads a whole (small) body as text.
pub async fn text(resp: Response<Incoming>) -> Result<String, BoxError> {
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
