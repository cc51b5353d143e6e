//! Configuration errors: one line that names the field and the allowed range.

use std::fmt;

/// A rejected encoding configuration. `Display` gives one line, e.g.
/// ``encoding.p = 1.5 is out of range (allowed: 0 < p ≤ 1)``.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// Dotted path of the offending field, e.g. `rope_scaling.factor`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "encoding.{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

pub type Result<T> = std::result::Result<T, ConfigError>;

/// Checks `lo < value ≤ hi` (bounds may be infinite), naming the field on failure.
pub(crate) fn check_range(field: &str, value: f64, lo: f64, hi: f64, allowed: &str) -> Result<()> {
    if value.is_finite() && value > lo && value <= hi {
        Ok(())
    } else {
        Err(ConfigError::new(field, format!("{value} is out of range (allowed: {allowed})")))
    }
}
