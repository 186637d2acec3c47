//! An upstream's answer to a request it stopped reading, kept readable.
//!
//! An upstream may answer before it has read the whole request body (a `413` to an
//! upload that is too large, a `401`) and close the connection. The body is still
//! arriving, so its kernel answers the rest with a reset. hyper's client fails the
//! exchange at the first write that meets the reset, although the answer already sits
//! in portcullis' socket (it was sent before the reset), and the client would get a 502
//! instead of the upstream's answer. A client talking to the upstream directly (curl, a
//! browser) reads the answer; nginx has the same race as hyper.
//!
//! [`EarlyAnswerIo`] ends the write side at the first write that finds the connection
//! closed or reset by the peer: that write and every later one succeed without sending
//! anything, and the read side decides the exchange: the upstream's answer, or the read
//! error (a 502) when it sent none. Nothing written after that point can reach the
//! upstream anyway. [`WriteSide`] tells the pool, which then drops the connection once the
//! answer has been read, instead of letting the rest of the upload go nowhere or keeping
//! the connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};

/// Whether the write side of a connection was lost to the peer. Shared between the
/// connection's I/O, which sets it, and the pool, which reads it.
#[derive(Clone, Default)]
pub(super) struct WriteSide(Arc<AtomicBool>);

impl WriteSide {
    pub(super) fn is_lost(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn lose(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// I/O whose writes are discarded once the peer closed or reset the connection.
pub(super) struct EarlyAnswerIo<T> {
    io: T,
    write_side: WriteSide,
}

impl<T> EarlyAnswerIo<T> {
    pub(super) fn new(io: T) -> (Self, WriteSide) {
        let write_side = WriteSide::default();
        (
            EarlyAnswerIo {
                io,
                write_side: write_side.clone(),
            },
            write_side,
        )
    }

    /// `written` (what a successful write returns) in place of an error that says the
    /// peer is gone; other errors and successes pass unchanged.
    #[inline(always)]
    fn absorb<R>(&self, polled: Poll<io::Result<R>>, written: R) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(Err(error)) if peer_gone(&error) => {
                self.lose(&error);
                Poll::Ready(Ok(written))
            }
            other => other,
        }
    }

    #[cold]
    fn lose(&self, error: &io::Error) {
        tracing::debug!(%error, "upstream stopped reading the request; reading its answer");
        self.write_side.lose();
    }
}

/// The errors of a write to a peer that closed its side or reset the connection.
fn peer_gone(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

impl<T: Read + Unpin> Read for EarlyAnswerIo<T> {
    #[inline(always)]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

// Every read and write of an upstream connection passes here: inlined, the wrapper costs
// a flag test (as a call, the flush alone cost 135 instructions per request, callgrind).
impl<T: Write + Unpin> Write for EarlyAnswerIo<T> {
    #[inline(always)]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_side.is_lost() {
            return Poll::Ready(Ok(buf.len()));
        }
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.absorb(polled, buf.len())
    }

    #[inline(always)]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total = bufs.iter().map(|b| b.len()).sum();
        if this.write_side.is_lost() {
            return Poll::Ready(Ok(total));
        }
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.absorb(polled, total)
    }

    #[inline(always)]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline(always)]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_side.is_lost() {
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.absorb(polled, ())
    }

    #[inline(always)]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_side.is_lost() {
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.absorb(polled, ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// hyper's `Write` has no extension methods: one write, polled to completion.
    async fn write(io: &mut EarlyAnswerIo<TokioIo<tokio::net::TcpStream>>, data: &[u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, data)).await
    }

    #[tokio::test]
    async fn writes_after_a_reset_succeed_unsent_and_the_answer_before_it_stays_readable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (mut peer, _) = accepted.unwrap();
        let (mut io, write_side) = EarlyAnswerIo::new(TokioIo::new(client.unwrap()));

        write(&mut io, b"request head").await.unwrap();
        let mut head = [0; 12];
        peer.read_exact(&mut head).await.unwrap();
        write(&mut io, b"unread body").await.unwrap();
        peer.write_all(b"answer").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(peer); // with "unread body" unread: a reset
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!write_side.is_lost());

        // The first write after the reset meets it; it and every later one "succeed".
        for _ in 0..3 {
            assert_eq!(write(&mut io, b"more body").await.unwrap(), 9);
        }
        assert!(write_side.is_lost());
        let mut answer = [0; 6];
        let mut read = tokio::io::ReadBuf::new(&mut answer);
        let mut stream = TokioIo::new(io);
        stream.read_buf(&mut read).await.unwrap();
        assert_eq!(read.filled(), b"answer");
    }

    /// An I/O whose next write, flush or shutdown fails with a chosen error, and that
    /// records what reached it.
    #[derive(Default)]
    struct ScriptedIo {
        fail_with: Option<io::ErrorKind>,
        vectored: bool,
        written: Vec<u8>,
        flushes: usize,
        shutdowns: usize,
    }

    impl ScriptedIo {
        fn outcome(&mut self, ok: usize) -> Poll<io::Result<usize>> {
            Poll::Ready(match self.fail_with {
                Some(kind) => Err(io::Error::from(kind)),
                None => Ok(ok),
            })
        }
    }

    impl Write for ScriptedIo {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let polled = this.outcome(buf.len());
            if this.fail_with.is_none() {
                this.written.extend_from_slice(buf);
            }
            polled
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let total = bufs.iter().map(|b| b.len()).sum();
            let polled = this.outcome(total);
            if this.fail_with.is_none() {
                bufs.iter().for_each(|b| this.written.extend_from_slice(b));
            }
            polled
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.flushes += 1;
            this.outcome(0).map_ok(|_| ())
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.shutdowns += 1;
            this.outcome(0).map_ok(|_| ())
        }
    }

    /// One call of each kind on `io`, polled once (the double is always ready).
    fn poll<R>(
        io: &mut EarlyAnswerIo<ScriptedIo>,
        call: impl FnOnce(Pin<&mut EarlyAnswerIo<ScriptedIo>>, &mut Context<'_>) -> Poll<R>,
    ) -> R {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match call(Pin::new(io), &mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("the scripted I/O is always ready"),
        }
    }

    fn vectored_write(io: &mut EarlyAnswerIo<ScriptedIo>, parts: &[&[u8]]) -> io::Result<usize> {
        let slices: Vec<io::IoSlice<'_>> = parts.iter().map(|part| io::IoSlice::new(part)).collect();
        poll(io, |io, cx| io.poll_write_vectored(cx, &slices))
    }

    #[test]
    fn until_the_peer_is_gone_every_call_reaches_the_connection_unchanged() {
        let (mut io, write_side) = EarlyAnswerIo::new(ScriptedIo {
            vectored: true,
            ..ScriptedIo::default()
        });
        assert!(io.is_write_vectored());
        assert_eq!(poll(&mut io, |io, cx| io.poll_write(cx, b"head ")).unwrap(), 5);
        assert_eq!(vectored_write(&mut io, &[b"body ", b"more"]).unwrap(), 9);
        poll(&mut io, |io, cx| io.poll_flush(cx)).unwrap();
        poll(&mut io, |io, cx| io.poll_shutdown(cx)).unwrap();
        assert_eq!(io.io.written, b"head body more");
        assert_eq!((io.io.flushes, io.io.shutdowns), (1, 1));
        assert!(!write_side.is_lost());

        let (plain, _) = EarlyAnswerIo::new(ScriptedIo::default());
        assert!(
            !plain.is_write_vectored(),
            "vectored writes only where the connection has them"
        );
    }

    #[test]
    fn other_errors_pass_through_and_do_not_end_the_write_side() {
        for kind in [io::ErrorKind::TimedOut, io::ErrorKind::Other] {
            let (mut io, write_side) = EarlyAnswerIo::new(ScriptedIo {
                fail_with: Some(kind),
                ..ScriptedIo::default()
            });
            let failed = poll(&mut io, |io, cx| io.poll_write(cx, b"body"));
            assert_eq!(failed.map_err(|e| e.kind()), Err(kind));
            assert_eq!(vectored_write(&mut io, &[b"a", b"b"]).map_err(|e| e.kind()), Err(kind));
            assert_eq!(
                poll(&mut io, |io, cx| io.poll_flush(cx)).map_err(|e| e.kind()),
                Err(kind)
            );
            assert_eq!(
                poll(&mut io, |io, cx| io.poll_shutdown(cx)).map_err(|e| e.kind()),
                Err(kind)
            );
            assert!(!write_side.is_lost(), "{kind:?} is not a peer that went away");
        }
    }

    #[test]
    fn each_kind_of_call_that_meets_a_gone_peer_ends_the_write_side_and_succeeds() {
        type Call = fn(&mut EarlyAnswerIo<ScriptedIo>) -> io::Result<usize>;
        let calls: [(&str, Call); 4] = [
            ("write", |io| poll(io, |io, cx| io.poll_write(cx, b"body"))),
            ("vectored write", |io| vectored_write(io, &[b"bo", b"dy"])),
            ("flush", |io| poll(io, |io, cx| io.poll_flush(cx)).map(|()| 4)),
            ("shutdown", |io| poll(io, |io, cx| io.poll_shutdown(cx)).map(|()| 4)),
        ];
        for (name, call) in calls {
            let (mut io, write_side) = EarlyAnswerIo::new(ScriptedIo {
                fail_with: Some(io::ErrorKind::ConnectionReset),
                ..ScriptedIo::default()
            });
            assert_eq!(call(&mut io).unwrap(), 4, "{name}");
            assert!(write_side.is_lost(), "{name}");
        }
    }

    #[test]
    fn once_the_write_side_is_lost_nothing_more_reaches_the_connection() {
        let (mut io, write_side) = EarlyAnswerIo::new(ScriptedIo {
            fail_with: Some(io::ErrorKind::BrokenPipe),
            ..ScriptedIo::default()
        });
        poll(&mut io, |io, cx| io.poll_flush(cx)).unwrap();
        assert!(write_side.is_lost());
        // The connection would accept them now; they must not be sent anyway.
        io.io.fail_with = None;
        assert_eq!(poll(&mut io, |io, cx| io.poll_write(cx, b"late")).unwrap(), 4);
        assert_eq!(vectored_write(&mut io, &[b"la", b"te!"]).unwrap(), 5);
        poll(&mut io, |io, cx| io.poll_flush(cx)).unwrap();
        poll(&mut io, |io, cx| io.poll_shutdown(cx)).unwrap();
        assert!(io.io.written.is_empty());
        assert_eq!((io.io.flushes, io.io.shutdowns), (1, 0));
    }

    #[test]
    fn only_the_errors_of_a_gone_peer_are_absorbed() {
        for kind in [
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
        ] {
            assert!(peer_gone(&io::Error::from(kind)), "{kind:?}");
        }
        for kind in [
            io::ErrorKind::TimedOut,
            io::ErrorKind::OutOfMemory,
            io::ErrorKind::Other,
            io::ErrorKind::WouldBlock,
        ] {
            assert!(!peer_gone(&io::Error::from(kind)), "{kind:?}");
        }
    }
}
