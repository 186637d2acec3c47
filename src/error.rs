//! The one place where errors become responses.
//!
//! Each module owns its error enum; [`AppError`] gathers them and [`AppError::into_response`]
//! maps every variant to a status and a page (or JSON body), classified by who is at
//! fault: the client (4xx, logged at debug), the identity provider or the upstream
//! (502/503/504, logged at warn with the cause), or portcullis itself (500). A policy
//! refusal (403) is the client's too, but logged at info with the subject and the path:
//! it is an access decision an operator wants to see.
//!
//! The redirect URI adds what it knows of the sign-in that failed ([`CallbackContext`]):
//! where it was going, so that the new sign-in offered returns there, and whether
//! reloading the page tries again.

use std::borrow::Cow;

use http::header::{ALLOW, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::host::InvalidHost;
use crate::limit::LoginRefused;
use crate::oidc::OidcError;
use crate::pages;
use crate::policy::{self, Forbidden};
use crate::proxy::ProxyError;
use crate::router::Router;
use crate::session::store::StoreError;
use crate::ResponseBody;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The access policy refused a signed-in user (not in an allowed group, email
    /// domain not allowed or unverified). Only `policy` can make a [`Forbidden`].
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// The request names no host that may be passed on: `Host` missing, repeated or
    /// malformed, or at odds with HTTP/2's `:authority` (RFC 9112 §3.2, RFC 9113 §8.3.1).
    /// Checked before routing, so every route answers it alike.
    #[error(transparent)]
    InvalidHost(#[from] InvalidHost),
    /// A request to the redirect URI without `state`: not a response to our login.
    #[error("callback without state")]
    CallbackWithoutState,
    /// No pending-login cookie matches the callback's `state`: expired, already used
    /// (a replayed callback), or started in another browser.
    #[error("no pending login matches the callback")]
    LoginNotFound,
    /// A login start refused by a login rate limit: the client's own share (429), or the
    /// global cap that protects the provider (503). Either says when to try again.
    #[error(transparent)]
    LoginRateLimited(#[from] LoginRefused),
    /// One of portcullis' own routes asked with a method it does not serve; `allow`
    /// lists those it does, for the `Allow` header a 405 must carry (RFC 9110, 15.5.6).
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    /// A reserved path that does not exist.
    #[error("not found")]
    NotFound,
    /// A bug or an impossible state in portcullis itself.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// What the redirect URI knows of the sign-in a failed callback was finishing. The
/// default (nothing known) is what every other route's errors get.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallbackContext<'a> {
    /// Where the pending login was to return, when its cookie opened: a new sign-in
    /// offered on the page returns there too. Checked again as a local path before use.
    pub return_to: Option<&'a str>,
    /// The pending login's cookie is kept (a provider outage, see
    /// [`AppError::is_provider_outage`]), so reloading the page tries the sign-in again.
    pub retry_on_reload: bool,
}

/// The message of a callback whose pending login is kept through a provider outage.
const RELOAD_RETRIES: &str = "The identity provider is unavailable, so this sign-in cannot be finished right now. It is kept: reload this page in a moment to try again.";

/// The message of a callback whose new session the store could not take: the code is
/// spent and the pending login with it, so only a new sign-in can follow.
const STORE_AT_CALLBACK: &str =
    "The session store is unavailable, so this sign-in could not be saved. Sign in again in a moment.";

/// Who caused an error; decides the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Downstream,
    Upstream,
    Internal,
}

struct Rendering {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    message: String,
    fault: Fault,
}

/// `Retry-After` of a 503 that cannot know when the dependency is back, in seconds.
const RETRY_AFTER_UNAVAILABLE: u64 = 5;

/// The message of both login rate limits' page (the status tells them apart).
const LOGIN_RATE_LIMITED: &str = "Too many sign-ins are being started right now. Try again in a moment.";

/// A rendering with a fixed message.
fn r(status: StatusCode, code: &'static str, title: &'static str, message: &str, fault: Fault) -> Rendering {
    Rendering {
        status,
        code,
        title,
        message: message.to_owned(),
        fault,
    }
}

impl AppError {
    fn rendering(&self) -> Rendering {
        use StatusCode as S;
        match self {
            AppError::Oidc(error) => oidc_rendering(error),
            AppError::Proxy(ProxyError::Timeout) => r(S::GATEWAY_TIMEOUT, "upstream_timeout", "Application timed out", "The application did not answer in time. Try again shortly.", Fault::Upstream),
            AppError::Proxy(ProxyError::Connect(_)) | AppError::Proxy(ProxyError::Request(_)) => r(S::BAD_GATEWAY, "upstream_unavailable", "Application unavailable", "The application behind this sign-in could not be reached. Try again shortly.", Fault::Upstream),
            // As nginx answers a `client_body_timeout`: the client's upload stopped, not the app.
            AppError::Proxy(ProxyError::ClientBodyStalled) => r(S::REQUEST_TIMEOUT, "request_timeout", "Request timed out", "The request's body stopped arriving before it was complete.", Fault::Downstream),
            AppError::Proxy(ProxyError::BadRequest(reason)) => Rendering {
                status: S::BAD_REQUEST,
                code: "bad_request",
                title: "Bad request",
                message: format!("This request cannot be forwarded: {reason}."),
                fault: Fault::Downstream,
            },
            // As nginx: a plain 400 that names the rule, never the value sent.
            AppError::InvalidHost(_) => r(S::BAD_REQUEST, "invalid_host", "Bad request", "This request does not name a valid host: its Host header is missing, repeated, malformed or at odds with the request target.", Fault::Downstream),
            AppError::Proxy(ProxyError::InvalidForwardedHost) => r(S::BAD_REQUEST, "invalid_host", "Bad request", "This request does not name a valid host: the X-Forwarded-Host header relayed by the proxy in front is malformed.", Fault::Downstream),
            AppError::Proxy(ProxyError::Config(_)) => r(S::INTERNAL_SERVER_ERROR, "internal", "Internal error", "The proxy is misconfigured.", Fault::Internal),
            // One generic message whatever the rule: which one failed is for the log.
            AppError::Forbidden(_) => r(S::FORBIDDEN, "forbidden", "Access denied", "You are signed in, but this account may not use this application. Ask its administrator for access, or sign out and sign in with another account.", Fault::Downstream),
            AppError::Store(_) => r(S::SERVICE_UNAVAILABLE, "session_store_unavailable", "Session store unavailable", "The session store is unavailable, so your session cannot be checked right now. Try again shortly.", Fault::Upstream),
            AppError::CallbackWithoutState => r(S::BAD_REQUEST, "invalid_callback", "Sign-in failed", "This address is only used to finish a sign-in, and the request carries no sign-in to finish.", Fault::Downstream),
            AppError::LoginNotFound => r(S::BAD_REQUEST, "login_expired", "Sign-in expired", "This sign-in has expired, was already completed, or was started in another browser. Please sign in again.", Fault::Downstream),
            // One page for both limits, told apart by the status: a client over its own
            // share is sending too many requests (RFC 6585 §4), while the global cap is
            // a matter of capacity. The rest (which client) is for the metric and the log.
            AppError::LoginRateLimited(LoginRefused::Client { .. }) => r(S::TOO_MANY_REQUESTS, "login_rate_limited", "Too many sign-ins", LOGIN_RATE_LIMITED, Fault::Downstream),
            AppError::LoginRateLimited(LoginRefused::Global { .. }) => r(S::SERVICE_UNAVAILABLE, "login_rate_limited", "Too many sign-ins", LOGIN_RATE_LIMITED, Fault::Downstream),
            AppError::MethodNotAllowed { .. } => r(S::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed", "This address does not accept that method.", Fault::Downstream),
            AppError::Internal(_) => r(S::INTERNAL_SERVER_ERROR, "internal", "Internal error", "Something went wrong in the proxy.", Fault::Internal),
            AppError::NotFound => r(S::NOT_FOUND, "not_found", "Not found", "There is nothing at this address.", Fault::Downstream),
        }
    }

    /// The seconds for `Retry-After`, if the response has one: a refused login start
    /// knows when its limit lets it in again; any other 503 (the store, the provider)
    /// can only guess at [`RETRY_AFTER_UNAVAILABLE`].
    fn retry_after(&self, status: StatusCode) -> Option<u64> {
        match self {
            AppError::LoginRateLimited(refused) => Some(refused.retry_after().as_secs()),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_UNAVAILABLE),
            _ => None,
        }
    }

    /// Whether this is the provider out of service rather than refusing: unreachable,
    /// its metadata not loaded, or answering that it is not working (a 5xx or 429,
    /// `server_error`, `temporarily_unavailable`; see `oidc::http::outage`). Exactly the
    /// errors rendered `503 idp_unavailable`; a callback keeps its pending login for them.
    pub fn is_provider_outage(&self) -> bool {
        matches!(
            self,
            AppError::Oidc(OidcError::NotReady | OidcError::ProviderUnreachable(_))
        )
    }

    /// The response for this error. `wants_json` picks a JSON body over a page; the
    /// router's login URL is offered where signing in again is the way forward, its
    /// logout URL where signing out is (a refused user: `/.auth/me` and logout stay
    /// reachable, as the policy never judges portcullis' own routes).
    pub fn into_response(self, wants_json: bool, router: &Router) -> Response<ResponseBody> {
        self.respond(wants_json, router, None)
    }

    /// [`Self::into_response`] for an error at the redirect URI, which knows more of the
    /// way forward (see [`CallbackContext`]).
    pub fn into_callback_response(
        self,
        wants_json: bool,
        router: &Router,
        callback: CallbackContext<'_>,
    ) -> Response<ResponseBody> {
        self.respond(wants_json, router, Some(callback))
    }

    /// The response, at the redirect URI when `at_callback` says what it knows.
    fn respond(
        self,
        wants_json: bool,
        router: &Router,
        at_callback: Option<CallbackContext<'_>>,
    ) -> Response<ResponseBody> {
        let callback = at_callback.unwrap_or_default();
        let mut rendering = self.rendering();
        if callback.retry_on_reload {
            rendering.message = RELOAD_RETRIES.to_owned();
        } else if at_callback.is_some() && matches!(self, AppError::Store(_)) {
            rendering.message = STORE_AT_CALLBACK.to_owned();
        }
        match (&self, rendering.fault) {
            (AppError::Forbidden(denied), _) => tracing::info!(
                subject = denied.subject(),
                path = denied.path(),
                reason = %denied.reason(),
                status = rendering.status.as_u16(),
                "access denied by policy"
            ),
            (_, Fault::Downstream) => {
                tracing::debug!(error = %self, status = rendering.status.as_u16(), "request refused")
            }
            (_, Fault::Upstream) => {
                tracing::warn!(error = %error_chain(&self), status = rendering.status.as_u16(), "dependency failed")
            }
            (_, Fault::Internal) => {
                tracing::error!(error = %error_chain(&self), status = rendering.status.as_u16(), "internal error")
            }
        }
        // (JSON field, URL, link text) of the way forward, if there is one. At the
        // redirect URI, a provider that refused the code exchange or answered what failed
        // validation (502) has spent the pending login all the same: signing in again is
        // the user's one way forward (elsewhere, a login start, it would only repeat the
        // request that failed). So has a store that could not take the new session.
        let sign_in_again = || Some(("login_url", login_url(router, callback.return_to), "Sign in again"));
        let offer = match rendering.code {
            "login_expired" | "invalid_callback" | "authorization_denied" | "login_failed" => sign_in_again(),
            "idp_rejected" | "idp_invalid_response" | "session_store_unavailable" if at_callback.is_some() => {
                sign_in_again()
            }
            "forbidden" => Some(("logout_url", Cow::Borrowed(router.logout_path()), "Sign out")),
            _ => None,
        };
        let mut response = if wants_json {
            pages::error_json(
                rendering.status,
                rendering.code,
                &rendering.message,
                offer.as_ref().map(|(field, url, _)| (*field, url.as_ref())),
            )
        } else {
            pages::error_page(
                rendering.status,
                rendering.title,
                &rendering.message,
                offer.as_ref().map(|(_, url, label)| (url.as_ref(), *label)),
            )
        };
        if let Some(seconds) = self.retry_after(rendering.status) {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let AppError::MethodNotAllowed { allow } = self {
            response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// The login URL a failed sign-in offers: back to where it was going when that is known
/// and still a local path (the pending login's seal vouches for it, but a path that is
/// not local must never reach a link), else the bare login path, which returns to `/`.
fn login_url<'r>(router: &'r Router, return_to: Option<&str>) -> Cow<'r, str> {
    match return_to.and_then(policy::local_return_path) {
        Some(return_to) => Cow::Owned(router.login_url(return_to)),
        None => Cow::Borrowed(router.login_path()),
    }
}

fn oidc_rendering(error: &OidcError) -> Rendering {
    use StatusCode as S;
    match error {
        OidcError::NotReady | OidcError::ProviderUnreachable(_) => r(S::SERVICE_UNAVAILABLE, "idp_unavailable", "Sign-in unavailable", "The identity provider is unreachable, so signing in is not possible right now. Try again shortly.", Fault::Upstream),
        OidcError::ParUnsupported => r(S::BAD_GATEWAY, "idp_misconfigured", "Sign-in unavailable", "The identity provider does not support pushed authorization requests, which this proxy is configured to require.", Fault::Upstream),
        OidcError::ProviderRejected { endpoint: "token", error, .. } if error == "invalid_grant" => r(S::BAD_REQUEST, "login_failed", "Sign-in failed", "The sign-in code was already used or has expired. Please sign in again.", Fault::Downstream),
        OidcError::ProviderRejected { .. } => r(S::BAD_GATEWAY, "idp_rejected", "Sign-in failed", "The identity provider refused the sign-in request.", Fault::Upstream),
        OidcError::AuthorizationDenied { error, description } => authorization_error_rendering(error, description.as_deref()),
        OidcError::StateMismatch => r(S::BAD_REQUEST, "invalid_callback", "Sign-in failed", "The sign-in response does not belong to the sign-in started in this browser.", Fault::Downstream),
        OidcError::MissingIssuer | OidcError::IssuerMismatch => r(S::BAD_REQUEST, "invalid_callback", "Sign-in failed", "The sign-in response does not come from the configured identity provider.", Fault::Downstream),
        OidcError::MissingCode => r(S::BAD_REQUEST, "invalid_callback", "Sign-in failed", "The sign-in response carries no authorization code.", Fault::Downstream),
        OidcError::InvalidIdToken(_) | OidcError::SubjectMismatch | OidcError::InvalidResponse { .. } => r(S::BAD_GATEWAY, "idp_invalid_response", "Sign-in failed", "The identity provider returned a response that failed validation.", Fault::Upstream),
        OidcError::HttpClient(_) | OidcError::RevocationUnsupported => r(
            S::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "Something went wrong in the proxy.",
            Fault::Internal,
        ),
        OidcError::RefreshRejected(_) => r(S::UNAUTHORIZED, "session_ended", "Session ended", "Your session has ended. Please sign in again.", Fault::Downstream),
    }
}

/// An `error` in the authorization response, by whose it is (RFC 6749 §4.1.2.1, OIDC
/// Core §3.1.2.6): the provider's own failure (`server_error`, `temporarily_unavailable`:
/// Authelia's answer when its storage fails) is an outage, `503` as at its other
/// endpoints; a refusal of this client's request is a configuration for the operator to
/// fix, `502` and a warning; anything else (`access_denied`, `login_required`, codes
/// unknown here) is the user's, `403`. Each page names the code and offers a new sign-in
/// (the code `authorization_denied` throughout), as the pending login is spent.
fn authorization_error_rendering(error: &str, description: Option<&str>) -> Rendering {
    use StatusCode as S;
    let (status, title, lead, fault) = match error {
        "server_error" | "temporarily_unavailable" => (
            S::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            "The identity provider could not complete the sign-in right now",
            Fault::Upstream,
        ),
        "invalid_request"
        | "unauthorized_client"
        | "unsupported_response_type"
        | "invalid_scope"
        | "invalid_request_uri"
        | "invalid_request_object"
        | "request_not_supported"
        | "request_uri_not_supported"
        | "registration_not_supported"
        | "invalid_state"
        | "insufficient_entropy" => (
            S::BAD_GATEWAY,
            "Sign-in failed",
            "The identity provider refused this application's sign-in request",
            Fault::Upstream,
        ),
        _ => (
            S::FORBIDDEN,
            "Sign-in refused",
            "The identity provider did not sign you in",
            Fault::Downstream,
        ),
    };
    let mut message = format!("{lead} ({error})");
    if let Some(description) = description {
        message.push_str(": ");
        message.push_str(description);
    }
    message.push('.');
    Rendering {
        status,
        code: "authorization_denied",
        title,
        message,
        fault,
    }
}

/// `error: cause: cause…`, for log lines. Sources never carry secrets (each module's
/// errors are written not to).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::tests::router;
    use http::header::CONTENT_TYPE;
    use http_body_util::BodyExt;
    use serde_json::Value;
    use std::time::Duration;

    /// The JSON answer of `error` on any route but the redirect URI.
    async fn json_of(error: AppError) -> (Response<ResponseBody>, Value) {
        json_body(error.into_response(true, &router())).await
    }

    async fn callback_json_of(error: AppError, context: CallbackContext<'_>) -> (Response<ResponseBody>, Value) {
        json_body(error.into_callback_response(true, &router(), context)).await
    }

    async fn json_body(response: Response<ResponseBody>) -> (Response<ResponseBody>, Value) {
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            Response::from_parts(parts, pages::empty_body()),
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    async fn callback_page_of(error: AppError, context: CallbackContext<'_>) -> (StatusCode, String) {
        let response = error.into_callback_response(false, &router(), context);
        let status = response.status();
        let html = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(html.to_vec()).unwrap())
    }

    fn denied(error: &str) -> AppError {
        AppError::Oidc(OidcError::AuthorizationDenied {
            error: error.into(),
            description: None,
        })
    }

    fn spent_code() -> AppError {
        AppError::Oidc(OidcError::ProviderRejected {
            endpoint: "token",
            error: "invalid_grant".into(),
            description: None,
        })
    }

    fn unreachable() -> AppError {
        AppError::Oidc(OidcError::ProviderUnreachable("token endpoint: timed out".into()))
    }

    fn returning_to(path: &str) -> CallbackContext<'_> {
        CallbackContext {
            return_to: Some(path),
            retry_on_reload: false,
        }
    }

    const DEEP_LINK: &str = "/vault/report?id=42&view=full";
    const DEEP_LOGIN: &str = "/.auth/login?rd=%2Fvault%2Freport%3Fid%3D42%26view%3Dfull";

    #[tokio::test]
    async fn a_failed_callback_offers_a_new_sign_in_that_returns_where_the_user_was() {
        for error in [
            denied("access_denied"),
            spent_code(),
            AppError::Oidc(OidcError::StateMismatch),
        ] {
            let (_, body) = callback_json_of(error, returning_to(DEEP_LINK)).await;
            assert_eq!(body["login_url"], DEEP_LOGIN, "{body}");
        }
        let (status, html) = callback_page_of(denied("access_denied"), returning_to(DEEP_LINK)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            html.contains(&format!("<a href=\"{DEEP_LOGIN}\">Sign in again</a>")),
            "{html}"
        );
        // A return path with HTML specials reaches the page only encoded, never as markup.
        let (_, html) = callback_page_of(denied("access_denied"), returning_to("/o'neil&\"co\"?q='x'&r=1")).await;
        assert!(
            html.contains("href=\"/.auth/login?rd=%2Fo%27neil%26%22co%22%3Fq%3D%27x%27%26r%3D1\""),
            "{html}"
        );
    }

    fn rejected(endpoint: &'static str, error: &str) -> AppError {
        AppError::Oidc(OidcError::ProviderRejected {
            endpoint,
            error: error.into(),
            description: None,
        })
    }

    /// The 502s the redirect URI can meet after its pending login is spent: the token
    /// endpoint refusing this client, and provider answers that fail validation.
    fn callback_502s() -> [AppError; 4] {
        [
            rejected("token", "invalid_client"),
            AppError::Oidc(OidcError::InvalidIdToken("bad signature".into())),
            AppError::Oidc(OidcError::SubjectMismatch),
            AppError::Oidc(OidcError::InvalidResponse {
                endpoint: "token",
                detail: "not JSON".into(),
            }),
        ]
    }

    #[tokio::test]
    async fn a_502_at_the_callback_offers_a_new_sign_in_that_returns_where_the_user_was() {
        for error in callback_502s() {
            let name = error.to_string();
            let (response, body) = callback_json_of(error, returning_to(DEEP_LINK)).await;
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{name}");
            assert_eq!(body["login_url"], DEEP_LOGIN, "{name}: {body}");
            assert_eq!(body.get("logout_url"), None, "{name}: {body}");
        }
        for error in callback_502s() {
            let name = error.to_string();
            let (status, html) = callback_page_of(error, returning_to("/o'neil&\"co\"?q='x'&r=1")).await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{name}");
            assert!(
                html.contains(
                    "<a href=\"/.auth/login?rd=%2Fo%27neil%26%22co%22%3Fq%3D%27x%27%26r%3D1\">Sign in again</a>"
                ),
                "{name}: {html}"
            );
        }
        // A return path that is not local never reaches the link: the bare login.
        let (_, body) = callback_json_of(rejected("token", "invalid_client"), returning_to("//evil.example/")).await;
        assert_eq!(body["login_url"], "/.auth/login", "{body}");
        // Elsewhere (a login start whose PAR the provider refused or answered wrongly),
        // signing in again would only repeat the request that failed: no offer.
        for error in [
            rejected("pushed authorization", "invalid_client"),
            AppError::Oidc(OidcError::InvalidResponse {
                endpoint: "pushed authorization",
                detail: "no request_uri".into(),
            }),
        ] {
            let (response, body) = json_of(error).await;
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
            assert_eq!(body.get("login_url"), None, "{body}");
        }
    }

    #[tokio::test]
    async fn a_failed_callback_without_a_local_return_path_offers_the_bare_login() {
        for context in [
            CallbackContext::default(),
            returning_to("//evil.example/"),
            returning_to("https://evil.example/"),
        ] {
            let (_, body) = callback_json_of(denied("access_denied"), context).await;
            assert_eq!(body["login_url"], "/.auth/login", "{context:?}");
        }
        // Where signing in again is not the way forward, a return path adds nothing.
        let (_, body) = callback_json_of(AppError::Internal("x"), returning_to(DEEP_LINK)).await;
        assert_eq!(body.get("login_url"), None);
    }

    #[tokio::test]
    async fn a_provider_outage_at_the_callback_says_that_reloading_retries() {
        let kept = CallbackContext {
            return_to: Some(DEEP_LINK),
            retry_on_reload: true,
        };
        let (response, body) = callback_json_of(unreachable(), kept).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
        assert_eq!(body["error"], "idp_unavailable");
        assert_eq!(body["message"], RELOAD_RETRIES);
        let (status, html) = callback_page_of(unreachable(), kept).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(html.contains("reload this page"), "{html}");
        // Elsewhere (a login start), the provider down is no invitation to reload.
        let (_, body) = json_of(unreachable()).await;
        assert!(!body["message"].as_str().unwrap().contains("reload"), "{body}");
    }

    #[tokio::test]
    async fn exactly_the_errors_rendered_idp_unavailable_are_provider_outages() {
        let errors = [
            AppError::Oidc(OidcError::NotReady),
            unreachable(),
            spent_code(),
            AppError::Oidc(OidcError::ProviderRejected {
                endpoint: "token",
                error: "invalid_client".into(),
                description: None,
            }),
            // At the authorization endpoint, the provider's failure left no code to retry with.
            denied("temporarily_unavailable"),
            denied("server_error"),
            AppError::Oidc(OidcError::InvalidResponse {
                endpoint: "token",
                detail: "garbage".into(),
            }),
            AppError::Oidc(OidcError::InvalidIdToken("bad signature".into())),
            AppError::Store(StoreError::Timeout(Duration::from_millis(250))),
            AppError::LoginNotFound,
        ];
        for error in errors {
            let outage = error.is_provider_outage();
            let name = error.to_string();
            let (response, body) = json_of(error).await;
            assert_eq!(outage, body["error"] == "idp_unavailable", "{name}: {body}");
            if outage {
                assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{name}");
            }
        }
    }

    #[tokio::test]
    async fn a_store_failure_at_the_callback_offers_a_new_sign_in_and_elsewhere_a_retry() {
        let store_down = || AppError::Store(StoreError::Unavailable("connection refused".into()));
        let (response, body) = callback_json_of(store_down(), returning_to(DEEP_LINK)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
        assert_eq!(body["error"], "session_store_unavailable", "{body}");
        assert_eq!(body["login_url"], DEEP_LOGIN, "{body}");
        assert_eq!(body["message"], STORE_AT_CALLBACK, "{body}");
        let (status, html) = callback_page_of(store_down(), returning_to(DEEP_LINK)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            html.contains(&format!("<a href=\"{DEEP_LOGIN}\">Sign in again</a>")),
            "{html}"
        );
        assert!(
            !html.contains("connection refused"),
            "the cause reached the page: {html}"
        );
        // On any other route the session is only being checked: reloading is the way.
        let (_, body) = json_of(store_down()).await;
        assert_eq!(body.get("login_url"), None, "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("Try again shortly")),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_405_names_the_methods_the_route_serves() {
        let (response, body) = json_of(AppError::MethodNotAllowed {
            allow: "GET, HEAD, POST",
        })
        .await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD, POST");
        assert_eq!(body["error"], "method_not_allowed");
        let (other, _) = json_of(AppError::NotFound).await;
        assert_eq!(other.headers().get(ALLOW), None);
    }

    #[tokio::test]
    async fn a_503_says_when_to_retry_and_other_statuses_do_not() {
        for error in [
            AppError::Store(StoreError::Timeout(Duration::from_millis(250))),
            AppError::Oidc(OidcError::NotReady),
        ] {
            let (response, _) = json_of(error).await;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[RETRY_AFTER], "5");
        }
        let (response, _) = json_of(AppError::Proxy(ProxyError::Timeout)).await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(response.headers().get(RETRY_AFTER), None);
    }

    fn client_refused(retry_after: u64) -> AppError {
        AppError::LoginRateLimited(LoginRefused::Client {
            client: crate::limit::ClientKey::of([192, 0, 2, 1].into()),
            first: true,
            retry_after: Duration::from_secs(retry_after),
        })
    }

    fn globally_refused(retry_after: u64) -> AppError {
        AppError::LoginRateLimited(LoginRefused::Global {
            first: false,
            retry_after: Duration::from_secs(retry_after),
        })
    }

    #[tokio::test]
    async fn a_client_over_its_login_share_gets_a_429_that_says_when_its_share_allows_one_more() {
        let (response, body) = json_of(client_refused(37)).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "37");
        assert_eq!(body["error"], "login_rate_limited");
        assert!(!body.to_string().contains("192.0.2.1"), "{body}");
        let page = client_refused(1).into_response(false, &router());
        assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(page.headers()[RETRY_AFTER], "1");
        assert!(page.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    }

    #[tokio::test]
    async fn the_global_login_cap_stays_a_503_that_says_when_it_allows_one_more() {
        let (response, body) = json_of(globally_refused(1)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert_eq!(body["error"], "login_rate_limited");
    }

    #[tokio::test]
    async fn both_login_rate_limits_give_the_same_body() {
        let (_, global_body) = json_of(globally_refused(1)).await;
        let (_, own_body) = json_of(client_refused(1)).await;
        assert_eq!(own_body, global_body);
    }

    #[tokio::test]
    async fn the_way_forward_is_offered_where_there_is_one() {
        let (_, expired) = json_of(AppError::LoginNotFound).await;
        assert_eq!(expired["login_url"], "/.auth/login");
        assert_eq!(expired.get("logout_url"), None);
        let (_, missing) = json_of(AppError::NotFound).await;
        assert_eq!(missing.get("login_url"), None);
        assert_eq!(missing.get("logout_url"), None);
    }

    #[tokio::test]
    async fn only_a_spent_or_expired_code_is_the_users_to_retry() {
        let (response, body) = json_of(rejected("token", "invalid_grant")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            (&body["error"], &body["login_url"]),
            (&"login_failed".into(), &"/.auth/login".into())
        );
        // The provider refusing this client is the operator's to fix, not the user's.
        for (endpoint, error) in [("token", "invalid_client"), ("pushed authorization", "invalid_grant")] {
            let (response, body) = json_of(rejected(endpoint, error)).await;
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{endpoint} {error}");
            assert_eq!(body["error"], "idp_rejected", "{endpoint} {error}");
        }
    }

    #[tokio::test]
    async fn a_provider_error_at_the_callback_is_classed_by_whose_it_is_and_offers_a_new_sign_in() {
        let denied = |error: &str| {
            AppError::Oidc(OidcError::AuthorizationDenied {
                error: error.into(),
                description: Some("details".into()),
            })
        };
        for (error, status) in [
            // The user's: declined, or must interact with the provider.
            ("access_denied", StatusCode::FORBIDDEN),
            ("login_required", StatusCode::FORBIDDEN),
            ("consent_required", StatusCode::FORBIDDEN),
            // The provider's: as at its other endpoints, an outage to retry.
            ("server_error", StatusCode::SERVICE_UNAVAILABLE),
            ("temporarily_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            // This client's request: the operator's to fix.
            ("invalid_scope", StatusCode::BAD_GATEWAY),
            ("unauthorized_client", StatusCode::BAD_GATEWAY),
            ("invalid_request", StatusCode::BAD_GATEWAY),
        ] {
            let (response, body) = json_of(denied(error)).await;
            assert_eq!(response.status(), status, "{error}");
            assert_eq!(body["error"], "authorization_denied", "{error}");
            assert_eq!(body["login_url"], "/.auth/login", "{error}");
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains(error) && message.contains("details"),
                "{error}: {message}"
            );
            let retry = response.headers().get(RETRY_AFTER);
            assert_eq!(retry.is_some(), status == StatusCode::SERVICE_UNAVAILABLE, "{error}");
        }
        // The operator's log line says what the provider refused.
        assert!(error_chain(&denied("invalid_scope")).contains("invalid_scope (details)"));
    }

    #[tokio::test]
    async fn an_invalid_host_is_a_400_that_offers_no_way_forward() {
        let (response, body) = json_of(AppError::InvalidHost(InvalidHost::Repeated)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_host");
        assert_eq!(body.get("login_url"), None);
        let page = AppError::InvalidHost(InvalidHost::Malformed).into_response(false, &router());
        assert_eq!(page.status(), StatusCode::BAD_REQUEST);
        assert!(page.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        // A trusted proxy's X-Forwarded-Host is refused alike.
        let (response, relayed) = json_of(AppError::Proxy(ProxyError::InvalidForwardedHost)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(relayed["error"], "invalid_host");
        assert_eq!(relayed.get("login_url"), None);
    }

    #[tokio::test]
    async fn causes_reach_the_log_line_but_never_the_response() {
        let cause = "connect to 10.0.0.7:8080: refused";
        let error = AppError::Proxy(ProxyError::Connect(cause.into()));
        assert!(error_chain(&error).contains(cause));
        let (response, body) = json_of(error).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(!body.to_string().contains("10.0.0.7"), "{body}");

        let internal = AppError::Internal("sealing the login cookie failed");
        let page = internal.into_response(false, &router());
        assert_eq!(page.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(page.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        let html = page.into_body().collect().await.unwrap().to_bytes();
        assert!(!String::from_utf8_lossy(&html).contains("sealing"));
    }
}
