//! The request-head timeout of an HTTP/1.1 connection, with one timer per connection
//! rather than one per request.
//!
//! hyper's own `header_read_timeout` creates, arms and cancels a boxed timer for every
//! request head: about 1,250 instructions, 2.7% of those of a proxied request under
//! callgrind (README, Performance). Here a request marks its connection busy once its
//! head has arrived ([`HeadClock::request_started`]) and idle again, from that moment,
//! once its response has been sent (the body dropped: [`Sent`]) and its body, if it has
//! one, has been read to the end. The body usually ends first; not when the upstream
//! answered an upload before reading it and reads on: hyper reads the body on after the
//! response, and the proxy tells the clock when it ends ([`RequestBodyWatch`], only for
//! requests with a body). The connection's one
//! [`HeadTimer`] is only re-armed when it fires: it then works out the deadline from
//! when the connection last became idle, and only if that has passed is the head late.
//! A client that keeps sending requests costs one clock read per request and one timer
//! reset per timeout period (per second when the timer also watches for the connection
//! going quiet, to give its upstream connection back: [`super::idle_release`]).
//!
//! The rule is hyper's: the time from the end of one exchange (or from the connection's
//! start) to the complete head of the next request is bounded, and nothing else: a slow
//! response or a long upload is not cut off by it, even one that goes on after its
//! response.
//!
//! An HTTP/2 connection is idle by the same rule once no stream is open: its clock
//! counts the open streams ([`HeadClock::stream_opened`], [`OpenStream`]) and is idle
//! from when the last one ended, and its timer's expiry closes it gracefully (GOAWAY)
//! rather than at once; the timer then starts over ([`HeadTimer::start_over`]) and its
//! next expiry drops a connection whose client never finished the GOAWAY. A stream costs
//! an increment and a decrement of the count, which only the connection's own thread
//! touches, and the clock read when it ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::idle_release::{IdleRelease, RELEASE_AFTER};
use super::io::ConnState;
use crate::proxy::RequestBodyWatch;

/// `idle_since_ms` while a request is being served.
const BUSY: u64 = u64::MAX;

/// Whether a connection waits for a request head, and since when; shared by the
/// connection's requests (which move it) and its [`HeadTimer`] (which reads it).
pub(super) struct HeadClock {
    epoch: Instant,
    /// Milliseconds after `epoch` when the last response was sent, or [`BUSY`].
    idle_since_ms: AtomicU64,
    /// Forwarded request bodies not yet ended. A count, not a flag: the next request
    /// may start before the proxy has seen the previous body's end.
    open_bodies: AtomicU32,
    /// Milliseconds after `epoch` when the last of them ended.
    bodies_ended_ms: AtomicU64,
    /// The stream, told when a body ends after its response (see [`Self::ended`]).
    stream: Arc<ConnState>,
    /// HTTP/2 streams open now (always 0 on HTTP/1.1). The connection is not idle while
    /// any is, whatever `idle_since_ms` says: a stream that ends as another starts may
    /// set it after the new one was counted.
    streams: AtomicU32,
}

impl HeadClock {
    /// A connection on `stream` that starts out waiting for its first head.
    pub(super) fn new(stream: Arc<ConnState>) -> Arc<Self> {
        Arc::new(HeadClock {
            epoch: Instant::now(),
            idle_since_ms: AtomicU64::new(0),
            open_bodies: AtomicU32::new(0),
            bodies_ended_ms: AtomicU64::new(0),
            stream,
            streams: AtomicU32::new(0),
        })
    }

    /// An HTTP/2 connection, not idle until its first stream has ended: the wait for
    /// the first request is bounded on its own (it ends without a GOAWAY). Its request
    /// bodies are not watched (their streams are).
    pub(super) fn http2() -> Arc<Self> {
        Arc::new(HeadClock {
            epoch: Instant::now(),
            idle_since_ms: AtomicU64::new(BUSY),
            open_bodies: AtomicU32::new(0),
            bodies_ended_ms: AtomicU64::new(0),
            stream: Arc::default(),
            streams: AtomicU32::new(0),
        })
    }

    /// An HTTP/2 stream has opened (its request head has arrived); it counts until the
    /// guard is dropped.
    pub(super) fn stream_opened(self: &Arc<Self>) -> OpenStream {
        self.streams.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.clone())
    }

    /// Whether an HTTP/2 connection has had a stream yet.
    pub(super) fn had_a_stream(&self) -> bool {
        self.streams.load(Ordering::Relaxed) > 0 || self.idle_since_ms.load(Ordering::Relaxed) != BUSY
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(BUSY)
            .min(BUSY - 1)
    }

    /// A request head has arrived: no head is awaited until its response is sent.
    pub(super) fn request_started(&self) {
        self.idle_since_ms.store(BUSY, Ordering::Relaxed);
    }

    /// The response has been sent: the next head is awaited from now, or from the end
    /// of a request body still being read.
    pub(super) fn response_sent(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Since when the connection has been idle, or `None` while a request is being
    /// served (its response not sent, or its body not ended).
    pub(super) fn idle_since(&self) -> Option<Instant> {
        match self.idle_since_ms.load(Ordering::Relaxed) {
            BUSY => None,
            _ if self.streams.load(Ordering::Relaxed) > 0 => None,
            _ if self.open_bodies.load(Ordering::Acquire) > 0 => None,
            ms => {
                let ended = self.bodies_ended_ms.load(Ordering::Relaxed);
                Some(self.epoch + Duration::from_millis(ms.max(ended)))
            }
        }
    }

    /// When the awaited head is due, or `None` while a request is being served.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.idle_since().map(|since| since + timeout)
    }
}

/// Called by the proxy, only for requests with a body, from whichever task reads it.
impl RequestBodyWatch for HeadClock {
    fn opened(&self) {
        self.open_bodies.fetch_add(1, Ordering::Relaxed);
    }

    fn ended(&self) {
        // The end time is stored before the count drops (Release): whoever sees no open
        // body (Acquire) sees when the last one ended.
        self.bodies_ended_ms.fetch_max(self.now_ms(), Ordering::Relaxed);
        let last = self.open_bodies.fetch_sub(1, Ordering::Release) == 1;
        if last && self.idle_since_ms.load(Ordering::Relaxed) != BUSY {
            // Answered before it ended: the bytes read since the response were this
            // body's, and a head timeout from here on finds the client idle (no 408).
            self.stream.request_answered();
        }
    }
}

impl std::fmt::Debug for HeadClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadClock")
            .field("idle_since_ms", &self.idle_since_ms)
            .field("open_bodies", &self.open_bodies)
            .field("bodies_ended_ms", &self.bodies_ended_ms)
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

/// An open HTTP/2 stream, counted by its connection's [`HeadClock`] until dropped: with
/// the response body once sent (it travels in [`Sent`]), or with the request's future
/// when the stream ends before there is a response (the client reset it).
#[derive(Debug)]
pub(super) struct OpenStream(Arc<HeadClock>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        // The last open stream leaves the connection idle from now.
        if self.0.streams.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.response_sent();
        }
    }
}

impl OpenStream {
    /// The stream's response body, which ends the stream when dropped.
    pub(super) fn sent<B>(self, body: B) -> Sent<B, OpenStream> {
        Sent { body, _end: self }
    }
}

/// What marks an HTTP/1.1 connection idle when its response body is dropped.
#[derive(Debug)]
pub(super) struct ResponseEnd(Arc<HeadClock>);

impl Drop for ResponseEnd {
    fn drop(&mut self) {
        self.0.response_sent();
    }
}

/// The connection's timer: polled with the connection, ready once a head is late. It
/// also tells the connection's [`IdleRelease`], if it has one, when it has been quiet
/// long enough: one timer for both, so that a poll of the connection checks one sleep.
pub(super) struct HeadTimer {
    clock: Arc<HeadClock>,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// The sleep has been polled (and so registered) since it was last set.
    armed: bool,
    release: Option<IdleRelease>,
}

impl HeadTimer {
    pub(super) fn new(clock: Arc<HeadClock>, timeout: Duration) -> Self {
        let first = clock.deadline(timeout).unwrap_or_else(|| Instant::now() + timeout);
        HeadTimer {
            clock,
            timeout,
            sleep: Box::pin(tokio::time::sleep_until(first)),
            armed: false,
            release: None,
        }
    }

    /// The same timer, also firing for `release` (see [`super::idle_release`]).
    pub(super) fn releasing(mut self, release: IdleRelease) -> Self {
        let first = self.sleep.deadline().min(Instant::now() + RELEASE_AFTER);
        self.sleep.as_mut().reset(first);
        self.release = Some(release);
        self
    }

    /// Starts the wait over, as if the connection had become idle now: the next expiry
    /// comes a full timeout from here (later if a stream or request is open then).
    pub(super) fn start_over(&mut self) {
        self.clock.response_sent();
    }

    /// Ready once the connection has waited longer than the timeout for a head. Cheap
    /// while the sleep has not fired (one atomic load), so it can be polled along with
    /// the connection on every wake; always from the connection's task, since the sleep
    /// itself is polled (and the task's waker registered) only when set.
    pub(super) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // A connection used again after its release is watched from now on.
        let mut look_now = self.release.as_mut().is_some_and(|r| r.in_use_again(&self.clock));
        loop {
            if look_now || self.armed {
                if !look_now && !self.sleep.is_elapsed() {
                    return Poll::Pending;
                }
                look_now = false;
                // Fired: the deadline it was set to may have moved on since.
                let now = Instant::now();
                let idle_since = self.clock.idle_since();
                let due = idle_since.map_or(now + self.timeout, |since| since + self.timeout);
                if due <= now {
                    return Poll::Ready(());
                }
                let release_due = self.release.as_mut().and_then(|r| r.on_fired(idle_since, now));
                self.sleep.as_mut().reset(release_due.map_or(due, |r| r.min(due)));
            }
            self.armed = true;
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// The body of a response, which marks the connection idle (HTTP/1.1: [`ResponseEnd`])
/// or ends its stream (HTTP/2: [`OpenStream`]) when hyper drops it: after the last frame
/// has been written, or when the exchange is abandoned.
pub(super) struct Sent<B, E = ResponseEnd> {
    body: B,
    /// Dropped with the body, which is all it is for.
    _end: E,
}

impl<B> Sent<B> {
    /// A response on an HTTP/1.1 connection, whose request marked `clock` busy.
    pub(super) fn new(body: B, clock: Arc<HeadClock>) -> Self {
        Sent {
            body,
            _end: ResponseEnd(clock),
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin, E: Unpin> Body for Sent<B, E> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Polls the timer until it expires; the time it took (tokio's clock is paused, so
    /// time advances to each timer at once).
    async fn expiry(timer: &mut HeadTimer) -> Duration {
        let started = Instant::now();
        poll_fn(|cx| timer.poll_expired(cx)).await;
        started.elapsed()
    }

    /// Polls once (from this task, as the connection's task does): whether the timer
    /// has expired by now.
    async fn expired_now(timer: &mut HeadTimer) -> bool {
        poll_fn(|cx| Poll::Ready(timer.poll_expired(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_expires_after_the_timeout() {
        let mut timer = HeadTimer::new(HeadClock::new(Arc::default()), TIMEOUT);
        assert_eq!(expiry(&mut timer).await, TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_runs_from_the_end_of_the_last_response() {
        let clock = HeadClock::new(Arc::default());
        let mut timer = HeadTimer::new(clock.clone(), TIMEOUT);
        assert!(!expired_now(&mut timer).await);
        tokio::time::sleep(Duration::from_secs(4)).await;
        clock.request_started();
        tokio::time::sleep(Duration::from_secs(3)).await;
        clock.response_sent();
        // Idle since 7 s: due at 17 s, 10 s from now; the first sleep fires at 10 s
        // and is set again, not expired.
        assert_eq!(expiry(&mut timer).await, TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_being_served_does_not_expire_however_long_it_takes() {
        let clock = HeadClock::new(Arc::default());
        let mut timer = HeadTimer::new(clock.clone(), TIMEOUT);
        clock.request_started();
        let served = async {
            tokio::time::sleep(TIMEOUT * 5).await;
            clock.response_sent();
        };
        let (elapsed, ()) = tokio::join!(expiry(&mut timer), served);
        assert_eq!(elapsed, TIMEOUT * 6, "expired only a full timeout after the response");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_read_on_after_its_response_keeps_the_connection_busy_until_it_ends() {
        let clock = HeadClock::new(Arc::default());
        let mut timer = HeadTimer::new(clock.clone(), TIMEOUT);
        clock.request_started();
        clock.opened();
        clock.response_sent();
        let uploading = async {
            tokio::time::sleep(TIMEOUT * 3).await;
            clock.ended();
        };
        let (elapsed, ()) = tokio::join!(expiry(&mut timer), uploading);
        assert_eq!(elapsed, TIMEOUT * 4, "expired only a full timeout after the body's end");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_ends_late_does_not_end_the_next_requests_body() {
        let clock = HeadClock::new(Arc::default());
        clock.request_started();
        clock.opened();
        clock.response_sent();
        // The next request, with a body too, starts before the proxy saw the first end.
        clock.request_started();
        clock.opened();
        clock.ended();
        clock.response_sent();
        assert_eq!(clock.deadline(TIMEOUT), None, "the second body is still open");
        tokio::time::sleep(Duration::from_secs(2)).await;
        clock.ended();
        assert_eq!(
            clock.deadline(TIMEOUT),
            Some(clock.epoch + Duration::from_secs(2) + TIMEOUT)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_more_often_than_the_timeout_keep_the_connection() {
        let clock = HeadClock::new(Arc::default());
        let mut timer = HeadTimer::new(clock.clone(), TIMEOUT);
        for _ in 0..50 {
            assert!(!expired_now(&mut timer).await);
            tokio::time::sleep(Duration::from_secs(3)).await;
            clock.request_started();
            clock.response_sent();
        }
        assert_eq!(expiry(&mut timer).await, TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_is_idle_from_the_end_of_its_last_open_stream() {
        let clock = HeadClock::http2();
        let mut timer = HeadTimer::new(clock.clone(), TIMEOUT);
        // No stream yet: the first request's wait is bounded elsewhere.
        tokio::time::sleep(TIMEOUT * 3).await;
        assert!(!expired_now(&mut timer).await);
        assert!(!clock.had_a_stream());
        let first = clock.stream_opened();
        let second = clock.stream_opened();
        assert!(clock.had_a_stream());
        // The first stream's response: sent 2 s on, while the other stays open 30 s.
        let body = first.sent(http_body_util::Empty::<Bytes>::new());
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(body);
        assert_eq!(clock.deadline(TIMEOUT), None);
        tokio::time::sleep(TIMEOUT * 3).await;
        assert!(!expired_now(&mut timer).await);
        // Dropped without a response (a reset stream) ends it all the same.
        drop(second);
        assert_eq!(expiry(&mut timer).await, TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_started_over_expires_a_full_idle_timeout_later() {
        let clock = HeadClock::http2();
        let mut timer = HeadTimer::new(clock.clone(), TIMEOUT);
        drop(clock.stream_opened());
        assert_eq!(expiry(&mut timer).await, TIMEOUT);
        // The GOAWAY: expired, and it stays so until started over.
        assert!(expired_now(&mut timer).await);
        timer.start_over();
        assert!(!expired_now(&mut timer).await);
        // A stream opened meanwhile holds it off until a timeout after its end.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let late = clock.stream_opened();
        tokio::time::sleep(TIMEOUT * 2).await;
        assert!(!expired_now(&mut timer).await);
        drop(late);
        assert_eq!(expiry(&mut timer).await, TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_stream_opened_after_the_connection_went_idle_keeps_it_busy() {
        // Opening a stream does not mark the connection busy (as an HTTP/1.1 request head
        // does): only the count of open streams tells that it is, whatever time the last
        // stream to end left behind.
        let clock = HeadClock::http2();
        let mut timer = HeadTimer::new(clock.clone(), TIMEOUT);
        drop(clock.stream_opened());
        let open = clock.stream_opened();
        tokio::time::sleep(TIMEOUT * 3).await;
        assert!(!expired_now(&mut timer).await, "expired with a stream open");
        drop(open);
        assert_eq!(expiry(&mut timer).await, TIMEOUT);
    }

    #[test]
    fn the_debug_form_shows_the_clocks_state() {
        let clock = HeadClock::new(Arc::default());
        clock.opened();
        let shown = format!("{clock:?}");
        assert!(
            shown.starts_with("HeadClock {") && shown.contains("open_bodies: 1"),
            "{shown}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_response_body_marks_the_connection_idle() {
        let clock = HeadClock::new(Arc::default());
        clock.request_started();
        assert_eq!(clock.deadline(TIMEOUT), None);
        let body = Sent::new(http_body_util::Empty::<Bytes>::new(), clock.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(body);
        assert_eq!(
            clock.deadline(TIMEOUT),
            Some(clock.epoch + Duration::from_secs(2) + TIMEOUT)
        );
    }
}
