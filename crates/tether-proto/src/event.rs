//! What the connection reports to the application.

use std::time::Duration;

use crate::close::CloseCode;
use crate::error::{HandshakeError, ProtocolError};

/// A complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message, validated as UTF-8.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Message {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(s) => s.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload as bytes, without copying.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Message::Text(s) => s.into_bytes(),
            Message::Binary(b) => b,
        }
    }
}

/// The handshake succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
    /// Whether permessage-deflate was negotiated.
    pub compression: bool,
    /// The response headers.
    pub headers: Vec<(String, String)>,
}

/// Why and how the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseKind {
    /// The server started the close handshake and it completed.
    Remote,
    /// We started the close handshake and it completed.
    Local,
    /// The server broke the protocol; we sent the close code in [`Closed::code`].
    Protocol(ProtocolError),
    /// The opening handshake failed.
    Handshake(HandshakeError),
    /// The transport ended without a close handshake (1006).
    Abnormal,
    /// Our close frame got no answer within the close timeout (1006).
    CloseTimeout,
    /// A keepalive ping got no pong within the ping timeout (1006).
    PingTimeout,
}

/// The connection is closed: the last event it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The server's close code after a close handshake (1005 when its frame
    /// had none), the code we sent when the server broke the protocol, or
    /// 1006 when there was no close handshake.
    pub code: CloseCode,
    /// The close reason that goes with `code`.
    pub reason: String,
    /// What happened.
    pub kind: CloseKind,
}

impl Closed {
    /// True when the close handshake completed.
    pub fn is_clean(&self) -> bool {
        matches!(self.kind, CloseKind::Remote | CloseKind::Local)
    }
}

/// Something the connection reports. Read them with
/// [`ClientConnection::poll_event`](crate::ClientConnection::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The opening handshake completed.
    Open(Opened),
    /// A complete message arrived.
    Message(Message),
    /// The server pinged; the pong is already queued.
    Ping(Vec<u8>),
    /// A pong arrived; `rtt` is set when it answers our last keepalive ping.
    Pong {
        /// The pong's payload.
        payload: Vec<u8>,
        /// The round-trip time of the keepalive ping it answers.
        rtt: Option<Duration>,
    },
    /// The connection is closed. No event follows.
    Closed(Closed),
}
