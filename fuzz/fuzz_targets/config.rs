//! The configuration: a TOML file and environment variables, both written by people.
//! Whatever they hold, loading ends in a configuration or a list of problems (never a
//! panic) shown one line each, and neither the problems nor the configuration's `Debug`
//! form shows the secrets given in the environment.
//!
//! Input: TOML text, then after a 0xFF byte `NAME=value` lines of environment on top of
//! the seed app's variables.
#![no_main]

mod common;

use common::{CLIENT_SECRET, SESSION_SECRET};
use libfuzzer_sys::fuzz_target;
use portcullis::config::load_str;

fuzz_target!(|data: &[u8]| {
    let (toml, env_lines) = match data.iter().position(|&b| b == 0xFF) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let toml = String::from_utf8_lossy(toml);
    let mut env = common::seed_env();
    for line in String::from_utf8_lossy(env_lines).lines() {
        if let Some((name, value)) = line.split_once('=') {
            env.insert(name.to_owned(), value.to_owned());
        }
    }
    let shown = match load_str(&toml, "fuzz.toml", &env) {
        Ok(config) => format!("{config:?}"),
        Err(error) => {
            let shown = format!("{error}");
            // A heading, then one line per problem, whatever the keys and messages hold.
            assert_eq!(shown.lines().count(), error.problems.len() + 1, "{shown}");
            shown
        }
    };
    // The fuzzer learns the secrets from comparisons and may write one where a key or
    // another value goes; only where the input does not hold it is showing it a leak.
    for secret in [CLIENT_SECRET, SESSION_SECRET] {
        let in_input = data.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(in_input || !shown.contains(secret), "a secret is shown: {shown}");
    }
});
