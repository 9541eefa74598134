//! Config errors that say where and what to fix.

/// The config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {file}: {source}")]
    Read {
        /// The path.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown or mistyped key.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The path.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A value is well-formed but not usable.
    #[error("{file}:{line}: {message}")]
    Invalid {
        /// The path.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn from_toml(file: &str, text: &str, e: toml::de::Error) -> Self {
        let line = e.span().map_or(0, |s| line_at(text, s.start));
        ConfigError::Syntax {
            file: file.to_string(),
            line,
            message: e.message().trim().to_string(),
        }
    }

    pub(crate) fn at(
        file: &str,
        text: &str,
        span: std::ops::Range<usize>,
        message: String,
    ) -> Self {
        ConfigError::Invalid {
            file: file.to_string(),
            line: line_at(text, span.start),
            message,
        }
    }

    /// A value `check_ranges` refused, at the line of its key.
    pub(crate) fn out_of_range(file: &str, text: &str, (key, message): (&str, String)) -> Self {
        ConfigError::Invalid {
            file: file.to_string(),
            line: line_of(text, key),
            message,
        }
    }
}

/// The 1-based line of a byte offset.
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line where `key = ` first appears, or 0.
pub(crate) fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(key) && l.contains('='))
        .map_or(0, |i| i + 1)
}

/// A number a config key may hold: `(key, value, low, high)`, the value
/// within `low..=high`, or at least `low` when `high` is `u64::MAX`.
pub(crate) type Range = (&'static str, u64, u64, u64);

/// The first value out of its range, refused rather than bent into it: its
/// key, and what is wrong (`prefix` names where the key is).
pub(crate) fn check_ranges(prefix: &str, ranges: &[Range]) -> Result<(), (&'static str, String)> {
    for &(key, value, low, high) in ranges {
        if value < low || value > high {
            let range = if high == u64::MAX {
                format!("use at least {low}")
            } else {
                format!("use {low} to {high}")
            };
            return Err((
                key,
                format!("{prefix}{key} = {value} is out of range: {range}"),
            ));
        }
    }
    Ok(())
}
