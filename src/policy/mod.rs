//! Decisions about where a request may go: which post-login targets are local, and
//! which requests count as browser navigations. Access rules (public paths, groups,
//! email domains) join here.

mod client;
mod redirect;

pub use client::{is_browser_navigation, prefers_json};
pub use redirect::local_return_path;
