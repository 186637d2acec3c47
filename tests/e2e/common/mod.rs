//! End-to-end harness: starts the real processes (the test provider, the echo
//! upstream and the portcullis binary) on free ports and drives them over HTTP
//! like a browser would, without a browser.
//!
//! # Layout
//! - [`process`]: a child process that is killed on drop, logs to a temp file,
//!   and prints that log when the test fails; free ports; `eventually`.
//! - [`peers`]: the node peers, [`Idp`] (tests/idp) and [`Echo`] (tests/upstream).
//! - [`proxy`]: [`Portcullis`] and its builder (environment-only configuration).
//! - [`stack`]: all three wired together, the usual starting point of a test.
//! - [`redis_server`]: a real redis-server per test, and two portcullis replicas sharing it.
//! - [`client`]: [`Browserless`], a redirect-free HTTP client with a per-host+port
//!   cookie jar that can walk the provider's login form.
//! - [`cookies`]: the jar and `Set-Cookie` parsing for attribute assertions.
//! - [`h1`]: hyper client connections (HTTP/1.1, HTTP/2) for streamed bodies.
//! - [`raw`]: raw HTTP/1.1 over TCP for requests a client library would normalise.
//! - [`tls`]: a test CA (rcgen), certificate files for portcullis, trusting clients.
//! - [`upstream`]: Rust upstreams in the test process (big bodies, WebSocket echo, raw bytes).
//! - [`ws`]: a minimal WebSocket client/server.
//! - [`assert`]: `#[track_caller]` assertions on meaning (Location, cookies, headers).
//! - [`metrics`]: scraping the Prometheus listener and reading a series.

pub mod assert;
pub mod client;
pub mod cookies;
pub mod h1;
pub mod metrics;
pub mod peers;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod redis_server;
pub mod stack;
pub mod tls;
pub mod upstream;
pub mod ws;

pub use assert::*;
pub use client::{html_escape, Browserless, Resp, ACCEPT_HTML};
pub use cookies::SetCookie;
pub use peers::{Echo, EchoSeen, Idp, IdpOptions, IdpStats};
pub use process::{eventually, free_port};
pub use proxy::{access_field, rss_kib, AppAddr, Portcullis, PortcullisBuilder};
pub use raw::{raw_exchange, raw_request, RawResponse};
pub use redis_server::{Redis, Replicas};
pub use stack::Stack;

/// The scopes to ask for when a test needs refresh tokens.
pub const SCOPES_WITH_REFRESH: &str = "openid profile email groups offline_access";

/// The test provider's users (tests/idp/server.mjs); every password is `password`.
pub const PASSWORD: &str = "password";
