//! The usual setup of a test: the provider, the echo upstream and portcullis in
//! front of it, on free ports, plus a browser-like client.
//!
//! ```ignore
//! let stack = Stack::builder()
//!     .idp(|o| o.access_token_ttl = Some(2))
//!     .env("OIDC_SCOPES", SCOPES_WITH_REFRESH)
//!     .start()
//!     .await;
//! let trace = stack.client.login(&stack.url("/hello"), "john", PASSWORD).await;
//! ```

use url::Url;

use super::client::{Browserless, LoginTrace};
use super::peers::{Echo, Idp, IdpOptions};
use super::proxy::{AppAddr, Portcullis};
use super::PASSWORD;

pub struct Stack {
    pub idp: Idp,
    pub echo: Echo,
    pub portcullis: Portcullis,
    /// A client with an empty jar; `client.fresh()` for a second browser.
    pub client: Browserless,
}

#[derive(Default)]
pub struct StackBuilder {
    idp: IdpOptions,
    env: Vec<(String, String)>,
    upstream: Option<String>,
    https: bool,
    client: Option<Browserless>,
}

impl StackBuilder {
    /// Adjusts the provider's options (the redirect URI is filled in for you).
    pub fn idp(mut self, f: impl FnOnce(&mut IdpOptions)) -> Self {
        f(&mut self.idp);
        self
    }

    /// Sets an environment variable of portcullis.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Points portcullis at this upstream instead of the echo (which still runs).
    pub fn upstream(mut self, url: impl Into<String>) -> Self {
        self.upstream = Some(url.into());
        self
    }

    /// An `https://localhost:<port>` base URL (add the TLS variables with `env`).
    pub fn https(mut self) -> Self {
        self.https = true;
        self
    }

    /// The client of the stack (e.g. one that trusts a test CA).
    pub fn client(mut self, client: Browserless) -> Self {
        self.client = Some(client);
        self
    }

    pub async fn start(self) -> Stack {
        let app = if self.https {
            AppAddr::reserve_https()
        } else {
            AppAddr::reserve()
        };
        let mut idp_opts = self.idp;
        idp_opts.redirect_uris.push(app.redirect_uri());
        let (idp, echo) = tokio::join!(Idp::start(idp_opts), Echo::start());
        let upstream = self.upstream.unwrap_or_else(|| echo.url.clone());
        let mut builder = Portcullis::builder(app, &idp.issuer, &upstream);
        for (k, v) in self.env {
            builder = builder.env(&k, v);
        }
        let portcullis = builder.start().await;
        Stack {
            idp,
            echo,
            portcullis,
            client: self.client.unwrap_or_default(),
        }
    }
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// The default stack.
    pub async fn start() -> Stack {
        Stack::builder().start().await
    }

    /// `path` on the app (`http://localhost:<port>…`).
    pub fn url(&self, path_and_query: &str) -> String {
        self.portcullis.url(path_and_query)
    }

    pub fn base_url(&self) -> Url {
        self.portcullis.base_url()
    }

    /// Logs `user` in with `self.client` through `path` and checks it landed there.
    #[track_caller]
    pub fn login<'a>(&'a self, user: &'a str, path: &'a str) -> impl std::future::Future<Output = LoginTrace> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let url = self.url(path);
            let trace = self.client.login(&url, user, PASSWORD).await;
            let landing = trace.landing();
            assert!(
                landing.status == 200 && Some(&landing.url) == Url::parse(&url).ok().as_ref(),
                "{caller}: login as {user} via {path} did not land on it:\n{}\n{}",
                trace.describe(),
                landing.body
            );
            trace
        }
    }

    /// The value of the session cookie the client holds.
    pub fn session_cookie(&self) -> Option<String> {
        self.client.cookie(&self.base_url(), "portcullis_session")
    }
}
