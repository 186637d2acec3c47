//! The `[identity]` section: which claims become which upstream headers, and which
//! client headers are always removed.

use http::header::{self, HeaderName};
use toml::Value;

use super::source::{Raw, Source};
use super::{AccessTokenForwarding, IdentityConfig, IdentityHeader};

/// The design's defaults: `Remote-User` ← `preferred_username` (fallback `sub`), …
static DEFAULT_HEADERS: [(HeaderName, &[&str]); 4] = [
    (HeaderName::from_static("remote-user"), &["preferred_username", "sub"]),
    (HeaderName::from_static("remote-groups"), &["groups"]),
    (HeaderName::from_static("remote-name"), &["name"]),
    (HeaderName::from_static("remote-email"), &["email"]),
];

/// Headers the proxy itself owns: an identity header may not take their place.
const MANAGED: &[HeaderName] = &[
    header::HOST,
    header::COOKIE,
    header::SET_COOKIE,
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::PROXY_AUTHORIZATION,
];

pub fn default_headers() -> Vec<IdentityHeader> {
    DEFAULT_HEADERS
        .iter()
        .map(|(name, claims)| IdentityHeader {
            header: name.clone(),
            claims: claims.iter().map(|c| c.to_string()).collect(),
        })
        .collect()
}

/// The names of the default identity headers, which are stripped from client requests
/// whatever `identity.headers` maps: an upstream (or a part of it) written for the
/// defaults may trust them, so a client must not be able to send them even when
/// portcullis is configured to send other headers, or only some of these.
pub fn default_header_names() -> impl Iterator<Item = &'static HeaderName> {
    DEFAULT_HEADERS.iter().map(|(name, _)| name)
}

pub fn identity(src: &mut Source<'_>) -> IdentityConfig {
    let access_token = match src.choice(
        "identity.access_token",
        &["none", "authorization", "x-forwarded-access-token"],
    ) {
        Some("authorization") => AccessTokenForwarding::AuthorizationBearer,
        Some("x-forwarded-access-token") => AccessTokenForwarding::XForwardedAccessToken,
        _ => AccessTokenForwarding::None,
    };
    let headers = headers(src, access_token);

    // Every identity header, the default ones whatever the mapping, every extra one, and
    // the access-token header when one is forwarded: a client must never be able to send
    // any of them through.
    let mut strip: Vec<HeaderName> = headers.iter().map(|h| h.header.clone()).collect();
    strip.extend(default_header_names().cloned());
    if let Some((key, names)) = src.list("identity.strip_headers") {
        for name in names {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => strip.push(name),
                Err(_) => src.problem(key.clone(), "contains a name that is not a valid header name"),
            }
        }
    }
    match access_token {
        AccessTokenForwarding::AuthorizationBearer => strip.push(header::AUTHORIZATION),
        AccessTokenForwarding::XForwardedAccessToken => strip.push(HeaderName::from_static("x-forwarded-access-token")),
        AccessTokenForwarding::None => {}
    }
    let mut strip_headers: Vec<HeaderName> = Vec::with_capacity(strip.len());
    for name in strip {
        if !strip_headers.contains(&name) {
            strip_headers.push(name);
        }
    }
    IdentityConfig {
        headers,
        strip_headers,
        access_token,
    }
}

/// One configured header: the keys to name in problems about its name and its claims.
struct Entry {
    header_key: String,
    claims_key: String,
    header: Value,
    claims: Value,
}

/// Entries from the environment (`Remote-User=preferred_username|sub,Remote-Email=email`)
/// or the file's `[[identity.headers]]`; `None` when neither sets them.
fn entries(src: &mut Source<'_>) -> Option<Vec<Entry>> {
    let (key, raw) = src.raw("identity.headers")?;
    if let Raw::Env(text) = raw {
        let mut out = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((header, claims)) = item.split_once('=') else {
                src.problem(
                    key.clone(),
                    "must look like Remote-User=preferred_username|sub,Remote-Email=email",
                );
                continue;
            };
            let claims = claims.split('|').map(|c| Value::String(c.trim().to_string()));
            out.push(Entry {
                header_key: key.clone(),
                claims_key: key.clone(),
                header: Value::String(header.trim().to_string()),
                claims: Value::Array(claims.collect()),
            });
        }
        return Some(out);
    }
    // The shape check guarantees an array of tables here.
    let items = src.file_value("identity.headers")?.as_array()?;
    let absent = Value::Array(Vec::new());
    let entries = items.iter().enumerate().map(|(index, item)| {
        let get = |field: &str| item.get(field).cloned().unwrap_or_else(|| absent.clone());
        Entry {
            header_key: format!("identity.headers[{index}].header"),
            claims_key: format!("identity.headers[{index}].claims"),
            header: get("header"),
            claims: get("claims"),
        }
    });
    Some(entries.collect())
}

fn headers(src: &mut Source<'_>, access_token: AccessTokenForwarding) -> Vec<IdentityHeader> {
    let Some(entries) = entries(src) else {
        return default_headers();
    };
    let mut headers: Vec<IdentityHeader> = Vec::new();
    for entry in entries {
        let Entry {
            header_key,
            claims_key,
            header,
            claims,
        } = entry;
        let name = match header.as_str().map(|h| HeaderName::from_bytes(h.as_bytes())) {
            Some(Ok(name)) => name,
            Some(Err(_)) => {
                src.problem(header_key.clone(), "is not a valid header name");
                continue;
            }
            None => {
                src.problem(header_key.clone(), "is required and must be a string");
                continue;
            }
        };
        if MANAGED.contains(&name) || name.as_str().starts_with("x-forwarded-") {
            src.problem(header_key.clone(), "is a header the proxy manages itself");
            continue;
        }
        let forwarded = match access_token {
            AccessTokenForwarding::AuthorizationBearer => Some(header::AUTHORIZATION),
            _ => None,
        };
        if forwarded.as_ref() == Some(&name) {
            src.problem(header_key.clone(), "is the header identity.access_token writes");
            continue;
        }
        if headers.iter().any(|h| h.header == name) {
            src.problem(header_key.clone(), "names a header already listed");
            continue;
        }
        let claims: Option<Vec<String>> = claims.as_array().and_then(|items| {
            items
                .iter()
                .map(|c| c.as_str().filter(|c| !c.is_empty()).map(str::to_string))
                .collect()
        });
        match claims {
            Some(claims) if !claims.is_empty() => headers.push(IdentityHeader { header: name, claims }),
            _ => src.problem(claims_key, "must be a non-empty array of claim names"),
        }
    }
    headers
}
