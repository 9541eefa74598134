//! The connection sections of a client type's defaults: TLS, reconnect
//! timing and keepalive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::check_ranges;

/// `[client_type.defaults.tls]`. Paths are relative to the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Extra CA certificates (PEM) to trust.
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Skip server certificate verification. Dangerous; logged as a warning
    /// at every connection.
    #[serde(default)]
    pub insecure: bool,
}

/// `[client_type.defaults.reconnect]`: exponential backoff with full jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// First backoff window, in milliseconds. Default 1000 (1 to 86400000).
    #[serde(default = "initial_ms")]
    pub initial_delay_ms: u64,
    /// Largest backoff window, in milliseconds. Default 60000
    /// (`initial_delay_ms` to 86400000).
    #[serde(default = "max_ms")]
    pub max_delay_ms: u64,
    /// Growth per attempt. Default 2.0 (1.0 to 100.0).
    #[serde(default = "multiplier")]
    pub multiplier: f64,
    /// Stop after this many failed attempts in a row. Default: never.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Seconds open after which the attempt count resets. Default 30 (0
    /// to 86400).
    #[serde(default = "reset_secs")]
    pub reset_after_secs: u64,
}

const fn initial_ms() -> u64 {
    1000
}
const fn max_ms() -> u64 {
    60_000
}
const fn multiplier() -> f64 {
    2.0
}
const fn reset_secs() -> u64 {
    30
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            initial_delay_ms: initial_ms(),
            max_delay_ms: max_ms(),
            multiplier: multiplier(),
            max_attempts: None,
            reset_after_secs: reset_secs(),
        }
    }
}

/// One day: the longest any backoff window or keepalive interval may be.
const DAY_MS: u64 = 86_400_000;

impl ReconnectConfig {
    /// Values out of range, refused rather than bent: the key and why.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1.0..=100.0).contains(&self.multiplier) {
            return Err((
                "multiplier",
                format!(
                    "reconnect.multiplier = {} is out of range: use 1.0 to 100.0",
                    self.multiplier
                ),
            ));
        }
        check_ranges(
            "reconnect.",
            &[
                ("initial_delay_ms", self.initial_delay_ms, 1, DAY_MS),
                (
                    "max_delay_ms",
                    self.max_delay_ms,
                    self.initial_delay_ms,
                    DAY_MS,
                ),
                ("reset_after_secs", self.reset_after_secs, 0, DAY_MS / 1000),
            ],
        )
    }

    /// The policy the connection layer uses.
    pub fn policy(&self) -> tether::ReconnectPolicy {
        tether::ReconnectPolicy {
            initial_delay: Duration::from_millis(self.initial_delay_ms),
            max_delay: Duration::from_millis(self.max_delay_ms),
            multiplier: self.multiplier,
            max_attempts: self.max_attempts,
            reset_after: Duration::from_secs(self.reset_after_secs),
        }
    }
}

/// `[client_type.defaults.keepalive]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveConfig {
    /// Seconds between pings; 0 turns pings off. Default 20 (0 to 86400).
    #[serde(default = "default_ping_interval")]
    pub ping_interval_secs: u64,
    /// Seconds to wait for a pong before the link counts as dead. Default 20
    /// (1 to 86400).
    #[serde(default = "default_ping_timeout")]
    pub ping_timeout_secs: u64,
}

const fn default_ping_interval() -> u64 {
    tether::proto::DEFAULT_PING_INTERVAL.as_secs()
}
const fn default_ping_timeout() -> u64 {
    tether::proto::DEFAULT_PING_TIMEOUT.as_secs()
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            ping_interval_secs: default_ping_interval(),
            ping_timeout_secs: default_ping_timeout(),
        }
    }
}

impl KeepaliveConfig {
    /// Values out of range, refused rather than bent: the key and why.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        check_ranges(
            "keepalive.",
            &[
                (
                    "ping_interval_secs",
                    self.ping_interval_secs,
                    0,
                    DAY_MS / 1000,
                ),
                (
                    "ping_timeout_secs",
                    self.ping_timeout_secs,
                    1,
                    DAY_MS / 1000,
                ),
            ],
        )
    }
}

pub(super) fn tls_options(t: &TlsConfig, base: &Path) -> Result<tether::TlsOptions, String> {
    let resolve = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let client_cert = match (&t.client_cert, &t.client_key) {
        (Some(c), Some(k)) => Some((resolve(c), resolve(k))),
        (None, None) => None,
        _ => return Err("defaults.tls needs both client_cert and client_key, or neither".into()),
    };
    let options = tether::TlsOptions {
        ca_files: t.ca_files.iter().map(resolve).collect(),
        client_cert,
        insecure: t.insecure,
    };
    if !options.is_default() {
        // Read the files now, so a bad path stops `serve` instead of every connection.
        options.build().map_err(|e| e.to_string())?;
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use crate::config::Loaded;

    fn parse(section: &str, line: &str) -> Result<Loaded, String> {
        let text = format!(
            "[[client_type]]\nname = \"t\"\n[client_type.defaults]\nurl = \"ws://127.0.0.1:1/\"\n[client_type.defaults.{section}]\n{line}\n"
        );
        Loaded::parse(&text, "t.toml", &std::env::temp_dir()).map_err(|e| e.to_string())
    }

    #[test]
    fn reconnect_and_keepalive_out_of_range_are_refused_with_their_line() {
        for (section, line, range) in [
            ("reconnect", "initial_delay_ms = 0", "1 to 86400000"),
            ("reconnect", "max_delay_ms = 999", "1000 to 86400000"),
            ("reconnect", "multiplier = 0.5", "1.0 to 100.0"),
            ("reconnect", "multiplier = nan", "1.0 to 100.0"),
            ("reconnect", "reset_after_secs = 86401", "0 to 86400"),
            ("keepalive", "ping_interval_secs = 86401", "0 to 86400"),
            ("keepalive", "ping_timeout_secs = 0", "1 to 86400"),
        ] {
            let e = parse(section, line).map(|_| ()).unwrap_err();
            let key = line.split(' ').next().unwrap();
            assert!(
                e.contains("t.toml:6")
                    && e.contains("client_type \"t\"")
                    && e.contains(key)
                    && e.contains(range),
                "{line}: {e}"
            );
        }
        // The ends of each range are taken.
        parse(
            "reconnect",
            "initial_delay_ms = 1\nmax_delay_ms = 86400000\nmultiplier = 100.0",
        )
        .unwrap();
        parse(
            "keepalive",
            "ping_interval_secs = 0\nping_timeout_secs = 86400",
        )
        .unwrap();
    }
}
