//! The `Host` check. `is_host` is a byte table over RFC 9110 §7.2's `uri-host [":" port]`
//! (narrowed as `src/host.rs` says), written for speed; here a second reading of the same
//! grammar, written for clarity (split at the dots and the colon, std's parsers for the
//! numbers), must agree with it on every value, in both directions. What it accepts must
//! also be an `http::uri::Authority` naming the same host and port, and `request_host`
//! must pass it on byte for byte (as `Host`, as an absolute target's authority, as
//! HTTP/2's `:authority` with a `Host` in another case) and refuse what it refuses.
//!
//! Input: the `Host` value.
#![no_main]

use std::net::Ipv6Addr;

use http::uri::Authority;
use http::{HeaderValue, Request, Uri, Version};
use libfuzzer_sys::fuzz_target;
use portcullis::host::{is_host, request_host, InvalidHost};

/// The name (an IPv6 literal with its brackets) and port of `value`, or `None` when it is
/// no host: the grammar of `src/host.rs`, read the slow and obvious way.
fn reading(value: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (name, port) = if value.first() == Some(&b'[') {
        let close = value.iter().position(|&b| b == b']')?;
        let (literal, rest) = value.split_at(close + 1);
        std::str::from_utf8(&literal[1..close]).ok()?.parse::<Ipv6Addr>().ok()?;
        match rest {
            [] => (literal, None),
            [b':', port @ ..] => (literal, Some(port)),
            _ => return None,
        }
    } else {
        let (name, port) = match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        };
        let mut labels: Vec<&[u8]> = name.split(|&b| b == b'.').collect();
        // One final dot (`example.com.`) ends the name; it opens no empty label.
        if labels.len() > 1 && labels.last().is_some_and(|label| label.is_empty()) {
            labels.pop();
        }
        let label_byte = |b: &u8| b.is_ascii_alphanumeric() || b"-_~".contains(b);
        if labels
            .iter()
            .any(|label| label.is_empty() || !label.iter().all(label_byte))
        {
            return None;
        }
        (name, port)
    };
    let port = match port {
        None | Some([]) => None,
        Some(digits) if digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit) => {
            Some(std::str::from_utf8(digits).ok()?.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((name, port))
}

fn request(version: Version, target: &str, host: &HeaderValue) -> Request<()> {
    let mut request = Request::builder().version(version);
    request = match target.parse::<Uri>() {
        Ok(uri) => request.uri(uri),
        Err(error) => panic!("{target:?} is no request target: {error}"),
    };
    match request.header(http::header::HOST, host).body(()) {
        Ok(request) => request,
        Err(error) => panic!("{target:?}, Host {host:?}: {error}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let accepted = is_host(data);
    let read = reading(data);
    assert_eq!(
        accepted,
        read.is_some(),
        "is_host and the grammar disagree on {:?}",
        String::from_utf8_lossy(data)
    );
    // hyper hands on any value a `HeaderValue` holds; nothing else reaches the check.
    let Ok(header) = HeaderValue::from_bytes(data) else {
        assert!(!accepted, "{data:?} accepted, but it is no header value");
        return;
    };
    let Some((name, port)) = read else {
        for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
            let refused = request_host(&request(version, "/x", &header));
            assert_eq!(refused, Err(InvalidHost::Malformed), "{version:?} {header:?}");
        }
        return;
    };

    let authority = Authority::try_from(data).unwrap_or_else(|e| panic!("{header:?} is no Authority: {e}"));
    assert_eq!(authority.host().as_bytes(), name, "{header:?}: another host for http");
    assert_eq!(authority.port_u16(), port, "{header:?}: another port for http");

    // The grammar admits ASCII alone.
    let host = header.to_str().expect("an accepted host is ASCII");
    for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
        let passed = request_host(&request(version, "/x", &header));
        assert_eq!(passed, Ok(Some(header.clone())), "{version:?} origin form");
    }
    let absolute = format!("http://{host}/x");
    let elsewhere = HeaderValue::from_static("elsewhere.example");
    let passed = request_host(&request(Version::HTTP_11, &absolute, &elsewhere));
    assert_eq!(passed, Ok(Some(header.clone())), "the target's authority replaces Host");
    let other_case = HeaderValue::from_str(&host.to_ascii_uppercase()).expect("still ASCII");
    let passed = request_host(&request(Version::HTTP_2, &absolute, &other_case));
    assert_eq!(passed, Ok(Some(header.clone())), ":authority and Host in another case");
});
