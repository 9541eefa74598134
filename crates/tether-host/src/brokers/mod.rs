//! Message brokers over WebSocket: STOMP 1.2 and MQTT 3.1.1/5 codecs
//! (sans-IO, in Rust), their Lua bindings, the built-in client types that
//! use them, and the framing of API and outbox sends for those types.

pub mod builtin;
pub mod framing;
pub(crate) mod lua;
// Packet fields are named as in the MQTT specification.
#[allow(missing_docs)]
pub mod mqtt;
mod mqtt_encode;
#[allow(missing_docs)]
pub mod mqtt_props;
pub mod stomp;
