use std::net::IpAddr;

use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

fn all<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

/// What `Upstream::request_headers` does, minus the strip: capture when trusted, set.
fn try_forward(headers: &mut HeaderMap, peer: &str, trusted: &[IpNet], scheme: &'static str) -> Result<(), ProxyError> {
    let host = headers.get(HOST).cloned();
    let peer = ip(peer);
    let relayed = if is_trusted(peer.to_canonical(), trusted) {
        Some(Relayed::take(headers)?)
    } else {
        None
    };
    for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
        headers.remove(name);
    }
    set_forwarded(headers, address_value(peer), scheme, host, relayed);
    Ok(())
}

/// [`try_forward`] of a request that must be forwarded.
#[track_caller]
fn forward(headers: &mut HeaderMap, peer: &str, trusted: &[IpNet], scheme: &'static str) {
    if let Err(error) = try_forward(headers, peer, trusted, scheme) {
        panic!("refused: {error}");
    }
}

#[test]
fn forwarded_headers_are_replaced_with_what_portcullis_saw() {
    let mut headers = map(&[
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "7.7.7.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=6.6.6.6;host=evil.example"),
        ("host", "app.example.com"),
    ]);
    forward(&mut headers, "192.0.2.7", &[], "http");
    assert_eq!(all(&headers, "x-forwarded-for"), ["192.0.2.7"]);
    assert_eq!(all(&headers, "x-forwarded-proto"), ["http"]);
    assert_eq!(all(&headers, "x-forwarded-host"), ["app.example.com"]);
    assert!(!headers.contains_key("forwarded"));
}

#[test]
fn untrusted_peer_with_a_spoofed_chain_is_replaced_even_when_other_peers_are_trusted() {
    let trusted = nets(&["10.0.0.0/8"]);
    let mut headers = map(&[
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("host", "app.example.com"),
    ]);
    forward(&mut headers, "203.0.113.5", &trusted, "http");
    assert_eq!(all(&headers, "x-forwarded-for"), ["203.0.113.5"]);
    assert_eq!(all(&headers, "x-forwarded-proto"), ["http"]);
    assert_eq!(all(&headers, "x-forwarded-host"), ["app.example.com"]);
}

#[test]
fn http2_authority_stands_in_for_a_missing_host() {
    let mut headers = map(&[("x-forwarded-host", "evil.example")]);
    let request = http::Request::builder()
        .version(http::Version::HTTP_2)
        .uri("https://app.example.com:8443/x")
        .body(())
        .unwrap();
    let host = crate::host::request_host(&request).unwrap();
    assert_eq!(host.as_ref().unwrap(), "app.example.com:8443");
    set_forwarded(&mut headers, address_value(ip("::1")), "https", host, None);
    assert_eq!(all(&headers, "x-forwarded-host"), ["app.example.com:8443"]);
    assert_eq!(all(&headers, "x-forwarded-for"), ["::1"]);

    // A request that names no host (HTTP/1.0) leaves X-Forwarded-Host out.
    let mut headers = map(&[("x-forwarded-host", "evil.example")]);
    set_forwarded(&mut headers, address_value(ip("::1")), "https", None, None);
    assert!(!headers.contains_key("x-forwarded-host"));
    assert!(!headers.contains_key(HOST));
}

#[test]
fn trusted_peer_chain_is_appended_to_and_its_proto_and_host_kept() {
    let trusted = nets(&["10.0.0.0/8"]);
    let mut headers = map(&[
        ("x-forwarded-for", "198.51.100.1, 203.0.113.9"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "public.example"),
        ("forwarded", "for=1.2.3.4"),
        ("host", "internal.example"),
    ]);
    forward(&mut headers, "10.0.0.2", &trusted, "http");
    assert_eq!(
        all(&headers, "x-forwarded-for"),
        ["198.51.100.1, 203.0.113.9, 10.0.0.1, 10.0.0.2"]
    );
    assert_eq!(all(&headers, "x-forwarded-proto"), ["https"]);
    assert_eq!(all(&headers, "x-forwarded-host"), ["public.example"]);
    assert!(!headers.contains_key("forwarded"));
}

#[test]
fn a_trusted_peer_relaying_an_x_forwarded_host_that_names_no_host_is_refused() {
    let trusted = nets(&["10.0.0.0/8"]);
    for relayed in [
        &["evil.example/admin"][..],
        &["evil.example evil2.example"],
        &["user@public.example"],
        &["public.example;proto=https"],
        &["..", "public.example"][..],
        &["public.example, ../etc"],
        // One bad line spoils the list, wherever it stands.
        &["public.example", "public.example:99999"],
        &["[not-v6]"],
    ] {
        let mut pairs = vec![("host", "internal.example")];
        pairs.extend(relayed.iter().map(|v| ("x-forwarded-host", *v)));
        let mut headers = map(&pairs);
        assert!(
            matches!(
                try_forward(&mut headers, "10.0.0.2", &trusted, "https"),
                Err(ProxyError::InvalidForwardedHost)
            ),
            "{relayed:?}"
        );
    }
    // From an untrusted peer the value is never read: replaced, not refused.
    let mut headers = map(&[("host", "app.example.com"), ("x-forwarded-host", "evil.example/admin")]);
    forward(&mut headers, "203.0.113.5", &trusted, "http");
    assert_eq!(all(&headers, "x-forwarded-host"), ["app.example.com"]);
}

#[test]
fn a_trusted_peers_list_of_hosts_is_kept_as_sent_and_one_naming_none_counts_as_absent() {
    let trusted = nets(&["10.0.0.0/8"]);
    let mut headers = map(&[
        ("host", "internal.example"),
        ("x-forwarded-host", "public.example, edge.example:8443"),
        ("x-forwarded-host", "[2001:db8::1]:443"),
    ]);
    forward(&mut headers, "10.0.0.2", &trusted, "https");
    assert_eq!(
        all(&headers, "x-forwarded-host"),
        ["public.example, edge.example:8443", "[2001:db8::1]:443"]
    );
    // Empty elements are ignored; a line with nothing else is left out, and with no
    // host relayed at all, the host the request named stands in.
    let mut headers = map(&[
        ("host", "internal.example"),
        ("x-forwarded-host", " ,public.example,"),
        ("x-forwarded-host", " , "),
    ]);
    forward(&mut headers, "10.0.0.2", &trusted, "https");
    assert_eq!(all(&headers, "x-forwarded-host"), [" ,public.example,"]);
    let mut headers = map(&[("host", "internal.example"), ("x-forwarded-host", ",")]);
    forward(&mut headers, "10.0.0.2", &trusted, "https");
    assert_eq!(all(&headers, "x-forwarded-host"), ["internal.example"]);
}

#[test]
fn trusted_peer_without_forwarding_headers_gets_them_set_as_for_anyone() {
    let trusted = nets(&["10.0.0.0/8"]);
    let mut headers = map(&[("host", "app.example.com"), ("x-forwarded-for", " ")]);
    forward(&mut headers, "10.1.2.3", &trusted, "https");
    assert_eq!(all(&headers, "x-forwarded-for"), ["10.1.2.3"]);
    assert_eq!(all(&headers, "x-forwarded-proto"), ["https"]);
    assert_eq!(all(&headers, "x-forwarded-host"), ["app.example.com"]);
}

#[test]
fn ipv6_and_ipv4_mapped_peers() {
    let trusted = nets(&["fd00::/8", "10.0.0.0/8"]);
    let mut headers = map(&[("x-forwarded-for", "2001:db8::7")]);
    forward(&mut headers, "fd00::1", &trusted, "http");
    assert_eq!(all(&headers, "x-forwarded-for"), ["2001:db8::7, fd00::1"]);

    // A dual-stack listener reports IPv4 peers as `::ffff:a.b.c.d`.
    let mut headers = map(&[("x-forwarded-for", "192.0.2.1")]);
    forward(&mut headers, "::ffff:10.0.0.9", &trusted, "http");
    assert_eq!(all(&headers, "x-forwarded-for"), ["192.0.2.1, 10.0.0.9"]);

    let mut headers = map(&[("x-forwarded-for", "192.0.2.1")]);
    forward(&mut headers, "::ffff:192.0.2.99", &trusted, "http");
    assert_eq!(all(&headers, "x-forwarded-for"), ["192.0.2.99"]);
}

#[test]
fn client_ip_table() {
    let trusted = nets(&["10.0.0.0/8", "fd00::/8", "192.0.2.10/32"]);
    #[rustfmt::skip]
    let cases: &[(&str, &[&str], &str)] = &[
        // peer, X-Forwarded-For headers, expected client
        ("203.0.113.5", &[], "203.0.113.5"),
        // An untrusted peer's chain is never read.
        ("203.0.113.5", &["1.1.1.1"], "203.0.113.5"),
        ("10.0.0.1", &[], "10.0.0.1"),
        ("10.0.0.1", &["198.51.100.7"], "198.51.100.7"),
        // Spoofed entries left of the first untrusted one are ignored.
        ("10.0.0.1", &["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
        ("10.0.0.1", &["6.6.6.6, 198.51.100.7, 10.2.2.2, 192.0.2.10"], "198.51.100.7"),
        // Several headers are one list.
        ("10.0.0.1", &["6.6.6.6", "198.51.100.7, 10.2.2.2"], "198.51.100.7"),
        // All trusted: the leftmost.
        ("10.0.0.1", &["10.9.9.9, 10.2.2.2"], "10.9.9.9"),
        // Garbage stops the walk at the last trusted address.
        ("10.0.0.1", &["198.51.100.7, unknown"], "10.0.0.1"),
        ("10.0.0.1", &["unknown, 10.2.2.2"], "10.2.2.2"),
        // Ports, brackets, empty entries, whitespace.
        ("10.0.0.1", &["198.51.100.7:4711"], "198.51.100.7"),
        ("10.0.0.1", &["[2001:db8::1]:443"], "2001:db8::1"),
        ("10.0.0.1", &["[2001:db8::1]"], "2001:db8::1"),
        ("10.0.0.1", &[" 198.51.100.7 ,, "], "198.51.100.7"),
        // IPv6 peers and chains, IPv4-mapped forms.
        ("fd00::1", &["2001:db8::1, fd00::2"], "2001:db8::1"),
        ("2001:db8::9", &["1.1.1.1"], "2001:db8::9"),
        ("::ffff:10.0.0.1", &["198.51.100.7"], "198.51.100.7"),
        ("::ffff:203.0.113.5", &["1.1.1.1"], "203.0.113.5"),
        ("10.0.0.1", &["::ffff:198.51.100.7"], "198.51.100.7"),
    ];
    for (peer, xff, expected) in cases {
        let pairs: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
        let headers = map(&pairs);
        assert_eq!(client_ip(ip(peer), &headers, &trusted), ip(expected), "{peer} {xff:?}");
    }
    // Nothing trusted: always the peer.
    let headers = map(&[("x-forwarded-for", "198.51.100.7")]);
    assert_eq!(client_ip(ip("10.0.0.1"), &headers, &[]), ip("10.0.0.1"));
}
