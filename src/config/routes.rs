//! The `[routes]` section: the redirect URI path and the prefix of the reserved routes.

use super::source::Source;
use super::RoutePaths;

/// A route path: absolute, not the root, no empty, `.` or `..` segment, nothing a URL
/// would escape.
fn route_path_problem(path: &str) -> Option<&'static str> {
    let Some(segments) = path.strip_prefix('/') else {
        return Some("must start with `/`");
    };
    if segments.is_empty() {
        return Some("must not be the root: the app's own page at / would never be reached");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/".contains(c);
    if !path.chars().all(allowed) {
        return Some("may contain only letters, digits and -._~!$&'()*+,;=:@/");
    }
    if segments
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Some("must not contain empty, `.` or `..` segments");
    }
    None
}

pub fn routes(src: &mut Source<'_>) -> RoutePaths {
    let mut routes = RoutePaths {
        callback: "/callback".to_string(),
        prefix: "/.auth".to_string(),
    };
    let callback = src.string("routes.callback");
    let prefix = src.string("routes.prefix");
    if let Some((key, value)) = &prefix {
        let problem = if value == "/" || value.is_empty() {
            Some("must not be the root: the reserved routes would hide the app's own /login, /me, …")
        } else if value.ends_with('/') {
            Some("must not end with `/` (write /.auth, not /.auth/)")
        } else {
            route_path_problem(value)
        };
        match problem {
            Some(message) => src.problem(key.clone(), message),
            None => routes.prefix = value.clone(),
        }
    }
    if let Some((key, value)) = callback {
        match route_path_problem(&value) {
            Some(message) => src.problem(key, message),
            None => {
                let reserved = [
                    routes.prefix.clone(),
                    routes.login(),
                    routes.logout(),
                    routes.me(),
                    routes.healthz(),
                    routes.readyz(),
                ];
                if reserved.contains(&value) {
                    src.problem(key, "is the same path as a reserved route under routes.prefix");
                } else {
                    routes.callback = value;
                }
            }
        }
    }
    routes
}
