//! Limits and options of one connection.

use std::time::Duration;

use crate::deflate::DeflateConfig;

/// How a connection behaves. Shared by every connection made with it.
#[derive(Debug, Clone)]
pub struct Config {
    /// The largest message accepted, in bytes, after decompression.
    /// Bigger messages fail the connection with 1009. Default: 64 MiB.
    pub max_message_size: usize,
    /// The largest single frame accepted. Default: the message limit.
    pub max_frame_size: usize,
    /// The largest handshake response head accepted. Default: 64 KiB.
    pub max_handshake_size: usize,
    /// How long to wait for the server's close frame after ours, and for the
    /// server to end the TCP connection after the close handshake. Default: 5 s.
    pub close_timeout: Duration,
    /// permessage-deflate offer; `None` turns compression off. Default: on.
    pub deflate: Option<DeflateConfig>,
    /// Send a ping every this long, at a fixed interval whether or not
    /// anything else was sent: a pong proves the server still reads and
    /// gives the round trip, which traffic in one direction does not.
    /// `None`: never. Default: [`DEFAULT_PING_INTERVAL`].
    pub ping_interval: Option<Duration>,
    /// Fail the connection (1006, timeout) when a ping is unanswered for this
    /// long. `None`: wait forever. Default: [`DEFAULT_PING_TIMEOUT`].
    pub ping_timeout: Option<Duration>,
}

/// The keepalive interval every layer defaults to (engine, library, host,
/// CLI).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long a ping may go unanswered, by default.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(20);

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: 64 << 20,
            max_frame_size: 64 << 20,
            max_handshake_size: 64 << 10,
            close_timeout: Duration::from_secs(5),
            deflate: Some(DeflateConfig::default()),
            ping_interval: Some(DEFAULT_PING_INTERVAL),
            ping_timeout: Some(DEFAULT_PING_TIMEOUT),
        }
    }
}
