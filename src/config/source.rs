//! Reads one setting at a time from the environment or the file (the environment wins),
//! converts it to a type, and records a problem naming its key when that fails.
//!
//! A problem's key is the environment variable when the value came from there, the TOML
//! path otherwise. Messages describe what is wrong without repeating the value, which may
//! be a secret pasted into the wrong place.

use std::collections::HashMap;
use std::time::Duration;

use toml::{Table, Value};

use super::duration::{parse_duration, parse_size};
use super::ConfigProblem;

/// The ten variables named in the design; every other setting is `PORTCULLIS_<PATH>`.
const DESIGN_NAMES: &[(&str, &str)] = &[
    ("listen_addr", "LISTEN_ADDR"),
    ("base_url", "APP_BASE_URL"),
    ("upstream_url", "UPSTREAM_URL"),
    ("oidc.issuer", "OIDC_ISSUER"),
    ("oidc.client_id", "OIDC_CLIENT_ID"),
    ("oidc.client_secret", "OIDC_CLIENT_SECRET"),
    ("oidc.client_secret_file", "OIDC_CLIENT_SECRET_FILE"),
    ("oidc.scopes", "OIDC_SCOPES"),
    ("session.secret", "SESSION_ENCRYPTION_SECRET"),
    ("session.secret_file", "SESSION_ENCRYPTION_SECRET_FILE"),
];

/// The environment variable that overrides the TOML key `path`.
pub fn env_name(path: &str) -> String {
    DESIGN_NAMES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, name)| (*name).to_string())
        .unwrap_or_else(|| format!("PORTCULLIS_{}", path.replace('.', "_").to_uppercase()))
}

/// One raw value and where it came from.
pub enum Raw<'a> {
    File(&'a Value),
    Env(&'a String),
}

pub struct Source<'a> {
    file: &'a Table,
    env: &'a HashMap<String, String>,
    pub problems: Vec<ConfigProblem>,
}

impl<'a> Source<'a> {
    pub fn new(file: &'a Table, env: &'a HashMap<String, String>) -> Self {
        Source {
            file,
            env,
            problems: Vec::new(),
        }
    }

    pub fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem::new(key, message));
    }

    /// Where `path` is set, if anywhere: `(key, value)`. An empty variable counts as unset,
    /// as `FOO=` in a compose file usually means "not configured".
    pub fn raw(&self, path: &str) -> Option<(String, Raw<'a>)> {
        let name = env_name(path);
        if let Some(value) = self.env.get(&name).filter(|v| !v.is_empty()) {
            return Some((name, Raw::Env(value)));
        }
        self.file_value(path).map(|value| (path.to_string(), Raw::File(value)))
    }

    /// The key to name in a problem about `path`: its variable when set there, else the path.
    pub fn key_of(&self, path: &str) -> String {
        self.raw(path).map(|(key, _)| key).unwrap_or_else(|| path.to_string())
    }

    pub fn file_value(&self, path: &str) -> Option<&'a Value> {
        let mut parts = path.split('.');
        let mut value = self.file.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value)
    }

    pub fn string(&mut self, path: &str) -> Option<(String, String)> {
        let (key, raw) = self.raw(path)?;
        match raw {
            Raw::Env(s) => Some((key, s.to_string())),
            Raw::File(Value::String(s)) => Some((key, s.clone())),
            Raw::File(_) => {
                self.problem(key, "must be a string");
                None
            }
        }
    }

    pub fn bool(&mut self, path: &str, default: bool) -> bool {
        let Some((key, raw)) = self.raw(path) else {
            return default;
        };
        let parsed = match raw {
            Raw::File(Value::Boolean(b)) => Some(*b),
            Raw::Env(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            },
            Raw::File(_) => None,
        };
        parsed.unwrap_or_else(|| {
            self.problem(key, "must be true or false");
            default
        })
    }

    pub fn duration(&mut self, path: &str, default: Duration) -> Duration {
        let Some((key, raw)) = self.raw(path) else {
            return default;
        };
        let parsed = match raw {
            Raw::Env(s) | Raw::File(Value::String(s)) => parse_duration(s),
            Raw::File(Value::Integer(n)) => u64::try_from(*n)
                .map(Duration::from_secs)
                .map_err(|_| "must not be negative".to_string()),
            Raw::File(_) => Err("must be a duration such as \"30s\" or a number of seconds".into()),
        };
        parsed.unwrap_or_else(|message| {
            self.problem(key, message);
            default
        })
    }

    /// A duration that must be longer than zero.
    pub fn positive_duration(&mut self, path: &str, default: Duration) -> Duration {
        let value = self.duration(path, default);
        if value.is_zero() {
            let key = self.key_of(path);
            self.problem(key, "must be longer than zero");
            return default;
        }
        value
    }

    /// An integer within `range`.
    pub fn integer(&mut self, path: &str, default: u64, range: (u64, u64)) -> u64 {
        let Some((key, raw)) = self.raw(path) else {
            return default;
        };
        let parsed = match raw {
            Raw::File(Value::Integer(n)) => u64::try_from(*n).ok(),
            Raw::Env(s) => s.trim().parse::<u64>().ok(),
            Raw::File(_) => None,
        };
        let (low, high) = range;
        match parsed {
            Some(n) if (low..=high).contains(&n) => n,
            Some(_) => {
                self.problem(key, format!("must be between {low} and {high}"));
                default
            }
            None => {
                self.problem(key, "must be a whole number");
                default
            }
        }
    }

    pub fn size(&mut self, path: &str, default: u64) -> u64 {
        let Some((key, raw)) = self.raw(path) else {
            return default;
        };
        let parsed = match raw {
            Raw::Env(s) | Raw::File(Value::String(s)) => parse_size(s),
            Raw::File(Value::Integer(n)) => u64::try_from(*n).map_err(|_| "must not be negative".to_string()),
            Raw::File(_) => Err("must be a size such as \"256MiB\" or a number of bytes".into()),
        };
        match parsed {
            Ok(0) => {
                self.problem(key, "must be larger than zero");
                default
            }
            Ok(n) => n,
            Err(message) => {
                self.problem(key, message);
                default
            }
        }
    }

    /// A list: a TOML array of strings, or in the environment words separated by spaces
    /// or commas.
    pub fn list(&mut self, path: &str) -> Option<(String, Vec<String>)> {
        let (key, raw) = self.raw(path)?;
        match raw {
            Raw::Env(s) => Some((key, split_words(s))),
            Raw::File(Value::Array(items)) => {
                let strings: Option<Vec<String>> = items.iter().map(|item| item.as_str().map(str::to_string)).collect();
                if strings.is_none() {
                    self.problem(key.clone(), "must be an array of strings");
                }
                strings.map(|s| (key, s))
            }
            Raw::File(_) => {
                self.problem(key, "must be an array of strings");
                None
            }
        }
    }

    /// One of `choices` (case-insensitive), returned as written in `choices`.
    pub fn choice(&mut self, path: &str, choices: &[&'static str]) -> Option<&'static str> {
        let (key, value) = self.string(path)?;
        let found = choices
            .iter()
            .find(|choice| choice.eq_ignore_ascii_case(value.trim()))
            .copied();
        if found.is_none() {
            let list = choices
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ");
            self.problem(key, format!("must be one of {list}"));
        }
        found
    }
}

pub fn split_words(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|word| !word.is_empty())
        .map(str::to_string)
        .collect()
}
