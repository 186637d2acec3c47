//! The policy phase: what a request needs before it may reach the upstream, and the
//! other decisions about where a request may go.
//!
//! # Layout
//! - `mod.rs`: [`Policy`], built once from `[policy]`, and its two questions, asked in
//!   this order by the phase driver (`app`):
//!   1. [`Policy::decide`], before the session phase: is the path public
//!      ([`Decision::Public`]: forward without a session and without identity), or
//!      does it need a session ([`Decision::Protected`])?
//!   2. [`Policy::authorize`], after it: may this signed-in user go on, or is it
//!      [`Forbidden`] (`403`)?
//! - [`path`]: whether a request path is unambiguous, and its normal form; why an
//!   ambiguous path is never public.
//! - `public`: the public-path matcher (exact entries and `/`-terminated prefixes).
//! - `access`: the access [`Rule`] (allowed groups and email domains), its verdict
//!   [`Access`] kept in each session, and [`Forbidden`].
//! - `redirect`: which post-login targets are local paths.
//! - `client`: browser navigation or API call; JSON or HTML answers.
//!
//! Everything here fails closed: an ambiguous path is not public, a session that was
//! never evaluated is refused, a claim of an unexpected shape does not match.
//!
//! One rule applies to every protected path today. Per-path (host, method) rules will
//! pair a matcher with a [`Rule`]: `decide` then names the rule that applies, and each
//! session keeps one verdict per rule.

mod access;
mod client;
pub mod path;
mod public;
mod redirect;

#[cfg(test)]
mod tests;

pub use access::{Access, Forbidden, Refusal, Rule};
pub use client::{accept_prefers_json, is_browser_navigation, prefers_json};
pub use public::PublicPaths;
pub use redirect::{local_return_path, shortened_return_paths};

use http::Uri;

use crate::config::PolicyConfig;
use crate::session::Session;

/// What a request needs, decided from its path before any session is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A public path: forward without looking up a session and without identity headers
    /// (client-sent ones are still removed).
    Public,
    /// Needs a session that satisfies the access rule.
    Protected,
}

/// The access policy, built once at startup.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    public: PublicPaths,
    rule: Rule,
}

impl Policy {
    pub fn new(config: &PolicyConfig) -> Self {
        Policy {
            public: PublicPaths::new(&config.public_paths),
            rule: Rule::new(&config.allowed_groups, &config.allowed_email_domains),
        }
    }

    /// Whether `uri` is public. Only the path counts, never the query. A path is public
    /// when it is unambiguous (see [`path`]) and matches an entry; it is then its own
    /// normal form, so this allocates nothing.
    pub fn decide(&self, uri: &Uri) -> Decision {
        if self.public.is_empty() {
            return Decision::Protected;
        }
        let raw = uri.path();
        match path::check(raw) {
            Ok(()) if self.public.matches(raw) => Decision::Public,
            Ok(()) => Decision::Protected,
            Err(ambiguity) => {
                // Rare (no browser sends these for a page), so the allocation is fine.
                tracing::debug!(
                    path = raw,
                    reason = ?ambiguity,
                    read_as = %path::normalise(raw),
                    "ambiguous request path is never public",
                );
                Decision::Protected
            }
        }
    }

    /// The rule every session is evaluated against when it is prepared.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// Lets a signed-in user through to `path` (without the query), or says why not.
    /// Reads the verdict prepared with the session: no allocation unless refused.
    pub fn authorize(&self, session: &Session, path: &str) -> Result<(), Forbidden> {
        match session.access {
            Access::Granted => Ok(()),
            Access::Refused(reason) => Err(Forbidden::new(&session.subject, path, reason)),
        }
    }
}
