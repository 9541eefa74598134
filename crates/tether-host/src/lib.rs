//! The Tether host: client types declared in a config file, each with a
//! handler module (Lua or Rust); client instances stored in SQLite and run
//! as live connections; and the management API over them.
//!
//! # I/O contract
//! [`Host::start`] reads the store and starts one worker task per client
//! (plus one driver task per live connection, from the `tether` crate).
//! [`api::router`] is an axum router over a host; `serve` binds it. Handler
//! hooks run on tokio's blocking pool, one at a time per client.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod brokers;
pub mod client;
pub mod cluster;
pub mod config;
pub mod demo_echo;
pub mod events;
pub mod host;
mod http_client;
pub mod metrics;
pub mod modules;
pub mod outbox;
pub mod serve;
pub mod store;
mod telemetry;
pub mod webhooks;

pub use config::{ConfigError, Loaded};
pub use host::{Host, HostError, InstanceInput};
pub use modules::{ClientModule, ModuleFactory};
pub use store::{PgStore, SqliteStore, Store};
