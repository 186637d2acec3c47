//! What kind of client sent a request: a browser navigation (to be redirected to the
//! login) or a script or API call (to get `401`), and whether it prefers JSON answers.

use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue, Method};

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
/// Does not allocate.
pub fn prefers_json(headers: &HeaderMap) -> bool {
    accept_prefers_json(headers.get(ACCEPT))
}

/// [`prefers_json`] from the `Accept` value alone, for a request already handed on.
pub fn accept_prefers_json(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept else {
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
