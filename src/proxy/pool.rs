//! Upstream HTTP/1.1 connections, kept by the downstream connection that uses them.
//!
//! A downstream HTTP/1.1 connection sends one request after another, so it can keep
//! "its" upstream connection: the next request finds it in the downstream connection's
//! [`UpstreamSlot`] and touches no shared state: no pool lock, no key lookup, no task
//! spawned per request to watch for the connection going idle (all of which
//! hyper-util's pooled client does on every request). A connection goes back into the
//! slot when its response body has been read to the end ([`PooledBody`]); when the
//! slot is taken (concurrent HTTP/2 streams on one downstream connection) or the
//! downstream connection closes, it goes to the shared idle list instead, which a
//! downstream connection draws from before it dials a new one.
//!
//! A kept connection may have been closed by the upstream in the meantime (its
//! keep-alive timeout): then the request, not yet sent, is retried on another one.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use tokio::time::Instant;
use tower_service::Service;

use super::connector::UpstreamConnector;
use super::timeout::ProgressBody;
use super::ProxyError;

type Sender = http1::SendRequest<ProgressBody>;

/// How long a connection may sit in the shared idle list (hyper-util's default too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Dials upstream HTTP/1.1 connections and keeps the idle ones.
pub(super) struct Http1Pool {
    connector: UpstreamConnector,
    dial: Uri,
    idle: Mutex<Vec<IdleConnection>>,
    max_idle: usize,
}

struct IdleConnection {
    sender: Sender,
    since: Instant,
}

impl Http1Pool {
    /// `max_idle` bounds the shared idle list; connections held in slots are bounded
    /// by the number of downstream connections.
    pub(super) fn new(connector: UpstreamConnector, dial: Uri, max_idle: usize) -> Arc<Self> {
        Arc::new(Http1Pool {
            connector,
            dial,
            idle: Mutex::new(Vec::new()),
            max_idle,
        })
    }

    /// A slot for one downstream connection.
    pub(super) fn slot(self: &Arc<Self>) -> UpstreamSlot {
        UpstreamSlot {
            pool: self.clone(),
            kept: Mutex::new(None),
        }
    }

    /// Sends `request` on the slot's connection, else an idle one, else a new one. The
    /// response's body gives the connection back when it has been read to the end.
    pub(super) async fn send(
        &self,
        slot: &Arc<UpstreamSlot>,
        mut request: Request<ProgressBody>,
    ) -> Result<Response<PooledBody>, ProxyError> {
        loop {
            let (mut sender, reused) = match slot.take().or_else(|| self.take_idle()) {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            if let Err(error) = sender.ready().await {
                if reused {
                    continue; // closed while kept: try the next one
                }
                return Err(ProxyError::Request(error.into()));
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let keep = Some((sender, slot.clone()));
                    return Ok(response.map(|body| PooledBody { inner: body, keep }));
                }
                Err(mut failed) => match failed.take_message() {
                    // Never written: the connection closed under us; safe to send elsewhere.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(ProxyError::Request(failed.into_error().into())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<Sender, ProxyError> {
        let io = self
            .connector
            .clone()
            .call(self.dial.clone())
            .await
            .map_err(super::connect_error)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|error| ProxyError::Connect(error.into()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.lock_idle();
        while let Some(connection) = idle.pop() {
            if connection.since.elapsed() < IDLE_TIMEOUT && !connection.sender.is_closed() {
                return Some(connection.sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock_idle();
        // The oldest are the likeliest to have been closed by the upstream.
        idle.retain(|c| c.since.elapsed() < IDLE_TIMEOUT && !c.sender.is_closed());
        if idle.len() < self.max_idle {
            idle.push(IdleConnection {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<IdleConnection>> {
        // The list stays consistent whatever panicked while holding it.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        self.lock_idle().len()
    }
}

/// The upstream connection one downstream connection keeps between its requests.
/// Dropped with the downstream connection, handing the connection to the idle list.
pub struct UpstreamSlot {
    pool: Arc<Http1Pool>,
    kept: Mutex<Option<Sender>>,
}

impl UpstreamSlot {
    fn take(&self) -> Option<Sender> {
        self.lock().take()
    }

    fn give_back(&self, sender: Sender) {
        let mut kept = self.lock();
        if kept.is_none() {
            *kept = Some(sender);
        } else {
            drop(kept);
            self.pool.put_idle(sender);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Sender>> {
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for UpstreamSlot {
    fn drop(&mut self) {
        if let Some(sender) = self.lock().take() {
            self.pool.put_idle(sender);
        }
    }
}

impl std::fmt::Debug for UpstreamSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSlot").finish_non_exhaustive()
    }
}

/// An upstream response body that returns its connection to the slot once read to
/// the end. Dropped earlier (the client went away mid-body), the connection is
/// dropped too: it is in the middle of a response and cannot carry another.
pub(super) struct PooledBody {
    inner: Incoming,
    keep: Option<(Sender, Arc<UpstreamSlot>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((sender, slot)) = self.keep.take() {
            slot.give_back(sender);
        }
    }

    /// After a `101 Switching Protocols` the connection belongs to the upgrade.
    pub(super) fn forget_connection(&mut self) {
        self.keep = None;
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.keep = None,
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // hyper does not poll a body that says it is empty (HEAD, 204, 304,
        // `Content-Length: 0`): such a connection is reusable all the same.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
