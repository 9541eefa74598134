//! The connection sections of a client type's defaults: TLS, reconnect
//! timing and keepalive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    /// First backoff window, in milliseconds. Default 1000.
    #[serde(default = "initial_ms")]
    pub initial_delay_ms: u64,
    /// Largest backoff window, in milliseconds. Default 60000.
    #[serde(default = "max_ms")]
    pub max_delay_ms: u64,
    /// Growth per attempt. Default 2.0.
    #[serde(default = "multiplier")]
    pub multiplier: f64,
    /// Stop after this many failed attempts in a row. Default: never.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Seconds open after which the attempt count resets. Default 30.
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

impl ReconnectConfig {
    /// The policy the connection layer uses.
    pub fn policy(&self) -> tether::ReconnectPolicy {
        tether::ReconnectPolicy {
            initial_delay: Duration::from_millis(self.initial_delay_ms),
            max_delay: Duration::from_millis(self.max_delay_ms.max(self.initial_delay_ms)),
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
    /// Seconds between pings; 0 turns pings off. Default 20.
    #[serde(default = "default_ping_interval")]
    pub ping_interval_secs: u64,
    /// Seconds to wait for a pong before the link counts as dead. Default 20.
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
