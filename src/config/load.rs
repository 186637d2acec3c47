//! STUB: replaced by the config helper.
use super::Config;
use std::collections::HashMap;
use std::path::PathBuf;

/// Where configuration comes from. `env` is injected so tests never touch the process environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: HashMap<String, String>,
}

/// One thing wrong with the configuration, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration")]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

pub fn load(_sources: &Sources) -> Result<Config, ConfigError> {
    Err(ConfigError { problems: vec![] })
}

impl Config {
    /// The effective settings, every secret redacted, for `portcullis check`.
    pub fn describe(&self) -> String {
        format!("{self:#?}")
    }
}
