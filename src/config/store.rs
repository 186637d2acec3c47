//! The session store settings of `[session]`: `store`, and the Redis connection for
//! several replicas (`redis_url`, `redis_password[_file]`, `redis_key_prefix`,
//! `redis_timeout`, `redis_ca_file`).
//!
//! Why the defaults are what they are:
//! - `store = "memory"`: one process needs nothing else; Redis is for two or more replicas.
//! - `redis_key_prefix = "portcullis:"`: one Redis can serve several apps (or a staging
//!   and a production portcullis) without their keys meeting.
//! - `redis_timeout = "2s"`: a request waiting on an unreachable store fails with 503
//!   within this time instead of hanging; loopback and LAN round trips are far below it.
//!
//! A password given inside `redis_url` is taken out of the URL into a [`Secret`], so the
//! URL can be shown by `portcullis check` and in log lines; giving it in both places is a
//! problem, as is `store = "redis"` with a generated (per-process) session secret: the
//! replicas would not be able to open each other's sessions.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::ca::{read_ca, CaFile};
use super::source::{env_name, Source};
use super::validate::secret;
use super::Secret;

/// Where sessions are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStoreConfig {
    /// In this process (moka), bounded by `session.max_memory`. The default.
    Memory,
    /// In Redis, shared by every replica configured with the same secret and prefix.
    Redis(RedisConfig),
}

/// How to reach the Redis that holds the sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://host[:port][/db]` or `rediss://…` (TLS, system roots), with the user name
    /// if any but never a password: that lives in `password`.
    pub url: Url,
    /// `AUTH` password (from `redis_password[_file]` or taken out of the URL).
    pub password: Option<Secret>,
    /// Prefix of every key portcullis writes (default `portcullis:`).
    pub key_prefix: String,
    /// Bound on connecting and on every command; beyond it the request gets 503 (default 2 s).
    pub timeout: Duration,
    /// CA certificates trusted for `rediss://` instead of the system roots (default none).
    pub ca: Option<CaFile>,
}

pub const DEFAULT_KEY_PREFIX: &str = "portcullis:";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_KEY_PREFIX_LEN: usize = 64;

/// Reads the store settings. `secret_is_ephemeral`: no session secret was configured.
pub fn store(src: &mut Source<'_>, secret_is_ephemeral: bool) -> SessionStoreConfig {
    let is_redis = matches!(src.choice("session.store", &["memory", "redis"]), Some("redis"));
    let key_prefix = key_prefix(src);
    let timeout = src.positive_duration("session.redis_timeout", DEFAULT_TIMEOUT);
    let password = secret(src, "session.redis_password", "session.redis_password_file");
    let url = src.string("session.redis_url");
    let ca_file = src.string("session.redis_ca_file");

    if !is_redis {
        for (path, set) in [
            ("session.redis_url", url.is_some()),
            ("session.redis_password", password.is_some()),
            ("session.redis_ca_file", ca_file.is_some()),
        ] {
            if set {
                let key = src.key_of(path);
                src.problem(
                    key,
                    "is set, but session.store is \"memory\"; set session.store = \"redis\" to use Redis",
                );
            }
        }
        return SessionStoreConfig::Memory;
    }
    if secret_is_ephemeral {
        let key = src.key_of("session.store");
        src.problem(
            key,
            "is \"redis\", which needs a configured session secret (SESSION_ENCRYPTION_SECRET): every \
             replica must seal and open sessions with the same key",
        );
    }
    let Some((url_key, url)) = url else {
        src.problem(
            env_name("session.redis_url"),
            "is required with session.store = \"redis\" (or session.redis_url in the configuration \
             file), e.g. redis://127.0.0.1:6379/0 or rediss://redis.internal:6380",
        );
        return SessionStoreConfig::Memory;
    };
    let Some((url, url_password)) = redis_url(src, &url_key, url.trim()) else {
        return SessionStoreConfig::Memory;
    };
    let ca = ca_file.and_then(|(key, path)| {
        if url.scheme() != "rediss" {
            src.problem(key, "only applies to a rediss:// session.redis_url");
            return None;
        }
        read_ca(src, &key, PathBuf::from(path.trim()))
    });
    let password = match (password, url_password) {
        (Some((key, _)), Some(_)) => {
            src.problem(
                key,
                format!("is set together with a password in {url_key}; set only one of them"),
            );
            None
        }
        (Some((_, password)), None) => Some(password),
        (None, url_password) => url_password,
    };
    SessionStoreConfig::Redis(RedisConfig {
        url,
        password,
        key_prefix,
        timeout,
        ca,
    })
}

fn key_prefix(src: &mut Source<'_>) -> String {
    let Some((key, value)) = src.string("session.redis_key_prefix") else {
        return DEFAULT_KEY_PREFIX.to_string();
    };
    let valid = !value.is_empty() && value.len() <= MAX_KEY_PREFIX_LEN && value.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        src.problem(
            key,
            format!("must be 1 to {MAX_KEY_PREFIX_LEN} visible ASCII characters without spaces, e.g. \"portcullis:\""),
        );
        return DEFAULT_KEY_PREFIX.to_string();
    }
    value
}

/// Checks a `redis://`/`rediss://` URL and takes its password out. Messages never quote
/// the URL, which may carry that password.
fn redis_url(src: &mut Source<'_>, key: &str, value: &str) -> Option<(Url, Option<Secret>)> {
    let mut url = super::validate::absolute_url(src, key, value)?;
    let mut ok = true;
    let mut fail = |message: &str| {
        src.problem(key, message);
        ok = false;
    };
    if !matches!(url.scheme(), "redis" | "rediss") {
        fail("must start with redis:// (or rediss:// for TLS); unix sockets are not supported");
    } else if url.host_str().is_none_or(str::is_empty) {
        fail("must name a host");
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        fail("may only have a database number as its path, e.g. redis://127.0.0.1:6379/0");
    }
    if url.query().is_some() {
        fail("must not have a query (`?…`)");
    }
    if url.fragment().is_some() {
        // redis-rs reads `#insecure` as "do not verify the server certificate".
        fail("must not have a fragment (`#…`): certificate checks cannot be turned off");
    }
    if !ok {
        return None;
    }
    let password = url.password().map(|encoded| {
        let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
        Secret::new(decoded.into_owned())
    });
    // Cannot fail: the URL has a host (checked above), so it can hold no password.
    let _ = url.set_password(None);
    Some((url, password.filter(|p| !p.is_empty())))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
