//! The `[policy]` section: public paths, allowed groups, allowed email domains.
//!
//! Each list comes from a TOML array of strings or, in the environment
//! (`PORTCULLIS_POLICY_PUBLIC_PATHS`, …), from words separated by spaces or commas. A
//! problem names the entry by its position: `policy.public_paths[2]` (counted from 0,
//! in the variable's words too). Duplicates are dropped silently.

use crate::policy::path::{self, Ambiguity};

use super::source::Source;
use super::{PolicyConfig, RoutePaths};

impl PolicyConfig {
    /// Settings that are valid but probably not what was meant, given the requested
    /// `scopes`: a rule on a claim the provider will not send refuses everyone. Logged at
    /// start-up and shown by `portcullis check`; not errors, because some providers send
    /// these claims whatever the scopes.
    pub fn warnings(&self, scopes: &[String]) -> Vec<&'static str> {
        let has = |scope: &str| scopes.iter().any(|s| s == scope);
        let mut warnings = Vec::new();
        if !self.allowed_groups.is_empty() && !has("groups") {
            warnings.push(
                "policy.allowed_groups is set but oidc.scopes lacks `groups`: Authelia then sends no groups claim and every user is refused",
            );
        }
        if !self.allowed_email_domains.is_empty() && !has("email") {
            warnings.push(
                "policy.allowed_email_domains is set but oidc.scopes lacks `email`: Authelia then sends no email claim and every user is refused",
            );
        }
        warnings
    }
}

pub fn policy(src: &mut Source<'_>, routes: &RoutePaths) -> PolicyConfig {
    PolicyConfig {
        public_paths: entries(src, "policy.public_paths", |entry| public_path_problem(entry, routes)),
        allowed_groups: entries(src, "policy.allowed_groups", group_problem),
        allowed_email_domains: entries(src, "policy.allowed_email_domains", domain_problem)
            .into_iter()
            .map(|domain| domain.to_ascii_lowercase())
            .fold(Vec::new(), |mut unique, domain| {
                if !unique.contains(&domain) {
                    unique.push(domain);
                }
                unique
            }),
    }
}

/// The entries of the list at `path` that `problem` accepts, without duplicates; one
/// problem recorded per refused entry.
fn entries(src: &mut Source<'_>, path: &str, problem: impl Fn(&str) -> Option<&'static str>) -> Vec<String> {
    let Some((key, given)) = src.list(path) else {
        return Vec::new();
    };
    let mut kept: Vec<String> = Vec::new();
    for (index, entry) in given.into_iter().enumerate() {
        match problem(&entry) {
            Some(message) => src.problem(format!("{key}[{index}]"), message),
            None if kept.contains(&entry) => {}
            None => kept.push(entry),
        }
    }
    kept
}

/// A public path must be written the one way requests that match it are written: the
/// rules of `policy::path::check`, so an entry can never be one that no unambiguous
/// request matches. It must not be portcullis' own route either.
fn public_path_problem(entry: &str, routes: &RoutePaths) -> Option<&'static str> {
    if entry == "/" {
        return Some("must not be `/`: an entry ending in `/` is a prefix, so this would make the whole app public");
    }
    if let Err(ambiguity) = path::check(entry) {
        return Some(match ambiguity {
            Ambiguity::NotAbsolute => "must be an absolute path, starting with `/`",
            Ambiguity::EmptySegment => "must not contain `//`",
            Ambiguity::DotSegment => "must not contain `.` or `..` segments",
            Ambiguity::PercentEscape => {
                "must not contain `%`: write the path unescaped (a request with percent-escapes is never public)"
            }
            Ambiguity::Semicolon => "must not contain `;`",
            Ambiguity::Backslash => "must not contain `\\`",
            Ambiguity::OtherByte => {
                "may contain only letters, digits and -._~!$&'()*+,=:@/ (no query `?`, fragment `#` or spaces)"
            }
        });
    }
    let under = |base: &str| entry == base || entry.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'));
    if under(&routes.prefix) {
        return Some("is under routes.prefix: portcullis answers those paths itself and never forwards them");
    }
    if under(&routes.callback) {
        return Some("is the redirect URI path (routes.callback), which portcullis answers itself");
    }
    None
}

/// Groups are compared exactly, so surrounding spaces would only make an entry that
/// never matches.
fn group_problem(group: &str) -> Option<&'static str> {
    if group.is_empty() {
        Some("must not be empty")
    } else if group.trim() != group {
        Some("must not start or end with spaces")
    } else if group.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    }
}

/// A host name: labels of letters, digits and `-`, separated by dots.
fn domain_problem(domain: &str) -> Option<&'static str> {
    if domain == "*" {
        return Some("`*` is not a wildcard here: leave policy.allowed_email_domains empty to admit every domain");
    }
    if domain.starts_with('@') {
        return Some("must be a domain without `@`, such as example.com");
    }
    if domain.starts_with("*.") {
        return Some("must be a domain, without `*.`: only the exact domain matches, so list each subdomain");
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Some(
            "must be a domain name such as example.com (letters, digits, `-` and dots; an internationalised domain in its xn-- form)",
        );
    }
    None
}
