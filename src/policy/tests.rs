//! The policy's decisions end to end, without sockets: paths as a client sends them.

use http::Uri;

use super::*;

fn policy(public: &[&str]) -> Policy {
    Policy::new(&PolicyConfig {
        public_paths: public.iter().map(|p| p.to_string()).collect(),
        allowed_groups: Vec::new(),
        allowed_email_domains: Vec::new(),
    })
}

#[track_caller]
fn decide(policy: &Policy, target: &str) -> Decision {
    let uri: Uri = target
        .parse()
        .unwrap_or_else(|e| panic!("{target:?} is not a request target: {e}"));
    policy.decide(&uri)
}

#[test]
fn public_paths_are_public_as_written() {
    let policy = policy(&["/public/", "/robots.txt"]);
    for target in [
        "/public/",
        "/public/x",
        "/public/css/site.css",
        "/robots.txt",
        "/public/x?y=1",
        "/robots.txt?v=2",
        "http://app.example/public/x",
    ] {
        assert_eq!(decide(&policy, target), Decision::Public, "{target}");
    }
}

#[test]
fn queries_are_ignored_for_matching() {
    let policy = policy(&["/public/", "/robots.txt"]);
    for target in [
        "/admin?/public/",
        "/admin?x=/public/x",
        "/admin?/robots.txt",
        "/?../public/x",
    ] {
        assert_eq!(decide(&policy, target), Decision::Protected, "{target}");
    }
    assert_eq!(
        decide(&policy, "/public/x?y=../../admin"),
        Decision::Public,
        "a query cannot move the path"
    );
}

#[test]
fn bypass_tricks_are_never_public() {
    let policy = policy(&["/public/", "/robots.txt"]);
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%2e./admin",
        "/public/./x",
        "/public/x/..",
        "/public//x",
        "//public/x",
        "/public;x/",
        "/public/..;/admin",
        "/public/x;jsessionid=0",
        "/public%2fx",
        "/public%2Fx",
        "/public%5cx",
        "/public\\x",
        "/public/\\..\\admin",
        "/public/%252e%252e/admin",
        "/public/%00",
        "/public/%0d%0aX:1",
        "/publi%63/x",
        "/robots.txt;.html",
        "/robots%2etxt",
        "/public/...",
        "/public/\"x\"",
        "/public/{x}",
        "*",
    ] {
        assert_eq!(decide(&policy, target), Decision::Protected, "{target:?}");
    }
}

#[test]
fn matching_is_case_sensitive_and_exact_or_prefix() {
    let policy = policy(&["/public/", "/robots.txt"]);
    for target in [
        "/PUBLIC/x",
        "/Public/x",
        "/public",
        "/publicx/y",
        "/robots.txt/x",
        "/Robots.txt",
        "/",
    ] {
        assert_eq!(decide(&policy, target), Decision::Protected, "{target}");
    }
}

#[test]
fn without_public_paths_everything_is_protected() {
    let policy = policy(&[]);
    for target in ["/", "/public/x", "/robots.txt"] {
        assert_eq!(decide(&policy, target), Decision::Protected, "{target}");
    }
}

/// Counts the allocations of the current thread, so a test can show that a piece of
/// the hot path allocates nothing. Other threads (other tests) are not counted.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: every call is passed to `System` unchanged; the counter is a plain
    // thread-local `Cell` with a const initialiser, which never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            System.alloc(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            System.realloc(ptr, layout, new_size)
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Allocations made by `f` on this thread.
    pub fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
        let before = ALLOCATIONS.with(Cell::get);
        let value = f();
        (value, ALLOCATIONS.with(Cell::get) - before)
    }
}

#[test]
fn deciding_an_ordinary_path_does_not_allocate() {
    let policy = policy(&["/favicon.ico", "/robots.txt", "/static/", "/public/"]);
    let (_, counted) = counting::allocations(|| std::hint::black_box(vec![1u8]));
    assert_eq!(counted, 1, "the counter sees allocations");
    for (target, expected) in [
        ("/public/css/site.css?v=3", Decision::Public),
        ("/robots.txt", Decision::Public),
        ("/app/reports/2026?q=x", Decision::Protected),
        ("/", Decision::Protected),
    ] {
        let uri: Uri = target.parse().expect("a request target");
        let (decision, allocations) = counting::allocations(|| policy.decide(&uri));
        assert_eq!(decision, expected, "{target}");
        assert_eq!(allocations, 0, "deciding {target} allocated");
    }
    // The normal form of an unambiguous path is the path itself, borrowed.
    let (_, allocations) = counting::allocations(|| path::normalise("/static/app.3f2a.js").len());
    assert_eq!(allocations, 0);
}
