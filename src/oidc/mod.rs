//! OpenID Connect relying party: discovery (with the metadata `openidconnect` does not
//! model), JWKS, PAR, the authorization request, callback checks (state, RFC 9207 `iss`),
//! code exchange, ID-token validation, userinfo, refresh and revocation.
//!
//! This file owns [`OidcClient`], the entry points of the contract, and the order
//! of the steps in each flow; the steps live in the sibling files:
//! - `types`, `error`: the data and errors of the contract;
//! - `http`: the back-channel client, `client_secret_basic`, OAuth error bodies;
//! - `discovery`: the configuration document, extra metadata, exact issuer check;
//! - `jwk`: one signing key, its signatures checked by `ring`;
//! - `jwks`: signing keys and their rate-limited re-fetch on an unknown `kid`;
//! - `authorize`: `state`/`nonce`/PKCE, PAR (RFC 9126) and the authorize URL;
//! - `callback`: checks on the authorization response (state, RFC 9207 `iss`, error, code);
//! - `verify`: ID-token validation on top of `openidconnect`;
//! - `tokens`: code exchange, refresh, userinfo, revocation.

mod authorize;
mod callback;
mod discovery;
mod error;
mod http;
mod jwk;
mod jwks;
mod tokens;
mod types;
mod verify;

#[cfg(test)]
mod test_provider;
#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::{OidcConfig, Secret};
use crate::per_thread::PerThread;

pub use discovery::{ExtraMetadata, Provider};
pub use error::OidcError;
pub use types::{
    CallbackParams, Claims, LoginOutcome, LoginRedirect, PendingAuth, RefreshOutcome, TokenSet, TokenTypeHint,
};
use verify::{Expectations, NonceCheck};

/// The relying party. Cheap to clone; all clones share discovery state and keys.
#[derive(Clone)]
pub struct OidcClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<OidcConfig>,
    /// The issuer exactly as compared with `iss` values (`OidcConfig::issuer_exact`, never re-serialised from a `Url`).
    issuer: String,
    /// One back-channel client per thread that calls the provider ([`PerThread`]): reqwest
    /// drives each connection with a task on the runtime that dialed it, so with one
    /// shared client every login on a connection worker woke the main thread (which dialed
    /// at discovery) to send each request and again to hand back each answer: about 12
    /// cross-thread wake-ups per login.
    http: PerThread<reqwest::Client>,
    /// The TLS configuration every thread's client is built over: the roots were read
    /// from the disk once, in [`OidcClient::new`], never on a worker as it first logs in.
    tls: rustls::ClientConfig,
    /// Set once by discovery; never changes afterwards.
    provider: OnceLock<Provider>,
    jwks: jwks::JwksCache,
}

impl OidcClient {
    /// Builds the client without touching the network. It reads the system's CA
    /// certificates (the back channel's TLS roots): call it once, at start-up.
    pub fn new(config: Arc<OidcConfig>) -> Result<Self, OidcError> {
        let inner = Inner {
            tls: http::tls_config(config.ca_file.as_ref())?,
            issuer: config.issuer_exact.clone(),
            jwks: jwks::JwksCache::new(config.jwks_refetch_interval),
            provider: OnceLock::new(),
            http: PerThread::new(),
            config,
        };
        let client = OidcClient { inner: Arc::new(inner) };
        // This thread's client now: a client that cannot be built fails start-up, not a login.
        client.http()?;
        Ok(client)
    }

    /// This thread's back-channel client (a clone shares its connection pool).
    fn http(&self) -> Result<reqwest::Client, OidcError> {
        self.inner
            .http
            .get_or_try_make(|| http::build_client(self.inner.config.http_timeout, self.inner.tls.clone()))
    }

    /// Loads the metadata and JWKS, retrying with exponential backoff (1 s doubling up
    /// to `discovery_retry_max`) until it succeeds. Spawn it; cancel it by dropping the task.
    pub async fn run_discovery(&self) {
        let mut delay = Duration::from_secs(1);
        let mut attempt = 1u32;
        loop {
            match self.discover_once().await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(issuer = %self.inner.issuer, attempt, %error, retry_in = ?delay, "OIDC discovery failed");
                    tokio::time::sleep(delay).await;
                    delay = discovery::next_delay(delay, self.inner.config.discovery_retry_max);
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    async fn discover_once(&self) -> Result<(), OidcError> {
        let (provider, keys) = discovery::discover(&self.http()?, &self.inner.issuer).await?;
        if authorize::provider_refuses_unpushed_logins(
            self.inner.config.par,
            provider.extra.require_pushed_authorization_requests,
        ) {
            tracing::warn!("the provider requires PAR but par = never: logins will be refused");
        }
        self.inner.jwks.set(keys);
        let par = provider.extra.pushed_authorization_request_endpoint.is_some();
        if self.inner.provider.set(provider).is_ok() {
            tracing::info!(issuer = %self.inner.issuer, par, "OIDC provider metadata loaded");
        }
        Ok(())
    }

    /// True once metadata and JWKS are loaded.
    pub fn is_ready(&self) -> bool {
        self.inner.provider.get().is_some()
    }

    /// The discovered metadata, once loaded.
    pub fn provider(&self) -> Option<&Provider> {
        self.inner.provider.get()
    }

    fn ready(&self) -> Result<&Provider, OidcError> {
        self.inner.provider.get().ok_or(OidcError::NotReady)
    }

    pub fn supports_revocation(&self) -> bool {
        self.provider().is_some_and(|p| p.extra.revocation_endpoint.is_some())
    }

    fn auth(&self) -> tokens::ClientAuth<'_> {
        tokens::ClientAuth {
            id: &self.inner.config.client_id,
            secret: self.inner.config.client_secret.expose(),
        }
    }

    /// Starts a login. With PAR this makes one provider call, bounded by `http_timeout`.
    pub async fn begin_login(&self) -> Result<LoginRedirect, OidcError> {
        let provider = self.ready()?;
        let config = &self.inner.config;
        let request = authorize::new_request(&config.client_id, &config.redirect_url, &config.scopes);
        let par = authorize::par_endpoint(
            config.par,
            provider.extra.pushed_authorization_request_endpoint.as_ref(),
        )?;
        let url = match par {
            Some(endpoint) => {
                let auth = self.auth();
                let pushed = authorize::push(&self.http()?, endpoint, auth.id, auth.secret, &request.params).await?;
                authorize::authorize_url(
                    &provider.authorization_endpoint,
                    [
                        ("client_id", config.client_id.as_str()),
                        ("request_uri", pushed.request_uri.as_str()),
                    ],
                )
            }
            None => authorize::authorize_url(
                &provider.authorization_endpoint,
                request.params.iter().map(|(k, v)| (*k, v.as_str())),
            ),
        };
        Ok(LoginRedirect {
            url,
            pending: request.pending,
        })
    }

    /// Finishes a login: callback checks, code exchange, ID token, userinfo.
    pub async fn complete_login(
        &self,
        pending: &PendingAuth,
        callback: &CallbackParams,
    ) -> Result<LoginOutcome, OidcError> {
        let provider = self.ready()?;
        let config = &self.inner.config;
        let code = callback::check_callback(
            callback,
            &pending.state,
            &self.inner.issuer,
            provider.extra.authorization_response_iss_parameter_supported,
        )?;
        let http = self.http()?;
        let response = tokens::exchange_code(
            &http,
            &provider.token_endpoint,
            &self.auth(),
            code,
            &config.redirect_url,
            &pending.pkce_verifier,
        )
        .await?;
        let raw_id_token = response.id_token.clone().ok_or(OidcError::InvalidResponse {
            endpoint: "token",
            detail: "no id_token (is openid in the scopes?)".into(),
        })?;
        let id_token = self
            .validate_id_token(
                &raw_id_token,
                NonceCheck::Expect(&pending.nonce),
                &response.access_token,
            )
            .await?;
        let userinfo = match &provider.userinfo_endpoint {
            Some(endpoint) => Some(tokens::userinfo(&http, endpoint, &response.access_token, &id_token.subject).await?),
            None => None,
        };
        let claims = tokens::merge_claims(&id_token.claims, userinfo.as_ref());
        Ok(LoginOutcome {
            tokens: response.into_token_set(None, &config.scopes),
            subject: id_token.subject,
            id_token_claims: id_token.claims,
            userinfo,
            claims,
        })
    }

    /// Refresh grant. The caller must serialise refreshes per session (Authelia revokes
    /// the grant on concurrent use) and end the session on [`OidcError::RefreshRejected`].
    /// A new ID token must be about `expected_subject` and about the authentication of
    /// `previous_id_token` (the claims of the session's last one; OIDC Core §12.2).
    pub async fn refresh(
        &self,
        refresh_token: &Secret,
        expected_subject: &str,
        previous_id_token: &Claims,
    ) -> Result<RefreshOutcome, OidcError> {
        let provider = self.ready()?;
        let http = self.http()?;
        let response = tokens::refresh(&http, &provider.token_endpoint, &self.auth(), refresh_token.expose()).await?;
        let id_token_claims = match &response.id_token {
            Some(raw) => {
                let token = self
                    .validate_id_token(raw, NonceCheck::Ignore, &response.access_token)
                    .await?;
                if token.subject != expected_subject {
                    return Err(OidcError::SubjectMismatch);
                }
                verify::same_authentication(previous_id_token, &token.claims)?;
                Some(token.claims)
            }
            None => None,
        };
        // Authelia 4.39 sends groups, email and name only from userinfo: without asking
        // again, a user's changed groups would reach neither the headers nor the access
        // rule until the next login. A userinfo that fails otherwise leaves the previous
        // claims in place; the tokens themselves are good.
        let userinfo = match &provider.userinfo_endpoint {
            Some(endpoint) => match tokens::userinfo(&http, endpoint, &response.access_token, expected_subject).await {
                Ok(claims) => Some(claims),
                Err(OidcError::SubjectMismatch) => return Err(OidcError::SubjectMismatch),
                Err(error) => {
                    tracing::warn!(error = %error, "userinfo after a token refresh failed; keeping the previous claims");
                    None
                }
            },
            None => None,
        };
        Ok(RefreshOutcome {
            tokens: response.into_token_set(Some(refresh_token), &self.inner.config.scopes),
            id_token_claims,
            userinfo,
        })
    }

    /// Userinfo claims for `access_token`; `sub` must equal `expected_subject`.
    pub async fn userinfo(&self, access_token: &Secret, expected_subject: &str) -> Result<Claims, OidcError> {
        let provider = self.ready()?;
        let endpoint = provider.userinfo_endpoint.as_ref().ok_or(OidcError::InvalidResponse {
            endpoint: "discovery",
            detail: "no userinfo_endpoint".into(),
        })?;
        tokens::userinfo(&self.http()?, endpoint, access_token.expose(), expected_subject).await
    }

    /// RFC 7009 revocation.
    pub async fn revoke(&self, token: &Secret, hint: TokenTypeHint) -> Result<(), OidcError> {
        let provider = self.ready()?;
        let endpoint = provider
            .extra
            .revocation_endpoint
            .as_ref()
            .ok_or(OidcError::RevocationUnsupported)?;
        tokens::revoke(&self.http()?, endpoint, &self.auth(), token.expose(), hint).await
    }

    /// Validates an ID token, re-fetching the JWKS once (rate-limited, shared between
    /// concurrent callers) when no key matches it.
    async fn validate_id_token(
        &self,
        raw: &str,
        nonce: NonceCheck<'_>,
        access_token: &str,
    ) -> Result<verify::ValidIdToken, OidcError> {
        let provider = self.ready()?;
        let expect = Expectations {
            client_id: &self.inner.config.client_id,
            issuer: &self.inner.issuer,
            algs: &provider.id_token_algs,
            clock_skew: self.inner.config.clock_skew,
            nonce,
            access_token: Some(access_token),
        };
        let inner = &self.inner;
        let http = self.http()?;
        verify::validate_with_rotation(raw, inner.jwks.current(), &expect, |seen| async move {
            inner.jwks.refresh_after_miss(&http, &provider.jwks_uri, &seen).await
        })
        .await
    }
}
