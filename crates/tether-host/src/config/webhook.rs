//! `[[webhook]]`: where the event log is posted.

use serde::Deserialize;

use super::error::check_ranges;

/// A webhook sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A name for the API and the logs: letters, digits, `-` and `_`.
    pub name: String,
    /// Where to POST: `http://` or `https://`.
    pub url: String,
    /// Which events (`open`, `message`, `error`, `close`, `state`, `module`,
    /// `reconnecting`). Default: all.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Which clients, by key. Default: all.
    #[serde(default)]
    pub clients: Option<Vec<String>>,
    /// The environment variable holding the signing secret (required: every
    /// POST is signed).
    pub secret_env: String,
    /// Events per POST, at most. Default 100.
    #[serde(default = "batch")]
    pub batch: u32,
    /// Seconds a POST may take. Default 10 (1 to 3600).
    #[serde(default = "timeout")]
    pub timeout_secs: u64,
    /// Attempts per batch before it is dead-lettered. Default 10.
    #[serde(default = "attempts")]
    pub max_attempts: u32,
    /// A batch still failing after this many seconds of retries is
    /// dead-lettered. Default 86400 (1 to 31536000).
    #[serde(default = "age")]
    pub max_age_secs: u64,
    /// First retry delay in milliseconds (then doubling, with full jitter).
    /// Default 500 (1 to 86400000).
    #[serde(default = "initial")]
    pub retry_initial_ms: u64,
    /// Longest retry delay in milliseconds. Default 60000
    /// (`retry_initial_ms` to 86400000).
    #[serde(default = "longest")]
    pub retry_max_ms: u64,
}

const fn longest() -> u64 {
    60_000
}

const fn batch() -> u32 {
    100
}
const fn timeout() -> u64 {
    10
}
const fn attempts() -> u32 {
    10
}
const fn age() -> u64 {
    86_400
}
const fn initial() -> u64 {
    500
}

impl WebhookConfig {
    /// Checks the fields that serde cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "webhook name {:?} must be letters, digits, '-' or '_'",
                self.name
            ));
        }
        let url = url::Url::parse(&self.url)
            .map_err(|e| format!("webhook {:?}: invalid url {:?}: {e}", self.name, self.url))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "webhook {:?}: url {:?} must be http:// or https:// with a host",
                self.name, self.url
            ));
        }
        if self.batch == 0 || self.batch > 10_000 {
            return Err(format!("webhook {:?}: batch must be 1 to 10000", self.name));
        }
        const DAY: u64 = 86_400;
        check_ranges(
            &format!("webhook {:?}: ", self.name),
            &[
                ("timeout_secs", self.timeout_secs, 1, 3600),
                ("max_age_secs", self.max_age_secs, 1, 365 * DAY),
                ("retry_initial_ms", self.retry_initial_ms, 1, DAY * 1000),
                (
                    "retry_max_ms",
                    self.retry_max_ms,
                    self.retry_initial_ms,
                    DAY * 1000,
                ),
            ],
        )
        .map_err(|(_, message)| message)?;
        if std::env::var(&self.secret_env).map_or(true, |s| s.is_empty()) {
            return Err(format!(
                "webhook {:?}: set the signing secret in the environment variable {}",
                self.name, self.secret_env
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::WebhookConfig;

    fn check(extra: &str) -> Result<(), String> {
        // PATH: an environment variable every test run has.
        let w: WebhookConfig = toml::from_str(&format!(
            "name = \"w\"\nurl = \"http://127.0.0.1:1/\"\nsecret_env = \"PATH\"\n{extra}"
        ))
        .unwrap();
        w.check()
    }

    #[test]
    fn timeouts_and_retry_delays_out_of_range_are_refused() {
        check("").unwrap();
        for (line, range) in [
            ("timeout_secs = 0", "1 to 3600"),
            ("max_age_secs = 0", "1 to 31536000"),
            ("retry_initial_ms = 0", "1 to 86400000"),
            ("retry_max_ms = 100", "500 to 86400000"),
        ] {
            let e = check(line).unwrap_err();
            let key = line.split(' ').next().unwrap();
            assert!(
                e.contains("webhook \"w\"") && e.contains(key) && e.contains(range),
                "{line}: {e}"
            );
        }
    }
}
