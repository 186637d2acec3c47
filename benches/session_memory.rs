//! Memory per session: the RSS growth of this process from 0 to N Authelia-sized sessions
//! in the in-memory store (moka), divided by N. Also prints single-thread insert and
//! lookup rates (the precise ones come from the `session_store` criterion bench).
//!
//! `cargo bench --bench session_memory` (N = 100,000; `SESSIONS=…` to change it).
//! The last lines are `key=value` pairs, read by `bench/bench.py`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use portcullis::session::store::{MemoryStore, SessionBackend};

/// The system allocator, counting live heap bytes and live allocations, so the report can
/// split the RSS growth into what the sessions ask for and what malloc adds.
struct Counting;

static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE_ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as u64, Relaxed);
            LIVE_ALLOCS.fetch_add(1, Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            LIVE_BYTES.fetch_add(new_size as u64, Relaxed);
            LIVE_BYTES.fetch_sub(layout.size() as u64, Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> (u64, u64) {
    (LIVE_BYTES.load(Relaxed), LIVE_ALLOCS.load(Relaxed))
}

/// `VmRSS` of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .expect("VmRSS in /proc/self/status")
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let n: u64 = std::env::var("SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    // Large enough that nothing is evicted: this measures what a session costs.
    let config = common::config(16 << 30);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = MemoryStore::new(&config.session);

    // Warm up everything that allocates once (moka's internals, thread-locals, the
    // allocator's first arena growth) so it is not counted per session; then empty again.
    let (bytes0, allocs0) = live();
    let sample = common::session(u64::MAX, &config);
    let (bytes1, allocs1) = live();
    println!("session: {}", common::describe(&sample));
    println!(
        "session value alone: {} heap bytes in {} allocations (+{} B inline)",
        bytes1 - bytes0,
        allocs1 - allocs0,
        std::mem::size_of_val(&sample)
    );
    let approximate_size = sample.approximate_size() as u64;
    runtime.block_on(async {
        for i in 0..64 {
            store
                .insert(common::key(u64::MAX - i), Arc::new(common::session(i, &config)))
                .await
                .unwrap();
        }
        for i in 0..64 {
            store.remove(&common::key(u64::MAX - i)).await.unwrap();
        }
    });
    drop(sample);

    let before = rss_bytes();
    let (heap_before, allocs_before) = live();
    let started = Instant::now();
    runtime.block_on(async {
        for i in 0..n {
            store
                .insert(common::key(i), Arc::new(common::session(i, &config)))
                .await
                .unwrap();
        }
    });
    let insert_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let hits = runtime.block_on(async {
        let mut hits = 0u64;
        for i in 0..n {
            if store.get(&common::key(i)).await.unwrap().is_some() {
                hits += 1;
            }
        }
        hits
    });
    let lookup_secs = started.elapsed().as_secs_f64();
    let after = rss_bytes();
    let (heap_after, allocs_after) = live();
    assert_eq!(hits, n, "every session must still be in the store (nothing evicted)");

    let per_session = (after.saturating_sub(before)) as f64 / n as f64;
    let default_max_memory: u64 = 256 << 20;
    println!("sessions={n}");
    println!("rss_before_bytes={before}");
    println!("rss_after_bytes={after}");
    println!("bytes_per_session={per_session:.0}");
    println!(
        "heap_bytes_per_session={:.0}  # requested from malloc, store overhead included",
        (heap_after - heap_before) as f64 / n as f64
    );
    println!(
        "allocations_per_session={:.1}",
        (allocs_after - allocs_before) as f64 / n as f64
    );
    println!("approximate_size_bytes={approximate_size}");
    println!(
        "sessions_fitting_default_max_memory={}",
        default_max_memory / approximate_size.max(1)
    );
    println!(
        "insert_per_second={:.0}  # single thread, includes building the session",
        n as f64 / insert_secs
    );
    println!(
        "lookup_per_second={:.0}  # single thread, includes cookie parse + SHA-256 of the id",
        n as f64 / lookup_secs
    );
    drop(store);
}
