//! Where a request goes: the upstream's scheme, authority and path prefix, parsed
//! once from the configuration, and the per-request URI rewrite.

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};

use super::ProxyError;
use crate::config::UpstreamTarget;

/// The fixed part of every upstream URI.
#[derive(Debug, Clone)]
pub(super) struct Target {
    scheme: Scheme,
    /// For a unix socket `localhost`. The connector dials it (TCP) or ignores it
    /// (unix); it is the `Host` sent when the client's is not preserved.
    authority: Authority,
    /// `authority` as the `Host` value sent when the client's is not preserved.
    host: HeaderValue,
    /// Path prefix of the upstream URL without its trailing `/` (`""` for none), so
    /// that `/app/` + `/x` gives `/app/x` as nginx's `proxy_pass http://h/app/` does.
    prefix: Box<str>,
}

impl Target {
    pub(super) fn new(target: &UpstreamTarget) -> Result<Self, ProxyError> {
        let url = match target {
            UpstreamTarget::Unix(_) => {
                return Ok(Target {
                    scheme: Scheme::HTTP,
                    authority: Authority::from_static("localhost"),
                    host: HeaderValue::from_static("localhost"),
                    prefix: "".into(),
                })
            }
            UpstreamTarget::Http(url) => url,
        };
        let scheme = match url.scheme() {
            "http" => Scheme::HTTP,
            "https" => Scheme::HTTPS,
            other => {
                return Err(ProxyError::Config(format!(
                    "upstream scheme must be http, https or unix, not {other:?}"
                )))
            }
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ProxyError::Config(
                "the upstream URL must not have a query or fragment".into(),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ProxyError::Config("the upstream URL must not carry credentials".into()));
        }
        // `host_str` brackets IPv6 addresses, as an authority needs.
        let host = url
            .host_str()
            .ok_or_else(|| ProxyError::Config("the upstream URL has no host".into()))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let authority =
            Authority::try_from(authority).map_err(|e| ProxyError::Config(format!("upstream host: {e}")))?;
        let prefix = url.path().trim_end_matches('/');
        // Checked here so that joining it with a valid path cannot fail per request.
        PathAndQuery::try_from(format!("{prefix}/")).map_err(|e| ProxyError::Config(format!("upstream path: {e}")))?;
        Ok(Target {
            scheme,
            host: unshared_header_value(authority.as_str())?,
            authority,
            prefix: prefix.into(),
        })
    }

    /// The upstream URI for a downstream request URI: target scheme, `authority` (the
    /// target's, or for HTTP/2 the `:authority` to send), then [`Self::prefixed_path`].
    pub(super) fn uri_for(&self, original: &Uri, authority: &Authority) -> Result<Uri, ProxyError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority.clone())
            .path_and_query(self.prefixed_path(original)?)
            .build()
            .map_err(|_| ProxyError::BadRequest("request target is not a valid path"))
    }

    /// The origin-form URI of an HTTP/1.1 upstream request ([`Self::prefixed_path`]); the
    /// connection already goes to the target and `Host` names the authority. Without a
    /// prefix an origin-form request URI is passed on as it is, without copying.
    pub(super) fn origin_form(&self, original: &Uri) -> Result<Uri, ProxyError> {
        if self.prefix.is_empty() && original.scheme().is_none() && original.path().starts_with('/') {
            return Ok(original.clone());
        }
        Ok(Uri::from(self.prefixed_path(original)?))
    }

    /// The prefix, then the client's path and query byte for byte (no normalisation: the
    /// upstream must see what the client sent, as policy saw it).
    fn prefixed_path(&self, original: &Uri) -> Result<PathAndQuery, ProxyError> {
        let path_and_query = original.path_and_query().map_or("/", PathAndQuery::as_str);
        if !path_and_query.starts_with('/') {
            // `OPTIONS *` and authority-form targets have no path to forward.
            return Err(ProxyError::BadRequest("request target is not a path"));
        }
        if self.prefix.is_empty() {
            PathAndQuery::try_from(path_and_query)
        } else {
            PathAndQuery::try_from(format!("{}{path_and_query}", self.prefix))
        }
        .map_err(|_| ProxyError::BadRequest("request target is not a valid path"))
    }

    pub(super) fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    pub(super) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The target's authority as a `Host` value.
    pub(super) fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// Where the connector dials: `scheme://authority/`.
    pub(super) fn dial_uri(&self) -> Result<Uri, ProxyError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| ProxyError::Config(format!("upstream URL: {e}")))
    }
}

/// A header value whose clones share no reference count: every request on every core
/// sends a copy, and a shared count would be a cache line all of them write. Its bytes
/// are made `'static` by leaking them, once per configured upstream: they would live as
/// long as the process anyway.
fn unshared_header_value(text: &str) -> Result<HeaderValue, ProxyError> {
    let text: &'static str = Box::leak(text.to_owned().into_boxed_str());
    HeaderValue::from_maybe_shared(Bytes::from_static(text.as_bytes()))
        .map_err(|_| ProxyError::Config(format!("upstream host {text:?} is not a valid Host value")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn target(url: &str) -> Target {
        Target::new(&UpstreamTarget::Http(Url::parse(url).unwrap())).unwrap()
    }

    #[test]
    fn path_and_query_are_kept_byte_for_byte_after_the_prefix() {
        let t = target("http://10.0.0.1:8080/app/");
        let uri: Uri = "/a%2Fb/../c;x?q=%20&r".parse().unwrap();
        assert_eq!(
            t.uri_for(&uri, t.authority()).unwrap().to_string(),
            "http://10.0.0.1:8080/app/a%2Fb/../c;x?q=%20&r"
        );
        let t = target("https://[::1]/");
        let uri: Uri = "https://public.example/x?y".parse().unwrap();
        assert_eq!(t.uri_for(&uri, t.authority()).unwrap().to_string(), "https://[::1]/x?y");
    }

    #[test]
    fn origin_form_keeps_path_and_query_after_the_prefix() {
        let t = target("http://10.0.0.1:8080/app/");
        let uri: Uri = "/a%2Fb/../c;x?q=%20&r".parse().unwrap();
        assert_eq!(t.origin_form(&uri).unwrap().to_string(), "/app/a%2Fb/../c;x?q=%20&r");
        let t = target("http://10.0.0.1:8080");
        assert_eq!(t.origin_form(&uri).unwrap().to_string(), "/a%2Fb/../c;x?q=%20&r");
        // HTTP/2 clients send an absolute URI; the upstream gets only the path.
        let uri: Uri = "https://public.example/x?y".parse().unwrap();
        assert_eq!(t.origin_form(&uri).unwrap().to_string(), "/x?y");
        let uri: Uri = "*".parse().unwrap();
        assert!(matches!(t.origin_form(&uri), Err(ProxyError::BadRequest(_))));
    }

    #[test]
    fn the_targets_host_value_is_its_authority_and_clones_without_a_shared_count() {
        for (url, host) in [
            ("http://10.0.0.1:8080/app/", "10.0.0.1:8080"),
            ("https://[::1]/", "[::1]"),
            ("http://Upstream.Example:80/", "upstream.example"),
        ] {
            let t = target(url);
            assert_eq!(t.host(), host, "{url}");
            assert_eq!(t.dial_uri().unwrap().authority().map(Authority::as_str), Some(host));
            // Made once: a clone is the same bytes, not a copy made per request.
            let copy = t.host().clone();
            assert_eq!(copy.as_bytes().as_ptr(), t.host().as_bytes().as_ptr());
        }
        let unix = Target::new(&UpstreamTarget::Unix("/run/app.sock".into())).unwrap();
        assert_eq!(unix.host(), "localhost");
    }

    #[test]
    fn asterisk_form_is_refused() {
        let t = target("http://u");
        let uri: Uri = "*".parse().unwrap();
        assert!(matches!(t.uri_for(&uri, t.authority()), Err(ProxyError::BadRequest(_))));
    }

    #[test]
    fn upstream_url_with_query_is_a_configuration_error() {
        let url = Url::parse("http://u/?a=b").unwrap();
        assert!(matches!(
            Target::new(&UpstreamTarget::Http(url)),
            Err(ProxyError::Config(_))
        ));
    }
}
