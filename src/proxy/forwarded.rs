//! `X-Forwarded-*` and the client address, with trusted proxies.
//!
//! Semantics of nginx `realip` (recursive) and oauth2-proxy: when the direct peer is
//! a trusted proxy, the `X-Forwarded-For` chain it sent is kept and the peer appended,
//! and its `X-Forwarded-Proto`/`-Host` are kept; from anyone else they are replaced.
//! The client address is the rightmost chain entry that is not a trusted proxy.
//! `Forwarded` (RFC 7239) is never passed on and never read.
//!
//! A trusted proxy's `X-Forwarded-Host` is checked as the client's `Host` is
//! ([`crate::host::is_host`], each element of its list), and a request with an element
//! that is no host is refused with 400 ([`ProxyError::InvalidForwardedHost`]): the
//! upstream believes it as much as `Host` (virtual hosts, redirects, absolute links), and
//! a proxy that relays garbage may be passing on what a client sent. It is refused rather
//! than dropped for the `Host` portcullis saw, because that `Host` is the name the proxy
//! in front used for portcullis (often an internal one), not the host the client named:
//! the upstream would build its links on it without anyone seeing why. Traefik and
//! oauth2-proxy pass a trusted peer's value on unchecked; nginx sets it only from its own
//! checked `$host`. The check runs only for a trusted peer that relayed a value.
//!
//! Addresses are compared and written in canonical form: an IPv4-mapped IPv6 peer
//! (`::ffff:10.0.0.1`, from a dual-stack listener) is `10.0.0.1`.

use std::net::{IpAddr, SocketAddr};

use http::header::FORWARDED;
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

use super::headers::{trim_ows, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use super::ProxyError;

#[cfg(test)]
mod tests;

/// Whether `ip` (canonical) is in one of the trusted networks.
pub(super) fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The address of the client, for logs and policy: the direct `peer` unless it is a
/// trusted proxy; then the rightmost `X-Forwarded-For` entry that is not trusted,
/// walking from the right while entries are trusted. If every entry is trusted, the
/// leftmost one; if an entry cannot be parsed, the last trusted address before it
/// (whoever wrote the garbage is not believed further).
///
/// Entries may be bare addresses, `[v6]`, or `addr:port`/`[v6]:port`; several
/// `X-Forwarded-For` headers count as one list, in order.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !is_trusted(client, trusted) {
        return client;
    }
    for entry in xff_entries(headers).rev() {
        let Some(ip) = parse_entry(entry) else {
            return client;
        };
        client = ip;
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    client
}

/// The non-empty, trimmed entries of every `X-Forwarded-For` header, left to right.
fn xff_entries(headers: &HeaderMap) -> impl DoubleEndedIterator<Item = &[u8]> {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?;
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse::<IpAddr>().ok())?;
    Some(ip.to_canonical())
}

/// The forwarding headers a trusted proxy sent, taken before the identity strip
/// (which removes every spelling of them).
#[derive(Debug, Default)]
pub(super) struct Relayed {
    xff: Vec<HeaderValue>,
    proto: Vec<HeaderValue>,
    host: Vec<HeaderValue>,
}

impl Relayed {
    /// Copies the exact-name `X-Forwarded-For`/`-Proto`/`-Host` values. `_` spellings
    /// are not taken: CGI servers would merge them with ours.
    ///
    /// Every element of the `X-Forwarded-Host` list (several lines are one list, as
    /// Apache's `mod_proxy` appends to it) must be a host, else the request is refused
    /// (see the module docs). Empty elements are ignored (RFC 9110 §5.6.1), and a line
    /// with none is left out, so a relayed header that names nothing counts as absent.
    pub(super) fn take(headers: &HeaderMap) -> Result<Self, ProxyError> {
        let values = |name| headers.get_all(name).iter().cloned().collect();
        let mut host = Vec::new();
        for value in headers.get_all(&X_FORWARDED_HOST) {
            match host_elements(value.as_bytes()) {
                Some(0) => {}
                Some(_) => host.push(value.clone()),
                None => return Err(ProxyError::InvalidForwardedHost),
            }
        }
        Ok(Relayed {
            xff: values(&X_FORWARDED_FOR),
            proto: values(&X_FORWARDED_PROTO),
            host,
        })
    }
}

/// How many hosts an `X-Forwarded-Host` line lists (its non-empty, trimmed elements);
/// `None` when one of them is not a host ([`crate::host::is_host`]).
fn host_elements(value: &[u8]) -> Option<usize> {
    let mut hosts = 0;
    for element in value.split(|&b| b == b',').map(trim_ows) {
        if element.is_empty() {
            continue;
        }
        if !crate::host::is_host(element) {
            return None;
        }
        hosts += 1;
    }
    Some(hosts)
}

/// `ip` in canonical form as a header value: the peer's entry in `X-Forwarded-For`.
pub(super) fn address_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_canonical().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Sets `X-Forwarded-For`/`-Proto`/`-Host` after the strip removed the client's.
/// `peer` is the direct peer's [`address_value`].
///
/// Without `relayed` (an untrusted peer): `X-Forwarded-For` is the peer alone, the
/// proto is `client_scheme`, the host is `host` (the client's `Host` or HTTP/2
/// authority; without one `X-Forwarded-Host` is left out). With `relayed` (a trusted
/// peer): the relayed chain plus `, <peer>`, and the relayed proto and host where
/// present, else as without.
pub(super) fn set_forwarded(
    headers: &mut HeaderMap,
    peer: HeaderValue,
    client_scheme: &'static str,
    host: Option<HeaderValue>,
    relayed: Option<Relayed>,
) {
    headers.remove(FORWARDED);
    let relayed = relayed.unwrap_or_default();
    let chain: Vec<&[u8]> = relayed
        .xff
        .iter()
        .map(|v| trim_ows(v.as_bytes()))
        .filter(|v| !v.is_empty())
        .collect();
    let xff = if chain.is_empty() {
        Ok(peer)
    } else {
        let mut joined = chain.join(&b", "[..]);
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(peer.as_bytes());
        HeaderValue::from_bytes(&joined)
    };
    // Valid header values joined with `, ` and an address: cannot fail.
    match xff {
        Ok(xff) => headers.insert(&X_FORWARDED_FOR, xff),
        Err(_) => headers.remove(&X_FORWARDED_FOR),
    };
    put(
        headers,
        &X_FORWARDED_PROTO,
        relayed.proto,
        Some(HeaderValue::from_static(client_scheme)),
    );
    put(headers, &X_FORWARDED_HOST, relayed.host, host);
}

/// Sets `name` to the relayed values if there are any, else to `fallback` (or removes it).
fn put(headers: &mut HeaderMap, name: &http::HeaderName, relayed: Vec<HeaderValue>, fallback: Option<HeaderValue>) {
    // `insert` replaces every value: no separate removal (a hash lookup) when it runs.
    let mut relayed = relayed.into_iter();
    match relayed.next().or(fallback) {
        Some(first) => {
            headers.insert(name, first);
            for value in relayed {
                headers.append(name, value);
            }
        }
        None => {
            headers.remove(name);
        }
    }
}
