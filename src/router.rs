//! Which phase answers a request: portcullis' own routes, or the protected app.
//!
//! Everything under the reserved prefix is answered here and never forwarded, so an
//! upstream path cannot shadow `/.auth/me` and a typo cannot leak to the app.

use crate::config::RoutePaths;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Callback,
    Login,
    Logout,
    Me,
    Healthz,
    Readyz,
    /// Under the reserved prefix but no route of ours.
    ReservedUnknown,
    Protected,
}

/// The reserved paths, computed once.
#[derive(Debug, Clone)]
pub struct Router {
    callback: String,
    prefix: String,
    login: String,
    logout: String,
    me: String,
    healthz: String,
    readyz: String,
}

impl Router {
    pub fn new(paths: &RoutePaths) -> Self {
        Router {
            callback: paths.callback.clone(),
            prefix: paths.prefix.clone(),
            login: paths.login(),
            logout: paths.logout(),
            me: paths.me(),
            healthz: paths.healthz(),
            readyz: paths.readyz(),
        }
    }

    pub fn classify(&self, path: &str) -> Route {
        match path {
            p if p == self.callback => Route::Callback,
            p if p == self.login => Route::Login,
            p if p == self.logout => Route::Logout,
            p if p == self.me => Route::Me,
            p if p == self.healthz => Route::Healthz,
            p if p == self.readyz => Route::Readyz,
            p if p == self.prefix || p.strip_prefix(&self.prefix).is_some_and(|rest| rest.starts_with('/')) => {
                Route::ReservedUnknown
            }
            _ => Route::Protected,
        }
    }

    pub fn login_path(&self) -> &str {
        &self.login
    }

    /// `<login path>?rd=<return_to>`, relative to this origin: a login that comes back to
    /// `return_to`. The caller has checked that it is a local path; it is encoded as a
    /// query value here, so no character of it can end the parameter or the URL.
    pub fn login_url(&self, return_to: &str) -> String {
        let rd: String = url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        format!("{}?rd={rd}", self.login)
    }

    pub fn logout_path(&self) -> &str {
        &self.logout
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn router() -> Router {
        Router::new(&RoutePaths {
            callback: "/callback".into(),
            prefix: "/.auth".into(),
        })
    }

    #[test]
    fn reserved_routes_are_recognised_exactly() {
        let router = router();
        assert_eq!(router.classify("/callback"), Route::Callback);
        assert_eq!(router.classify("/.auth/login"), Route::Login);
        assert_eq!(router.classify("/.auth/logout"), Route::Logout);
        assert_eq!(router.classify("/.auth/me"), Route::Me);
        assert_eq!(router.classify("/.auth/healthz"), Route::Healthz);
        assert_eq!(router.classify("/.auth/readyz"), Route::Readyz);
    }

    #[test]
    fn unknown_paths_under_the_prefix_are_never_forwarded() {
        let router = router();
        assert_eq!(router.classify("/.auth"), Route::ReservedUnknown);
        assert_eq!(router.classify("/.auth/nope"), Route::ReservedUnknown);
        assert_eq!(router.classify("/.auth/me/extra"), Route::ReservedUnknown);
    }

    #[test]
    fn login_and_logout_paths_are_under_the_prefix() {
        let router = router();
        assert_eq!(router.login_path(), "/.auth/login");
        assert_eq!(router.logout_path(), "/.auth/logout");
    }

    #[test]
    fn a_login_url_carries_its_return_path_as_one_encoded_query_value() {
        let router = router();
        assert_eq!(
            router.login_url("/vault/report?id=42&view=full#top"),
            "/.auth/login?rd=%2Fvault%2Freport%3Fid%3D42%26view%3Dfull%23top"
        );
        assert_eq!(router.login_url("/a b\"<c>"), "/.auth/login?rd=%2Fa+b%22%3Cc%3E");
    }

    #[test]
    fn everything_else_is_protected() {
        let router = router();
        for path in ["/", "/callbackx", "/.authx", "/app/.auth/me", "/callback/"] {
            assert_eq!(router.classify(path), Route::Protected, "{path}");
        }
    }
}
