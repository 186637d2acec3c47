//! Assertions on meaning: where a redirect goes and with which parameters, which
//! attributes a cookie has, what an error page says. All `#[track_caller]`, so a
//! failure points at the test line, and each prints the response it judged.

use cookie::SameSite;
use reqwest::StatusCode;
use url::Url;

use super::client::{html_escape, Browserless, Resp};
use super::cookies::SetCookie;
use super::peers::Idp;

/// The name of the session cookie (design.md §1).
pub const SESSION_COOKIE: &str = "portcullis_session";
/// The prefix of the pending-login cookies.
pub const LOGIN_COOKIE_PREFIX: &str = "portcullis_login_";

/// The names of the pending-login cookies `client` holds for `app`, sorted.
pub fn pending_logins(client: &Browserless, app: &Url) -> Vec<String> {
    let mut names: Vec<String> = client
        .cookie_names(app)
        .into_iter()
        .filter(|n| n.starts_with(LOGIN_COOKIE_PREFIX))
        .collect();
    names.sort();
    names
}

/// The names of the pending-login cookies `resp` removes, sorted.
pub fn pending_logins_cleared(resp: &Resp) -> Vec<String> {
    let mut names: Vec<String> = resp
        .set_cookies()
        .into_iter()
        .filter(|c| c.name().starts_with(LOGIN_COOKIE_PREFIX) && c.is_removal())
        .map(|c| c.name().to_owned())
        .collect();
    names.sort();
    names
}

fn show(resp: &Resp) -> String {
    let body: String = resp.body.chars().take(2000).collect();
    format!("{}\nheaders: {:?}\nbody: {body}", resp.summary(), resp.headers)
}

#[track_caller]
pub fn assert_status(resp: &Resp, status: u16) {
    assert_eq!(resp.status.as_u16(), status, "unexpected status:\n{}", show(resp));
}

/// A client error (4xx): the request was refused with a page, not a crash.
#[track_caller]
pub fn assert_client_error(resp: &Resp) {
    assert!(resp.status.is_client_error(), "expected a 4xx:\n{}", show(resp));
}

/// The response is a redirect into the provider's authorization endpoint through
/// PAR: `<issuer>/…?client_id=Express.js&request_uri=urn:…` and nothing else in
/// the front channel. Returns the Location.
#[track_caller]
pub fn assert_redirects_to_provider(resp: &Resp, idp: &Idp) -> Url {
    assert!(
        matches!(resp.status.as_u16(), 302 | 303 | 307),
        "expected a redirect to the provider:\n{}",
        show(resp)
    );
    let loc = resp
        .location()
        .unwrap_or_else(|| panic!("redirect without a valid Location:\n{}", show(resp)));
    let issuer = idp.issuer_url();
    assert_eq!(
        (loc.scheme(), loc.host_str(), loc.port_or_known_default()),
        (issuer.scheme(), issuer.host_str(), issuer.port_or_known_default()),
        "the login redirect goes elsewhere than the provider: {loc}"
    );
    assert!(
        loc.path().ends_with("/authorization"),
        "not the authorization endpoint: {loc}"
    );
    let params: Vec<(String, String)> = loc.query_pairs().into_owned().collect();
    let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["client_id", "request_uri"],
        "with PAR the authorize URL carries only client_id and request_uri: {loc}"
    );
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    assert_eq!(get("client_id"), "Express.js", "client_id in {loc}");
    assert!(
        get("request_uri").starts_with("urn:"),
        "request_uri is not a PAR URN in {loc}"
    );
    loc
}

/// `401` with a small JSON body naming the login URL (`…/.auth/login…`), no
/// `Location`, and no session cookie handed out.
#[track_caller]
pub fn assert_login_required_json(resp: &Resp) {
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "expected 401:\n{}", show(resp));
    assert!(
        resp.content_type().starts_with("application/json"),
        "401 is not JSON:\n{}",
        show(resp)
    );
    let json: serde_json::Value =
        serde_json::from_str(&resp.body).unwrap_or_else(|e| panic!("401 body is not JSON ({e}):\n{}", show(resp)));
    assert!(
        json_strings(&json).iter().any(|s| s.contains("/.auth/login")),
        "the 401 body does not name the login URL:\n{}",
        show(resp)
    );
    assert!(resp.location_raw().is_none(), "a 401 with a Location:\n{}", show(resp));
    assert!(
        resp.set_cookie(SESSION_COOKIE).filter(|c| !c.is_removal()).is_none(),
        "a 401 handed out a session cookie:\n{}",
        show(resp)
    );
}

fn json_strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a.iter().flat_map(json_strings).collect(),
        serde_json::Value::Object(o) => o.values().flat_map(json_strings).collect(),
        _ => Vec::new(),
    }
}

/// `HttpOnly; SameSite=Lax; Path=/`, no `Secure` (http base URL), host-only.
#[track_caller]
pub fn assert_session_cookie_attributes(set: &SetCookie) {
    assert_eq!(set.name(), SESSION_COOKIE, "{}", set.raw);
    assert!(set.http_only(), "session cookie without HttpOnly: {}", set.raw);
    assert_eq!(
        set.same_site(),
        Some(SameSite::Lax),
        "session cookie SameSite: {}",
        set.raw
    );
    assert_eq!(set.path(), Some("/"), "session cookie Path: {}", set.raw);
    assert!(
        !set.secure(),
        "Secure on an http base URL would lose the cookie: {}",
        set.raw
    );
    assert_eq!(set.domain(), None, "session cookie should be host-only: {}", set.raw);
    // A random 256-bit id needs at least 43 characters in any text encoding.
    assert!(
        set.value().len() >= 43,
        "session id too short for 256 bits: {}",
        set.raw
    );
}

/// `url` is on the app (same scheme, host and port as `app`).
#[track_caller]
pub fn assert_on_app(url: &Url, app: &Url) {
    assert_eq!(
        (url.scheme(), url.host_str(), url.port_or_known_default()),
        (app.scheme(), app.host_str(), app.port_or_known_default()),
        "left the app: {url}"
    );
}

/// An HTML page (not JSON, not empty).
#[track_caller]
pub fn assert_html_page(resp: &Resp) {
    assert!(
        resp.content_type().starts_with("text/html"),
        "expected an HTML page:\n{}",
        show(resp)
    );
    assert!(!resp.body.trim().is_empty(), "empty page:\n{}", show(resp));
}

/// `haystack` contains `needle`, ignoring ASCII case.
#[track_caller]
pub fn assert_mentions(resp: &Resp, needle: &str) {
    assert!(
        resp.body.to_ascii_lowercase().contains(&needle.to_ascii_lowercase()),
        "the page does not mention {needle:?}:\n{}",
        show(resp)
    );
}

/// None of `secrets` (what it is, its value: tokens, codes, the client secret) shows in
/// `log`, a process's log; `scenario` starts the failure message.
#[track_caller]
pub fn assert_log_shows_no_secret(log: &str, secrets: &[(&str, String)], scenario: &str) {
    for (what, secret) in secrets {
        assert!(
            !log.contains(secret.as_str()),
            "{scenario} the portcullis log shows the {what}:\n{log}"
        );
    }
}

/// Neither the session cookie nor any new session was handed out.
#[track_caller]
pub fn assert_no_session_issued(resp: &Resp) {
    if let Some(set) = resp.set_cookie(SESSION_COOKIE) {
        assert!(set.is_removal(), "a session cookie was issued:\n{}", show(resp));
    }
}

/// Every redirect portcullis answered during `trace` stays on the app (or goes
/// to the provider), and the walk ends on the app: no open redirect.
#[track_caller]
pub fn assert_walk_stays_on_app(trace: &super::client::LoginTrace, app: &Url, idp: &Idp) {
    let issuer = idp.issuer_url();
    let origin = |u: &Url| {
        (
            u.scheme().to_owned(),
            u.host_str().map(str::to_owned),
            u.port_or_known_default(),
        )
    };
    for hop in &trace.hops {
        if origin(&hop.url) != origin(app) {
            continue;
        }
        if let Some(loc) = hop.location().filter(|_| hop.is_redirect()) {
            assert!(
                origin(&loc) == origin(app) || origin(&loc) == origin(&issuer),
                "portcullis redirected off-site to {loc} (Location: {:?}):\n{}",
                hop.location_raw(),
                trace.describe()
            );
        }
    }
    assert!(
        origin(&trace.landing().url) == origin(app),
        "the walk ended off the app:\n{}",
        trace.describe()
    );
}

/// The "Sign in again" URL that returns to `path`.
pub fn login_again_to(path: &str) -> String {
    let rd: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
    format!("/.auth/login?rd={rd}")
}

/// `resp` is a page whose "Sign in again" link (escaped as an attribute) is `login_again`.
#[track_caller]
pub fn assert_offers_sign_in(resp: &Resp, login_again: &str) {
    assert_html_page(resp);
    assert!(
        resp.body
            .contains(&format!("<a href=\"{}\">Sign in again</a>", html_escape(login_again))),
        "the page does not offer a sign-in back by {login_again}:\n{}",
        resp.body
    );
}
