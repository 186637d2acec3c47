//! Insert and lookup rates of the in-memory session store (moka), with Authelia-sized
//! sessions (see `common`). `cargo bench --bench session_store`.
//!
//! - `lookup_hit`: what every authenticated request does: parse the cookie, SHA-256 it
//!   into the store key, get the `Arc<Session>` (100,000 sessions held).
//! - `lookup_miss`: the same for a cookie the store does not know (bogus-cookie flood).
//! - `insert_replace`: store a freshly built session under one of 100,000 keys (what a
//!   login or a refresh does); building the session is not timed.
//! - `insert_new_bounded`: store a session under a new key in a store at the default
//!   memory bound (256 MiB), so once it is full every insert also evicts one.
//! - `redis_open`: what the Redis store does per request beside its `GETEX` round trip:
//!   open the sealed value (AES-256-GCM, JSON) and rebuild the identity headers.
//! - `redis_open_no_headers`: the same without rebuilding the headers.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use portcullis::session::store::seal::Sealer;
use portcullis::session::store::{MemoryStore, SessionBackend};
use tokio::runtime::Runtime;

const HELD: u64 = 100_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn filled_store(runtime: &Runtime, config: &portcullis::config::Config) -> MemoryStore {
    let store = MemoryStore::new(&config.session);
    runtime.block_on(async {
        for i in 0..HELD {
            store
                .insert(common::key(i), Arc::new(common::session(i, config)))
                .await
                .unwrap();
        }
    });
    store
}

fn bench_store(c: &mut Criterion) {
    let config = common::config(16 << 30);
    let runtime = runtime();
    let store = filled_store(&runtime, &config);
    let cookies: Vec<String> = (0..HELD).map(common::cookie_value).collect();
    let bogus: Vec<String> = (HELD * 10..HELD * 10 + 4096).map(common::cookie_value).collect();

    let mut group = c.benchmark_group("session_store");
    group.throughput(Throughput::Elements(1));

    group.bench_function("lookup_hit", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    let cookie = &cookies[(i % HELD) as usize];
                    let found = store.get(&common::key_from_cookie(cookie)).await.unwrap();
                    std::hint::black_box(found.is_some());
                }
                started.elapsed()
            })
        });
    });

    // A few sessions, each in use: answered by the calling thread's memo (`store::near`)
    // most of the time, as on a proxy serving a page and its assets.
    group.bench_function("lookup_hit_in_use", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    let cookie = &cookies[(i % 16) as usize];
                    let found = store.get(&common::key_from_cookie(cookie)).await.unwrap();
                    std::hint::black_box(found.is_some());
                }
                started.elapsed()
            })
        });
    });

    group.bench_function("lookup_miss", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    let cookie = &bogus[(i % bogus.len() as u64) as usize];
                    let found = store.get(&common::key_from_cookie(cookie)).await.unwrap();
                    std::hint::black_box(found.is_none());
                }
                started.elapsed()
            })
        });
    });

    let mut next = 0u64;
    group.bench_function("insert_replace", |b| {
        b.iter_batched(
            || {
                next = (next + 1) % HELD;
                (common::key(next), Arc::new(common::session(next, &config)))
            },
            |(key, session)| runtime.block_on(store.insert(key, session)).unwrap(),
            BatchSize::SmallInput,
        );
    });

    let mut fresh = HELD * 100;
    let bounded_config = common::config(256 << 20);
    let growing = MemoryStore::new(&bounded_config.session);
    group.bench_function("insert_new_bounded", |b| {
        b.iter_batched(
            || {
                fresh += 1;
                (common::key(fresh), Arc::new(common::session(fresh, &config)))
            },
            |(key, session)| runtime.block_on(growing.insert(key, session)).unwrap(),
            BatchSize::SmallInput,
        );
    });

    let sealer = Sealer::new(&config.session.secret);
    let store_key = format!("portcullis:{}", common::key(1).to_hex());
    let sealed = sealer
        .seal(store_key.as_bytes(), &common::session(1, &config))
        .expect("seal");
    eprintln!("sealed Authelia-sized session: {} bytes", sealed.len());
    let rule = portcullis::policy::Rule::new(&config.policy.allowed_groups, &config.policy.allowed_email_domains);
    group.bench_function("redis_open", |b| {
        b.iter(|| {
            let mut session = sealer.open(store_key.as_bytes(), &sealed).expect("open");
            session.prepare(&config.identity, &rule);
            std::hint::black_box(session)
        });
    });
    group.bench_function("redis_open_no_headers", |b| {
        b.iter(|| std::hint::black_box(sealer.open(store_key.as_bytes(), &sealed).expect("open")));
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = bench_store
}
criterion_main!(benches);
