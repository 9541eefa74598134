//! Async WebSocket client connections on tokio, driven by the sans-IO
//! [`tether_proto`] engine.
//!
//! # I/O contract
//! Each connection is one driver task that owns its socket. The application
//! holds a [`Connection`] (cloneable: send, close, state) and either a
//! [`Receiver`] (a cancel-safe stream of [`Event`]s) or [`Handlers`]
//! (callbacks for open, message, error and close). Reading from the socket
//! stops while the application has events it has not taken, so a slow
//! consumer slows the server instead of growing memory; sending is bounded
//! by the outgoing buffer limit and its [`BackpressurePolicy`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tether::{connect, ConnectOptions, Event, Message};
//! let (conn, mut rx) = connect("ws://127.0.0.1:9001/", &ConnectOptions::new()).await?;
//! conn.send_text("hello").await?;
//! while let Some(event) = rx.next().await {
//!     match event {
//!         Event::Message(Message::Text(t)) => println!("{t}"),
//!         Event::Closed(c) => println!("closed {} {}", c.code, c.reason),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connection;
mod dial;
mod driver;
mod error;
mod handlers;
mod options;
pub mod persistent;
pub mod proxy;
mod reconnect;
mod registry;
mod start;
mod target;
pub mod tls;

pub use connection::{Closed, Connection, Event, Message, Receiver, State};
pub use error::{
    CertificateProblem, Error, HandshakeError, ProtocolError, RequestError, SendError, TlsError,
};
pub use handlers::Handlers;
pub use options::{BackpressurePolicy, ConnectOptions, WriteGate};
pub use persistent::{
    Persistent, PersistentEvent, PersistentOptions, PersistentReceiver, PersistentState,
};
pub use proxy::ProxyMode;
pub use reconnect::{Backoff, ReconnectPolicy};
pub use registry::{Registry, RegistryError};
/// The protocol engine this crate drives.
/// The TLS library, whose errors [`TlsError`] carries.
pub use rustls;
/// Certificate and key types, and the PEM reader whose errors a bad CA file
/// reports.
pub use rustls_pki_types;
pub use start::{connect, connect_keyed, open, open_on, Transport};
pub use target::redact;
pub use tether_proto as proto;
pub use tether_proto::{CloseCode, DeflateConfig};
pub use tls::TlsOptions;
