//! Upgraded connections (WebSocket and any other `Upgrade` protocol): once the
//! upstream answered `101`, the downstream and upstream connections are spliced
//! byte for byte by a task that [`Tunnels`] counts and can stop, and that holds the
//! downstream connection's [`ConnectionHold`] until it ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// After one direction has ended cleanly, how long the other may still run. A
/// half-close (one side done sending, still reading) is thereby honoured, but a peer
/// that never closes its side cannot keep the task alive.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What keeps a downstream connection counted as open (its place under
/// `server.max_connections`, its count in the open-connections gauge), given back when
/// the last clone is dropped. Opaque here: the listener makes it, and the proxy gets it
/// with the connection's [`super::UpstreamSlot`].
///
/// A tunnel keeps a clone until it ends: it goes on using the connection's socket after
/// hyper's connection future, which holds the first, has ended at the `101`.
pub type ConnectionHold = Arc<dyn Send + Sync>;

/// Owner of the splice tasks: counts them and stops them on [`Tunnels::close_all`].
#[derive(Debug)]
pub(super) struct Tunnels {
    /// Set to `true` once to stop every tunnel. Dropping the sender (the `Upstream`
    /// replaced on a reload) deliberately does not stop them.
    shutdown: watch::Sender<bool>,
    active: Arc<AtomicUsize>,
}

/// Decrements the active count when the task ends, however it ends.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tunnels {
    pub(super) fn new() -> Self {
        Tunnels {
            shutdown: watch::Sender::new(false),
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(super) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub(super) fn close_all(&self) {
        self.shutdown.send_replace(true);
    }

    /// Spawns the task that waits for both upgrades and splices them, holding
    /// `connection` (the downstream connection's) until it ends. The downstream upgrade
    /// completes once hyper has written our `101` to the client.
    pub(super) fn splice(&self, downstream: OnUpgrade, upstream: OnUpgrade, connection: ConnectionHold) {
        self.active.fetch_add(1, Ordering::Relaxed);
        let guard = ActiveGuard(self.active.clone());
        let mut shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            let (_guard, _connection) = (guard, connection);
            let stopped = async {
                // Err: the sender is gone; tunnels then live until they close.
                if shutdown.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = stopped => tracing::debug!("upgraded connection closed on shutdown"),
                () = run(downstream, upstream) => {}
            }
        });
    }
}

async fn run(downstream: OnUpgrade, upstream: OnUpgrade) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let (down_read, down_write) = tokio::io::split(TokioIo::new(downstream));
    let (up_read, up_write) = tokio::io::split(TokioIo::new(upstream));
    splice(down_read, down_write, up_read, up_write).await;
}

/// Copies both ways until either side closes. `tokio::io::copy_bidirectional` would
/// wait for *both* directions to end, so a peer that never closes after the other
/// did would hold the task forever; here the second direction gets
/// [`HALF_CLOSE_GRACE`], and an error in either direction ends both at once.
pub(super) async fn splice<DR, DW, UR, UW>(mut down_read: DR, mut down_write: DW, mut up_read: UR, mut up_write: UW)
where
    DR: AsyncRead + Unpin,
    DW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let to_upstream = pipe(&mut down_read, &mut up_write);
    let to_downstream = pipe(&mut up_read, &mut down_write);
    tokio::pin!(to_upstream, to_downstream);
    // The direction that ended cleanly already shut down its writer; the other may
    // still be delivering the last bytes (a WebSocket close frame, say).
    tokio::select! {
        ok = &mut to_upstream => if ok {
            let _finished_or_not = tokio::time::timeout(HALF_CLOSE_GRACE, &mut to_downstream).await;
        },
        ok = &mut to_downstream => if ok {
            let _finished_or_not = tokio::time::timeout(HALF_CLOSE_GRACE, &mut to_upstream).await;
        },
    }
}

/// One direction: copy until EOF, then shut down the writer so the peer sees EOF.
/// `true` when it ended cleanly.
async fn pipe<R, W>(read: &mut R, write: &mut W) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match tokio::io::copy(read, write).await {
        Ok(_) => write.shutdown().await.is_ok(),
        Err(e) => {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
            false
        }
    }
}
