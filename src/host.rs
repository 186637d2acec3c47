//! The host a request names, checked before anything else reads the request.
//!
//! hyper hands on any visible-ASCII `Host` value and any number of `Host` lines, and the
//! host goes to the upstream (`Host`, `X-Forwarded-Host`), whose virtual hosts, logs and
//! redirects believe it. So a request that names no valid host is refused with 400 before
//! it is routed, as nginx refuses it: RFC 9112 §3.2 says a server MUST answer 400 to an
//! HTTP/1.1 request without `Host`, and to any request with more than one or an invalid
//! one. portcullis' own URLs never come from here: they are built from `base_url`.
//!
//! Which host a request names ([`request_host`]):
//! - HTTP/1.1 in origin form (`GET /x`): its `Host`.
//! - HTTP/1.1 in absolute form (`GET http://a/x`): the target's authority, which replaces
//!   `Host` (RFC 9112 §3.2.2: a proxy MUST ignore the received `Host` and send the
//!   target's); `Host` must still be there, once and valid.
//! - HTTP/2: `:authority`, else `Host`. With both, they must name the same host and port
//!   (RFC 9113 §8.3.1: a `Host` that names another entity makes the request malformed).
//! - HTTP/1.0: `Host` if any; it may name none.
//!
//! What is a host ([`is_host`]): RFC 9110 §7.2's `uri-host [":" port]`, where RFC 3986's
//! `reg-name` is narrowed to what names that resolve use: letters, digits, `-`, `.`, `_`
//! and `~`, and no empty label but after a final dot. Its other characters would make a
//! list (`,`) or a parameter (`;`, `=`) of the value in `X-Forwarded-Host`, and `..` is a
//! path traversal in an upstream's per-host document root (nginx refuses it for that).
//! An IP literal is a bracketed IPv6 address (IPvFuture is refused); the port is at most
//! five digits, up to 65535 (empty, `host:`, is allowed by RFC 3986 and means no port);
//! user information (`user@host`) is refused (RFC 9110 §4.2.4).
//!
//! Everything accepted is also an [`http::uri::Authority`] (a unit test checks it), but
//! the check is not `Authority`'s parser: that one copies the value into a buffer of its
//! own (an allocation per request) and accepts user information, every sub-delimiter,
//! any port and anything in brackets.

use std::net::Ipv6Addr;

use http::header::HOST;
use http::uri::Scheme;
use http::{HeaderValue, Request, Version};

#[cfg(test)]
mod tests;

/// Why a request's host was refused: the client's fault, answered 400 (in `error`).
/// No variant carries the value: it is the client's, for no page and no log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHost {
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    #[error("HTTP/1.1 request without Host")]
    Missing,
    /// More than one `Host` line (RFC 9112 §3.2): which one a cache or the upstream
    /// believes is anyone's guess, the stuff of cache poisoning and request smuggling.
    #[error("more than one Host header")]
    Repeated,
    /// `Host` is not a host ([`is_host`]): spaces, a path, user information, a list.
    #[error("Host is not a valid host")]
    Malformed,
    /// The authority of an absolute-form target or of HTTP/2's `:authority` is not a
    /// host ([`is_host`]), although `http` parsed it (it accepts user information).
    #[error("the request target's authority is not a valid host")]
    MalformedAuthority,
    /// A request target in authority form (`app.example.com:80`), which only CONNECT
    /// uses (RFC 9112 §3.2.3).
    #[error("request target in authority form (only CONNECT uses it)")]
    AuthorityForm,
    /// HTTP/2: `Host` and `:authority` name different hosts or ports (RFC 9113 §8.3.1).
    #[error("Host and :authority differ")]
    Conflicting,
}

/// The host `request` names (see the module docs), as the value to send on as `Host`
/// and `X-Forwarded-Host`; `None` when it names none (HTTP/1.0, or HTTP/2 without
/// `:authority` or `Host`). Allocates nothing for a request in origin form.
pub fn request_host<B>(request: &Request<B>) -> Result<Option<HeaderValue>, InvalidHost> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(InvalidHost::Repeated);
    }
    if header.is_some_and(|host| !is_host(host.as_bytes())) {
        return Err(InvalidHost::Malformed);
    }
    let version = request.version();
    let Some(authority) = request.uri().authority() else {
        return match header {
            None if version == Version::HTTP_11 => Err(InvalidHost::Missing),
            header => Ok(header.cloned()),
        };
    };
    if request.uri().scheme().is_none() {
        // Authority form (`GET app.example.com:80`) is CONNECT's alone (RFC 9112 §3.2.3),
        // and a reverse proxy opens no tunnels: there is no path to forward.
        return Err(InvalidHost::AuthorityForm);
    }
    let authority = authority.as_str().as_bytes();
    if !is_host(authority) {
        return Err(InvalidHost::MalformedAuthority);
    }
    match (version, header) {
        (Version::HTTP_11, None) => return Err(InvalidHost::Missing),
        (Version::HTTP_2, Some(host)) if !same_host(host.as_bytes(), authority, request.uri().scheme()) => {
            return Err(InvalidHost::Conflicting)
        }
        _ => {}
    }
    // Checked above: a host is a valid header value.
    HeaderValue::from_bytes(authority)
        .map(Some)
        .map_err(|_| InvalidHost::MalformedAuthority)
}

/// Whether `value` is a `Host` portcullis passes on (see the module docs).
pub fn is_host(value: &[u8]) -> bool {
    split(value).is_some()
}

/// A host cut into its name (an IPv6 literal with its brackets) and port (`None` when
/// absent or empty); `None` when it is no host.
///
/// One pass over a name, a table lookup per byte: it runs for every request.
fn split(value: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (name, port) = match value.first() {
        Some(b'[') => ipv6_literal(value)?,
        _ => reg_name(value)?,
    };
    let port = match port {
        None | Some([]) => None,
        Some(digits) => Some(port_number(digits)?),
    };
    Some((name, port))
}

/// Bytes of a name: letters, digits, `-`, `_`, `~` (the `.` between labels is apart).
static NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'~';
        b += 1;
    }
    table
};

/// A name up to the first `:` and what follows it: labels of [`NAME_BYTE`]s, none empty,
/// with one final dot allowed.
fn reg_name(value: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let mut i = 0;
    loop {
        let label = i;
        while value.get(i).is_some_and(|&b| NAME_BYTE[usize::from(b)]) {
            i += 1;
        }
        // `i > 0` at the end: a label was read, or the last one is empty after a dot.
        match value.get(i) {
            Some(b'.') if i > label => i += 1,
            None if i > 0 => return Some((value, None)),
            Some(b':') if i > 0 => return Some((&value[..i], Some(&value[i + 1..]))),
            _ => return None,
        }
    }
}

/// `[IPv6]` and what follows it after a `:`.
fn ipv6_literal(value: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let end = value.iter().position(|&b| b == b']')?;
    std::str::from_utf8(&value[1..end]).ok()?.parse::<Ipv6Addr>().ok()?;
    let (name, rest) = value.split_at(end + 1);
    match rest {
        [] => Some((name, None)),
        [b':', port @ ..] => Some((name, Some(port))),
        _ => None,
    }
}

/// Decimal digits (no sign, as `u16::from_str` would take) up to 65535.
fn port_number(digits: &[u8]) -> Option<u16> {
    if digits.len() > 5 {
        return None;
    }
    let mut port = 0u32;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        port = port * 10 + u32::from(d - b'0');
    }
    u16::try_from(port).ok()
}

/// Whether two hosts (both [`is_host`]) name the same host and port, compared as RFC
/// 3986 §6.2.2-6.2.3 normalises them: the name in any case, no port the scheme's default.
fn same_host(a: &[u8], b: &[u8], scheme: Option<&Scheme>) -> bool {
    let default = match scheme {
        Some(s) if *s == Scheme::HTTPS => Some(443),
        Some(s) if *s == Scheme::HTTP => Some(80),
        _ => None,
    };
    match (split(a), split(b)) {
        (Some((a, a_port)), Some((b, b_port))) => a.eq_ignore_ascii_case(b) && a_port.or(default) == b_port.or(default),
        _ => false,
    }
}
