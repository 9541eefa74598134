//! `[host]`: the host-wide settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::error::check_ranges;

/// `[host]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// Where the management API listens. Default `127.0.0.1:7878`. Binding
    /// anything but loopback needs an admin token set in the config or in
    /// `TETHER_ADMIN_TOKEN`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The store, `sqlite://PATH` (relative to the config file),
    /// `sqlite::memory:`, or `postgres://USER@HOST[:PORT]/DB` for several
    /// hosts sharing their clients (a cluster). Default
    /// `sqlite://tether.db`; created when missing.
    #[serde(default = "default_store")]
    pub store: String,
    /// The admin token. `TETHER_ADMIN_TOKEN` wins over it; with neither, one
    /// is generated at first start, printed once, and kept (hashed) in the store.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Serve `/metrics` without the token. Only allowed when `listen` is a
    /// loopback address. Default false.
    #[serde(default)]
    pub metrics_public: bool,
    /// Seconds a shutdown may take (closing clients, flushing the store)
    /// before the process exits anyway. Default 10 (1 to 3600).
    #[serde(default = "ten")]
    pub shutdown_grace_secs: u64,
    /// Seconds of quiet after which an event stream gets a comment line, so
    /// proxies and load balancers do not close it. Default 15 (1 to 3600).
    #[serde(default = "fifteen")]
    pub sse_keep_alive_secs: u64,
    /// How passwords and secret header values are stored: `"encrypted"`
    /// (the default: needs `TETHER_SECRET_KEY` or `secret_key_file` before
    /// any secret can be stored) or `"plaintext"` (warned about at every start).
    #[serde(default)]
    pub secrets: SecretsMode,
    /// Serve a WebSocket echo endpoint on this loopback address (for a first
    /// run with nothing else installed). Default: off.
    #[serde(default)]
    pub demo_echo: Option<Spanned<SocketAddr>>,
    /// In a cluster (a `postgres://` store): the URL other nodes reach this
    /// node's API at, when `listen` is not reachable from them. Default:
    /// `http://` and the `listen` address.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Delivered (done) outbox messages are deleted after this many seconds;
    /// pending, expired and dead ones are kept until retried or purged.
    /// Default 3600 (0 to 3153600000).
    #[serde(default = "hour")]
    pub outbox_keep_done_secs: u64,
    /// The durable event log keeps the newest this many events. Default
    /// 1000000 (at least 1).
    #[serde(default = "million")]
    pub event_log_max_events: u64,
    /// … and none older than this many seconds. Default 604800 (7 days; 1
    /// to 3153600000, 100 years).
    #[serde(default = "week")]
    pub event_log_max_age_secs: u64,
    /// A file holding the secret key as base64, relative to the config file.
    /// `TETHER_SECRET_KEY` wins over it.
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
    /// The largest message data an event carries; a larger message is
    /// published as `{"size": N, "truncated": …}` (the module gets all of
    /// it). Default 1048576 (at least 1024).
    #[serde(default = "mib")]
    pub event_data_limit_bytes: usize,
    /// Bytes of recent events each client keeps for late viewers (at most
    /// 200 events). Default 4194304.
    #[serde(default = "four_mib")]
    pub history_bytes_per_client: usize,
    /// Bytes all events may hold in memory together (histories, live
    /// streams, the log writer's queue); past it events lose their data.
    /// Default 268435456 (at least 1048576).
    #[serde(default = "quarter_gib")]
    pub event_memory_bytes: usize,
}

impl HostSection {
    /// Values out of their range, refused rather than bent into it: the key
    /// and what is wrong.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        // Up to 100 years: "keep everything", without overflowing a date.
        const CENTURY: u64 = 3_153_600_000;
        check_ranges(
            "",
            &[
                ("shutdown_grace_secs", self.shutdown_grace_secs, 1, 3600),
                ("sse_keep_alive_secs", self.sse_keep_alive_secs, 1, 3600),
                (
                    "event_log_max_events",
                    self.event_log_max_events,
                    1,
                    u64::MAX,
                ),
                (
                    "event_log_max_age_secs",
                    self.event_log_max_age_secs,
                    1,
                    CENTURY,
                ),
                (
                    "outbox_keep_done_secs",
                    self.outbox_keep_done_secs,
                    0,
                    CENTURY,
                ),
                (
                    "event_data_limit_bytes",
                    self.event_data_limit_bytes as u64,
                    1024,
                    u64::MAX,
                ),
                (
                    "event_memory_bytes",
                    self.event_memory_bytes as u64,
                    1 << 20,
                    u64::MAX,
                ),
            ],
        )
    }
}

/// `[host] secrets`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretsMode {
    /// Sealed under the secret key; refused without one.
    #[default]
    Encrypted,
    /// Stored as they are.
    Plaintext,
}

const fn fifteen() -> u64 {
    15
}

fn ten() -> u64 {
    10
}
const fn hour() -> u64 {
    3600
}
const fn million() -> u64 {
    1_000_000
}
const fn week() -> u64 {
    7 * 86_400
}
const fn mib() -> usize {
    1 << 20
}
const fn four_mib() -> usize {
    4 << 20
}
const fn quarter_gib() -> usize {
    256 << 20
}

impl Default for HostSection {
    fn default() -> Self {
        HostSection {
            listen: default_listen(),
            store: default_store(),
            admin_token: None,
            metrics_public: false,
            shutdown_grace_secs: ten(),
            sse_keep_alive_secs: fifteen(),
            secrets: SecretsMode::default(),
            secret_key_file: None,
            demo_echo: None,
            advertise: None,
            outbox_keep_done_secs: hour(),
            event_log_max_events: million(),
            event_log_max_age_secs: week(),
            event_data_limit_bytes: mib(),
            history_bytes_per_client: four_mib(),
            event_memory_bytes: quarter_gib(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7878))
}

fn default_store() -> String {
    "sqlite://tether.db".into()
}

#[cfg(test)]
mod tests {
    use crate::config::Loaded;

    fn parse(host: &str) -> Result<Loaded, String> {
        let text = format!("# tether\n[host]\n{host}\n");
        Loaded::parse(&text, "t.toml", &std::env::temp_dir()).map_err(|e| e.to_string())
    }

    #[test]
    fn values_out_of_range_are_refused_with_their_line_not_bent() {
        for (line, key, range) in [
            (
                "shutdown_grace_secs = 0",
                "shutdown_grace_secs",
                "1 to 3600",
            ),
            (
                "sse_keep_alive_secs = 0",
                "sse_keep_alive_secs",
                "1 to 3600",
            ),
            (
                "sse_keep_alive_secs = 3601",
                "sse_keep_alive_secs",
                "1 to 3600",
            ),
            (
                "event_log_max_events = 0",
                "event_log_max_events",
                "at least 1",
            ),
            (
                "event_log_max_age_secs = 0",
                "event_log_max_age_secs",
                "1 to 3153600000",
            ),
            (
                "event_log_max_age_secs = 9223372036854775807",
                "event_log_max_age_secs",
                "1 to 3153600000",
            ),
            (
                "event_data_limit_bytes = 100",
                "event_data_limit_bytes",
                "at least 1024",
            ),
            (
                "event_memory_bytes = 1000",
                "event_memory_bytes",
                "at least 1048576",
            ),
            (
                "outbox_keep_done_secs = 3153600001",
                "outbox_keep_done_secs",
                "0 to 3153600000",
            ),
        ] {
            let e = parse(line).map(|_| ()).unwrap_err();
            assert!(
                e.contains("t.toml:3") && e.contains(key) && e.contains(range),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn values_at_the_ends_of_their_ranges_are_taken_as_they_are() {
        let loaded = parse("sse_keep_alive_secs = 3600\nshutdown_grace_secs = 1").unwrap();
        assert_eq!(loaded.sse_keep_alive.as_secs(), 3600);
        assert_eq!(loaded.shutdown_grace.as_secs(), 1);
        let loaded = parse("event_memory_bytes = 1048576\nevent_data_limit_bytes = 1024").unwrap();
        assert_eq!(loaded.event_memory.total, 1 << 20);
        assert_eq!(loaded.event_memory.data_limit, 1024);
    }
}
