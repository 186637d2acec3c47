//! The routes that begin and end sessions, and the dump page: login, callback, logout, me.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::SET_COOKIE;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::app::{redirect, require_get_or_head, App};
use crate::error::{AppError, CallbackContext};
use crate::limit::LoginRefused;
use crate::metrics::{LoginLimit, LoginOutcome};
use crate::oidc::{CallbackParams, TokenTypeHint};
use crate::pages::{self, DumpFields};
use crate::policy;
use crate::session::cookies::{unix_seconds, PendingLogin};
use crate::session::{NewSession, Session, SessionId, SessionKeyMemo};
use crate::ResponseBody;

/// The `rd` query parameter, if it is a local path.
fn return_target(request: &Request<Incoming>) -> Option<String> {
    let query = request.uri().query()?;
    let rd = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "rd")?
        .1;
    policy::local_return_path(&rd).map(str::to_owned)
}

/// Largest logout form read for its `rd` field; a sign-out form is a few bytes.
const MAX_LOGOUT_FORM: usize = 4096;

/// The `rd` field of a posted `application/x-www-form-urlencoded` logout form, if it is
/// a local path. Larger or unreadable bodies are ignored: the logout itself has happened.
async fn form_return_target(request: Request<Incoming>) -> Option<String> {
    let is_form = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        return None;
    }
    let body = Limited::new(request.into_body(), MAX_LOGOUT_FORM)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let rd = url::form_urlencoded::parse(&body).find(|(k, _)| k == "rd")?.1;
    policy::local_return_path(&rd).map(str::to_owned)
}

impl App {
    /// `/.auth/login?rd=/path`: start a login that returns to `rd`. `client_addr` is the
    /// downstream peer.
    pub(crate) async fn login(
        &self,
        request: &Request<Incoming>,
        client_addr: SocketAddr,
    ) -> Result<Response<ResponseBody>, AppError> {
        require_get_or_head(request.method())?;
        let return_to = return_target(request).unwrap_or_else(|| "/".to_owned());
        self.start_login(request.headers(), &return_to, client_addr).await
    }

    /// Asks the provider for an authorization URL (through PAR when in use) and redirects
    /// there, remembering the attempt in a sealed cookie of its own. `client_addr` is the
    /// downstream peer, whose login rate limit the attempt spends.
    pub(crate) async fn start_login(
        &self,
        headers: &HeaderMap,
        return_to: &str,
        client_addr: SocketAddr,
    ) -> Result<Response<ResponseBody>, AppError> {
        if !self.oidc.is_ready() {
            return Err(AppError::Oidc(crate::oidc::OidcError::NotReady));
        }
        self.limit_login(client_addr, headers)?;
        let login = self.oidc.begin_login().await?;
        self.metrics.login_started();
        let now = SystemTime::now();
        let mut pending = PendingLogin {
            auth: login.pending,
            return_to: String::new(),
            started_at: unix_seconds(now),
        };
        // A browser drops a cookie too large to keep, and the login would then always end
        // in "sign-in expired": a return path that does not fit loses its query, or all of it.
        let sealed = policy::shortened_return_paths(return_to).find_map(|candidate| {
            pending.return_to.clear();
            pending.return_to.push_str(candidate);
            self.cookies.seal_login(&pending)
        });
        let sealed = sealed.ok_or(AppError::Internal("sealing the login cookie failed"))?;
        if pending.return_to.len() < return_to.len() {
            tracing::info!(
                length = return_to.len(),
                "return path too long for the login cookie; shortened"
            );
        }
        let mut response = redirect(login.url.as_str())?;
        let cookies = response.headers_mut();
        for clear in self.cookies.prune_logins(headers, now) {
            cookies.append(SET_COOKIE, clear);
        }
        cookies.append(SET_COOKIE, sealed);
        Ok(response)
    }

    /// Spends one login start of the client's share and of the global budget, or says
    /// which limit refused it. Refusals are counted; the first of a run is logged too
    /// (one line per flood, not one per request).
    fn limit_login(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(), LoginRefused> {
        // The address after trusted proxies: behind a load balancer the peer is the
        // balancer, one address for every client.
        let client = self.upstream.client_ip(peer.ip(), headers);
        let Err(refused) = self.login_limiter.try_acquire(client) else {
            return Ok(());
        };
        match refused {
            LoginRefused::Client { client, first, .. } => {
                self.metrics.login_rate_limited(LoginLimit::Client);
                if first {
                    tracing::info!(%client, "a client reached its login rate limit (oidc.login_rate_per_client_*): its login starts are refused until its share refills");
                }
            }
            LoginRefused::Global { first, .. } => {
                self.metrics.login_rate_limited(LoginLimit::Global);
                if first {
                    tracing::warn!("the global login rate limit is reached (oidc.login_rate_per_second, _burst): login starts are refused until it refills");
                }
            }
        }
        Err(refused)
    }

    /// The redirect URI: check the response against the pending login, exchange the code,
    /// validate the tokens, create a session with a new id, and return to where the user was.
    ///
    /// GET only, unlike every other route of ours: the callback has effects (it spends the
    /// single-use code and the pending-login cookie), and a HEAD, which a link checker or
    /// a prefetcher sends expecting none (RFC 9110 §9.2.1, safe methods), must not spend
    /// them and leave the browser's own GET with "Sign-in expired". Any other method gets
    /// its 405 before the cookie is read or the provider asked, so it changes nothing.
    pub(crate) async fn callback(&self, request: &Request<Incoming>) -> Result<Response<ResponseBody>, AppError> {
        if request.method() != Method::GET {
            return Err(AppError::MethodNotAllowed { allow: "GET" });
        }
        let params = CallbackParams::from_query(request.uri().query().unwrap_or(""));
        let state = params.state.clone().ok_or(AppError::CallbackWithoutState)?;
        let pending = self.cookies.open_login(request.headers(), &state, SystemTime::now());
        let result = match &pending {
            Some(pending) => self.finish_login(request.headers(), pending, &params).await,
            None => Err(AppError::LoginNotFound),
        };
        let (mut response, outcome) = match result {
            Ok(response) => (response, LoginOutcome::Completed),
            Err(error) => {
                // A provider outage leaves the attempt open, so that reloading this page
                // retries it. The code was not redeemed; or if it was (an outage after the
                // exchange), the retry meets `invalid_grant`, which ends the attempt. A
                // replayed callback URL gains nothing: it still needs this browser's pending
                // cookie (which holds the PKCE verifier), and the code is single-use and
                // short-lived (Authelia: 1 minute by default).
                let keep_pending = pending.is_some() && error.is_provider_outage();
                let context = CallbackContext {
                    return_to: pending.as_ref().map(|p| p.return_to.as_str()),
                    retry_on_reload: keep_pending,
                };
                let wants_json = policy::prefers_json(request.headers());
                let outcome = if keep_pending {
                    LoginOutcome::Unreachable
                } else {
                    LoginOutcome::Failed
                };
                (error.into_callback_response(wants_json, &self.router, context), outcome)
            }
        };
        self.metrics.login(outcome);
        // Any other outcome ends this attempt: its cookie goes, so a replay finds nothing.
        if outcome != LoginOutcome::Unreachable {
            response
                .headers_mut()
                .append(SET_COOKIE, self.cookies.clear_login(&state));
        }
        Ok(response)
    }

    /// Completes the login `pending` started: exchanges the code, creates the session and
    /// redirects to where the user was going.
    async fn finish_login(
        &self,
        headers: &HeaderMap,
        pending: &PendingLogin,
        params: &CallbackParams,
    ) -> Result<Response<ResponseBody>, AppError> {
        let now = SystemTime::now();
        let outcome = self.oidc.complete_login(&pending.auth, params).await?;

        let session = Session::new(
            NewSession {
                subject: outcome.subject,
                userinfo: outcome.userinfo.as_ref(),
                tokens: outcome.tokens,
                created_at: now,
                expires_at: now + self.config.session.max_lifetime,
            },
            &self.config.identity,
            self.policy.rule(),
        );

        // A new id at every login (no fixation); the session the browser held before ends,
        // as at a logout.
        if let Some(previous) = self.cookies.session_id(headers) {
            if let Some(previous) = self.sessions.remove(&previous.key()).await? {
                self.revoke(&previous).await;
            }
        }
        let id = SessionId::generate();
        self.sessions.insert(id.key(), Arc::new(session)).await?;
        tracing::info!(session = ?id.key(), "login completed");

        let mut response = redirect(&pending.return_to)?;
        response.headers_mut().append(SET_COOKIE, self.cookies.set_session(&id));
        Ok(response)
    }

    /// `/.auth/logout` (link or form): end the session, revoke its tokens where the provider
    /// allows, and go to `rd` or the signed-out page. Authelia has no end-session endpoint,
    /// so the provider's own session is untouched.
    pub(crate) async fn logout(&self, request: Request<Incoming>) -> Result<Response<ResponseBody>, AppError> {
        if !matches!(*request.method(), Method::GET | Method::HEAD | Method::POST) {
            return Err(AppError::MethodNotAllowed {
                allow: "GET, HEAD, POST",
            });
        }
        if let Some(id) = self.cookies.session_id(request.headers()) {
            // The tokens revoked are the ones removed: a refresh stored between a read
            // and the removal would otherwise leave its new refresh token alive.
            if let Some(session) = self.sessions.remove(&id.key()).await? {
                self.revoke(&session).await;
            }
        }
        let target = match return_target(&request) {
            Some(target) => Some(target),
            None if request.method() == Method::POST => form_return_target(request).await,
            None => None,
        };
        let mut response = match target {
            Some(target) => redirect(&target)?,
            None => pages::signed_out_page(self.router.login_path()),
        };
        response.headers_mut().append(SET_COOKIE, self.cookies.clear_session());
        Ok(response)
    }

    /// Revokes the refresh token (which also ends its access tokens at Authelia), or the
    /// access token when there is none. Failures are logged, never shown: the local
    /// session is already gone.
    pub(crate) async fn revoke(&self, session: &Session) {
        if !self.config.oidc.revoke_on_logout || !self.oidc.supports_revocation() {
            return;
        }
        let (token, hint) = match &session.tokens.refresh_token {
            Some(refresh) => (refresh, TokenTypeHint::RefreshToken),
            None => (&session.tokens.access_token, TokenTypeHint::AccessToken),
        };
        if let Err(error) = self.oidc.revoke(token, hint).await {
            tracing::warn!(error = %error, "token revocation at logout failed");
        }
    }

    /// `/.auth/me`: the tokens, claims, scopes and fresh userinfo of the session.
    pub(crate) async fn me(
        &self,
        request: &Request<Incoming>,
        client_addr: SocketAddr,
        session_keys: &SessionKeyMemo,
    ) -> Result<Response<ResponseBody>, AppError> {
        require_get_or_head(request.method())?;
        let Some(active) = self.session_phase(request.headers(), session_keys).await? else {
            return self.unauthenticated(request, client_addr).await;
        };
        let session = &active.session;
        let userinfo = self
            .oidc
            .userinfo(&session.tokens.access_token, &session.subject)
            .await
            .map(Value::Object)
            .map_err(|error| error.to_string());
        let tokens = &session.tokens;
        let fields = DumpFields {
            tokens: self.config.pages.show_tokens.then(|| {
                (
                    tokens.access_token.expose().to_owned(),
                    tokens.refresh_token.as_ref().map(|t| t.expose().to_owned()),
                    tokens.id_token.as_ref().map(|t| t.expose().to_owned()),
                )
            }),
            claims: Value::Object(session.claims()),
            scopes: tokens.scopes.split_whitespace().map(str::to_owned).collect(),
            userinfo,
        };
        Ok(if policy::prefers_json(request.headers()) {
            pages::dump_json(&fields)
        } else {
            pages::dump_html(&fields, self.router.logout_path())
        })
    }
}
