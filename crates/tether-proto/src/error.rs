//! Errors, split by who is to blame.
//!
//! - [`ProtocolError`]: the server broke RFC 6455 or RFC 7692 after the
//!   handshake. The connection answers with a close frame carrying
//!   [`ProtocolError::close_code`] and reports it in [`crate::Closed`].
//! - [`HandshakeError`]: the server's answer to the opening handshake was a
//!   rejection or was not a valid WebSocket upgrade.
//! - [`SendError`]: the application asked for something the connection
//!   cannot do now (sending after close) or at all (an invalid close code).

use crate::close::CloseCode;

/// The server broke the protocol. Each variant maps to the close code that
/// the connection sends back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The server masked a frame; servers must not.
    #[error("the server sent a masked frame")]
    MaskedFrame,
    /// RSV bits were set that no negotiated extension defines.
    #[error("reserved bits {0:#04x} set without an extension that defines them")]
    ReservedBits(u8),
    /// An opcode RFC 6455 reserves.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with a payload over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A continuation frame with no message to continue.
    #[error("continuation frame without a message in progress")]
    OrphanContinuation,
    /// A new text or binary frame while a fragmented message was open.
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A 64-bit payload length with its top bit set.
    #[error("64-bit payload length with the most significant bit set")]
    LengthTopBit,
    /// A close frame with a one-byte payload.
    #[error("close frame with a one-byte payload")]
    CloseLengthOne,
    /// A close code that may not be sent on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A text message or close reason that is not UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A message over the configured size limit.
    #[error("message of {size} bytes or more is over the limit of {limit} bytes")]
    MessageTooBig {
        /// The size known so far (from frame headers, or inflated bytes).
        size: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A frame over the configured frame size limit.
    #[error("frame of {size} bytes is over the frame limit of {limit} bytes")]
    FrameTooBig {
        /// The frame's declared payload length.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
    /// RSV1 on a control or continuation frame.
    #[error("RSV1 set on a {0} frame")]
    CompressedNonFirstFrame(&'static str),
    /// The compressed data could not be inflated.
    #[error("invalid compressed data: {0}")]
    InvalidDeflate(String),
}

impl ProtocolError {
    /// The close code to send for this violation: 1007 for invalid UTF-8,
    /// 1009 for size limits, 1002 for everything else (invalid deflate data
    /// included, which is what Autobahn expects).
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            ProtocolError::MessageTooBig { .. } | ProtocolError::FrameTooBig { .. } => {
                CloseCode::TOO_BIG
            }
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// The opening handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The server answered with a status other than 101.
    #[error("handshake rejected with HTTP {status}{}", reason_suffix(.reason))]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The reason phrase.
        reason: String,
        /// The response headers.
        headers: Vec<(String, String)>,
        /// The first bytes of the body (up to 4 KiB) that arrived with the
        /// response headers.
        body: Vec<u8>,
    },
    /// The response was not parseable HTTP.
    #[error("invalid HTTP response: {0}")]
    InvalidHttp(String),
    /// The response headers were larger than the limit.
    #[error("response headers exceed {limit} bytes")]
    ResponseTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A required header was missing or had the wrong value.
    #[error("the server did not upgrade: {0}")]
    NotUpgraded(String),
    /// Sec-WebSocket-Accept did not match our key.
    #[error("Sec-WebSocket-Accept does not match the key sent")]
    BadAccept,
    /// The server chose a subprotocol we did not offer.
    #[error("the server chose subprotocol {0:?}, which was not offered")]
    UnexpectedProtocol(String),
    /// The server accepted an extension we did not offer.
    #[error("the server accepted extension {0:?}, which was not offered")]
    UnexpectedExtension(String),
    /// The server's extension parameters were invalid.
    #[error("invalid permessage-deflate response: {0}")]
    InvalidExtension(String),
    /// The connection ended before the response was complete.
    #[error("the connection ended during the opening handshake")]
    Eof,
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" {reason}")
    }
}

/// The application asked for something the connection cannot do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The opening handshake has not completed.
    #[error("the connection is not open yet")]
    NotOpen,
    /// A close frame was already sent or the connection is closed; no more
    /// data may be sent.
    #[error("the connection is closing or closed; no more messages can be sent")]
    Closed,
    /// The close code may not be sent on the wire.
    #[error("close code {0} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)")]
    InvalidCloseCode(u16),
    /// A ping payload over 125 bytes.
    #[error("control frame payload of {0} bytes is over 125")]
    ControlTooLong(usize),
}
