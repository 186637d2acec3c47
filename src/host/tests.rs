use http::uri::Authority;

use super::*;

/// Hosts a browser, curl or a load balancer sends, in every form the grammar has.
const HOSTS: [&str; 16] = [
    "localhost",
    "localhost:4180",
    "app.example.com",
    "APP.Example.COM",
    "app.example.com.",
    "xn--bcher-kva.example",
    "docker_service-1",
    "a~b",
    "127.0.0.1",
    "127.0.0.1:8080",
    "app.example.com:65535",
    "app.example.com:",
    "[::1]",
    "[::1]:8443",
    "[2001:db8::ff00:42:8329]",
    "[::ffff:192.0.2.1]:80",
];

/// Values hyper lets through as a `Host` (visible ASCII and spaces), none of them a host.
const NOT_HOSTS: [&str; 36] = [
    "",
    ":80",
    "a:b:c",
    "bücher.example",
    " ",
    "a b",
    "a\tb",
    "evil/path",
    "evil.example/",
    "evil.example?",
    "evil.example#x",
    "x@y",
    "user:pass@app.example.com",
    "@app.example.com",
    "a,b",
    "app.example.com, evil.example",
    "a;b",
    "a=b",
    "a!b",
    "%61pp.example.com",
    "a\"b",
    "*",
    ".",
    "..",
    "a..b",
    ".app.example.com",
    "app.example.com..",
    "a:b",
    "a:80:80",
    "a:+80",
    "a:65536",
    "a:000080",
    "[::1",
    "[::1]x",
    "[fe80::1%25eth0]",
    "[v1.fe]",
];

#[test]
fn hosts_of_every_form_are_hosts() {
    for host in HOSTS {
        assert!(is_host(host.as_bytes()), "{host:?} refused");
    }
}

#[test]
fn lists_paths_user_information_spaces_and_bad_ports_are_not_hosts() {
    for value in NOT_HOSTS.into_iter().chain(["[1.2.3.4]", "[::1]:x", "a:-1"]) {
        assert!(!is_host(value.as_bytes()), "{value:?} accepted");
    }
}

#[test]
fn every_host_is_an_authority_with_the_same_host_and_port() {
    for host in HOSTS {
        let authority = Authority::try_from(host).unwrap_or_else(|e| panic!("{host:?}: {e}"));
        let (name, port) = split(host.as_bytes()).unwrap();
        assert_eq!(authority.host().as_bytes(), name, "{host:?}");
        assert_eq!(authority.port_u16(), port, "{host:?}");
        HeaderValue::from_str(host).unwrap();
    }
}

fn request(version: Version, target: &str, hosts: &[&str]) -> Request<()> {
    let mut request = Request::builder().version(version).uri(target);
    for host in hosts {
        request = request.header(HOST, *host);
    }
    request.body(()).unwrap()
}

fn host_of(version: Version, target: &str, hosts: &[&str]) -> Result<Option<String>, InvalidHost> {
    request_host(&request(version, target, hosts)).map(|host| host.map(|h| h.to_str().unwrap().to_owned()))
}

const H10: Version = Version::HTTP_10;
const H11: Version = Version::HTTP_11;
const H2: Version = Version::HTTP_2;

#[test]
fn an_http_1_1_request_names_its_host_header_byte_for_byte() {
    assert_eq!(
        host_of(H11, "/x", &["App.Example.com:8443"]),
        Ok(Some("App.Example.com:8443".into()))
    );
}

#[test]
fn an_http_1_1_request_without_host_is_refused_and_an_http_1_0_one_names_none() {
    assert_eq!(host_of(H11, "/x", &[]), Err(InvalidHost::Missing));
    assert_eq!(host_of(H10, "/x", &[]), Ok(None));
    assert_eq!(
        host_of(H10, "/x", &["app.example.com"]),
        Ok(Some("app.example.com".into()))
    );
}

#[test]
fn two_host_headers_are_refused_even_when_they_agree() {
    for version in [H10, H11, H2] {
        let repeated = host_of(version, "/x", &["app.example.com", "app.example.com"]);
        assert_eq!(repeated, Err(InvalidHost::Repeated), "{version:?}");
        let repeated = host_of(version, "/x", &["app.example.com", "evil.example"]);
        assert_eq!(repeated, Err(InvalidHost::Repeated), "{version:?}");
    }
}

#[test]
fn a_host_header_that_is_no_host_is_refused_in_every_version() {
    for version in [H10, H11, H2] {
        for value in NOT_HOSTS {
            assert_eq!(
                host_of(version, "/x", &[value]),
                Err(InvalidHost::Malformed),
                "{version:?} {value:?}"
            );
        }
    }
}

#[test]
fn an_absolute_form_target_replaces_the_host_header() {
    let host = host_of(H11, "http://app.example.com:8080/x?y", &["evil.example"]);
    assert_eq!(host, Ok(Some("app.example.com:8080".into())));
    // It still needs a Host, once and valid (RFC 9112 §3.2).
    assert_eq!(host_of(H11, "http://app.example.com/x", &[]), Err(InvalidHost::Missing));
    let malformed = host_of(H11, "http://app.example.com/x", &["evil.example/x"]);
    assert_eq!(malformed, Err(InvalidHost::Malformed));
    assert_eq!(
        host_of(H10, "http://app.example.com/x", &[]),
        Ok(Some("app.example.com".into()))
    );
}

#[test]
fn a_target_authority_with_user_information_or_a_list_is_refused() {
    for target in ["http://evil.example@app.example.com/x", "http://a,b/x", "http://a:b/x"] {
        for version in [H11, H2] {
            let host = host_of(version, target, &["app.example.com"]);
            assert_eq!(host, Err(InvalidHost::MalformedAuthority), "{version:?} {target}");
        }
    }
}

#[test]
fn http_2_names_its_authority_or_else_its_host_header() {
    let authority = host_of(H2, "https://app.example.com/x", &[]);
    assert_eq!(authority, Ok(Some("app.example.com".into())));
    assert_eq!(
        host_of(H2, "/x", &["app.example.com"]),
        Ok(Some("app.example.com".into()))
    );
    assert_eq!(host_of(H2, "/x", &[]), Ok(None));
}

#[test]
fn http_2_host_and_authority_must_name_the_same_host_and_port() {
    for (target, host) in [
        ("https://app.example.com/x", "app.example.com"),
        ("https://app.example.com/x", "APP.example.COM"),
        ("https://app.example.com/x", "app.example.com:443"),
        ("https://app.example.com:443/x", "app.example.com"),
        ("http://app.example.com/x", "app.example.com:80"),
        ("http://app.example.com:8080/x", "app.example.com:8080"),
        ("http://[::1]:8080/x", "[::1]:8080"),
    ] {
        let authority = target.split('/').nth(2).unwrap();
        assert_eq!(
            host_of(H2, target, &[host]),
            Ok(Some(authority.into())),
            "{target} {host}"
        );
    }
    for (target, host) in [
        ("https://app.example.com/x", "evil.example"),
        ("https://app.example.com/x", "app.example.com:80"),
        ("http://app.example.com/x", "app.example.com:443"),
        ("http://app.example.com:8080/x", "app.example.com"),
        ("https://app.example.com/x", "app.example.com.evil.example"),
    ] {
        assert_eq!(
            host_of(H2, target, &[host]),
            Err(InvalidHost::Conflicting),
            "{target} {host}"
        );
    }
}

#[test]
fn an_authority_form_target_is_refused_it_names_no_path() {
    for target in ["app.example.com:80", "app.example.com:443", "[::1]:8080"] {
        let host = host_of(H11, target, &["app.example.com"]);
        assert_eq!(host, Err(InvalidHost::AuthorityForm), "{target}");
    }
}

#[test]
fn without_a_scheme_no_port_counts_as_a_default_one() {
    // Only a scheme says which port is the default one (RFC 3986 §6.2.3).
    assert!(!same_host(b"app.example.com", b"app.example.com:80", None));
    assert!(!same_host(b"app.example.com:443", b"app.example.com", None));
    assert!(same_host(b"app.example.com:80", b"APP.example.com:80", None));
    assert!(same_host(
        b"app.example.com",
        b"app.example.com:80",
        Some(&Scheme::HTTP)
    ));
}
