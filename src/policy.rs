//! Decisions about where a request may go: which post-login targets are local, and
//! which requests count as browser navigations. Access rules (public paths, groups,
//! email domains) join here.

use http::header::ACCEPT;
use http::{HeaderMap, Method};

/// Returns `target` if it is a local path that a browser will resolve on this origin,
/// `None` otherwise.
///
/// Browsers treat `//host`, `/\host` and `\\host` as other origins, and some decode
/// `%2F`/`%5C` before deciding; every such form is refused, as are control characters
/// (header splitting) and anything that is not an absolute path.
pub fn local_return_path(target: &str) -> Option<&str> {
    let bytes = target.as_bytes();
    if bytes.first() != Some(&b'/') || target.len() > 4096 {
        return None;
    }
    if bytes.iter().any(|b| b.is_ascii_control() || *b == b'\\' || *b == b' ') {
        return None;
    }
    // Decode percent-escapes repeatedly, so `%252F` cannot smuggle a slash past a single decode.
    let mut decoded = target.to_owned();
    for _ in 0..3 {
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let decoded_bytes = decoded.as_bytes();
    if decoded_bytes.iter().any(|b| b.is_ascii_control() || *b == b'\\') {
        return None;
    }
    if decoded_bytes.get(1) == Some(&b'/') {
        return None;
    }
    // The target must parse as an origin-form request target.
    target.parse::<http::uri::PathAndQuery>().ok()?;
    Some(target)
}

fn percent_decode(input: &str) -> String {
    percent_encoding::percent_decode_str(input)
        .decode_utf8_lossy()
        .into_owned()
}

/// Whether an unauthenticated request is a browser navigation (redirect it to login)
/// rather than a script or API call (answer 401).
pub fn is_browser_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    // A WebSocket handshake is never a page a person can be redirected from.
    if headers.contains_key("x-requested-with") || headers.contains_key(http::header::UPGRADE) {
        return false;
    }
    if let Some(mode) = headers.get("sec-fetch-mode") {
        if mode.as_bytes() != b"navigate" {
            return false;
        }
    }
    match headers.get(ACCEPT).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(accept) => accept_admits_html(accept),
    }
}

/// True when the `Accept` header admits `text/html` (explicitly, `text/*` or `*/*`) with q > 0.
fn accept_admits_html(accept: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let zero_q = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !zero_q && matches!(media.as_str(), "text/html" | "application/xhtml+xml" | "text/*" | "*/*")
    })
}

/// Whether the client prefers a JSON answer (for error bodies and the dump page).
/// Runs on every request, so it does not allocate.
pub fn prefers_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(ACCEPT) else {
        return false;
    };
    let accept = accept.as_bytes();
    contains_ignore_case(accept, b"application/json") && !contains_ignore_case(accept, b"text/html")
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn local_paths_are_accepted_as_they_are() {
        for target in ["/", "/reports?year=2026&q=a%20b", "/a/b/c#frag", "/search?q=%2Fetc"] {
            assert_eq!(local_return_path(target), Some(target), "{target}");
        }
    }

    #[test]
    fn other_origins_and_tricks_are_refused() {
        for target in [
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example",
            "http:/evil.example",
            "evil.example",
            "",
            "/%2Fevil.example",
            "/%2fevil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%252F%252Fevil.example",
            "/path\r\nSet-Cookie: x=y",
            "/%0d%0aSet-Cookie:x",
            "/\tevil",
            "javascript:alert(1)",
        ] {
            assert_eq!(local_return_path(target), None, "{target:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn browser_navigations_are_recognised() {
        let browser = headers(&[
            ("accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
            ("sec-fetch-mode", "navigate"),
        ]);
        assert!(is_browser_navigation(&Method::GET, &browser));
        assert!(is_browser_navigation(&Method::HEAD, &headers(&[("accept", "*/*")])));
        assert!(is_browser_navigation(&Method::GET, &headers(&[])));
    }

    #[test]
    fn scripts_and_api_calls_are_not_navigations() {
        assert!(!is_browser_navigation(
            &Method::POST,
            &headers(&[("accept", "text/html")])
        ));
        assert!(!is_browser_navigation(
            &Method::GET,
            &headers(&[("accept", "application/json")])
        ));
        assert!(!is_browser_navigation(
            &Method::GET,
            &headers(&[("accept", "text/html"), ("x-requested-with", "XMLHttpRequest")])
        ));
        assert!(!is_browser_navigation(
            &Method::GET,
            &headers(&[("accept", "*/*"), ("sec-fetch-mode", "cors")])
        ));
        assert!(!is_browser_navigation(
            &Method::GET,
            &headers(&[("accept", "text/html;q=0, application/json")])
        ));
    }

    #[test]
    fn json_preference_is_read_from_accept() {
        assert!(prefers_json(&headers(&[("accept", "application/json")])));
        assert!(!prefers_json(&headers(&[("accept", "text/html,application/json")])));
        assert!(!prefers_json(&headers(&[])));
        assert!(prefers_json(&headers(&[("accept", "Application/JSON")])));
        assert!(!prefers_json(&headers(&[("accept", "TEXT/HTML, application/json")])));
    }
}
