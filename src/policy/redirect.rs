//! Post-login return targets: which `rd` values are local paths a browser resolves on
//! this origin.

/// Returns `target` if it is a local path that a browser will resolve on this origin,
/// `None` otherwise.
///
/// Browsers treat `//host`, `/\host` and `\\host` as other origins, and some decode
/// `%2F`/`%5C` before deciding; every such form is refused, as are control characters
/// (header splitting) and anything that is not an absolute path.
pub fn local_return_path(target: &str) -> Option<&str> {
    if target.as_bytes().first() != Some(&b'/') || target.len() > 4096 {
        return None;
    }
    // Decode percent-escapes repeatedly, so `%252F` cannot smuggle a slash past a single decode.
    let mut decoded = target.to_owned();
    for _ in 0..3 {
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    // Decoding keeps every byte that was not part of an escape, so this also refuses raw
    // control characters and backslashes. A raw space fails the parse below.
    let decoded_bytes = decoded.as_bytes();
    if decoded_bytes.iter().any(|b| b.is_ascii_control() || *b == b'\\') {
        return None;
    }
    if decoded_bytes.get(1) == Some(&b'/') {
        return None;
    }
    // The target must parse as an origin-form request target.
    target.parse::<http::uri::PathAndQuery>().ok()?;
    Some(target)
}

fn percent_decode(input: &str) -> String {
    percent_encoding::percent_decode_str(input)
        .decode_utf8_lossy()
        .into_owned()
}

/// The return paths to try, longest first, when the whole of `path` is too long to keep
/// (in a cookie): `path` itself, then without its query, then `/`.
pub fn shortened_return_paths(path: &str) -> impl Iterator<Item = &str> {
    let without_query = path
        .split_once('?')
        .map(|(path, _)| path)
        .filter(|p| !p.is_empty() && *p != "/");
    std::iter::once(path)
        .chain(without_query)
        .chain((path != "/").then_some("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_accepted_as_they_are() {
        for target in ["/", "/reports?year=2026&q=a%20b", "/a/b/c#frag", "/search?q=%2Fetc"] {
            assert_eq!(local_return_path(target), Some(target), "{target}");
        }
    }

    #[test]
    fn targets_longer_than_4_kib_are_refused() {
        let longest = format!("/{}", "a".repeat(4095));
        assert_eq!(local_return_path(&longest), Some(longest.as_str()));
        assert_eq!(local_return_path(&format!("{longest}a")), None);
    }

    #[test]
    fn other_origins_and_tricks_are_refused() {
        for target in [
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example",
            "http:/evil.example",
            "evil.example",
            "",
            "/%2Fevil.example",
            "/%2fevil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%252F%252Fevil.example",
            "/path\r\nSet-Cookie: x=y",
            "/%0d%0aSet-Cookie:x",
            "/\tevil",
            "/a b",
            "/%00",
            "javascript:alert(1)",
            // Valid request targets, but not absolute paths.
            "?next=/admin",
            "#top",
            "*",
        ] {
            assert_eq!(local_return_path(target), None, "{target:?}");
        }
    }

    #[test]
    fn shortened_return_paths_drop_the_query_then_everything() {
        let all = |p| shortened_return_paths(p).collect::<Vec<_>>();
        assert_eq!(all("/a/b?q=1&r=2"), ["/a/b?q=1&r=2", "/a/b", "/"]);
        assert_eq!(all("/a/b"), ["/a/b", "/"]);
        assert_eq!(all("/?q=1"), ["/?q=1", "/"]);
        assert_eq!(all("/"), ["/"]);
    }
}
