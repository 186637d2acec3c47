//! Header rewriting between downstream and upstream, as pure functions over
//! [`HeaderMap`]: hop-by-hop removal, identity-header stripping (every case and
//! `_` spelling), and removal of portcullis' own cookies. `X-Forwarded-*` values
//! are set in `forwarded`.
//!
//! Nothing here does I/O, so every rule is unit-tested in `headers/tests.rs`.

use http::header::{
    AUTHORIZATION, CONNECTION, COOKIE, FORWARDED, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::CookieFilter;
use crate::config::{default_header_names, AccessTokenForwarding, IdentityConfig};

#[cfg(test)]
mod tests;

pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) static X_FORWARDED_ACCESS_TOKEN: HeaderName = HeaderName::from_static("x-forwarded-access-token");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 §7.6.1 plus the common non-standard ones). `TE` and
/// `Upgrade` are handled separately because they survive in some cases. `Trailer` is
/// not hop-by-hop (RFC 2616's list meant the `trailers` TE token), and hyper only sends
/// the trailer fields a `Trailer` header declares, so a response's must pass; a
/// request's goes, with the trailers it declares ([`Message::Request`]). `Connection`
/// comes first ([`remove_hop_by_hop`] relies on it).
static HOP_BY_HOP: [&HeaderName; 6] = [
    &CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &TRANSFER_ENCODING,
    &PROXY_AUTHORIZATION,
    &PROXY_AUTHENTICATE,
];

/// The lengths of the names [`remove_hop_by_hop`] looks for: [`HOP_BY_HOP`], `te`,
/// `upgrade` and `trailer` (checked by a unit test).
const HOP_BY_HOP_LENGTHS: [usize; 7] = [2, 7, 10, 16, 17, 18, 19];

/// The message whose headers [`remove_hop_by_hop`] cleans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Message {
    /// A client's request: its `Trailer` declaration goes too, since its trailers are
    /// dropped (`timeout::ProgressBody`).
    Request,
    /// The upstream's response: its trailers (gRPC's status) are passed on, and so is
    /// their declaration, without which hyper would not send them over HTTP/1.1.
    Response,
}

/// Header names that no client copy of may reach the upstream, compared after
/// lowercasing and folding `_` to `-` (CGI/PHP/WSGI servers merge `Remote_User`
/// and `Remote-User` into one `HTTP_REMOTE_USER`).
///
/// Built once in [`super::Upstream::new`]; the lookup allocates nothing.
#[derive(Debug, Clone)]
pub(super) struct StripSet {
    /// Folded names (lowercase, `-` only), without duplicates.
    folded: Box<[Box<str>]>,
}

impl StripSet {
    /// Identity headers, the default identity headers whatever the mapping (an upstream
    /// may trust them while portcullis sends others), the configured extra names, the
    /// access-token header(s) and the `X-Forwarded-*`/`Forwarded` family (whose `_`
    /// spellings would otherwise slip past the values portcullis sets).
    pub(super) fn new(identity: &IdentityConfig) -> Self {
        let mut names: Vec<&str> = identity
            .headers
            .iter()
            .map(|h| h.header.as_str())
            .chain(identity.strip_headers.iter().map(HeaderName::as_str))
            .collect();
        names.extend(default_header_names().map(|name| name.as_str()));
        names.extend([
            X_FORWARDED_ACCESS_TOKEN.as_str(),
            X_FORWARDED_FOR.as_str(),
            X_FORWARDED_PROTO.as_str(),
            X_FORWARDED_HOST.as_str(),
            FORWARDED.as_str(),
        ]);
        if identity.access_token == AccessTokenForwarding::AuthorizationBearer {
            names.push(AUTHORIZATION.as_str());
        }
        let mut folded: Vec<Box<str>> = names
            .into_iter()
            .map(|n| n.bytes().map(|b| fold(b) as char).collect::<String>().into())
            .collect();
        folded.sort();
        folded.dedup();
        StripSet { folded: folded.into() }
    }

    /// Whether `name` folds to one of the stripped names.
    pub(super) fn matches(&self, name: &HeaderName) -> bool {
        let name = name.as_str().as_bytes();
        self.folded
            .iter()
            .any(|f| f.len() == name.len() && f.bytes().zip(name).all(|(f, &n)| fold(n) == f))
    }

    /// Removes every header that [`Self::matches`], all values of it.
    pub(super) fn strip(&self, headers: &mut HeaderMap) {
        let doomed: Vec<HeaderName> = headers.keys().filter(|n| self.matches(n)).cloned().collect();
        for name in doomed {
            headers.remove(&name);
        }
    }
}

/// `_` → `-` and ASCII lowercase: the equivalence CGI-style servers apply to names.
fn fold(b: u8) -> u8 {
    match b {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

/// The comma-separated tokens of every `Connection` header value, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
pub(super) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
}

/// Removes hop-by-hop headers and every header named in `Connection`, and a request's
/// `Trailer` ([`Message`]).
///
/// With `upgrade` (an upgrade request, or the upstream's `101` to one) the `Upgrade`
/// header is kept as-is and `Connection` is reduced to exactly `upgrade`. A `TE` that
/// lists `trailers` becomes `TE: trailers`; any other `TE` goes.
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap, message: Message, upgrade: bool) {
    // One pass over the names first: most requests carry none of these headers and
    // most responses only `Connection: keep-alive`, and a removal hashes the name even
    // when it is absent; so only what is present is removed.
    let mut present = [false; HOP_BY_HOP.len()];
    let (mut te, mut has_upgrade, mut trailer) = (false, false, false);
    for name in headers.keys() {
        // Most names have none of these lengths, and one length check is cheaper
        // than nine name comparisons.
        if !HOP_BY_HOP_LENGTHS.contains(&name.as_str().len()) {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present[i] = true;
        } else if name == TE {
            te = true;
        } else if name == UPGRADE {
            has_upgrade = true;
        } else if name == TRAILER {
            trailer = true;
        }
    }
    if trailer && message == Message::Request {
        headers.remove(TRAILER);
    }
    if present[0] {
        // Collected first: the names come from a header this function then removes.
        // Only names of headers that are there: a token is not always a header. A token
        // naming a hop-by-hop header (most often `keep-alive`) is left to the loop below,
        // so the usual `Connection: keep-alive` or `close` allocates nothing here.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !HOP_BY_HOP.iter().any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(t)))
            .filter_map(|t| headers.keys().find(|k| k.as_str().as_bytes().eq_ignore_ascii_case(t)))
            .cloned()
            .collect();
        for name in &named {
            if !(upgrade && name == UPGRADE) {
                headers.remove(name);
            }
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(*name);
    }
    if te {
        let te_trailers = headers
            .get_all(TE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| {
                // `trailers` takes no parameters, but tolerate `trailers;q=1`.
                let token = t.split(|&b| b == b';').next().unwrap_or_default();
                trim_ows(token).eq_ignore_ascii_case(b"trailers")
            });
        headers.remove(TE);
        if te_trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else if has_upgrade {
        headers.remove(UPGRADE);
    }
}

/// Removes portcullis' cookies (the session cookie, every pending-login cookie) from
/// the `Cookie` header(s), keeping the other pairs byte-for-byte and in order.
///
/// Several `Cookie` headers (as HTTP/2 clients send them, RFC 9113 §8.2.3) are joined
/// into one with `; `, as HTTP/1.1 requires. The header is dropped when nothing is
/// left. A single header from which nothing is removed is left untouched.
pub(super) fn filter_cookies(headers: &mut HeaderMap, filter: &CookieFilter) {
    let values = headers.get_all(COOKIE);
    let count = values.iter().count();
    if count == 0 {
        return;
    }
    let pairs = || {
        values
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
            .map(trim_ows)
            .filter(|p| !p.is_empty())
    };
    let is_ours = |pair: &[u8]| filter.is_ours(trim_ows(pair.split(|&b| b == b'=').next().unwrap_or_default()));
    // Counted first, without allocating: usually the header holds nothing of ours (a
    // public path) or nothing else (a browser at an app that sets no cookies).
    let (mut total, mut ours) = (0, 0);
    for pair in pairs() {
        total += 1;
        ours += usize::from(is_ours(pair));
    }
    if ours == 0 && count == 1 {
        return;
    }
    if ours == total {
        headers.remove(COOKIE);
        return;
    }
    let kept: Vec<&[u8]> = pairs().filter(|pair| !is_ours(pair)).collect();
    let joined = kept.join(&b"; "[..]);
    headers.remove(COOKIE);
    // The pairs were cut from valid header values at `;` and trimmed, and `; ` is
    // valid too, so this cannot fail; if it ever did, dropping the header is safe.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}

impl CookieFilter {
    /// Whether a cookie of this name belongs to portcullis.
    fn is_ours(&self, name: &[u8]) -> bool {
        name == self.session_cookie.as_bytes()
            || (!self.login_cookie_prefix.is_empty() && name.starts_with(self.login_cookie_prefix.as_bytes()))
    }
}

/// Sets the session's identity headers and the access token, after every client copy
/// was removed by [`StripSet::strip`]. Each name is cleared first so that a name given
/// twice in `identity` is still sent exactly as listed, and one missing from the strip
/// set (a caller bug) cannot leave a client value beside it.
pub(super) fn set_identity(
    headers: &mut HeaderMap,
    identity: &[(HeaderName, HeaderValue)],
    access_token: Option<(&HeaderName, &HeaderValue)>,
) {
    for (i, (name, value)) in identity.iter().enumerate() {
        // The first value of a name replaces whatever is there (`insert`), later ones add.
        if identity[..i].iter().any(|(earlier, _)| earlier == name) {
            headers.append(name.clone(), value.clone());
        } else {
            headers.insert(name.clone(), value.clone());
        }
    }
    if let Some((name, value)) = access_token {
        headers.insert(name.clone(), value.clone());
    }
}

/// Removes optional whitespace (space, tab) at both ends.
pub(super) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}
