//! The client connection as hyper sees it: a TCP stream shared with the connection's
//! task, so that after hyper gives up on a connection (head read timeout) the task can
//! still write a `408` to it, and an activity flag that tells a slow request head from
//! an idle keep-alive connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream shared between hyper and the connection task.
pub struct ClientStream {
    tcp: Arc<TcpStream>,
    unanswered: Arc<AtomicBool>,
}

/// The connection task's handle on the same stream.
#[derive(Clone)]
pub struct StreamHandle {
    tcp: Arc<TcpStream>,
    unanswered: Arc<AtomicBool>,
}

impl ClientStream {
    pub fn new(tcp: TcpStream) -> (Self, StreamHandle) {
        let tcp = Arc::new(tcp);
        let unanswered = Arc::new(AtomicBool::new(false));
        let handle = StreamHandle {
            tcp: tcp.clone(),
            unanswered: unanswered.clone(),
        };
        (ClientStream { tcp, unanswered }, handle)
    }
}

impl StreamHandle {
    /// True when the client has sent bytes that no response has followed yet: a request
    /// in progress rather than an idle keep-alive connection.
    pub fn has_unanswered_bytes(&self) -> bool {
        self.unanswered.load(Ordering::Relaxed)
    }

    /// Writes a short, complete response without waiting; best effort, as the client may be gone.
    pub fn write_final_response(&self, response: &[u8]) {
        if let Err(error) = self.tcp.try_write(response) {
            tracing::debug!(%error, "could not write the final response");
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            match self.tcp.try_read(buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    if read > 0 {
                        self.unanswered.store(true, Ordering::Relaxed);
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_write(buf) {
                Ok(written) => {
                    self.unanswered.store(false, Ordering::Relaxed);
                    return Poll::Ready(Ok(written));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_write_vectored(bufs) {
                Ok(written) => {
                    self.unanswered.store(false, Ordering::Relaxed);
                    return Poll::Ready(Ok(written));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Half-close the write side (the stream itself closes when the last handle drops).
        match socket2::SockRef::from(&*self.tcp).shutdown(std::net::Shutdown::Write) {
            Err(error) if error.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(error)),
            _ => Poll::Ready(Ok(())),
        }
    }
}
