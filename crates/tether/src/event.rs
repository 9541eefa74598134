//! What a connection reports, the same on every platform: the events of a
//! [`Receiver`](crate::Receiver) and how a connection ended.

use std::time::Duration;

use crate::error::Error;

pub use tether_proto::Message;

/// A connection's state: the engine's, as the WebSocket API names it.
pub use tether_proto::State;

/// How a connection ended.
#[derive(Debug)]
pub struct Closed {
    /// The close code: the server's after a close handshake (1005 when it
    /// sent none), ours when the server broke the protocol, 1006 when there
    /// was no close handshake.
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// Whether the close handshake completed.
    pub clean: bool,
    /// What went wrong, when something did.
    pub error: Option<Error>,
}

/// What a connection reports, in order. `Closed` is always last.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed.
    Open {
        /// The subprotocol the server chose.
        protocol: Option<String>,
        /// Whether permessage-deflate is in use.
        compression: bool,
    },
    /// A message arrived.
    Message(Message),
    /// A pong arrived (keepalive pongs carry the round-trip time).
    Pong {
        /// The round-trip time, when the pong answers a keepalive ping.
        rtt: Option<Duration>,
    },
    /// The connection is closed.
    /// (Boxed: it is rare and large, and every queued event pays for the
    /// largest variant.)
    Closed(Box<Closed>),
}
