//! `[client_type.outbox]`: how a type's durable sends are kept and delivered.

use serde::Deserialize;

/// `[client_type.outbox]`: durable sends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// API sends are durable unless they say `"durable": false`. Default false.
    #[serde(default)]
    pub durable: bool,
    /// Messages not yet delivered, at most. Default 100000.
    #[serde(default = "max_messages")]
    pub max_messages: u64,
    /// Their payload bytes, at most. Default 256 MiB.
    #[serde(default = "max_bytes")]
    pub max_bytes: u64,
    /// Past a limit: `"reject"` (the API answers 429) or `"drop-oldest"`.
    #[serde(default)]
    pub when_full: crate::store::outbox::FullPolicy,
    /// Seconds a message may wait before it expires unsent. Default: forever.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Attempts before a message is dead. Default 10.
    #[serde(default = "max_attempts")]
    pub max_attempts: u32,
    /// When delivery starts on a new connection: `"open"` (after `on_open`
    /// returns) or `"module"` (when the module calls `conn:ready()`, after
    /// its own login or subscribe).
    #[serde(default)]
    pub ready: ReadyWhen,
}

/// `[client_type.outbox] ready`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadyWhen {
    /// After `on_open` returns.
    #[default]
    Open,
    /// When the module calls `conn:ready()`.
    Module,
}

const fn max_messages() -> u64 {
    100_000
}
const fn max_bytes() -> u64 {
    256 << 20
}
const fn max_attempts() -> u32 {
    10
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            durable: false,
            max_messages: max_messages(),
            max_bytes: max_bytes(),
            when_full: Default::default(),
            ttl_secs: None,
            max_attempts: max_attempts(),
            ready: ReadyWhen::Open,
        }
    }
}

impl OutboxConfig {
    /// The limits the store enforces.
    pub fn limits(&self) -> crate::store::outbox::OutboxLimits {
        crate::store::outbox::OutboxLimits {
            max_messages: self.max_messages,
            max_bytes: self.max_bytes,
            when_full: self.when_full,
        }
    }
}
