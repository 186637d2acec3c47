//! `Browserless`: an HTTP client that behaves like a browser where it matters to
//! portcullis (cookies per host and port, navigations with `Accept: text/html`,
//! redirects followed one hop at a time so each can be inspected) and can sign
//! in at the test provider's login form.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, RequestBuilder, StatusCode};
use url::Url;

use super::cookies::{Jar, SetCookie};
use super::peers::EchoSeen;

/// What a browser sends when it navigates.
pub const ACCEPT_HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// Redirects followed by one walk before giving up (a loop is a bug).
const MAX_HOPS: usize = 25;

/// A response, read completely.
#[derive(Debug, Clone)]
pub struct Resp {
    pub method: Method,
    /// The URL that was requested.
    pub url: Url,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn is_redirect(&self) -> bool {
        self.status.is_redirection() && self.headers.contains_key(LOCATION)
    }

    /// `Location` resolved against the request URL, as a browser resolves it
    /// (WHATWG rules: `/\evil` becomes `//evil`).
    pub fn location(&self) -> Option<Url> {
        let raw = self.headers.get(LOCATION)?.to_str().ok()?;
        self.url.join(raw).ok()
    }

    /// The raw `Location` header.
    pub fn location_raw(&self) -> Option<&str> {
        self.headers.get(LOCATION)?.to_str().ok()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }

    pub fn set_cookies(&self) -> Vec<SetCookie> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(SetCookie::parse)
            .collect()
    }

    /// The last `Set-Cookie` for `name` in this response.
    pub fn set_cookie(&self, name: &str) -> Option<SetCookie> {
        self.set_cookies().into_iter().rev().find(|c| c.name() == name)
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {} answered {} with a body that is not JSON ({e}):\n{}",
                self.method, self.url, self.status, self.body
            )
        })
    }

    /// The echo upstream's report of what it received (JSON mode).
    #[track_caller]
    pub fn echo(&self) -> EchoSeen {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected the echo upstream's answer to {} {}:\n{}",
            self.method,
            self.url,
            self.body
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: not an echo JSON body ({e}):\n{}",
                self.method, self.url, self.body
            )
        })
    }

    /// One line for failure messages.
    pub fn summary(&self) -> String {
        let loc = self.location_raw().map(|l| format!(" -> {l}")).unwrap_or_default();
        format!("{} {} => {}{loc}", self.method, self.url, self.status)
    }
}

/// Every response of a login walk, in order; the last is where the browser landed.
#[derive(Debug, Clone)]
pub struct LoginTrace {
    pub hops: Vec<Resp>,
}

impl LoginTrace {
    pub fn landing(&self) -> &Resp {
        self.hops.last().expect("a walk has at least one response")
    }

    /// The first response (the protected URL or `/.auth/login`).
    pub fn first(&self) -> &Resp {
        &self.hops[0]
    }

    /// The response to the redirect URI.
    pub fn callback(&self) -> Option<&Resp> {
        self.hops.iter().find(|r| r.url.path() == "/callback")
    }

    /// Every hop, one per line, for failure messages.
    pub fn describe(&self) -> String {
        self.hops.iter().map(Resp::summary).collect::<Vec<_>>().join("\n")
    }
}

/// Where a walk stops.
enum StopAt {
    /// Follow everything, return when a response is not a redirect.
    Landing,
    /// Return before requesting the redirect URI (`/callback`).
    Callback,
}

/// A browser without a browser. Cheap to clone; clones share the cookie jar.
#[derive(Clone)]
pub struct Browserless {
    http: reqwest::Client,
    jar: Arc<Mutex<Jar>>,
}

impl Default for Browserless {
    fn default() -> Self {
        Self::new()
    }
}

impl Browserless {
    pub fn new() -> Browserless {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("build reqwest client");
        Browserless {
            http,
            jar: Arc::new(Mutex::new(Jar::default())),
        }
    }

    /// A client over `http` (e.g. one trusting a test CA; it must not follow redirects).
    pub fn with_http(http: reqwest::Client) -> Browserless {
        Browserless {
            http,
            jar: Arc::new(Mutex::new(Jar::default())),
        }
    }

    /// A client with its own, empty jar.
    pub fn fresh(&self) -> Browserless {
        Browserless::with_http(self.http.clone())
    }

    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url)
    }

    pub fn get(&self, url: &str) -> RequestBuilder {
        self.http.get(url)
    }

    pub fn post(&self, url: &str) -> RequestBuilder {
        self.http.post(url)
    }

    /// Sends `req` with the jar's cookies (appended to any `Cookie` the test set)
    /// and stores the cookies of the response.
    pub async fn send(&self, req: RequestBuilder) -> Resp {
        let mut req = req.build().expect("build request");
        let jar_cookies = self.jar().header_for(req.url());
        if let Some(jar_cookies) = jar_cookies {
            let merged = match req.headers().get(COOKIE).and_then(|v| v.to_str().ok()) {
                Some(own) => format!("{own}; {jar_cookies}"),
                None => jar_cookies,
            };
            req.headers_mut()
                .insert(COOKIE, HeaderValue::from_str(&merged).expect("cookie header is ASCII"));
        }
        let method = req.method().clone();
        let url = req.url().clone();
        let resp = self
            .http
            .execute(req)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading body: {e}"));
        let resp = Resp {
            method,
            url,
            status,
            headers,
            body,
        };
        {
            let mut jar = self.jar();
            for set in resp.set_cookies() {
                jar.store(&resp.url, &set);
            }
        }
        resp
    }

    /// A top-level browser navigation (GET, `Accept: text/html…`).
    pub async fn navigate(&self, url: &str) -> Resp {
        self.send(
            self.get(url)
                .header(ACCEPT, ACCEPT_HTML)
                .header("sec-fetch-mode", "navigate"),
        )
        .await
    }

    /// An API call (GET, `Accept: application/json`).
    pub async fn api_get(&self, url: &str) -> Resp {
        self.send(self.get(url).header(ACCEPT, "application/json")).await
    }

    /// `/.auth/me` as JSON; panics unless it answers 200.
    #[track_caller]
    pub fn me_json<'a>(&'a self, app: &'a Url) -> impl std::future::Future<Output = serde_json::Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let resp = self.api_get(app.join("/.auth/me").expect("join").as_str()).await;
            assert_eq!(
                resp.status,
                StatusCode::OK,
                "{caller}: /.auth/me as JSON: {}\n{}",
                resp.summary(),
                resp.body
            );
            resp.json()
        }
    }

    /// Navigates to `protected_url`, signs in at the provider as `user` and
    /// follows the redirects back until the browser lands. When the provider
    /// still has a session, no form appears and the walk goes straight back.
    /// A redirect off the test servers (loopback) ends the walk unfollowed.
    pub async fn login(&self, protected_url: &str, user: &str, password: &str) -> LoginTrace {
        self.walk(protected_url, user, password, StopAt::Landing).await
    }

    /// Like [`login`](Self::login) but stops before the redirect URI is requested:
    /// returns the walk so far and the callback URL the provider sent the browser to.
    pub async fn login_until_callback(&self, protected_url: &str, user: &str, password: &str) -> (LoginTrace, Url) {
        let trace = self.walk(protected_url, user, password, StopAt::Callback).await;
        let callback = trace
            .landing()
            .location()
            .filter(|u| u.path() == "/callback")
            .unwrap_or_else(|| panic!("the walk never reached the redirect URI:\n{}", trace.describe()));
        (trace, callback)
    }

    async fn walk(&self, start: &str, user: &str, password: &str, stop: StopAt) -> LoginTrace {
        let mut hops = vec![self.navigate(start).await];
        let mut submitted = false;
        for _ in 0..MAX_HOPS {
            let last = hops.last().expect("non-empty");
            if last.is_redirect() {
                let next = last.location().expect("redirect has a valid Location");
                if !is_test_server(&next) || matches!(stop, StopAt::Callback) && next.path() == "/callback" {
                    return LoginTrace { hops };
                }
                hops.push(self.navigate(next.as_str()).await);
                continue;
            }
            let Some(action) = login_form_action(&last.body) else {
                return LoginTrace { hops };
            };
            assert!(
                !submitted,
                "the provider showed its login form again after the credentials of {user:?} were posted:\n{}\n{}",
                LoginTrace { hops: hops.clone() }.describe(),
                last.body
            );
            submitted = true;
            let target = last.url.join(&action).expect("form action is a URL reference");
            let form = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("username", user)
                .append_pair("password", password)
                .finish();
            let post = self
                .post(target.as_str())
                .header(ACCEPT, ACCEPT_HTML)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header("origin", last.url.origin().ascii_serialization())
                .body(form);
            hops.push(self.send(post).await);
        }
        panic!(
            "the login walk did not end within {MAX_HOPS} hops:\n{}",
            LoginTrace { hops }.describe()
        );
    }

    /// The cookie `name` the jar would send to `url`.
    pub fn cookie(&self, url: &Url, name: &str) -> Option<String> {
        self.jar().get(url, name)
    }

    /// Names of every cookie held for `url`'s host and port.
    pub fn cookie_names(&self, url: &Url) -> Vec<String> {
        self.jar().names(url)
    }

    /// Plants cookie `name=value` (`Path=/`) for `url`'s host and port.
    pub fn put_cookie(&self, url: &Url, name: &str, value: &str) {
        self.jar().put(url, name, value);
    }

    /// Every cookie (name, path, value) for `url`'s host and port.
    pub fn cookies(&self, url: &Url) -> Vec<(String, String, String)> {
        self.jar().all(url)
    }

    fn jar(&self) -> std::sync::MutexGuard<'_, Jar> {
        // A poisoned jar only means another task of this test panicked already.
        self.jar.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every server of a test listens on loopback (over http, or https with a test CA). A redirect anywhere
/// else is not followed: the walk ends there, for the test to judge.
fn is_test_server(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https") && matches!(url.host_str(), Some("localhost" | "127.0.0.1"))
}

/// The `action` of the provider's login form (`<form … action="/interaction/<uid>/login">`).
pub fn login_form_action(html: &str) -> Option<String> {
    let form_start = html.find("<form")?;
    let form_tag_end = form_start + html[form_start..].find('>')?;
    let tag = &html[form_start..form_tag_end];
    let at = tag.find("action=\"")? + "action=\"".len();
    let len = tag[at..].find('"')?;
    let action = tag[at..at + len].replace("&amp;", "&");
    html[form_tag_end..].contains("name=\"password\"").then_some(action)
}

/// HTML-escapes `s` like the pages under test are expected to.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
