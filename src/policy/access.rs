//! Who may use the app once signed in: the access [`Rule`] (allowed groups, allowed
//! email domains), its verdict on a session ([`Access`]), and the error that refuses a
//! request ([`Forbidden`]).
//!
//! A rule is evaluated when a session is prepared (at login and after each refresh,
//! the only times its claims change), and the verdict is kept in the session. The
//! request path then only reads an enum: no claim parsing, no allocation. Per-path
//! rules will keep this shape, with one verdict per rule.

use std::fmt;

use serde_json::Value;

use crate::oidc::Claims;

/// What a signed-in user must satisfy. Both lists empty: everyone who can sign in.
/// When both are set, both must hold (as with oauth2-proxy's `--allowed-group` and
/// `--email-domain`).
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// The `groups` claim (Authelia's convention: an array of strings) must contain at
    /// least one of these, compared exactly. Empty: no group needed.
    groups: Box<[Box<str>]>,
    /// The `email` claim must end in `@` and one of these (stored lower case, compared
    /// ignoring ASCII case), and `email_verified`, when present, must be true. Empty:
    /// any email, or none.
    email_domains: Box<[Box<str>]>,
}

/// A rule's verdict on a session. The default is a refusal, so a session that was
/// never evaluated (say, read back from an external store and not prepared) is
/// refused rather than admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Granted,
    Refused(Refusal),
}

impl Default for Access {
    fn default() -> Self {
        Access::Refused(Refusal::NotEvaluated)
    }
}

/// Why a rule refused a session. For the log line only: the response never says which
/// rule failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The session was not evaluated against the rule (a bug, refused to be safe).
    NotEvaluated,
    /// No group of the `groups` claim is in `policy.allowed_groups` (or no such claim).
    NoAllowedGroup,
    /// `policy.allowed_email_domains` is set and the session has no `email` claim.
    NoEmail,
    /// The email's domain is not in `policy.allowed_email_domains`.
    EmailDomainNotAllowed,
    /// `email_verified` is present and not true.
    EmailNotVerified,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotEvaluated => "the session was not evaluated against the access rule",
            Refusal::NoAllowedGroup => "in none of policy.allowed_groups",
            Refusal::NoEmail => "no email claim, and policy.allowed_email_domains is set",
            Refusal::EmailDomainNotAllowed => "email domain not in policy.allowed_email_domains",
            Refusal::EmailNotVerified => "email_verified is not true",
        })
    }
}

impl Rule {
    /// A rule from validated settings (`groups` non-empty strings, `email_domains` host
    /// names). Domains are kept lower case.
    pub fn new(groups: &[String], email_domains: &[String]) -> Self {
        Rule {
            groups: groups.iter().map(|g| g.as_str().into()).collect(),
            email_domains: email_domains
                .iter()
                .map(|d| d.to_ascii_lowercase().into_boxed_str())
                .collect(),
        }
    }

    /// The verdict on a session with these claims (ID token overlaid with userinfo).
    pub fn evaluate(&self, claims: &Claims) -> Access {
        match self.refusal(claims) {
            None => Access::Granted,
            Some(refusal) => Access::Refused(refusal),
        }
    }

    fn refusal(&self, claims: &Claims) -> Option<Refusal> {
        if !self.groups.is_empty() && !self.in_allowed_group(claims.get("groups")) {
            return Some(Refusal::NoAllowedGroup);
        }
        if self.email_domains.is_empty() {
            return None;
        }
        let Some(Value::String(email)) = claims.get("email") else {
            return Some(Refusal::NoEmail);
        };
        if !self.email_domain_allowed(email) {
            return Some(Refusal::EmailDomainNotAllowed);
        }
        // Absent means the provider does not say (Authelia always does); anything but
        // `true` (or the string "true", as some providers send) is taken as unverified.
        match claims.get("email_verified") {
            None | Some(Value::Bool(true)) => None,
            Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => None,
            Some(_) => Some(Refusal::EmailNotVerified),
        }
    }

    /// A string is taken as a single group; other values never match.
    fn in_allowed_group(&self, groups: Option<&Value>) -> bool {
        let allowed = |group: &str| self.groups.iter().any(|a| **a == *group);
        match groups {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(allowed),
            Some(Value::String(group)) => allowed(group),
            _ => false,
        }
    }

    /// The part after the last `@` (a quoted local part may contain `@` itself) must be
    /// one of the domains, and the part before it must not be empty.
    fn email_domain_allowed(&self, email: &str) -> bool {
        let Some((local, domain)) = email.rsplit_once('@') else {
            return false;
        };
        !local.is_empty() && self.email_domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// The policy refused a signed-in user: `403`. Only `policy` makes one (the fields are
/// private), so no other module can deny access by accident.
#[derive(Debug, thiserror::Error)]
#[error("access denied by policy: {reason}")]
pub struct Forbidden {
    /// The session's `sub`, for the log line.
    subject: String,
    /// The request path without its query (which may carry tokens), for the log line.
    path: String,
    reason: Refusal,
}

impl Forbidden {
    pub(super) fn new(subject: &str, path: &str, reason: Refusal) -> Self {
        Forbidden {
            subject: subject.to_owned(),
            path: path.to_owned(),
            reason,
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn reason(&self) -> Refusal {
        self.reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Claims {
        value.as_object().cloned().unwrap_or_default()
    }

    fn rule(groups: &[&str], domains: &[&str]) -> Rule {
        let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Rule::new(&owned(groups), &owned(domains))
    }

    fn john() -> Claims {
        claims(json!({
            "sub": "5b0e7b0c",
            "email": "john@example.com",
            "email_verified": true,
            "groups": ["admins", "dev"],
        }))
    }

    #[test]
    fn an_empty_rule_admits_everyone_even_without_claims() {
        let rule = rule(&[], &[]);
        assert_eq!(rule.evaluate(&john()), Access::Granted);
        assert_eq!(rule.evaluate(&Claims::new()), Access::Granted);
    }

    #[test]
    fn a_refusal_keeps_subject_path_and_reason_for_the_log_line() {
        let forbidden = Forbidden::new("5b0e7b0c", "/admin", Refusal::NoAllowedGroup);
        assert_eq!(
            forbidden.to_string(),
            "access denied by policy: in none of policy.allowed_groups"
        );
        assert_eq!(
            (forbidden.subject(), forbidden.path(), forbidden.reason()),
            ("5b0e7b0c", "/admin", Refusal::NoAllowedGroup)
        );
        let reasons = [
            Refusal::NotEvaluated,
            Refusal::NoAllowedGroup,
            Refusal::NoEmail,
            Refusal::EmailDomainNotAllowed,
            Refusal::EmailNotVerified,
        ]
        .map(|r| r.to_string());
        let distinct: std::collections::HashSet<&String> = reasons.iter().collect();
        assert_eq!(distinct.len(), reasons.len(), "{reasons:?}");
        assert!(reasons.iter().all(|r| r.len() > 10), "{reasons:?}");
    }

    #[test]
    fn a_session_is_refused_until_it_is_evaluated() {
        assert_eq!(Access::default(), Access::Refused(Refusal::NotEvaluated));
    }

    #[test]
    fn allowed_groups_need_one_group_in_common_compared_exactly() {
        assert_eq!(rule(&["ops", "admins"], &[]).evaluate(&john()), Access::Granted);
        for refused in [rule(&["ops"], &[]), rule(&["Admins"], &[]), rule(&["admin"], &[])] {
            assert_eq!(
                refused.evaluate(&john()),
                Access::Refused(Refusal::NoAllowedGroup),
                "{refused:?}"
            );
        }
        let admins = rule(&["admins"], &[]);
        assert_eq!(admins.evaluate(&claims(json!({"groups": "admins"}))), Access::Granted);
        for groups in [
            json!(null),
            json!([]),
            json!(["admins,dev"]),
            json!({"admins": true}),
            json!([1]),
        ] {
            assert_eq!(
                admins.evaluate(&claims(json!({ "groups": groups }))),
                Access::Refused(Refusal::NoAllowedGroup),
                "{groups}"
            );
        }
        assert_eq!(
            admins.evaluate(&Claims::new()),
            Access::Refused(Refusal::NoAllowedGroup)
        );
    }

    #[test]
    fn email_domains_match_the_whole_domain_ignoring_case() {
        let rule = rule(&[], &["Example.COM", "corp.example"]);
        for email in [
            "john@example.com",
            "JOHN@EXAMPLE.COM",
            "a.b+c@corp.example",
            "\"x@y\"@example.com",
        ] {
            let c = claims(json!({ "email": email, "email_verified": true }));
            assert_eq!(rule.evaluate(&c), Access::Granted, "{email}");
        }
        for email in [
            "john@sub.example.com",
            "john@example.com.evil",
            "john@evilexample.com",
            "john@example.com@evil.example",
            "example.com",
            "@example.com",
            "john@",
            "john@example.com ",
        ] {
            let c = claims(json!({ "email": email }));
            assert_eq!(
                rule.evaluate(&c),
                Access::Refused(Refusal::EmailDomainNotAllowed),
                "{email}"
            );
        }
        assert_eq!(rule.evaluate(&Claims::new()), Access::Refused(Refusal::NoEmail));
        assert_eq!(
            rule.evaluate(&claims(json!({"email": ["john@example.com"]}))),
            Access::Refused(Refusal::NoEmail)
        );
    }

    #[test]
    fn an_unverified_email_is_refused_and_an_absent_flag_is_not() {
        let rule = rule(&[], &["example.com"]);
        let with = |verified: Value| claims(json!({ "email": "john@example.com", "email_verified": verified }));
        assert_eq!(rule.evaluate(&with(json!(true))), Access::Granted);
        assert_eq!(rule.evaluate(&with(json!("true"))), Access::Granted);
        assert_eq!(
            rule.evaluate(&claims(json!({"email": "john@example.com"}))),
            Access::Granted
        );
        for verified in [json!(false), json!("false"), json!(null), json!(0), json!("yes")] {
            assert_eq!(
                rule.evaluate(&with(verified.clone())),
                Access::Refused(Refusal::EmailNotVerified),
                "{verified}"
            );
        }
    }

    #[test]
    fn groups_and_email_domains_must_both_hold() {
        let both = rule(&["admins"], &["example.com"]);
        assert_eq!(both.evaluate(&john()), Access::Granted);
        let mut elsewhere = john();
        elsewhere.insert("email".into(), json!("john@example.org"));
        assert_eq!(
            both.evaluate(&elsewhere),
            Access::Refused(Refusal::EmailDomainNotAllowed)
        );
        let mut outsider = john();
        outsider.insert("groups".into(), json!(["dev"]));
        assert_eq!(both.evaluate(&outsider), Access::Refused(Refusal::NoAllowedGroup));
    }
}
