//! Connection workers: `server.workers` threads serve the connections, each one from
//! accept to close, spread so that every worker carries its share.

use std::collections::BTreeMap;

use crate::common::h1::{self, h1_connect};
use crate::common::*;

/// The process's connection worker threads: thread id -> voluntary context switches
/// so far (a worker that waited for its sockets and woke up again has switched).
fn worker_switches(pid: u32) -> BTreeMap<String, u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            // The kernel keeps 15 bytes of a thread name: "portcullis-worker-N" -> "portcullis-work".
            if name.trim_end() != "portcullis-work" {
                return None;
            }
            let status = std::fs::read_to_string(path.join("status")).ok()?;
            let switches = status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))?
                .trim()
                .parse()
                .ok()?;
            Some((path.file_name()?.to_string_lossy().into_owned(), switches))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_spread_over_the_configured_worker_threads_and_served_there() {
    let stack = Stack::builder().env("PORTCULLIS_SERVER_WORKERS", "3").start().await;
    stack.login("john", "/").await;
    let cookie = format!("portcullis_session={}", stack.session_cookie().expect("a session"));
    let port = stack.portcullis.app.port;
    let pid = stack.portcullis.pid();

    let before = worker_switches(pid);
    assert_eq!(before.len(), 3, "three worker threads: {before:?}");

    // Six connections open at once: two per worker. Each asks the upstream five times.
    let mut connections = Vec::new();
    for _ in 0..6 {
        connections.push(h1_connect(port).await);
    }
    for round in 0..5 {
        for send in &mut connections {
            send.ready().await.expect("connection still open");
            let resp = send
                .send_request(h1::get(port, &format!("/via-worker/{round}"), &cookie))
                .await
                .expect("a response");
            assert_eq!(resp.status(), 200);
            assert!(h1::text(resp).await.expect("body").contains("/via-worker/"));
        }
    }

    let after = worker_switches(pid);
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    for (thread, switches) in &after {
        assert!(
            *switches >= before[thread] + 5,
            "worker thread {thread} served no connection: {before:?} -> {after:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_setting_there_is_one_worker_per_core() {
    let stack = Stack::start().await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(worker_switches(stack.portcullis.pid()).len(), cores);
}
