//! A small cookie jar keyed by host *and port* (reqwest's jar ignores ports, so
//! the app on `localhost:A` and a second app on `localhost:B` would share
//! cookies), and `Set-Cookie` parsing for attribute assertions.

use std::collections::BTreeMap;

use cookie::time::OffsetDateTime;
use cookie::{Cookie, SameSite};
use url::Url;

/// One `Set-Cookie` header as the server sent it.
#[derive(Debug, Clone)]
pub struct SetCookie {
    pub raw: String,
    pub cookie: Cookie<'static>,
}

impl SetCookie {
    pub fn parse(raw: &str) -> Option<SetCookie> {
        let cookie = Cookie::parse(raw.to_owned()).ok()?;
        Some(SetCookie {
            raw: raw.to_owned(),
            cookie,
        })
    }

    pub fn name(&self) -> &str {
        self.cookie.name()
    }

    pub fn value(&self) -> &str {
        self.cookie.value()
    }

    pub fn http_only(&self) -> bool {
        self.cookie.http_only().unwrap_or(false)
    }

    pub fn secure(&self) -> bool {
        self.cookie.secure().unwrap_or(false)
    }

    pub fn same_site(&self) -> Option<SameSite> {
        self.cookie.same_site()
    }

    pub fn path(&self) -> Option<&str> {
        self.cookie.path()
    }

    pub fn domain(&self) -> Option<&str> {
        self.cookie.domain()
    }

    /// True when this header deletes the cookie (`Max-Age<=0` or `Expires` past).
    pub fn is_removal(&self) -> bool {
        if let Some(max_age) = self.cookie.max_age() {
            return max_age.whole_seconds() <= 0;
        }
        match self.cookie.expires_datetime() {
            Some(at) => at <= OffsetDateTime::now_utc(),
            None => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Stored {
    value: String,
    path: String,
}

/// host:port → (name, path) → cookie. Host-only semantics (`Domain` ignored),
/// path matching as RFC 6265 §5.1.4, expiry only through removal headers.
#[derive(Debug, Default)]
pub struct Jar {
    by_origin: BTreeMap<String, BTreeMap<(String, String), Stored>>,
}

fn origin_key(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

/// The directory of the request path (RFC 6265 §5.1.4 default-path).
fn default_path(url: &Url) -> String {
    let path = url.path();
    match path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => path[..i].to_owned(),
    }
}

fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path[cookie_path.len()..].starts_with('/')))
}

impl Jar {
    /// Records a `Set-Cookie` received in answer to a request for `url`.
    pub fn store(&mut self, url: &Url, set: &SetCookie) {
        let path = match set.path() {
            Some(p) if p.starts_with('/') => p.to_owned(),
            _ => default_path(url),
        };
        let cookies = self.by_origin.entry(origin_key(url)).or_default();
        let key = (set.name().to_owned(), path.clone());
        if set.is_removal() {
            cookies.remove(&key);
        } else {
            cookies.insert(
                key,
                Stored {
                    value: set.value().to_owned(),
                    path,
                },
            );
        }
    }

    /// The `Cookie` header value for a request to `url`, if any cookie applies.
    /// Longer paths first, as browsers do.
    pub fn header_for(&self, url: &Url) -> Option<String> {
        let cookies = self.by_origin.get(&origin_key(url))?;
        let mut matching: Vec<(&(String, String), &Stored)> = cookies
            .iter()
            .filter(|(_, c)| path_matches(&c.path, url.path()))
            .collect();
        if matching.is_empty() {
            return None;
        }
        matching.sort_by_key(|(_, c)| std::cmp::Reverse(c.path.len()));
        Some(
            matching
                .iter()
                .map(|((name, _), c)| format!("{name}={}", c.value))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// The value of cookie `name` that would be sent to `url`.
    pub fn get(&self, url: &Url, name: &str) -> Option<String> {
        let cookies = self.by_origin.get(&origin_key(url))?;
        cookies
            .iter()
            .filter(|((n, _), c)| n == name && path_matches(&c.path, url.path()))
            .max_by_key(|(_, c)| c.path.len())
            .map(|(_, c)| c.value.clone())
    }

    /// Names of every cookie held for `url`'s host and port, whatever the path.
    pub fn names(&self, url: &Url) -> Vec<String> {
        self.by_origin
            .get(&origin_key(url))
            .map(|c| c.keys().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }

    /// Sets cookie `name` with `Path=/` for `url`'s host and port, as a browser
    /// would hold it (used to plant tampered or foreign cookies).
    pub fn put(&mut self, url: &Url, name: &str, value: &str) {
        let cookies = self.by_origin.entry(origin_key(url)).or_default();
        cookies.insert(
            (name.to_owned(), "/".to_owned()),
            Stored {
                value: value.to_owned(),
                path: "/".to_owned(),
            },
        );
    }

    /// Every cookie (name, path, value) for `url`'s host and port.
    pub fn all(&self, url: &Url) -> Vec<(String, String, String)> {
        self.by_origin
            .get(&origin_key(url))
            .map(|c| {
                c.iter()
                    .map(|((n, p), s)| (n.clone(), p.clone(), s.value.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}
