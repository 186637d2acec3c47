//! The client connection as hyper sees it: the TCP stream plus a little shared state,
//! so that when hyper gives up on a connection because a request head did not arrive in
//! time (it closes silently), the stream can still answer `408` as it is dropped, and a
//! slow head can be told from an idle keep-alive connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A plain TCP stream, read and written through tokio's own (readiness-aware) paths.
pub struct ClientStream {
    tcp: TcpStream,
    state: Arc<ConnState>,
}

/// What the connection task knows about the stream hyper owns.
#[derive(Default)]
pub struct ConnState {
    /// The client has sent bytes that no response has followed yet.
    unanswered: AtomicBool,
    /// Write this response into the stream when it is dropped.
    final_response: std::sync::OnceLock<&'static [u8]>,
}

impl ClientStream {
    pub fn new(tcp: TcpStream) -> (Self, Arc<ConnState>) {
        let state = Arc::new(ConnState::default());
        (
            ClientStream {
                tcp,
                state: state.clone(),
            },
            state,
        )
    }
}

impl ConnState {
    /// True when a request is in progress rather than the connection idle.
    pub fn has_unanswered_bytes(&self) -> bool {
        self.unanswered.load(Ordering::Relaxed)
    }

    /// The request whose bytes were read last is complete and answered (its body ended
    /// after its response was written): nothing read so far awaits an answer.
    pub fn request_answered(&self) {
        self.unanswered.store(false, Ordering::Relaxed);
    }

    /// Asks the stream to write `response` (complete, short) as it is dropped.
    pub fn answer_on_drop(&self, response: &'static [u8]) {
        // Set at most once; a second request for the same connection changes nothing.
        let _ = self.final_response.set(response);
    }
}

/// Writes a short, complete response without waiting; best effort, as the client may be gone.
pub fn write_final_response(tcp: &TcpStream, response: &[u8]) {
    if let Err(error) = tcp.try_write(response) {
        tracing::debug!(%error, "could not write the final response");
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        if let Some(response) = self.state.final_response.get() {
            write_final_response(&self.tcp, response);
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.unanswered.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.state.unanswered.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.state.unanswered.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
