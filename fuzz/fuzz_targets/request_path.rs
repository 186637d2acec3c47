//! Request paths as the public-path decision reads them. A path `check` calls
//! unambiguous must be read the same way by every other parser that may route it (the
//! WHATWG URL parser of Node and browsers, `http`'s request-target parser, the liberal
//! reading `normalise` models), so a public prefix can only match paths that are under
//! it for all of them. `normalise` always yields an absolute path with no empty, `.` or
//! `..` segment.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portcullis::policy::path::{check, normalise};
use portcullis::policy::PublicPaths;
use url::Url;

static PUBLIC: LazyLock<PublicPaths> =
    LazyLock::new(|| PublicPaths::new(&["/public/".to_owned(), "/robots.txt".to_owned()]));

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let normal = normalise(path);
    assert!(normal.starts_with('/'), "{path:?} normalised to {normal:?}");
    let segments: Vec<&str> = normal[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        assert!(
            (last || !segment.is_empty()) && *segment != "." && *segment != "..",
            "{path:?} normalised to {normal:?}"
        );
    }

    if check(path).is_err() {
        return;
    }
    assert_eq!(normal, path, "an unambiguous path is its own normal form");
    let whatwg = Url::parse("http://app.example.com")
        .and_then(|base| base.join(path))
        .expect("an unambiguous path is a valid relative reference");
    assert_eq!(whatwg.path(), path, "the WHATWG parser reads {path:?} differently");
    assert!(whatwg.query().is_none() && whatwg.fragment().is_none());
    let target: http::uri::PathAndQuery = path.parse().expect("an unambiguous path is a valid request target");
    assert_eq!(target.path(), path);
    assert_eq!(target.query(), None);
    if PUBLIC.matches(path) {
        assert!(path == "/robots.txt" || path.starts_with("/public/"), "{path:?}");
    }
});
