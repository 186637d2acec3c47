//! Upstream HTTP/1.1 connections, kept by the downstream connection that uses them.
//!
//! A downstream HTTP/1.1 connection sends one request after another, so it can keep
//! "its" upstream connection: the next request finds it in the downstream connection's
//! [`UpstreamSlot`] and touches no shared state: no pool lock, no key lookup, no task
//! spawned per request to watch for the connection going idle (all of which
//! hyper-util's pooled client does on every request). A connection goes back into the
//! slot when its response body has been read to the end ([`PooledBody`]); when the
//! slot is taken (concurrent HTTP/2 streams on one downstream connection), the
//! downstream connection closes, or it goes quiet (idle for a second, see
//! `server::idle_release`: a browser between clicks), it goes to the shared idle list
//! instead, which a downstream connection draws from before it dials a new one (first
//! from the connections dialed on its own thread: a connection worker's runtime reports
//! the readiness of the sockets it registered). That list is bounded, so the upstream
//! connections held open are bounded by the clients being served, not by those merely
//! connected.
//!
//! A kept connection may have been closed by the upstream in the meantime (its
//! keep-alive timeout: 5 s for Node.js and Apache, 2 s for gunicorn): then the request,
//! not yet sent, goes out on another one. The close can also cross the request on the
//! wire, after it was written; a bodiless request with an idempotent method (RFC 9110
//! §9.2.2) is then sent once more on a new connection, as nginx and Go's client do. Only
//! connections idle for [`RACE_IDLE`] or more can meet this, so only their requests
//! keep a copy of the head for it: a busy connection costs nothing extra.
//!
//! A connection's I/O (hyper's connection future, its [`Driver`]) and its response
//! timer ([`ResponseTimer`], which also bounds its response bodies' waits for their next
//! frame: [`super::body_idle`]) travel with it, and the driver is polled by the task that
//! uses the connection: while a request waits for its response head, and while the
//! response body is read. A request therefore wakes no other task and crosses no
//! channel to another one, and (polled with a [`DriverWaker`]) not even its own task:
//! only the sockets do. An exchange that is not finished when the body has been read
//! (an upload still going on after an early response) hands the connection to a task
//! of its own, which drives it until the exchange is over and only then gives it back
//! ([`finish_exchange`]); unless the upstream stopped reading the upload and reset the
//! connection ([`super::early_answer`]): then the connection is dropped. So a slot or the
//! idle list only ever holds connections ready for a request: a busy one would make the
//! next request, perhaps another client's, wait for someone else's upload. A kept
//! connection is not polled between requests: the upstream closing it is noticed when
//! it is next used, which the paragraph above already covers. Nor is its timer: when it
//! fires between requests it wakes the task of the request that used it last, once, and
//! the next request moves it on.

use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use tokio::time::Instant;
use tower_service::Service;

use super::body_idle::{BodyError, BodyIdle, BodyIdleLimit};
use super::connector::UpstreamConnector;
use super::driver_waker::DriverWaker;
use super::early_answer::{EarlyAnswerIo, WriteSide};
use super::forwarded::address_value;
use super::timeout::{Due, OpenBody, ProgressBody, ResponseTimer};
use super::upgrade::ConnectionHold;
use super::{ProxyError, RequestBodyWatch};

type Sender = http1::SendRequest<ProgressBody>;

/// hyper's future doing a connection's reads and writes, upgrades included (boxed: it
/// holds the buffers and the TLS state, and moves with the connection on every
/// request; and hyper does not name its type).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// An upstream connection: the handle requests go in by, and its [`Driver`] while the
/// user of the connection polls it (`None` once it runs in a task of its own or ended).
struct UpstreamConnection {
    sender: Sender,
    driver: Driving,
    /// Bounds the wait for each response head on this connection, and for each frame
    /// of its body (`super::body_idle`).
    timer: ResponseTimer,
    /// The thread that dialed it, whose runtime reports its socket's readiness (a
    /// connection worker's: see `server::workers`).
    home: ThreadId,
    /// Lost when the upstream stopped reading a request (see [`super::early_answer`]).
    write_side: WriteSide,
}

/// A connection's driver, polled by the task using the connection, with the
/// [`DriverWaker`] that keeps that task from waking itself through it.
struct Driving {
    driver: Option<Driver>,
    shared: Arc<DriverWaker>,
    waker: Waker,
}

/// How often one poll goes back to the driver after a step of its own woke it, before
/// it leaves that to the scheduler (hyper yields by waking itself; never spin on that).
const INLINE_ROUNDS: usize = 4;

impl Driving {
    fn new(driver: Driver) -> Self {
        let (shared, waker) = DriverWaker::new();
        Driving {
            driver: Some(driver),
            shared,
            waker,
        }
    }

    /// Polls the driver; once it has ended (connection closed, upgraded or broken) it
    /// is dropped, and the sender reports the connection closed.
    fn poll(&mut self, cx: &mut Context<'_>) {
        if let Some(running) = self.driver.as_mut() {
            self.shared.register(cx.waker());
            if let Poll::Ready(result) = running.as_mut().poll(&mut Context::from_waker(&self.waker)) {
                if let Err(error) = result {
                    tracing::debug!(%error, "upstream connection ended with an error");
                }
                self.driver = None;
            }
        }
    }

    /// Polls `future`, fed by this connection, after the driver. While this task
    /// drives the connection only the driver's polls can make it ready, so it needs no
    /// waker of its own (a wake from it would only poll the whole task once more).
    fn poll_fed<F: Future>(&mut self, future: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.poll(cx);
        if self.driver.is_some() {
            future.poll(&mut Context::from_waker(Waker::noop()))
        } else {
            future.poll(cx)
        }
    }

    /// Awaits `future` (of this connection's sender) while driving the connection.
    /// (`future` is pinned by the caller: see `ResponseTimer::within`.)
    async fn drive<F: Future>(&mut self, mut future: Pin<&mut F>) -> F::Output {
        std::future::poll_fn(|cx| self.poll_fed(future.as_mut(), cx)).await
    }

    /// Runs `step`, which may wake the driver (handing it a request, taking body
    /// data), without that wake rescheduling the task; whether it did is returned, and
    /// the caller polls the driver next (see [`DriverWaker::inline`]).
    fn inline<R>(&self, step: impl FnOnce() -> R) -> (R, bool) {
        if self.driver.is_some() {
            self.shared.inline(step)
        } else {
            (step(), false)
        }
    }
}

impl UpstreamConnection {
    /// Lets the driver run in a task of its own, for an upgraded connection, which
    /// belongs to the upgrade from now on.
    fn detach_driver(&mut self) {
        if let Some(driver) = self.driver.driver.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        if let Err(error) = driver.await {
                            tracing::debug!(%error, "upstream connection ended with an error");
                        }
                    });
                }
                // No runtime (dropped at shutdown): the connection goes with it.
                Err(_) => drop(driver),
            }
        }
    }
}

/// How long a connection may sit in the shared idle list (hyper-util's default too).
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A connection idle this long may be closed by the upstream while a request is on its
/// way; its bodiless idempotent requests can be sent again (see the module comment).
/// Well below every common keep-alive timeout, well above the gaps of a busy connection.
const RACE_IDLE: Duration = Duration::from_millis(500);

/// Dials upstream HTTP/1.1 connections and keeps the idle ones.
pub(super) struct Http1Pool {
    connector: UpstreamConnector,
    dial: Uri,
    /// Oldest first.
    idle: Mutex<VecDeque<IdleConnection>>,
    max_idle: usize,
}

/// A connection not carrying a request, and since when.
struct IdleConnection {
    connection: UpstreamConnection,
    since: Instant,
}

impl IdleConnection {
    fn new(connection: UpstreamConnection) -> Self {
        IdleConnection {
            connection,
            since: Instant::now(),
        }
    }

    /// Can take a request at once: not closed, and not busy with an exchange. Only ready
    /// connections are given back ([`finish_exchange`]); the idle list checks all the
    /// same (one atomic load), since what it holds goes to other clients.
    fn is_ready(&self) -> bool {
        self.connection.sender.is_ready()
    }

    /// At `now`, not idle so long that the upstream has likely closed it.
    fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) < IDLE_TIMEOUT
    }
}

/// Drops the connections at the front of `idle` (the oldest) that have been idle too
/// long, and stops at the first that has not (one clock read for all).
///
/// Only the front: the list is in the order connections were put in, which is nearly
/// the order of their `since` (a connection reaches the list within a second or two of
/// its last use: `server::idle_release`), so an entry past the first fresh one is rarely
/// stale, and [`Http1Pool::take_idle`] checks the one it takes. Nor is readiness checked
/// here: a connection in the list is not polled, so it stays as ready as it was when it
/// was put in ([`Http1Pool::put_idle`] checks). A scan of the whole list would touch each
/// connection's shared state, one cache miss per entry, on every take and put.
fn prune(idle: &mut VecDeque<IdleConnection>, now: Instant) {
    while idle.front().is_some_and(|oldest| !oldest.is_fresh(now)) {
        idle.pop_front();
    }
}

impl Http1Pool {
    /// `max_idle` bounds the shared idle list; connections held in slots are bounded
    /// by the number of downstream connections.
    pub(super) fn new(connector: UpstreamConnector, dial: Uri, max_idle: usize) -> Arc<Self> {
        Arc::new(Http1Pool {
            connector,
            dial,
            idle: Mutex::new(VecDeque::new()),
            max_idle,
        })
    }

    /// A slot for one downstream connection, whose peer is `peer`, which `connection`
    /// keeps counted, which `bodies` tells when its request bodies end, and whose
    /// response bodies wait for their frames under `body_idle`.
    pub(super) fn slot(
        self: &Arc<Self>,
        peer: IpAddr,
        connection: ConnectionHold,
        bodies: Option<Arc<dyn RequestBodyWatch>>,
        body_idle: BodyIdleLimit,
    ) -> UpstreamSlot {
        let peer = peer.to_canonical();
        UpstreamSlot {
            pool: self.clone(),
            kept: Mutex::new(None),
            peer: (peer, address_value(peer)),
            connection,
            bodies,
            body_idle,
        }
    }

    /// Sends `request` on the slot's connection, else an idle one, else a new one, and
    /// waits for the connection to take it and then for the response head until `due`
    /// ([`ProxyError::Timeout`]). The response's body gives the connection back when it
    /// has been read to the end.
    // Not an `async fn`: one would keep a second copy of the request in its future (the
    // arguments, moved into locals at the first poll), and move it there once more.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn send<'a>(
        &'a self,
        slot: &'a Arc<UpstreamSlot>,
        mut request: Request<ProgressBody>,
        due: Due<'a>,
    ) -> impl Future<Output = Result<Response<PooledBody>, ProxyError>> + 'a {
        async move {
            let mut resent = false;
            loop {
                // After a request was sent again: other kept connections are as old as the one
                // that closed under it, so a new one is dialed.
                let kept = if resent {
                    None
                } else {
                    slot.take().or_else(|| self.take_idle())
                };
                // `None`: a new connection, which nothing can have closed yet.
                let (mut connection, idle_for) = match kept {
                    Some(kept) => {
                        let idle_for = kept.since.elapsed();
                        (kept.connection, Some(idle_for))
                    }
                    // Boxed: dialing (TCP, TLS) is a large future, needed once per connection.
                    None => (Box::pin(self.connect()).await?, None),
                };
                let UpstreamConnection {
                    sender, driver, timer, ..
                } = &mut connection;
                // At once for a kept connection (only ready ones are kept) and for a new one
                // (its driver's first poll); bounded all the same, as the wait for the answer is.
                let ready = timer.within(due, pin!(driver.drive(pin!(sender.ready())))).await;
                match ready {
                    Some(Ok(())) => {}
                    Some(Err(_)) if idle_for.is_some() => continue, // closed while kept: try the next one
                    Some(Err(error)) => return Err(ProxyError::Request(error.into())),
                    None => return Err(due.expired(&slot.body_idle)),
                }
                let copy = match idle_for {
                    Some(idle) if idle >= RACE_IDLE && !resent => HeadCopy::of(&request),
                    _ => None,
                };
                // The driver is polled next thing anyway: handing it the request need not wake it.
                let (sent, _) = driver.inline(|| sender.try_send_request(request));
                let answered = timer.within(due, pin!(driver.drive(pin!(sent)))).await;
                let Some(answered) = answered else {
                    // The request (its body, if still being sent) goes with the connection.
                    return Err(due.expired(&slot.body_idle));
                };
                match answered {
                    Ok(response) => {
                        due.answered();
                        let keep = Some((connection, slot.clone()));
                        return Ok(response.map(|body| PooledBody {
                            inner: body,
                            keep,
                            idle: BodyIdle::default(),
                        }));
                    }
                    Err(mut failed) => match (failed.take_message(), copy) {
                        // Never written: the connection closed under us; safe to send elsewhere.
                        (Some(unsent), _) if idle_for.is_some() => request = unsent,
                        // Written, and the connection closed before any answer.
                        (None, Some(copy)) if closed_before_answer(failed.error()) => {
                            tracing::debug!("kept upstream connection closed under a request; sending it again");
                            request = copy.rebuild();
                            resent = true;
                        }
                        _ => return Err(ProxyError::Request(failed.into_error().into())),
                    },
                }
            }
        }
    }

    async fn connect(&self) -> Result<UpstreamConnection, ProxyError> {
        let io = self
            .connector
            .clone()
            .call(self.dial.clone())
            .await
            .map_err(super::connect_error)?;
        let (io, write_side) = EarlyAnswerIo::new(io);
        let (sender, connection) = http1::Builder::new()
            // As on the listener: one buffer per write (see server::protocol_builders).
            .writev(false)
            .handshake(io)
            .await
            .map_err(|error| ProxyError::Connect(error.into()))?;
        Ok(UpstreamConnection {
            sender,
            driver: Driving::new(Box::pin(connection.with_upgrades())),
            timer: ResponseTimer::default(),
            home: std::thread::current().id(),
            write_side,
        })
    }

    /// The newest idle connection dialed on this thread, else the newest of all: one
    /// from another thread works too, but each of its reads and writes is reported by
    /// that thread's runtime and costs a wake-up across threads.
    fn take_idle(&self) -> Option<IdleConnection> {
        let now = Instant::now();
        let here = std::thread::current().id();
        let mut idle = self.lock_idle();
        prune(&mut idle, now);
        let mut taken = loop {
            let index = idle
                .iter()
                .rposition(|c| c.connection.home == here)
                .or_else(|| idle.len().checked_sub(1))?;
            let candidate = idle.remove(index)?;
            // Stale behind a fresh one (see `prune`): closed, and the next one tried.
            if candidate.is_fresh(now) {
                break candidate;
            }
        };
        drop(idle);
        // Its timer belongs to the runtime of the thread that used it last, which may
        // be another one (and a timer must not outlive its runtime): a new one is
        // made here when first needed.
        taken.connection.timer = ResponseTimer::default();
        Some(taken)
    }

    fn put_idle(&self, connection: IdleConnection) {
        if !connection.is_ready() {
            return;
        }
        let mut idle = self.lock_idle();
        prune(&mut idle, Instant::now());
        // Full: the oldest goes (closed), as the likeliest to have been closed by the
        // upstream already; nginx's `keepalive` cache does the same.
        let closed = if idle.len() >= self.max_idle {
            idle.pop_front()
        } else {
            None
        };
        if idle.len() < self.max_idle {
            idle.push_back(connection);
        }
        // Closed once the list is free for others.
        drop(idle);
        drop(closed);
    }

    fn lock_idle(&self) -> MutexGuard<'_, VecDeque<IdleConnection>> {
        // The list stays consistent whatever panicked while holding it.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The same pool with another bound on its idle list.
    #[cfg(test)]
    pub(super) fn with_max_idle(&self, max_idle: usize) -> Arc<Self> {
        Http1Pool::new(self.connector.clone(), self.dial.clone(), max_idle)
    }

    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        self.lock_idle().len()
    }
}

/// The upstream connection one downstream connection keeps between its requests.
/// Dropped with the downstream connection, handing the connection to the idle list.
/// Also keeps the peer's `X-Forwarded-For` entry, rendered once per connection, and
/// what keeps the downstream connection counted, for a tunnel made of it to take along,
/// what the downstream connection is told about its request bodies, and what its
/// response bodies wait under.
pub struct UpstreamSlot {
    pool: Arc<Http1Pool>,
    kept: Mutex<Option<IdleConnection>>,
    /// The peer (canonical) and its [`address_value`].
    peer: (IpAddr, HeaderValue),
    /// Cloned only for an upgrade (`101`): no request touches its count otherwise.
    connection: ConnectionHold,
    /// Told when each forwarded request body ends (an HTTP/1.1 connection's head timer).
    bodies: Option<Arc<dyn RequestBodyWatch>>,
    /// A copy per downstream connection: a response body reaches it through the slot it
    /// holds anyway, rather than through a clone of a process-wide `Arc` per response.
    body_idle: BodyIdleLimit,
}

impl UpstreamSlot {
    /// What keeps the downstream connection counted, for a tunnel to hold.
    pub(super) fn connection(&self) -> ConnectionHold {
        self.connection.clone()
    }

    /// `ip`'s [`address_value`]: the one rendered for the connection's peer, or
    /// rendered now for another address.
    pub(super) fn peer_value(&self, ip: IpAddr) -> HeaderValue {
        match &self.peer {
            (peer, value) if *peer == ip => value.clone(),
            _ => address_value(ip),
        }
    }

    /// What this connection's upstream response bodies wait for their frames under.
    pub(super) fn body_idle(&self) -> &BodyIdleLimit {
        &self.body_idle
    }

    /// Marks a forwarded request body open until the returned guard is dropped.
    pub(super) fn open_body(&self) -> Option<OpenBody> {
        self.bodies.as_ref().map(OpenBody::new)
    }

    fn take(&self) -> Option<IdleConnection> {
        self.lock().take()
    }

    /// Hands the connection kept here, if any, to the shared idle list: the downstream
    /// connection has gone quiet (`server::idle_release`), and a client pausing between
    /// clicks should not hold an upstream connection (and its buffers) to itself. Its
    /// next request takes one from the list.
    pub fn release_kept(&self) {
        if let Some(connection) = self.take() {
            self.pool.put_idle(connection);
        }
    }

    fn give_back(&self, connection: IdleConnection) {
        let mut kept = self.lock();
        if kept.is_none() {
            *kept = Some(connection);
        } else {
            drop(kept);
            self.pool.put_idle(connection);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<IdleConnection>> {
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for UpstreamSlot {
    fn drop(&mut self) {
        if let Some(connection) = self.lock().take() {
            self.pool.put_idle(connection);
        }
    }
}

/// Drives a connection whose exchange went on after its response (an upload the
/// upstream answered early and still reads) in a task of its own, and gives it back
/// once it can take the next request.
///
/// Not given back before: the next request on it, perhaps another client's, would wait
/// for this upload to end. Nor dropped: that would be simpler, but it would cut off an
/// upload the upstream is still reading, and the upstream would see a truncated
/// request where the client sent a whole one. The task costs nothing on the usual path:
/// only an exchange that outlives its response gets one. It does not outlive a client
/// that stops sending: the body it drives bounds each wait for the client's next frame
/// (`server.body_idle_timeout`, [`super::upload_idle`]), and a stalled body fails the
/// exchange, so the connection is dropped here.
fn finish_exchange(mut connection: UpstreamConnection, slot: Arc<UpstreamSlot>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // No runtime (dropped at shutdown): the connection goes with it.
        return;
    };
    runtime.spawn(async move {
        let UpstreamConnection { sender, driver, .. } = &mut connection;
        // An error: the connection closed (the upload failed, or the upstream closed
        // it after the exchange), and is dropped here.
        let finished = driver.drive(pin!(sender.ready())).await.is_ok();
        // The upstream stopped reading the upload: see `PooledBody::release`.
        if finished && !connection.write_side.is_lost() {
            slot.give_back(IdleConnection::new(connection));
        }
    });
}

/// The head of a bodiless idempotent request, kept to send it once more.
struct HeadCopy {
    parts: http::request::Parts,
    body: ProgressBody,
}

impl HeadCopy {
    /// `None` when the request may not be sent twice: a method that is not idempotent, or a body.
    fn of(request: &Request<ProgressBody>) -> Option<Self> {
        let idempotent = matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        );
        if !idempotent || !http_body::Body::is_end_stream(request.body()) {
            return None;
        }
        // Parts has no Clone (extensions); portcullis sets none upstream.
        let mut builder = Request::builder()
            .method(request.method().clone())
            .uri(request.uri().clone())
            .version(request.version());
        if let Some(headers) = builder.headers_mut() {
            headers.clone_from(request.headers());
        }
        let (parts, ()) = builder.body(()).ok()?.into_parts();
        Some(HeadCopy {
            parts,
            body: request.body().empty(),
        })
    }

    fn rebuild(self) -> Request<ProgressBody> {
        Request::from_parts(self.parts, self.body)
    }
}

/// The connection ended after the request was written and before a response head:
/// the upstream closed an idle connection as the request arrived.
fn closed_before_answer(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() || error.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = e.source();
    }
    false
}

impl std::fmt::Debug for UpstreamSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSlot").finish_non_exhaustive()
    }
}

/// An upstream response body that returns its connection to the slot once read to
/// the end. Dropped earlier (the client went away mid-body), the connection is
/// dropped too: it is in the middle of a response and cannot carry another. So is it
/// when the body fails, or stalls past `upstream.body_idle_timeout` ([`BodyError`]).
pub struct PooledBody {
    inner: Incoming,
    keep: Option<(UpstreamConnection, Arc<UpstreamSlot>)>,
    /// The wait for the next frame, on the connection's timer (none after a `101`:
    /// the connection, and any wait, belong to the upgrade).
    idle: BodyIdle,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((connection, slot)) = self.keep.take() {
            if connection.write_side.is_lost() {
                // The upstream stopped reading: the rest of the request has nowhere to
                // go, and the connection is of no further use. Dropping it drops the
                // request body, and the client learns from its connection closing.
                return;
            }
            if connection.sender.is_ready() {
                slot.give_back(IdleConnection::new(connection));
            } else if connection.driver.driver.is_some() {
                // The exchange is not over (the request body is still being sent): it
                // must go on without this task.
                finish_exchange(connection, slot);
            }
            // Else the driver has ended: the connection closed (`Connection: close`)
            // and goes with the response.
        }
    }

    /// After a `101 Switching Protocols` the connection belongs to the upgrade, which
    /// its driver hands over when it ends (normally in the poll that read the `101`).
    pub(super) fn forget_connection(&mut self) {
        if let Some((mut connection, _)) = self.keep.take() {
            connection.detach_driver();
        }
    }
}

impl PooledBody {
    /// The next frame of the body, the driver polled first (to read what the upstream
    /// sent) and again whenever taking a frame woke it (the body asks the connection
    /// for more as it is read).
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let PooledBody { inner, keep, .. } = self;
        let Some((connection, _)) = keep.as_mut() else {
            return Pin::new(inner).poll_frame(cx);
        };
        let driving = &mut connection.driver;
        for _ in 0..INLINE_ROUNDS {
            driving.poll(cx);
            if driving.driver.is_none() {
                return Pin::new(inner).poll_frame(cx);
            }
            let (polled, woken) =
                driving.inline(|| Pin::new(&mut *inner).poll_frame(&mut Context::from_waker(Waker::noop())));
            if polled.is_ready() || !woken {
                return polled;
            }
        }
        // Still asking for the driver: let the scheduler come back to it.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = self.poll_inner(cx);
        let this = &mut *self;
        let polled = match this.keep.as_mut() {
            Some((connection, slot)) => this.idle.check(polled, &mut connection.timer, slot.body_idle(), cx),
            None => polled.map(|frame| frame.map(|frame| frame.map_err(BodyError::Failed))),
        };
        // An error (the upstream's, or a stall) drops the connection.
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
