//! The shape of the configuration file, checked by serde before any value is read.
//!
//! Every struct denies unknown fields, so a misspelt key fails startup and is named.
//! The leaves are deliberately `toml::Value`: serde stops at the first wrong type, while
//! [`super::source`] reads each value with its key and reports every bad one at once.
//! Unknown keys are collected the same way: each one found is recorded and removed from
//! the table, and the check runs again, so validation goes on with what is left.

use serde::Deserialize;
use toml::{Table, Value};

use super::ConfigProblem;

type Leaf = Option<Value>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read through the table once the shape is known good
struct RawFile {
    listen_addr: Leaf,
    base_url: Leaf,
    upstream_url: Leaf,
    oidc: Option<RawOidc>,
    session: Option<RawSession>,
    routes: Option<RawRoutes>,
    policy: Option<RawPolicy>,
    upstream: Option<RawUpstream>,
    identity: Option<RawIdentity>,
    pages: Option<RawPages>,
    server: Option<RawServer>,
    log: Option<RawLog>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawOidc {
    issuer: Leaf,
    client_id: Leaf,
    client_secret: Leaf,
    client_secret_file: Leaf,
    scopes: Leaf,
    par: Leaf,
    allow_insecure_issuer: Leaf,
    ca_file: Leaf,
    http_timeout: Leaf,
    discovery_retry_max: Leaf,
    jwks_refetch_interval: Leaf,
    clock_skew: Leaf,
    revoke_on_logout: Leaf,
    login_rate_per_second: Leaf,
    login_rate_burst: Leaf,
    login_rate_per_client_per_minute: Leaf,
    login_rate_per_client_burst: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawSession {
    secret: Leaf,
    secret_file: Leaf,
    cookie_name: Leaf,
    login_cookie_prefix: Leaf,
    cookie_domain: Leaf,
    idle_timeout: Leaf,
    max_lifetime: Leaf,
    max_memory: Leaf,
    refresh_before_expiry: Leaf,
    login_timeout: Leaf,
    max_pending_logins: Leaf,
    store: Leaf,
    redis_url: Leaf,
    redis_password: Leaf,
    redis_password_file: Leaf,
    redis_key_prefix: Leaf,
    redis_timeout: Leaf,
    redis_ca_file: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawRoutes {
    callback: Leaf,
    prefix: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawPolicy {
    public_paths: Leaf,
    allowed_groups: Leaf,
    allowed_email_domains: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawUpstream {
    connect_timeout: Leaf,
    response_timeout: Leaf,
    body_idle_timeout: Leaf,
    show_address_on_error: Leaf,
    preserve_host: Leaf,
    ca_file: Leaf,
    tls_server_name: Leaf,
    http2: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawIdentity {
    headers: Option<Vec<RawIdentityHeader>>,
    strip_headers: Leaf,
    access_token: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawIdentityHeader {
    header: Leaf,
    claims: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawPages {
    show_tokens: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawServer {
    shutdown_grace: Leaf,
    header_read_timeout: Leaf,
    body_idle_timeout: Leaf,
    tls_cert_file: Leaf,
    tls_key_file: Leaf,
    http_redirect_addr: Leaf,
    metrics_addr: Leaf,
    h2c: Leaf,
    workers: Leaf,
    max_connections: Leaf,
    max_header_bytes: Leaf,
    max_headers: Leaf,
    trusted_proxies: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawLog {
    format: Leaf,
    level: Leaf,
    access_log: Leaf,
}

/// Parses the file and checks its shape. `origin` names the file in syntax errors.
///
/// A syntax error is the only problem returned alone. Otherwise returns the table with
/// every unknown or misplaced key removed, and one problem for each of those keys, so
/// validation can go on and report the rest too. Messages never quote values.
pub(super) fn parse(text: &str, origin: &str) -> Result<(Table, Vec<ConfigProblem>), ConfigProblem> {
    let table: Table = text.parse().map_err(|error: toml::de::Error| {
        let at = error
            .span()
            .map(|span| {
                let (line, column) = line_column(text, span.start);
                format!(" at line {line}, column {column}")
            })
            .unwrap_or_default();
        // toml's messages can run over several lines; a problem is one line.
        let message: Vec<&str> = error
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        ConfigProblem::new(origin, format!("is not valid TOML{at}: {}", message.join("; ")))
    })?;

    let mut scratch = table;
    let mut problems = Vec::new();
    // Each round removes at least one key, so this ends; the bound is a safety net.
    for _ in 0..256 {
        let Err(error) = RawFile::deserialize(Value::Table(scratch.clone())) else {
            break;
        };
        let mut path = error_path(&error);
        let message = error.message();
        let text = if let Some(field) = unknown_field(message) {
            path.push(field.to_string());
            let expected = message.split_once(", expected ").map(|(_, e)| e);
            match expected {
                Some(expected) => format!("unknown key (expected {expected})"),
                None => "unknown key (this section takes no keys)".to_string(),
            }
        } else if path.len() == 1 {
            format!("must be a table, written [{}]", path[0])
        } else if path == ["identity", "headers"] {
            "must be an array of tables, written [[identity.headers]]".to_string()
        } else {
            "has the wrong type".to_string()
        };
        problems.push(ConfigProblem::new(path.join("."), text));
        if path.is_empty() || !remove(&mut scratch, &path) {
            break;
        }
    }
    Ok((scratch, problems))
}

/// The key path toml attaches to an error from deserializing a `Value`. It is only
/// available through `Display`, which ends with ``in `a.b` ``.
fn error_path(error: &toml::de::Error) -> Vec<String> {
    let shown = error.to_string();
    shown
        .rsplit_once("in `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(path, _)| path.split('.').map(str::to_string).collect())
        .unwrap_or_default()
}

fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field)
}

/// Removes `path` from the table, descending into arrays of tables. True if anything went.
fn remove(table: &mut Table, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => table.remove(last).is_some(),
        [first, rest @ ..] => match table.get_mut(first) {
            Some(Value::Table(inner)) => remove(inner, rest),
            Some(Value::Array(items)) => {
                let mut removed = false;
                for item in items {
                    if let Value::Table(inner) = item {
                        removed |= remove(inner, rest);
                    }
                }
                removed
            }
            _ => false,
        },
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
