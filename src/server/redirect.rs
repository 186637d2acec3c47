//! The optional plain-HTTP listener that sends every request to the https base URL,
//! keeping path and query. The target host comes from the configuration, never from
//! the request's `Host` header.

use std::convert::Infallible;
use std::time::Duration;

use http::header::LOCATION;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

use crate::pages;
use crate::ResponseBody;

/// `308 Permanent Redirect` keeps the method and body, unlike 301.
pub fn redirect_to_https(base_url: &Url, request: &Request<Incoming>) -> Response<ResponseBody> {
    let origin = base_url.origin().ascii_serialization();
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut response = Response::new(pages::empty_body());
    match HeaderValue::from_str(&format!("{origin}{path}")) {
        Ok(location) => {
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            response.headers_mut().insert(LOCATION, location);
        }
        Err(_) => *response.status_mut() = StatusCode::BAD_REQUEST,
    }
    response
}

pub async fn serve(
    listener: TcpListener,
    base_url: Url,
    header_read_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed on the redirect listener");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = super::stop_requested(&mut shutdown) => return,
        };
        let base_url = base_url.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = redirect_to_https(&base_url, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "redirect connection ended with an error");
            }
        });
    }
}
