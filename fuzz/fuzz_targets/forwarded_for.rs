//! The client address behind trusted proxies, from `X-Forwarded-For`. Whatever the
//! chain holds, the answer is the direct peer or an address the chain names; a peer
//! that is not a trusted proxy is never overruled by what it sent.
//!
//! Input: the first byte picks the peer, the rest is `X-Forwarded-For` headers split at
//! 0xFF (values hyper would refuse are left out).
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use portcullis::proxy::client_ip;

static TRUSTED: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]
        .iter()
        .map(|n| n.parse().expect("a valid network"))
        .collect()
});

const PEERS: [&str; 5] = ["10.0.0.1", "127.0.0.1", "::ffff:10.1.2.3", "fd00::1", "203.0.113.9"];

/// Every address written in the chain, in any of the forms a proxy may use.
fn named_addresses(headers: &HeaderMap) -> Vec<IpAddr> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .map(|entry| entry.trim_matches(|c| c == ' ' || c == '\t'))
        .filter_map(|entry| {
            entry
                .parse::<IpAddr>()
                .ok()
                .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
                .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        })
        .map(|ip| ip.to_canonical())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let peer: IpAddr = PEERS[usize::from(pick) % PEERS.len()].parse().expect("a valid address");
    let mut headers = HeaderMap::new();
    for part in rest.split(|&b| b == 0xFF) {
        if let Ok(value) = HeaderValue::from_bytes(part) {
            headers.append("x-forwarded-for", value);
        }
    }
    let client = client_ip(peer, &headers, &TRUSTED);
    let peer = peer.to_canonical();
    if !TRUSTED.iter().any(|net| net.contains(&peer)) {
        assert_eq!(client, peer, "an untrusted peer was overruled by its own header");
        return;
    }
    assert!(
        client == peer || named_addresses(&headers).contains(&client),
        "{client} is neither the peer nor in the chain {headers:?}"
    );
    assert_eq!(client, client.to_canonical());
});
