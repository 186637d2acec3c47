//! The end-to-end tests: the real `portcullis` binary against real peers (the test
//! provider, a rogue provider, the echo upstream, redis-server, headless Chromium), each
//! on free ports, one set per test (tests/README.md).
//!
//! One test binary, one module per concern: the harness in [`common`] is compiled and
//! linked once rather than once per file (tests/README.md, One binary, for the build time
//! that saves). Run one concern with `cargo test --test e2e login::`.

mod common;
mod rogue;

mod browser;
mod callback;
mod cli;
mod deploy;
mod harness;
mod login;
mod logout;
mod operations;
mod policy;
mod provider_tls;
mod redis_store;
mod refresh;
mod resilience;
mod rogue_provider;
mod transport_forwarded;
mod transport_http2;
mod transport_limits;
mod transport_shutdown;
mod transport_streaming;
mod transport_tls;
mod transport_upstream_pool;
mod transport_upstream_tls;
mod transport_websocket;
mod transport_workers;
