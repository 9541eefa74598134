//! Errors of the async client, split by where they come from.

use std::io;

pub use tether_proto::{HandshakeError, ProtocolError, RequestError};

/// Why a connection could not be made, or why it ended without a clean close.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL cannot be used for a WebSocket connection.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The options or headers cannot form a valid handshake request.
    #[error(transparent)]
    InvalidRequest(#[from] RequestError),
    /// The host name did not resolve.
    #[error("could not resolve {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The TCP connection could not be made.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// The address tried last.
        addr: String,
        /// The socket error.
        source: io::Error,
    },
    /// The proxy refused the tunnel with this HTTP status (407: it needs
    /// credentials; 403: not allowed; 502: it could not reach the server).
    #[error("proxy {proxy} refused the tunnel with HTTP {status}")]
    ProxyRefused {
        /// The proxy, without credentials.
        proxy: String,
        /// The HTTP status.
        status: u16,
    },
    /// The proxy failed otherwise.
    #[error("proxy {proxy}: {reason}")]
    Proxy {
        /// The proxy, without credentials.
        proxy: String,
        /// What went wrong.
        reason: String,
        /// The socket error, when it was one.
        #[source]
        source: Option<io::Error>,
    },
    /// The TLS handshake or the TLS session failed.
    /// [`TlsError::certificate_problem`](crate::TlsError::certificate_problem)
    /// tells an expired certificate from an unknown issuer from a name
    /// mismatch.
    #[cfg(not(target_arch = "wasm32"))]
    #[error("TLS failure with {host}: {source}")]
    Tls {
        /// The server name.
        host: String,
        /// What failed.
        #[source]
        source: crate::tls::TlsError,
    },
    /// The TLS configuration could not be built (bad CA file, client
    /// certificate and key that do not match).
    #[error("TLS configuration error: {what}")]
    TlsConfig {
        /// What could not be used, with the file it came from.
        what: String,
        /// The reader's or rustls' error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The server refused or botched the WebSocket upgrade.
    #[error(transparent)]
    Handshake(HandshakeError),
    /// Connecting (TCP, TLS and the handshake together) took longer than the
    /// connect timeout.
    #[error("connecting timed out after {0:?}")]
    ConnectTimeout(std::time::Duration),
    /// The server broke the protocol; we closed with the code it maps to.
    #[error("protocol error from the server: {0}")]
    Protocol(ProtocolError),
    /// The server reset the connection (TCP RST).
    #[error("connection reset by the server")]
    Reset,
    /// The connection ended without a close handshake.
    #[error("the connection ended without a close handshake")]
    Abnormal,
    /// No answer to our close frame within the close timeout.
    #[error("the server did not answer the close frame within the close timeout")]
    CloseTimeout,
    /// No pong within the ping timeout: the server or the path is dead.
    #[error("no pong within the ping timeout; the connection is considered dead")]
    PingTimeout,
    /// Any other I/O failure on the socket.
    #[error("I/O error: {0}")]
    Io(io::Error),
    /// The option cannot be honoured where this runs: the browser's
    /// WebSocket API has no way to set it (see the README's table).
    #[error("{option} cannot be set in a browser: its WebSocket API does not offer it; leave it at its default there")]
    Unsupported {
        /// The option, as its setter is named.
        option: &'static str,
    },
    /// The browser could not open the connection. It does not tell a page
    /// why (refused, unreachable, TLS or a rejected handshake look the
    /// same); its developer console has the details.
    #[error("the browser could not open a connection to {url} (refused, unreachable, TLS or handshake failure: the browser does not say which; its console does)")]
    BrowserConnect {
        /// The URL, password redacted.
        url: String,
    },
}

impl Error {
    /// A short, stable name for the kind of failure: `url`, `request`,
    /// `resolve`, `connect`, `proxy`, `tls`, `handshake`, `timeout`, `protocol`,
    /// `reset`, `abnormal`, `io`, `unsupported`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidUrl { .. } => "url",
            Error::InvalidRequest(_) => "request",
            Error::Resolve { .. } => "resolve",
            Error::Connect { .. } | Error::BrowserConnect { .. } => "connect",
            Error::ProxyRefused { .. } | Error::Proxy { .. } => "proxy",
            #[cfg(not(target_arch = "wasm32"))]
            Error::Tls { .. } => "tls",
            Error::TlsConfig { .. } => "tls",
            Error::Handshake(_) => "handshake",
            Error::ConnectTimeout(_) | Error::CloseTimeout | Error::PingTimeout => "timeout",
            Error::Protocol(_) => "protocol",
            Error::Reset => "reset",
            Error::Abnormal => "abnormal",
            Error::Io(_) => "io",
            Error::Unsupported { .. } => "unsupported",
        }
    }

    /// The HTTP status when the server rejected the handshake.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Handshake(HandshakeError::Rejected { status, .. }) => Some(*status),
            Error::ProxyRefused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Classifies an I/O error on an established connection.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn from_io(err: io::Error, host: &str) -> Error {
        if let Some(inner) = err.get_ref() {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Error::Tls {
                    host: host.to_string(),
                    source: crate::tls::TlsError::Rustls(tls.clone()),
                };
            }
        }
        match err.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Error::Reset,
            io::ErrorKind::UnexpectedEof => Error::Abnormal,
            _ => Error::Io(err),
        }
    }
}

/// A message or close could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is still connecting.
    #[error("the connection is not open yet")]
    NotOpen,
    /// The connection is closing or closed.
    #[error("the connection is closing or closed; no more messages can be sent")]
    Closed,
    /// The outgoing buffer is full and the policy is to refuse.
    #[error("the outgoing buffer is full ({buffered} bytes queued, limit {limit}); the server reads slower than you send")]
    BufferFull {
        /// Bytes queued now.
        buffered: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The engine refused the command (invalid close code, ping too long).
    #[error(transparent)]
    Invalid(tether_proto::SendError),
    /// The browser's WebSocket API cannot do this (pings; close codes
    /// other than 1000 and 3000–4999; close reasons over 123 bytes).
    #[error("a browser cannot send {0}")]
    Unsupported(&'static str),
}

impl From<tether_proto::SendError> for SendError {
    fn from(e: tether_proto::SendError) -> Self {
        match e {
            tether_proto::SendError::NotOpen => SendError::NotOpen,
            tether_proto::SendError::Closed => SendError::Closed,
            other => SendError::Invalid(other),
        }
    }
}
