//! WebSocket client connections with one API natively and in the browser.
//! Natively: async on tokio, driven by the sans-IO [`tether_proto`] engine.
//! On `wasm32-unknown-unknown`: the browser's `WebSocket`, which does the
//! framing itself; options it cannot honour fail with
//! [`Error::Unsupported`].
//!
//! # I/O contract
//! Each connection is one driver task that owns its socket (in a browser:
//! the browser's socket and its event callbacks). The application holds a
//! [`Connection`] (cloneable: send, close, state) and either a
//! [`Receiver`] (a cancel-safe stream of [`Event`]s) or [`Handlers`]
//! (callbacks for open, message, error and close). Natively, reading from
//! the socket stops while the application has events it has not taken, so
//! a slow consumer slows the server instead of growing memory; sending is
//! bounded by the outgoing buffer limit and its [`BackpressurePolicy`].
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

mod connect;
mod error;
mod event;
mod handlers;
mod options;
pub mod persistent;
mod reconnect;
mod registry;
mod rt;
mod target;

// The native transport: our engine over tokio sockets.
#[cfg(not(target_arch = "wasm32"))]
mod connection;
#[cfg(not(target_arch = "wasm32"))]
mod dial;
#[cfg(not(target_arch = "wasm32"))]
mod driver;
#[cfg(not(target_arch = "wasm32"))]
pub mod proxy;
#[cfg(not(target_arch = "wasm32"))]
mod start;
#[cfg(not(target_arch = "wasm32"))]
pub mod tls;

// The browser transport: the page's WebSocket.
#[cfg(target_arch = "wasm32")]
mod web;

/// The transport this build uses, under one set of names for the shared
/// code (handlers, registry, reconnecting).
mod transport {
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::connection::{Connection, Receiver};
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) use crate::start::{check, check_close, open, GOING_AWAY};
    #[cfg(target_arch = "wasm32")]
    pub(crate) use crate::web::{check, check_close, open, GOING_AWAY};
    #[cfg(target_arch = "wasm32")]
    pub use crate::web::{Connection, Receiver};
}

pub use connect::{connect, connect_keyed};
pub use error::{Error, HandshakeError, ProtocolError, RequestError, SendError};
pub use event::{Closed, Event, Message, State};
pub use handlers::Handlers;
pub use options::{BackpressurePolicy, ConnectOptions, ProxyMode, TlsOptions, WriteGate};
pub use persistent::{
    Attempt, BeforeAttempt, Persistent, PersistentEvent, PersistentOptions, PersistentReceiver,
    PersistentState,
};
pub use reconnect::{Backoff, ReconnectPolicy};
pub use registry::{Registry, RegistryError};
pub use rt::Instant;
pub use target::redact;
/// The protocol engine this crate drives.
pub use tether_proto as proto;
pub use tether_proto::{CloseCode, DeflateConfig};
pub use transport::{Connection, Receiver};

#[cfg(not(target_arch = "wasm32"))]
pub use start::{open, open_on, Transport};
#[cfg(target_arch = "wasm32")]
pub use web::open;

/// The TLS library, whose errors [`TlsError`] carries.
#[cfg(not(target_arch = "wasm32"))]
pub use rustls;
/// Certificate and key types, and the PEM reader whose errors a bad CA file
/// reports.
#[cfg(not(target_arch = "wasm32"))]
pub use rustls_pki_types;
#[cfg(not(target_arch = "wasm32"))]
pub use tls::{CertificateProblem, TlsError};
