//! Connection workers: threads with a single-threaded runtime each, one per core by
//! default, every connection served from accept to close by one of them (the model of
//! nginx's worker processes).
//!
//! A connection's task, its socket's readiness, the upstream connection it dials and
//! its timers then all live on one thread: a request wakes nothing on another core, and
//! its buffers stay in that core's cache. On one shared work-stealing runtime the thread
//! waiting in epoll hands most ready connections to the other thread, which costs a
//! cross-core wake-up per request; the benchmark measured 7-15% more requests per
//! second this way (README, Performance). A new connection goes to the worker serving
//! the fewest, so long-lived connections (WebSockets, HTTP/2) do not pile up on one.
//! Everything else (the accept loop, provider discovery, certificate reloads, metrics)
//! runs on the main thread's runtime.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The worker threads. Dropping this stops them (connections still open are closed).
pub(super) struct Workers {
    workers: Vec<Worker>,
    /// Where the next search for the least busy worker starts, so ties go round-robin.
    next: AtomicUsize,
}

struct Worker {
    runtime: Handle,
    /// Connections this worker serves now.
    connections: Arc<AtomicUsize>,
    /// False once the worker's thread has ended (it never should before the stop; but a
    /// worker that died must not go on being handed connections it would drop).
    alive: Arc<AtomicBool>,
    /// Ends the worker's runtime when sent or dropped.
    _stop: Option<oneshot::Sender<()>>,
}

/// The cores this process may use (CPU affinity and cgroup quota included), at least 1.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Workers {
    /// `count` worker threads (at least one asked for); those that could not be
    /// started are left out, and with none [`Workers::spawn`] hands every connection back.
    pub(super) fn start(count: usize) -> Self {
        Workers {
            workers: (0..count.max(1)).filter_map(Worker::start).collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub(super) fn count(&self) -> usize {
        self.workers.len()
    }

    /// Runs the future `connection` makes on the least busy worker, counted there until
    /// it completes. `connection` is called on that worker's thread, so the socket it
    /// registers belongs to that worker's runtime. Without a live worker it is handed
    /// back, to be served elsewhere.
    pub(super) fn spawn<F, Fut>(&self, connection: F) -> Result<(), F>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self.least_busy() else {
            return Err(connection);
        };
        let counted = ConnectionCount::new(worker.connections.clone());
        worker.runtime.spawn(async move {
            let _counted = counted;
            connection().await;
        });
        Ok(())
    }

    fn least_busy(&self) -> Option<&Worker> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.workers.len();
        (0..n)
            .map(|i| &self.workers[(start + i) % n])
            .filter(|worker| worker.alive.load(Ordering::Relaxed))
            .min_by_key(|worker| worker.connections.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    fn connections(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|worker| worker.connections.load(Ordering::Relaxed))
            .collect()
    }
}

impl Worker {
    fn start(index: usize) -> Option<Self> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let alive = Arc::new(AtomicBool::new(true));
        let ended = ThreadEnd(alive.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("portcullis-worker-{index}"))
            .spawn(move || {
                // Dropped however the thread ends, unwinding included.
                let _ended = ended;
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::warn!(%error, "cannot start a connection worker's runtime");
                        return;
                    }
                };
                if handle_tx.send(runtime.handle().clone()).is_err() {
                    return;
                }
                // Serves the worker's connections until the stop (or its sender's drop);
                // dropping the runtime then drops the connections still open.
                let _ = runtime.block_on(stopped);
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a connection worker thread");
            return None;
        }
        let runtime = handle_rx.recv().ok()?;
        Some(Worker {
            runtime,
            connections: Arc::new(AtomicUsize::new(0)),
            alive,
            _stop: Some(stop),
        })
    }
}

/// Marks a worker dead when its thread ends.
struct ThreadEnd(Arc<AtomicBool>);

impl Drop for ThreadEnd {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Counts a connection on its worker for as long as it is served.
struct ConnectionCount(Arc<AtomicUsize>);

impl ConnectionCount {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        ConnectionCount(counter)
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn connections_spread_over_the_workers_and_run_on_their_threads() {
        let workers = Workers::start(2);
        let (release, released) = tokio::sync::watch::channel(false);
        let (threads_tx, threads_rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let mut released = released.clone();
            let threads_tx = threads_tx.clone();
            let spawned = workers.spawn(move || async move {
                let _ = threads_tx.send(std::thread::current().name().map(str::to_owned));
                let _ = released.wait_for(|r| *r).await;
            });
            assert!(spawned.is_ok());
        }
        let mut names: Vec<_> = (0..4)
            .map(|_| {
                threads_rx
                    .recv_timeout(Duration::from_secs(5))
                    .expect("ran")
                    .expect("named")
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "portcullis-worker-0",
                "portcullis-worker-0",
                "portcullis-worker-1",
                "portcullis-worker-1"
            ]
        );
        assert_eq!(workers.connections(), [2, 2]);
        release.send(true).expect("receivers");
        wait_until("connections never ended", || workers.connections() == [0, 0]);
    }

    #[test]
    fn as_many_workers_start_as_asked_and_at_least_one() {
        assert_eq!(Workers::start(3).count(), 3);
        assert_eq!(Workers::start(0).count(), 1);
        let cores = cores();
        assert!(cores >= 1);
        assert_eq!(Some(cores), std::thread::available_parallelism().ok().map(usize::from));
    }

    #[test]
    fn a_worker_still_serving_a_connection_gets_the_next_ones_last() {
        let workers = Workers::start(2);
        let (_hold, held) = tokio::sync::watch::channel(false);
        let mut held = held.clone();
        assert!(workers
            .spawn(move || async move {
                let _ = held.wait_for(|r| *r).await;
            })
            .is_ok());
        wait_until("the connection never started", || {
            workers.connections().iter().sum::<usize>() == 1
        });
        let busy = workers.connections().iter().position(|&c| c == 1).expect("one busy");
        for _ in 0..3 {
            let least_busy = workers.least_busy().expect("a live worker");
            assert!(!std::ptr::eq(least_busy, &workers.workers[busy]));
        }
    }

    #[test]
    fn dropping_the_workers_ends_their_threads_and_the_connections_on_them() {
        let workers = Workers::start(1);
        let (ended_tx, ended_rx) = std::sync::mpsc::channel::<()>();
        assert!(workers
            .spawn(move || async move {
                // Dropped with the task when the worker's runtime goes away.
                let _ended = ended_tx;
                std::future::pending::<()>().await;
            })
            .is_ok());
        wait_until("the connection never started", || workers.connections() == [1]);
        drop(workers);
        assert_eq!(
            ended_rx.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn a_worker_whose_thread_ended_gets_no_connections_and_without_any_they_are_handed_back() {
        let mut workers = Workers::start(2);
        let _ = workers.workers[0]._stop.take().map(|stop| stop.send(()));
        wait_until("the stopped worker still counts as alive", || {
            !workers.workers[0].alive.load(Ordering::Relaxed)
        });
        let (threads_tx, threads_rx) = std::sync::mpsc::channel();
        for _ in 0..3 {
            let threads_tx = threads_tx.clone();
            let spawned = workers.spawn(move || async move {
                let _ = threads_tx.send(std::thread::current().name().map(str::to_owned));
            });
            assert!(spawned.is_ok());
        }
        for _ in 0..3 {
            let thread = threads_rx.recv_timeout(Duration::from_secs(5)).expect("ran");
            assert_eq!(thread.as_deref(), Some("portcullis-worker-1"));
        }

        let _ = workers.workers[1]._stop.take().map(|stop| stop.send(()));
        wait_until("the last worker still counts as alive", || {
            !workers.workers[1].alive.load(Ordering::Relaxed)
        });
        assert!(workers.spawn(|| async {}).is_err());
    }
}
