//! Request paths as the public-path check reads them: whether a raw path is
//! unambiguous ([`check`]), and what the most liberal upstream would make of it
//! ([`normalise`]).
//!
//! # Why an ambiguous path is never public
//!
//! portcullis decides on the path it receives and forwards those same bytes. When the
//! upstream reads them differently, a path that looks public here can name a protected
//! resource there. Servers disagree on exactly the forms that matter:
//!
//! - dot segments: `/public/../admin` is `/admin` to nginx and most routers, and
//!   `%2e%2e` is `..` to servers that decode before they resolve (and to WHATWG URL
//!   parsers);
//! - `;` path parameters: Tomcat and Spring drop everything from `;` to the next `/` of
//!   a segment, so `/public/..;/admin` is `/admin` to them and `/public;x/` is `/public/`;
//! - `//`: nginx merges slashes by default (`merge_slashes on`), many apps do not;
//! - `\`: IIS and some Windows-hosted and Node servers read it as `/`;
//! - percent-encoded `/`, `\`, `.`, `;`, `%` itself (double decoding) and control bytes:
//!   some servers decode before routing, some after, some twice.
//!
//! oauth2-proxy's `skip_auth_routes` has had authentication bypasses of this family,
//! where the allow-list matched a different string than the upstream routed on
//! (GHSA-7rh7-c77v-6434: the query string; GHSA-pxq7-h93f-9jrg: a `#`). Rather than
//! guess which reading an upstream uses, portcullis treats a path that could be read two
//! ways as not public: it then needs a session like any other path (and is forwarded
//! unchanged for a signed-in user). Browsers and ordinary clients never send such paths
//! for a public asset, so nothing legitimate is lost.
//!
//! Unambiguous means: an absolute path whose bytes are letters, digits and
//! `-._~!$&'()*+,=:@/`, with no empty segment (`//`) and no segment made only of dots
//! (`.`, `..`, and `...`, which Windows servers trim to nothing). Every percent-escape
//! makes a path ambiguous, even one of an unreserved letter (`/publi%63/`): that is the
//! simplest rule, and it can only err on the side of asking for a login. Such a path
//! is its own normal form, so it is matched as it is, without allocating.

use std::borrow::Cow;

/// Why a path is not unambiguous. Only for logs and tests: every variant means the
/// same thing, "not public".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    /// Does not start with `/` (`*` of `OPTIONS *`, an empty path).
    NotAbsolute,
    /// An empty segment: `//`.
    EmptySegment,
    /// A segment made only of dots: `.`, `..`, `...`.
    DotSegment,
    /// A `%` escape, whatever it encodes.
    PercentEscape,
    /// `;`, which starts path parameters in Tomcat and Spring.
    Semicolon,
    /// `\`, a separator on Windows servers.
    Backslash,
    /// Any other byte outside the unambiguous set: controls, space, `"<>[]^`{|}`, `?`,
    /// `#`, anything not ASCII.
    OtherByte,
}

/// Bytes an unambiguous path may contain besides `/`: RFC 3986 `pchar` without `%`
/// (escapes) and `;` (path parameters).
const ALLOWED: [bool; 256] = allowed_bytes();

const fn allowed_bytes() -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            );
        b += 1;
    }
    table
}

/// `Ok` when `path` can be read only one way (see the module documentation). One pass
/// over the bytes, no allocation.
pub fn check(path: &str) -> Result<(), Ambiguity> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(Ambiguity::NotAbsolute);
    }
    // The segment in progress starts after the last `/`; `only_dots` until it has another byte.
    let mut segment_start = 1;
    let mut only_dots = true;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        if b == b'/' {
            if i == segment_start {
                return Err(Ambiguity::EmptySegment);
            }
            if only_dots {
                return Err(Ambiguity::DotSegment);
            }
            segment_start = i + 1;
            only_dots = true;
        } else if ALLOWED[usize::from(b)] {
            only_dots &= b == b'.';
        } else {
            return Err(match b {
                b'%' => Ambiguity::PercentEscape,
                b';' => Ambiguity::Semicolon,
                b'\\' => Ambiguity::Backslash,
                _ => Ambiguity::OtherByte,
            });
        }
    }
    // The last segment may be empty (`/`, `/static/`), but not only dots (`/public/..`).
    if segment_start < bytes.len() && only_dots {
        return Err(Ambiguity::DotSegment);
    }
    Ok(())
}

/// `path` as the most liberal upstream would read it: percent-decoded once, `\` taken
/// as `/`, `;parameters` cut from every segment, empty and `.` segments dropped, `..`
/// resolved (RFC 3986 §5.2.4, never above the root), a trailing `/` kept.
///
/// Borrowed when `path` passes [`check`]: an unambiguous path is its own normal form.
/// Used to show, in logs, where an ambiguous path would have led.
pub fn normalise(path: &str) -> Cow<'_, str> {
    if check(path).is_ok() {
        return Cow::Borrowed(path);
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split(|b| *b == b'/' || *b == b'\\') {
        // `split` yields at least one piece, so there is always a first.
        let segment = segment.split(|b| *b == b';').next().unwrap_or_default();
        trailing_slash = matches!(segment, b"" | b"." | b"..");
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            named => segments.push(named),
        }
    }
    let mut out = Vec::with_capacity(decoded.len() + 1);
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push(b'/');
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_are_unambiguous_and_their_own_normal_form() {
        for path in [
            "/",
            "/public/",
            "/public/a.css",
            "/static/app.3f2a9c.js",
            "/robots.txt",
            "/a/b/c/",
            "/.well-known/security.txt",
            "/files/report-2026_v2~draft.pdf",
            "/users/@me",
            "/a:b/c=d/e,f/(g)/h!/i$/j&k/'l'/m*/n+",
            "/.hidden",
            "/x..y/..z/a..",
        ] {
            assert_eq!(check(path), Ok(()), "{path}");
            assert!(matches!(normalise(path), Cow::Borrowed(p) if p == path), "{path}");
        }
    }

    #[test]
    fn every_form_servers_read_differently_is_ambiguous() {
        use Ambiguity::*;
        for (path, why) in [
            ("", NotAbsolute),
            ("*", NotAbsolute),
            ("public/x", NotAbsolute),
            ("/public/../admin", DotSegment),
            ("/public/./x", DotSegment),
            ("/public/..", DotSegment),
            ("/public/.", DotSegment),
            ("/public/.../x", DotSegment),
            ("/..", DotSegment),
            ("/public/%2e%2e/admin", PercentEscape),
            ("/public/%2E%2E/admin", PercentEscape),
            ("/public/.%2e/admin", PercentEscape),
            ("/public%2fx", PercentEscape),
            ("/public%2Fx", PercentEscape),
            ("/public%5cx", PercentEscape),
            ("/public/%252e%252e/admin", PercentEscape),
            ("/public/%00", PercentEscape),
            ("/publi%63/x", PercentEscape),
            ("/public//x", EmptySegment),
            ("//public/x", EmptySegment),
            ("/public;x/", Semicolon),
            ("/public/..;/admin", Semicolon),
            ("/public/x;jsessionid=1", Semicolon),
            ("/public\\x", Backslash),
            ("/public/\\..\\admin", Backslash),
            ("/public/x y", OtherByte),
            ("/public/\tx", OtherByte),
            ("/public/x?y", OtherByte),
            ("/public/x#y", OtherByte),
            ("/public/\u{e9}", OtherByte),
            ("/public/{x}", OtherByte),
            ("/public/x|y", OtherByte),
        ] {
            assert_eq!(check(path), Err(why), "{path:?}");
        }
    }

    #[test]
    fn normalising_reads_the_path_as_the_most_liberal_upstream() {
        for (path, read) in [
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/public/..;/admin", "/admin"),
            ("/public;x/y", "/public/y"),
            ("/public//x", "/public/x"),
            ("//public/x", "/public/x"),
            ("/public%2fx", "/public/x"),
            ("/public\\x", "/public/x"),
            ("/public/%5c..%5cadmin", "/admin"),
            ("/a/./b/", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/..", "/"),
            ("*", "/*"),
            ("/publi%63/x", "/public/x"),
            ("/%ff/x%", "/\u{fffd}/x%"),
        ] {
            assert_eq!(normalise(path), read, "{path:?}");
        }
    }
}
