//! The client side of the WebSocket protocol (RFC 6455) with
//! permessage-deflate (RFC 7692), as a sans-IO state machine.
//!
//! # I/O contract
//! This crate opens no sockets, spawns nothing, reads no clock and owns no
//! random generator (see [`Entropy`]). A driver
//! owns the transport and moves bytes and time through a
//! [`ClientConnection`]:
//!
//! - network → application: feed every read to
//!   [`ClientConnection::receive_data`], end of stream to
//!   [`ClientConnection::receive_eof`], then take
//!   [`ClientConnection::poll_event`] until it returns `None`;
//! - application → network: commands (`send_text`, `send_binary`, `close`)
//!   only queue bytes; after every input or command, write out what
//!   [`ClientConnection::poll_transmit`] gives;
//! - time: sleep until [`ClientConnection::poll_timeout`] and then call
//!   [`ClientConnection::handle_timeout`]; the close timeout and keepalive
//!   pings live there.
//!
//! Input from the server never panics and never returns an error: a
//! violation queues a close frame with the right code (1002, 1007 or 1009)
//! and is reported in the final [`Event::Closed`].
//!
//! ```
//! use std::{sync::Arc, time::Instant};
//! use tether_proto::{ClientConnection, Config, Request, Event};
//!
//! let request = Request::new("example.com", 80, false, "/chat");
//! let mut conn = ClientConnection::new(Arc::new(Config::default()), &request).unwrap();
//! let mut wire = Vec::new();
//! assert!(conn.poll_transmit(&mut wire) > 0); // the HTTP upgrade request
//! assert!(wire.starts_with(b"GET /chat HTTP/1.1\r\n"));
//! conn.receive_data(Instant::now(), b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
//! assert!(matches!(conn.poll_event(), Some(Event::Closed(_))));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod close;
mod config;
mod connection;
pub mod deflate;
mod entropy;
mod error;
mod event;
pub mod frame;
mod handshake;
pub mod mask;
mod opening;
pub mod utf8;

pub use close::CloseCode;
pub use config::{Config, DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT};
pub use connection::{ClientConnection, PayloadBuffer, State};
pub use deflate::{DeflateConfig, DeflateParams};
pub use entropy::Entropy;
#[cfg(feature = "system-entropy")]
pub use entropy::SystemEntropy;
pub use error::{HandshakeError, ProtocolError, SendError};
pub use event::{CloseKind, Closed, Event, Message, Opened};
pub use handshake::{accept_for_key, Request, RequestError};
