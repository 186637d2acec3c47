//! The request path, as ordered phases: host → route → policy (public?) → session →
//! policy (allowed?) → proxy; the middle three are [`App::admit`].
//!
//! [`App`] holds what every request shares (configuration, provider client, session
//! store, access policy, upstream client) and [`App::handle`] drives one request through
//! the phases.
//! Handlers return `Result<Response, AppError>`; the error becomes a response in
//! exactly one place, at the end of `handle`, so hyper only ever sees a response.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{LOCATION, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access::{self, Requested};
use crate::config::Config;
use crate::error::AppError;
use crate::limit::LoginLimiter;
use crate::metrics::{Metrics, RefreshOutcome, RescueOutcome, RouteKind, ScrapeGauges};
use crate::oidc::{OidcClient, OidcError};
use crate::pages;
use crate::policy::{self, Decision, Policy};
use crate::proxy::{CookieFilter, ForwardContext, Upstream, UpstreamSlot};
use crate::rescue::{Kept, Rescues};
use crate::router::{Route, Router};
use crate::session::cookies::CookieCodec;
use crate::session::refresh::{RefreshGate, RefreshState};
use crate::session::store::{RefreshTurn, SessionStore, StoreError};
use crate::session::{Session, SessionKey, SessionKeyMemo};
use crate::ResponseBody;

pub struct App {
    pub(crate) config: Arc<Config>,
    pub(crate) oidc: OidcClient,
    pub(crate) sessions: SessionStore,
    pub(crate) refresh_gate: RefreshGate,
    /// Refreshed tokens the store could not take, for the rescue task to store
    /// ([`App::store_rescued_tokens`]).
    pub(crate) rescues: Rescues,
    pub(crate) cookies: CookieCodec,
    pub(crate) upstream: Upstream,
    pub(crate) router: Router,
    pub(crate) policy: Policy,
    /// Asked by login starts only, never by a request that has a session.
    pub(crate) login_limiter: LoginLimiter,
    pub(crate) metrics: Arc<Metrics>,
    started: Instant,
    /// Scheme of the public base URL, sent upstream as `X-Forwarded-Proto`.
    pub(crate) public_scheme: &'static str,
}

/// A session that passed the session phase: present, alive, and refreshed if it was due.
pub(crate) struct ActiveSession {
    pub session: Arc<Session>,
}

/// What [`App::handle`] owes a request until its response head is ready: the request
/// metric and the access line. If the request is dropped before (its client closed the
/// connection or reset the stream while the upstream or the provider was being waited
/// on, or a shutdown's grace period ran out), both are written then, as nginx does, with
/// the status 499 ("client closed request") and the outcome `client_gone`.
struct Unanswered<'a> {
    metrics: &'a Metrics,
    kind: RouteKind,
    started: Instant,
    /// `None` when no line is to be written.
    access: Option<Requested>,
    /// The session a forwarded request goes with, for the line (set only when written).
    user: Option<Arc<Session>>,
    answered: bool,
}

impl Unanswered<'_> {
    /// The response head is ready: counts it, and hands the line to its body, to be
    /// written when the body is over (sent, cut off, or abandoned by the client).
    fn answer(&mut self, response: &mut Response<ResponseBody>) {
        self.answered = true;
        let elapsed = self.started.elapsed();
        self.metrics.request(self.kind, response.status(), elapsed);
        if let Some(requested) = self.access.take() {
            let line = requested.answered(response.status(), self.user.take(), self.started, elapsed);
            response.body_mut().log_when_over(line);
        }
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let status = access::client_closed_request();
        let elapsed = self.started.elapsed();
        self.metrics.request(self.kind, status, elapsed);
        if let Some(requested) = self.access.take() {
            requested
                .answered(status, self.user.take(), self.started, elapsed)
                .write(false);
        }
    }
}

/// What [`App::admit`] decided for a request to the app.
enum Admission {
    /// Forward it, with this session's identity (`None`: a public path, no identity).
    Forward(Option<Arc<Session>>),
    /// Answered here: sent to log in, or told it must. (Boxed: rare, and the decision
    /// for every forwarded request would otherwise be as large as a response.)
    Answered(Box<Response<ResponseBody>>),
}

impl App {
    pub fn new(config: Arc<Config>) -> Result<Self, crate::StartError> {
        let oidc = OidcClient::new(Arc::new(config.oidc.clone())).map_err(crate::StartError::Oidc)?;
        let cookie_filter = CookieFilter {
            session_cookie: config.session.cookie_name.clone(),
            login_cookie_prefix: config.session.login_cookie_prefix.clone(),
        };
        let metrics = Metrics::new();
        let upstream = Upstream::new(
            &config.upstream,
            &config.identity,
            cookie_filter,
            &config.server.trusted_proxies,
            config.server.body_idle_timeout,
            metrics.clone(),
        )
        .map_err(crate::StartError::Upstream)?;
        Ok(App {
            oidc,
            sessions: SessionStore::new(&config).map_err(crate::StartError::SessionStore)?,
            refresh_gate: RefreshGate::new(),
            rescues: Rescues::default(),
            cookies: CookieCodec::new(&config.session),
            upstream,
            router: Router::new(&config.routes),
            policy: Policy::new(&config.policy),
            login_limiter: LoginLimiter::new(&config.oidc),
            metrics,
            started: Instant::now(),
            public_scheme: if config.base_url.scheme() == "https" {
                "https"
            } else {
                "http"
            },
            config,
        })
    }

    pub fn oidc(&self) -> &OidcClient {
        &self.oidc
    }

    /// What a metrics scrape reads besides the counters.
    pub async fn scrape_gauges(&self) -> ScrapeGauges {
        ScrapeGauges {
            sessions: self.sessions.approximate_count().await,
            ready: self.oidc.is_ready(),
            uptime: self.started.elapsed(),
        }
    }

    /// Answers one request. Never fails: every error is turned into a response here.
    /// `upstream_slot` and `session_keys` are the downstream connection's (from
    /// [`Upstream::slot`], and one [`SessionKeyMemo`] per connection).
    // Not an `async fn`: one would keep a second copy of the request in its future (the
    // arguments, moved into locals at the first poll), and move it there once more.
    #[allow(clippy::manual_async_fn)]
    pub fn handle<'a>(
        &'a self,
        request: Request<Incoming>,
        client_addr: SocketAddr,
        upstream_slot: &'a Arc<UpstreamSlot>,
        session_keys: &'a SessionKeyMemo,
    ) -> impl Future<Output = Response<ResponseBody>> + 'a {
        async move {
            let started = Instant::now();
            let route = self.router.classify(request.uri().path());
            let kind = route_kind(route);
            // Judged only if an error is to be rendered: a browser's `Accept` is long, and
            // most requests end without one. The value is kept, as the request is handed on.
            let accept = request.headers().get(http::header::ACCEPT).cloned();
            // Taken only when the line will be written: the path and method are cheap clones.
            // Health checks (a load balancer's, every few seconds) are counted, not logged.
            let logged = kind != RouteKind::Health && self.config.log.access_log;
            let access = (logged && tracing::enabled!(target: access::TARGET, tracing::Level::INFO)).then(|| {
                let client = self.upstream.client_ip(client_addr.ip(), request.headers());
                Requested::of(&request, client)
            });
            let mut unanswered = Unanswered {
                metrics: &self.metrics,
                kind,
                started,
                access,
                user: None,
                answered: false,
            };
            // The host first, for every route: RFC 9112 §3.2 has a server refuse any request
            // that names no valid host, whatever it would do with it. Only the proxy passes
            // it on (portcullis' own URLs come from `base_url`); a refused request starts no
            // login and reaches no upstream.
            let host = crate::host::request_host(&request);
            // The routes other than the proxied one are boxed: their futures (provider calls)
            // are many kilobytes, and every request's future would otherwise be as large as
            // the largest of them, and be moved and laid out in memory at that size.
            let result = match (route, host) {
                (_, Err(invalid)) => Err(invalid.into()),
                // Probes GET or HEAD, as every route of ours but the callback (GET alone) is
                // asked; another method is a 405.
                (Route::Healthz, _) => {
                    require_get_or_head(request.method()).map(|()| pages::text_response(StatusCode::OK, "ok\n"))
                }
                (Route::Readyz, _) => match require_get_or_head(request.method()) {
                    Ok(()) => Ok(Box::pin(self.readiness()).await),
                    Err(error) => Err(error),
                },
                (Route::Login, _) => Box::pin(self.login(&request, client_addr)).await,
                (Route::Callback, _) => Box::pin(self.callback(&request)).await,
                (Route::Logout, _) => Box::pin(self.logout(request)).await,
                (Route::Me, _) => Box::pin(self.me(&request, client_addr, session_keys)).await,
                (Route::ReservedUnknown, _) => Err(AppError::NotFound),
                // The request is handed straight to the proxy: each async function it passes
                // through by value stores and moves it (some 250 bytes) once more.
                (Route::Protected, Ok(host)) => match self.admit(&request, client_addr, session_keys).await {
                    Ok(Admission::Forward(session)) => {
                        let ctx = self.forward_context(session.as_deref(), host.as_ref(), client_addr, upstream_slot);
                        if unanswered.access.is_some() {
                            unanswered.user.clone_from(&session);
                        }
                        self.upstream.forward(request, ctx).await.map_err(AppError::from)
                    }
                    Ok(Admission::Answered(response)) => Ok(*response),
                    Err(error) => Err(error),
                },
            };
            let mut response = result.unwrap_or_else(|error| {
                error.into_response(policy::accept_prefers_json(accept.as_ref()), &self.router)
            });
            unanswered.answer(&mut response);
            response
        }
    }

    /// `/.auth/readyz`: ready when the provider's metadata is loaded and the session
    /// store answers (always, for the memory store).
    async fn readiness(&self) -> Response<ResponseBody> {
        let problem = if !self.oidc.is_ready() {
            "not ready: identity provider metadata not loaded\n"
        } else if !self.sessions.is_ready().await {
            "not ready: session store unreachable\n"
        } else {
            return pages::text_response(StatusCode::OK, "ready\n");
        };
        pages::text_response(StatusCode::SERVICE_UNAVAILABLE, problem)
    }

    /// policy → session → policy for the app's own paths: whether to forward the
    /// request (with the session's identity, or none on a public path) or answer it here.
    ///
    /// The public-path decision comes first, before the session phase, so that a public
    /// request costs no cookie parsing and no store lookup (and works while the store
    /// is down). It is forwarded with no identity at all, even when the client holds a
    /// valid session: identity headers on a public path would make the upstream's answer
    /// depend on who asked, while the path promises it does not. The access rule comes
    /// after the session phase, because it judges the session. `client_addr` (the
    /// downstream peer) is for the login rate limit, should a login start here.
    async fn admit(
        &self,
        request: &Request<Incoming>,
        client_addr: SocketAddr,
        session_keys: &SessionKeyMemo,
    ) -> Result<Admission, AppError> {
        if self.policy.decide(request.uri()) == Decision::Public {
            return Ok(Admission::Forward(None));
        }
        let Some(active) = self.session_phase(request.headers(), session_keys).await? else {
            // Boxed, as the refresh below: rare, and their provider calls are large futures.
            let answer = Box::pin(self.unauthenticated(request, client_addr)).await?;
            return Ok(Admission::Answered(Box::new(answer)));
        };
        self.policy.authorize(&active.session, request.uri().path())?;
        Ok(Admission::Forward(Some(active.session)))
    }

    /// What the proxy is told besides the request: the host it names (checked), the
    /// session's identity headers (prepared at login), or none.
    fn forward_context<'a>(
        &'a self,
        session: Option<&'a Session>,
        host: Option<&'a HeaderValue>,
        client_addr: SocketAddr,
        upstream_slot: &'a Arc<UpstreamSlot>,
    ) -> ForwardContext<'a> {
        let headers = session.map(|session| &session.upstream_headers);
        ForwardContext {
            host,
            client_addr,
            client_scheme: self.public_scheme,
            identity: headers.map_or(&[], |headers| &headers.identity),
            access_token: headers.and_then(|headers| headers.access_token.as_ref()),
            upstream_slot,
        }
    }

    /// Loads the session named by the cookie and refreshes its tokens when due.
    /// `None` means not authenticated (no cookie, unknown, expired, or ended by a refused refresh).
    /// `session_keys` is the connection's memo of its cookie's store key.
    pub(crate) async fn session_phase(
        &self,
        headers: &http::HeaderMap,
        session_keys: &SessionKeyMemo,
    ) -> Result<Option<ActiveSession>, AppError> {
        let Some(key) = self
            .cookies
            .session_cookie_value(headers)
            .and_then(|value| session_keys.key_of(value))
        else {
            return Ok(None);
        };
        let Some(session) = self.sessions.get(&key).await? else {
            return Ok(None);
        };
        if !session.needs_refresh(SystemTime::now(), self.config.session.refresh_before_expiry) {
            return Ok(Some(ActiveSession { session }));
        }
        Box::pin(self.refresh(key)).await
    }

    /// Single-flight refresh: the first request refreshes, the others wait and then read
    /// the refreshed session from the store. In one process the gate serialises them;
    /// across replicas (Redis) [`SessionStore::refresh_turn`] lets one replica refresh and
    /// hands the others its result.
    async fn refresh(&self, key: SessionKey) -> Result<Option<ActiveSession>, AppError> {
        let mut permit = self.refresh_gate.acquire(&key).await;
        let mut stored = self.sessions.get(&key).await?;
        // Tokens an earlier refresh here could not store come first: the stored refresh
        // token is spent.
        match self.store_kept(key, &mut permit, stored.as_ref()).await {
            // Stored: on as with any session just read, which may be due by now.
            Some(Kept::Stored(session)) => stored = Some(session),
            Some(Kept::Ended) => return Ok(None),
            Some(Kept::Pending(session, _)) => return Ok(Some(ActiveSession { session })),
            Some(Kept::Superseded) | None => {}
        }
        let Some(current) = stored else {
            return Ok(None);
        };
        let leeway = self.config.session.refresh_before_expiry;
        if !current.needs_refresh(SystemTime::now(), leeway) || permit.backing_off(Instant::now()) {
            return Ok(Some(ActiveSession { session: current }));
        }
        // Settled: another replica rotated the refresh token, or the tokens are fresh.
        let seen = current.tokens.refresh_token.clone();
        let settled = move |session: &Session| {
            session.tokens.refresh_token != seen || !session.needs_refresh(SystemTime::now(), leeway)
        };
        let (current, lock) = match self.sessions.refresh_turn(&key, current, settled).await? {
            RefreshTurn::Settled(session) => return Ok(session.map(|session| ActiveSession { session })),
            RefreshTurn::Refresh { session, lock } => (session, lock),
        };
        // The lock is released whatever the outcome, before an error is returned; but
        // while the new tokens wait for the store, it stays held for the rescue task,
        // which gives it back once they are stored: meanwhile another replica that wants
        // to refresh the session waits for them instead of spending the refresh token
        // again (within the lock's lifetime, and if the store kept it).
        let outcome = self.refresh_now(key, current, &mut permit).await;
        if permit.holds_unstored() {
            self.rescues.add(key, Some(lock));
        } else {
            lock.release().await;
        }
        outcome
    }

    /// Refreshes `current`'s tokens at the provider and stores the result. Runs only
    /// while this request holds the session's refresh lock.
    async fn refresh_now(
        &self,
        key: SessionKey,
        current: Arc<Session>,
        permit: &mut RefreshState,
    ) -> Result<Option<ActiveSession>, AppError> {
        let Some(refresh_token) = current.tokens.refresh_token.clone() else {
            return Ok(Some(ActiveSession { session: current }));
        };
        let outcome = self
            .oidc
            .refresh(&refresh_token, &current.subject, &current.id_token_claims())
            .await;
        match &outcome {
            Err(OidcError::NotReady | OidcError::ProviderUnreachable(_)) => permit.met_outage(Instant::now()),
            _ => permit.settled(),
        }
        match outcome {
            Ok(outcome) => {
                let refreshed = current.refreshed(
                    outcome.tokens,
                    outcome.userinfo.as_ref(),
                    &self.config.identity,
                    self.policy.rule(),
                );
                self.metrics.refresh(RefreshOutcome::Refreshed);
                tracing::debug!(session = ?key, "access token refreshed");
                let refreshed = Arc::new(refreshed);
                match self.store_refreshed(key, refreshed.clone()).await {
                    Ok(stored) => Ok(stored.map(|session| ActiveSession { session })),
                    Err(error) => {
                        // The provider has rotated the refresh token, so the stored one is
                        // spent and a refresh with it would end the grant: the request goes
                        // on with the new tokens, and they are kept here until the store
                        // takes them (`crate::rescue`).
                        tracing::warn!(
                            session = ?key,
                            %error,
                            "refreshed tokens could not be stored; this process keeps them and stores them as soon as the store is back"
                        );
                        self.metrics.rescue(RescueOutcome::Kept);
                        permit.keep_unstored(refreshed.clone(), &current);
                        Ok(Some(ActiveSession { session: refreshed }))
                    }
                }
            }
            Err(error @ (OidcError::NotReady | OidcError::ProviderUnreachable(_))) => {
                // The provider is down: the session stays valid on its last tokens, so the
                // app keeps working; this session's refresh is tried again after a pause
                // (`refresh::RETRY_AFTER_OUTAGE`), not by every request meanwhile.
                self.metrics.refresh(RefreshOutcome::Unreachable);
                tracing::warn!(session = ?key, error = %error, "token refresh failed: identity provider unavailable; keeping the session");
                Ok(Some(ActiveSession { session: current }))
            }
            Err(error) => {
                self.metrics.refresh(RefreshOutcome::Refused);
                tracing::info!(session = ?key, error = %error, "token refresh refused; ending the session");
                self.sessions.remove(&key).await?;
                Ok(None)
            }
        }
    }

    /// Stores a refreshed session in place of the one it follows; `None` when the session
    /// ended meanwhile (a logout: then its new tokens are revoked). A store failure is the
    /// caller's to handle: the tokens must not be lost (see `refresh_now`).
    pub(crate) async fn store_refreshed(
        &self,
        key: SessionKey,
        refreshed: Arc<Session>,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        if self.sessions.replace(key, refreshed.clone()).await? {
            return Ok(Some(refreshed));
        }
        tracing::info!(session = ?key, "session ended during its token refresh (logout)");
        // The logout revoked the tokens it removed; these were issued after it.
        self.revoke(&refreshed).await;
        Ok(None)
    }

    /// No session: browsers are sent to log in and come back here; everything else gets 401.
    /// `client_addr` is the downstream peer.
    pub(crate) async fn unauthenticated(
        &self,
        request: &Request<Incoming>,
        client_addr: SocketAddr,
    ) -> Result<Response<ResponseBody>, AppError> {
        let return_to = request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .and_then(policy::local_return_path)
            .unwrap_or("/");
        let stale_cookie = self.cookies.has_session_cookie(request.headers());
        let mut response = if policy::is_browser_navigation(request.method(), request.headers()) {
            self.start_login(request.headers(), return_to, client_addr).await?
        } else {
            let login_url = self.router.login_url(return_to);
            let mut response = pages::error_json(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required. Sign in at login_url.",
                Some(("login_url", &login_url)),
            );
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portcullis\""),
            );
            response
        };
        if stale_cookie {
            response.headers_mut().append(SET_COOKIE, self.cookies.clear_session());
        }
        Ok(response)
    }
}

fn route_kind(route: Route) -> RouteKind {
    match route {
        Route::Protected => RouteKind::App,
        Route::Login => RouteKind::Login,
        Route::Callback => RouteKind::Callback,
        Route::Logout => RouteKind::Logout,
        Route::Me => RouteKind::Me,
        Route::Healthz | Route::Readyz => RouteKind::Health,
        Route::ReservedUnknown => RouteKind::Other,
    }
}

/// A `302 Found` to `location` (already validated or provider-issued).
pub(crate) fn redirect(location: &str) -> Result<Response<ResponseBody>, AppError> {
    let mut response = Response::new(pages::empty_body());
    *response.status_mut() = StatusCode::FOUND;
    let location = HeaderValue::from_str(location)
        .map_err(|_| AppError::Internal("redirect target is not a valid header value"))?;
    response.headers_mut().insert(LOCATION, location);
    response
        .headers_mut()
        .insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Refuses every method but GET and HEAD, naming those two in the 405's `Allow`.
pub(crate) fn require_get_or_head(method: &Method) -> Result<(), AppError> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(AppError::MethodNotAllowed { allow: "GET, HEAD" })
    }
}
