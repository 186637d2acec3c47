//! The public paths: served without a session and without identity headers.

use super::path;

/// The configured public paths, split by kind. Lists are scanned in order: a handful
/// of entries is the usual case, and a byte comparison per entry is cheaper than
/// hashing the path.
#[derive(Debug, Clone, Default)]
pub struct PublicPaths {
    /// Entries without a trailing `/`: the path must be equal.
    exact: Box<[Box<str>]>,
    /// Entries ending in `/`: the path must start with them (`/static/` matches
    /// `/static/` and `/static/a.css`, not `/static`).
    prefixes: Box<[Box<str>]>,
}

impl PublicPaths {
    /// From validated entries (configuration checks them with the same rules as
    /// requests). An entry that is not unambiguous could never match a request that is,
    /// so one that slipped through anyway is dropped rather than trusted.
    pub fn new(entries: &[String]) -> Self {
        let usable = || entries.iter().filter(|e| path::check(e).is_ok());
        PublicPaths {
            exact: usable()
                .filter(|e| !e.ends_with('/'))
                .map(|e| e.as_str().into())
                .collect(),
            prefixes: usable()
                .filter(|e| e.ends_with('/'))
                .map(|e| e.as_str().into())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Whether `path` is one of the public paths, compared byte for byte (so case
    /// matters). The caller has checked that `path` is unambiguous; this only matches.
    pub fn matches(&self, path: &str) -> bool {
        self.exact.iter().any(|e| **e == *path) || self.prefixes.iter().any(|p| path.starts_with(&**p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(entries: &[&str]) -> PublicPaths {
        PublicPaths::new(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn exact_entries_match_only_themselves() {
        let public = paths(&["/robots.txt", "/health"]);
        assert!(public.matches("/robots.txt"));
        assert!(public.matches("/health"));
        for path in ["/robots.txt/", "/robots.txtx", "/health/x", "/", "/ROBOTS.TXT"] {
            assert!(!public.matches(path), "{path}");
        }
    }

    #[test]
    fn prefix_entries_match_what_is_under_them_but_not_the_bare_name() {
        let public = paths(&["/static/"]);
        for path in ["/static/", "/static/a.css", "/static/js/app.js"] {
            assert!(public.matches(path), "{path}");
        }
        for path in ["/static", "/staticx/a", "/Static/a.css", "/x/static/a.css"] {
            assert!(!public.matches(path), "{path}");
        }
    }

    #[test]
    fn ambiguous_entries_are_dropped() {
        let public = paths(&["/a/../b", "/c;d", "/e%2ff/"]);
        assert!(public.is_empty());
        assert!(paths(&[]).is_empty());
        // One usable entry of either kind is enough to look at the path at all.
        assert!(!paths(&["/a/../b", "/robots.txt"]).is_empty());
        assert!(!paths(&["/c;d", "/static/"]).is_empty());
    }
}
