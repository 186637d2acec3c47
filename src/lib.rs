//! portcullis: an authenticating reverse proxy. It logs people in with OpenID Connect
//! (Authelia), keeps their sessions server-side, and forwards their requests to the
//! protected app with identity headers.
//!
//! # Layout
//! A request flows one way: [`server`] → [`host`] → [`router`] → [`session`] → [`policy`]
//! → [`proxy`], driven by [`app::App::handle`]; errors become responses in [`error`].
//! - [`config`]: file + environment → validated, immutable [`config::Config`].
//! - [`server`]: the listener, HTTP/1 + HTTP/2, graceful shutdown.
//! - [`host`]: the host a request names (`Host`, an absolute target, `:authority`), or
//!   why it names none that may be passed on.
//! - [`router`]: portcullis' own routes vs the protected app.
//! - [`app`]: the phase driver (public-path decision, session phase with single-flight
//!   refresh, access check, proxy).
//! - [`auth`]: login, callback, logout and the dump page.
//! - [`rescue`]: the background task that stores refreshed tokens the session store
//!   could not take when they were issued.
//! - [`oidc`]: the OpenID Connect relying party (discovery, PAR, callback checks, tokens, userinfo).
//! - [`session`]: sessions, the stores (memory, Redis), cookies, the refresh gate and lock.
//! - [`policy`]: public paths (with path normalisation), the access rule (groups, email
//!   domains), local-redirect checks, browser detection.
//! - [`proxy`]: the upstream client and header rewriting.
//! - [`tls_roots`]: what the TLS clients (upstream, provider back channel) trust.
//! - [`pages`]: every body portcullis writes itself, escaped.
//! - [`limit`]: rate limiting of calls made to the provider for anonymous clients, per
//!   client and in all.
//! - [`access`]: the access log, its line written when the response is over.
//! - [`metrics`]: counters and histograms, served to Prometheus on their own listener.
//!
//! These docs are for the people working on portcullis, private items included:
//! `cargo doc --document-private-items` (CI builds them so, warnings denied).

// Module docs link the private modules they describe (resolved with --document-private-items).
#![allow(rustdoc::private_intra_doc_links)]

mod access;
pub mod app;
mod auth;
mod body;
pub mod config;
pub mod error;
pub mod host;
pub mod limit;
pub mod metrics;
pub mod oidc;
pub mod pages;
mod per_thread;
pub mod policy;
pub mod proxy;
mod rescue;
pub mod router;
pub mod server;
pub mod session;
mod tls_roots;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use body::ResponseBody;

/// Why portcullis could not start (after configuration was valid).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot set up the OpenID Connect client: {0}")]
    Oidc(oidc::OidcError),
    #[error("cannot set up the upstream client: {0}")]
    Upstream(proxy::ProxyError),
    #[error("cannot set up the session store: {0}")]
    SessionStore(session::store::StoreError),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
}

/// Builds everything start-up builds from the configuration, without listening or
/// contacting anyone: the OpenID Connect, upstream (TLS roots) and session-store (Redis
/// URL, CA) clients, and the listener's certificate and key. `portcullis check` runs it,
/// so that a configuration it calls valid also starts. Needs a tokio runtime, as `run`.
pub fn preflight(config: Config) -> Result<(), StartError> {
    let config = Arc::new(config);
    app::App::new(config.clone())?;
    if let Some(files) = &config.server.tls {
        server::load_certificate(files)?;
    }
    Ok(())
}

/// Runs portcullis on an already bound listener until `shutdown` completes and the
/// connections have drained. Provider discovery runs in the background: portcullis
/// serves (and reports not-ready) while the provider is unreachable.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let config = Arc::new(config);
    let app = Arc::new(app::App::new(config.clone())?);

    let oidc = app.oidc().clone();
    let discovery = tokio::spawn(async move { oidc.run_discovery().await });
    // Only a log line; aborted with discovery if it is still waiting on the store.
    let store = app.sessions.clone();
    let store_report = tokio::spawn(async move { store.report_at_start().await });

    // Stopped after the connections have drained (their requests may still rescue
    // tokens), then given one last round, within the grace period.
    let (stop_rescues, rescues_stopping) = tokio::sync::watch::channel(false);
    let rescuer = {
        let app = app.clone();
        tokio::spawn(async move { app.store_rescued_tokens(rescues_stopping).await })
    };

    let served = server::serve(listener, app, shutdown, &config.server, &config.base_url).await;
    discovery.abort();
    store_report.abort();
    // An error means the task has ended already: nobody is left to tell.
    let _ = stop_rescues.send(true);
    if tokio::time::timeout(config.server.shutdown_grace, rescuer)
        .await
        .is_err()
    {
        tracing::warn!("rescued tokens still not stored at shutdown; their sessions end at their next refresh");
    }
    Ok(served?)
}
