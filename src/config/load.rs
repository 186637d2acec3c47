//! Where configuration comes from, and the one error that reports everything wrong with it.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use super::source::Source;
use super::{raw, validate, Config};

/// Where configuration comes from. `env` is injected so tests never touch the process environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: HashMap<String, String>,
}

/// One thing wrong with the configuration, naming the key.
///
/// `key` is the environment variable when the value came from there (`OIDC_ISSUER`),
/// the TOML path otherwise (`oidc.issuer`, `identity.headers[0].claims`), or the file
/// itself for a syntax error. `message` never repeats the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    /// One line: control characters (a quoted TOML key may hold a newline) are escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_one_line(f, &self.key)?;
        f.write_str(": ")?;
        write_one_line(f, &self.message)
    }
}

fn write_one_line(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            fmt::Write::write_char(f, c)?;
        }
    }
    Ok(())
}

/// Every problem found, in the order the settings are read.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration:")?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// Reads the file (if any), overlays the environment, and validates the result.
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let text = match &sources.file {
        None => String::new(),
        Some(path) => std::fs::read_to_string(path).map_err(|error| ConfigError {
            problems: vec![ConfigProblem::new(
                path.display().to_string(),
                format!("cannot read the configuration file: {error}"),
            )],
        })?,
    };
    let origin = sources
        .file
        .as_ref()
        .map_or_else(|| "configuration".to_string(), |p| p.display().to_string());
    load_str(&text, &origin, &sources.env)
}

/// [`load`] from TOML text instead of a file; `origin` names it in syntax errors.
pub fn load_str(toml: &str, origin: &str, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    let (table, shape_problems) = raw::parse(toml, origin).map_err(|problem| ConfigError {
        problems: vec![problem],
    })?;
    let mut source = Source::new(&table, env);
    source.problems = shape_problems;
    match validate::validate(&mut source) {
        Some(config) if source.problems.is_empty() => Ok(config),
        _ => Err(ConfigError {
            problems: source.problems,
        }),
    }
}
