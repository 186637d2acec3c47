//! A value that must never be printed: client secret, session secret, tokens.

use std::fmt;

/// A string that never shows itself in `Debug` or `Display`.
///
/// Read it with [`Secret::expose`] only where the value is sent somewhere
/// (an HTTP header, a key derivation); never into a log line or a page.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2-very-secret");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{secret}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }

    #[test]
    fn debug_and_display_say_that_a_value_is_hidden() {
        // An empty rendering would read as "no secret configured" in `portcullis check`.
        let secret = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert_eq!(format!("{secret}"), "[redacted]");
    }

    #[test]
    fn only_the_empty_string_is_empty() {
        assert!(Secret::new("").is_empty());
        assert!(!Secret::new(" ").is_empty());
        assert!(!Secret::new("x").is_empty());
    }
}
